"""One chunk's tokens -> audio: whole and block decoding read the same tokens, so a chunk
has the same length either way, whatever stray ids T3 produced."""
from __future__ import annotations

import pytest
import torch

from models.chunk_audio import BlockChunk, WholeChunk, speech_ids
from models.s3gen.streaming import StreamConfig, UtteranceNoise
from models.t3 import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN, drop_invalid_tokens
from test_s3gen_streaming import LocalFlow, decode_whole, tiny_hift, tiny_ref, tokens

SAMPLE_RATE = 24_000


@pytest.mark.parametrize("raw, expected", [
    ([1, 2, 3], [1, 2, 3]),
    ([1, 2, STOP_SPEECH_TOKEN, 5], [1, 2]),
    ([7, START_SPEECH_TOKEN, 8], [7, 8]),          # a stray start id is skipped, nothing before it dropped
    ([START_SPEECH_TOKEN, 3, 7000, 4, STOP_SPEECH_TOKEN, 9], [3, 4]),
    ([STOP_SPEECH_TOKEN], []),
    ([], []),
])
def test_speech_ids(raw, expected):
    assert speech_ids(raw).tolist() == expected
    assert speech_ids(torch.tensor(raw, dtype=torch.long)).dtype == torch.long


def test_reference_filter_is_unchanged_for_parity():
    # The reference drops what precedes a start id; parity replays keep following it.
    assert drop_invalid_tokens([7, START_SPEECH_TOKEN, 8]).tolist() == [8]


class TinyS3Gen:
    """S3Gen stand-in on the streaming tests' attention-free flow and a tiny HiFT."""

    def __init__(self):
        torch.manual_seed(3)
        self.flow, self.mel2wav = LocalFlow().eval(), tiny_hift()
        self.n_timesteps = 10

    def inference(self, speech, ref, generator=None):
        c = self.flow.config
        frames = c.encoder.upsample * (ref.prompt_token.numel() + speech.numel())
        noise = UtteranceNoise.sample(c.n_feats, frames, self.mel2wav.config.nb_harmonics + 1,
                                      speech.numel() * 2 * self.mel2wav.config.samples_per_frame, generator)
        return decode_whole(self, speech, ref, noise)


@pytest.mark.parametrize("position", [1, 15, 30])
def test_stray_start_id_gives_the_same_length_whole_and_in_blocks(position):
    s3gen, ref = TinyS3Gen(), tiny_ref()
    good = tokens(40)
    raw = good[:position] + [START_SPEECH_TOKEN] + good[position:] + [STOP_SPEECH_TOKEN]
    with torch.inference_mode():
        whole = WholeChunk(s3gen, ref, torch.Generator().manual_seed(0), None, SAMPLE_RATE)
        whole.push(raw)
        whole_audio = whole.finish(trim=False)
        blocks = BlockChunk(s3gen, ref, torch.Generator().manual_seed(0), None, SAMPLE_RATE,
                            StreamConfig(first_block=10, block=10, max_block=20, max_tokens=64))
        block_audio = [p for t in raw for p in blocks.push([t])] + blocks.finish(trim=False)
    whole_len = sum(len(p) for p in whole_audio)
    assert whole_len == sum(len(p) for p in block_audio) == 960 * len(good)
