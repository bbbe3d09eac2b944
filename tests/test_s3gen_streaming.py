"""Streaming S3Gen: HiFT's receptive field, a vocoder fed in pieces == one vocoder run,
the block schedule and lengths, raw-token filtering, the fade-in, and (slow) the full-size
fake checkpoint: seamless joins and the distance to the non-streamed decode."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Iterable, Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.s3gen.cfm import CFMConfig
from models.s3gen.conformer import EncoderConfig
from models.s3gen.estimator import EstimatorConfig
from models.s3gen.flow import Flow, FlowConfig
from models.s3gen.hift import HiFTConfig, HiFTGenerator, SourceDraws, apply_fade_in
from models.s3gen.s3gen import ReferenceEmbedding, S3Gen
from models.s3gen.streaming import HIFT_REACH_FRAMES, StreamConfig, StreamingS3Gen, StreamingVocoder, UtteranceNoise
from models.constants import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN

N_FEATS, VOCAB, XVEC = 8, 50, 12
TINY_FLOW = FlowConfig(vocab_size=VOCAB, spk_embed_dim=XVEC,
                       encoder=EncoderConfig(d_model=16, n_heads=2, ffn_dim=32, n_blocks=1, n_up_blocks=1),
                       cfm=CFMConfig(estimator=EstimatorConfig(n_feats=N_FEATS, channels=16, n_blocks=1,
                                                               num_mid_blocks=2, num_heads=2, attention_head_dim=8)))
SAMPLES_PER_TOKEN = 960
LOOKAHEAD_FRAMES = 6  # 3 look-ahead tokens x 2 frames


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


def tiny_hift() -> HiFTGenerator:
    """Real rates and kernels (so the real receptive field), few channels, f0 ~150 Hz (voiced)."""
    torch.manual_seed(0)
    hift = HiFTGenerator(HiFTConfig(in_channels=N_FEATS, base_channels=16, f0_channels=8)).eval()
    with torch.no_grad():
        hift.f0_predictor.classifier.bias.fill_(150.0)
    hift.fold_weight_norm()
    return hift


def stream_s3gen(s3gen: S3Gen, tokens: Iterable[int], ref: ReferenceEmbedding,
                 generator: torch.Generator | None = None, config: StreamConfig | None = None) -> Iterator[Tensor]:
    """Audio pieces (1-D tensors, 24 kHz) for a stream of raw T3 speech tokens (the
    decoder driven as the pipeline drives it, on a plain token iterator).

    Tokens are pulled lazily, so pieces come out while `tokens` is still being produced.
    Yields nothing for a stream without speech tokens. All noise is drawn from `generator`
    before the first token is pulled; if T3 samples with a generator too, give this one
    its own, or T3's draws (and tokens) would differ from a non-streamed run.
    """
    decoder = StreamingS3Gen(s3gen, ref, generator, config)
    for token in tokens:
        piece = decoder.push(token)
        if piece is not None:
            yield piece
        if decoder.stopped:
            break
    rest = decoder.finish()
    if rest.numel():
        yield rest


@torch.inference_mode()
def decode_whole(s3gen: S3Gen, tokens: Tensor, ref: ReferenceEmbedding, noise: UtteranceNoise) -> Tensor:
    """Non-streamed decode of already-filtered `tokens` with the given noise: what a stream
    approximates (the oracle of the streaming tests)."""
    ref = ref.to(s3gen.flow.device)
    n_frames = s3gen.flow.config.encoder.upsample * (ref.prompt_token.numel() + tokens.numel())
    mel = s3gen.flow.inference(tokens, ref.prompt_token, ref.prompt_feat, ref.embedding,
                               noise=noise.flow[..., :n_frames], n_timesteps=s3gen.n_timesteps)
    n_samples = mel.shape[1] * s3gen.mel2wav.config.samples_per_frame
    draws = SourceDraws(noise.source.phases, noise.source.noise[..., :n_samples])
    return apply_fade_in(s3gen.mel2wav.forward(mel[None], draws).wav[0])


class LocalFlow(nn.Module):
    """Flow stand-in without attention: frame j depends only on its token and its noise.

    Streamed and whole decodes then see identical mel frames, so any difference between
    them is the streaming bookkeeping's (schedule, look-ahead, vocoder joins, fade-in).
    """

    config = TINY_FLOW

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB, N_FEATS)

    @property
    def device(self) -> torch.device:
        return self.table.weight.device

    def inference(self, speech_tokens, prompt_token, prompt_feat, embedding, *, noise, n_timesteps=10):
        tokens = torch.cat([prompt_token, speech_tokens])
        mel = self.table(tokens).T.repeat_interleave(2, dim=1) + 0.5 * noise[0]
        return mel[:, prompt_feat.shape[0]:]


def tiny_ref(n_prompt: int = 6, prompt_frames: int = 12) -> ReferenceEmbedding:
    g = torch.Generator().manual_seed(1)
    return ReferenceEmbedding(torch.randint(0, VOCAB, (n_prompt,), generator=g),
                              torch.randn(prompt_frames, N_FEATS, generator=g), torch.randn(XVEC, generator=g))


def tokens(n: int, seed: int = 2) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def local_s3gen():
    torch.manual_seed(3)
    return SimpleNamespace(flow=LocalFlow().eval(), mel2wav=tiny_hift(), n_timesteps=10)


def run_stream(s3gen, toks, ref, config, seed=0):
    """Decoder, pieces, and how many tokens had been pushed when each piece came (None: finish)."""
    decoder = StreamingS3Gen(s3gen, ref, torch.Generator().manual_seed(seed), config)
    pieces, arrivals = [], []
    for n, t in enumerate(toks, 1):
        piece = decoder.push(t)
        if piece is not None:
            pieces.append(piece)
            arrivals.append(n)
    rest = decoder.finish()
    if rest.numel():
        pieces.append(rest)
        arrivals.append(None)
    return decoder, pieces, arrivals


# --- HiFT's reach and the streaming vocoder ------------------------------------------

def test_hift_reach_covers_the_receptive_field():
    hift, spf, t = tiny_hift(), 480, 60
    g = torch.Generator().manual_seed(4)
    mel, source = torch.randn(1, N_FEATS, t, generator=g), 0.1 * torch.randn(1, t * spf, generator=g)
    base = hift.spec_to_wav(hift.decode(mel, source))[0]
    bumped_mel = mel.clone()
    bumped_mel[0, :, 30] += 1
    changed = (hift.spec_to_wav(hift.decode(bumped_mel, source))[0] - base).abs().reshape(t, spf).amax(1) > 0
    frames = changed.nonzero().flatten() - 30
    assert frames.abs().max() < HIFT_REACH_FRAMES and frames.abs().max() >= HIFT_REACH_FRAMES - 2  # tight
    bumped_source = source.clone()
    bumped_source[0, 30 * spf] += 1
    changed = (hift.spec_to_wav(hift.decode(mel, bumped_source))[0] - base).abs() > 0
    assert (changed.nonzero().flatten() - 30 * spf).abs().max() < HIFT_REACH_FRAMES * spf
    f0_changed = (hift.f0_predictor(bumped_mel) - hift.f0_predictor(mel)).abs()[0] > 0
    assert (f0_changed.nonzero().flatten() - 30).abs().max() < HIFT_REACH_FRAMES


@pytest.mark.parametrize("cuts", [(1, 2, 3, 20, 21, 45), (15, 16, 17, 18, 19, 50)])
def test_vocoder_in_pieces_equals_one_run(cuts):
    hift, t = tiny_hift(), 60
    mel = torch.randn(N_FEATS, t, generator=torch.Generator().manual_seed(5))
    draws = SourceDraws.sample(1, 9, t * 480, torch.Generator().manual_seed(6))
    whole = hift.forward(mel[None], draws).wav[0]
    assert (hift.forward(mel[None], draws).f0 > 100).all()  # the sine source (and its phase) is in use
    vocoder = StreamingVocoder(hift, draws)
    bounds = [0, *cuts, t]
    pieces = [vocoder.push(mel[:, a:b], final=b == t) for a, b in zip(bounds[:-1], bounds[1:])]
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape
    # Only float32 rounding differs (the whole run accumulates the phase in one cumsum);
    # measured 7e-8 against a peak of 0.1.
    assert (streamed - whole).abs().max() < 1e-6
    with pytest.raises(RuntimeError):
        vocoder.push(mel[:, :1])


def test_phase_carry_is_what_makes_pieces_exact():
    """Restarting the sine source at a piece (fresh cumsum) changes the audio well inside it."""
    hift, t = tiny_hift(), 60
    mel = torch.randn(N_FEATS, t, generator=torch.Generator().manual_seed(7))
    draws = SourceDraws.sample(1, 9, t * 480, torch.Generator().manual_seed(8))
    whole = hift.forward(mel[None], draws).wav[0]
    second = hift.forward(mel[None, :, 30:], SourceDraws(draws.phases, draws.noise[..., 30 * 480:])).wav[0]
    naive = (second[HIFT_REACH_FRAMES * 480:] - whole[(30 + HIFT_REACH_FRAMES) * 480:]).abs().max()
    vocoder = StreamingVocoder(hift, draws)
    streamed = torch.cat([vocoder.push(mel[:, :30]), vocoder.push(mel[:, 30:], final=True)])
    assert (streamed - whole).abs().max() < 1e-6 < naive / 10  # the tolerance above would catch it


# --- schedule, lengths, tokens, fade-in (exact, with an attention-free flow) -----------

@pytest.mark.parametrize("n_tokens, config", [
    (70, StreamConfig(max_tokens=80)),                                     # 20 | 20 | rest
    (53, StreamConfig(first_block=11, block=3, max_block=8, max_tokens=80)),
    (9, StreamConfig(first_block=10, max_tokens=80)),                       # ends before the first block
    (30, StreamConfig(first_block=12, block=5, holdback_frames=17, max_tokens=80)),  # pieces < 960 samples
])
def test_stream_equals_whole_decode_when_frames_agree(local_s3gen, n_tokens, config):
    ref, toks = tiny_ref(), tokens(n_tokens)
    decoder, pieces, arrivals = run_stream(local_s3gen, toks, ref, config)
    streamed = torch.cat(pieces)
    whole = decode_whole(local_s3gen, torch.tensor(toks), ref, decoder.noise)
    assert streamed.shape == whole.shape == (SAMPLES_PER_TOKEN * n_tokens,)
    assert (streamed - whole).abs().max() < 1e-6  # includes the fade-in: applied once, at the start
    assert streamed[:480].abs().max() == 0 and streamed[960:].abs().max() > 0

    # Emissions at first_block, then blocks doubling up to max_block; each commits all frames
    # but the look-ahead ones and the vocoder's held-back edge; the end flushes the rest.
    counts, n, block = [], config.first_block, config.block
    while n <= n_tokens:
        counts.append(n)
        n, block = n + block, min(2 * block, config.max_block)
    ends = [max(0, 2 * c - LOOKAHEAD_FRAMES - config.holdback_frames) * 480 for c in counts] + [len(whole)]
    expected = [(c, b - a) for c, a, b in zip(counts + [None], [0] + ends[:-1], ends) if b > a]
    assert list(zip(arrivals, [len(p) for p in pieces])) == expected


def test_raw_t3_tokens_are_filtered_and_stop_ends_the_stream(local_s3gen):
    ref, toks = tiny_ref(), tokens(45)
    raw = [START_SPEECH_TOKEN] + toks[:20] + [7000, 6600] + toks[20:] + [STOP_SPEECH_TOKEN, 3, 4, 5]
    pulled = []

    def t3_stream():
        for t in raw:
            pulled.append(t)
            yield t

    config = StreamConfig(max_tokens=64)
    streamed = torch.cat(list(stream_s3gen(local_s3gen, t3_stream(), ref, torch.Generator().manual_seed(0), config)))
    _, pieces, _ = run_stream(local_s3gen, toks, ref, config)
    assert torch.equal(streamed, torch.cat(pieces))
    assert pulled[-1] == STOP_SPEECH_TOKEN  # nothing is pulled after the stop token
    assert list(stream_s3gen(local_s3gen, iter([STOP_SPEECH_TOKEN]), ref, None, config)) == []


def test_noise_is_fixed_per_utterance_and_seeded(local_s3gen):
    ref = tiny_ref()
    a = StreamingS3Gen(local_s3gen, ref, torch.Generator().manual_seed(9), StreamConfig(max_tokens=40)).noise
    b = StreamingS3Gen(local_s3gen, ref, torch.Generator().manual_seed(9), StreamConfig(max_tokens=40)).noise
    assert torch.equal(a.flow, b.flow) and torch.equal(a.source.noise, b.source.noise)
    assert a.flow.shape == (1, N_FEATS, 2 * (6 + 40))
    assert a.source.noise.shape == (1, 9, (2 * (6 + 40) - 12) * 480)
    decoder = StreamingS3Gen(local_s3gen, ref, None, StreamConfig(max_tokens=3, first_block=5))
    for t in tokens(3):
        decoder.push(t)
    with pytest.raises(ValueError, match="max_tokens"):
        decoder.push(1)


def test_real_tiny_flow_streams_whole_length():
    """With attention and look-ahead the frames differ from a whole decode, the length does not."""
    torch.manual_seed(10)
    flow = Flow(TINY_FLOW).eval()
    for name, p in flow.named_parameters():
        if "pos_bias" in name:
            nn.init.normal_(p)
    s3gen = SimpleNamespace(flow=flow, mel2wav=tiny_hift(), n_timesteps=2)  # both decodes read the steps here
    ref, toks = tiny_ref(n_prompt=6, prompt_frames=13), tokens(30)  # odd prompt mel: 2N - 1 frames
    config = StreamConfig(first_block=15, block=5, max_tokens=30)  # runs at 15, 20, 30
    decoder, pieces, arrivals = run_stream(s3gen, toks, ref, config)
    whole = decode_whole(s3gen, torch.tensor(toks), ref, decoder.noise)
    assert sum(len(p) for p in pieces) == len(whole) == (2 * 30 - 1) * 480
    assert arrivals == [15, 20, 30, None]  # the run at 30 still keeps back the look-ahead for finish
    rel = (torch.cat(pieces) - whole).pow(2).mean().sqrt() / whole.pow(2).mean().sqrt()
    assert 0 < rel < 1


# --- the full-size fake checkpoint ------------------------------------------------------

@pytest.mark.slow
def test_fake_checkpoint_stream_is_seamless_and_close(fake_ckpt, parity_dir):
    """Short prompt (25 tokens), the golden flow file's 50 tokens, pieces at 20 and 40 tokens."""
    from models.tts import Conditionals
    from tools.parity import Context

    ctx = Context(fake_ckpt)
    n_steps = 3  # the schedule and joins do not depend on the Euler step count; CPU time does
    s3gen = SimpleNamespace(flow=ctx.s3gen_part("flow"), mel2wav=ctx.s3gen_part("mel2wav"), n_timesteps=n_steps)
    gen = Conditionals.from_file(fake_ckpt / "conds.pt").gen
    ref = ReferenceEmbedding(gen.prompt_token[:25], gen.prompt_feat[:50], gen.embedding)
    toks = np.load(parity_dir / "golden" / "h_s3gen_flow.npz")["speech_tokens"].tolist()
    config = StreamConfig(max_tokens=len(toks))

    decoder = StreamingS3Gen(s3gen, ref, torch.Generator().manual_seed(0), config)
    t0, pieces, first_at = time.perf_counter(), [], None
    for t in toks:
        piece = decoder.push(t)
        if piece is not None:
            pieces.append(piece)
            first_at = first_at or time.perf_counter() - t0
    pieces.append(decoder.finish())
    t1 = time.perf_counter()
    whole = decode_whole(s3gen, torch.tensor(toks), ref, decoder.noise)
    t_whole = time.perf_counter() - t1
    streamed = torch.cat(pieces)
    print(f"\nfirst piece after {first_at:.1f} s, stream {t1 - t0:.1f} s, whole decode {t_whole:.1f} s")

    ends = [2 * 20 - 20, 2 * 40 - 20, 2 * 50]  # frames out after each run: look-ahead 6 + holdback 14 wait
    assert [len(p) for p in pieces] == [(b - a) * 480 for a, b in zip([0] + ends[:-1], ends)]
    assert len(streamed) == len(whole) == SAMPLES_PER_TOKEN * len(toks)

    # Seamless: no sample-to-sample step at a join is larger than the largest inside the pieces.
    steps = streamed.diff().abs()
    joins = np.cumsum([len(p) for p in pieces])[:-1]
    inside = steps.clone()
    inside[joins - 1] = 0
    print(f"largest step at a join {steps[joins - 1].max():.4f}, inside pieces {inside.max():.4f}")
    assert steps[joins - 1].max() <= inside.max()

    # Close to the whole decode with the same noise. The committed mel differs only because
    # frames computed early did not attend to later tokens: require that difference to be
    # small against the mel's own change from one frame to the next (measured 2.7%), and the
    # pitch voiced to stay, on average, under the ~10 cent pitch discrimination threshold
    # (measured 3 cents mean, 27 max in the first block). The waveforms themselves decorrelate
    # (relative RMS difference 0.57 here, 0.97 between two seeds): each harmonic's phase
    # integrates f0, so 3 cents over a second at 150 Hz already shifts the fundamental by
    # a quarter cycle, with no audible difference.
    whole_mel = s3gen.flow.inference(torch.tensor(toks), ref.prompt_token, ref.prompt_feat, ref.embedding,
                                     noise=decoder.noise.flow[..., :2 * (25 + len(toks))], n_timesteps=n_steps)
    mel_rms = (decoder.vocoder.mel - whole_mel).pow(2).mean().sqrt()
    frame_change = whole_mel.diff(dim=1).pow(2).mean().sqrt()
    whole_f0 = s3gen.mel2wav.f0_predictor(whole_mel[None])[0].double()
    cents = 1200 * torch.log2(decoder.vocoder.f0 / whole_f0).abs()
    wav_rel = (streamed - whole).pow(2).mean().sqrt() / whole.pow(2).mean().sqrt()
    print(f"mel rms diff {mel_rms:.4f} (frame-to-frame {frame_change:.3f}), f0 diff mean {cents.mean():.1f} "
          f"max {cents.max():.1f} cents, wav relative rms diff {wav_rel:.3f}")
    assert mel_rms < 0.1 * frame_change
    assert (whole_f0 > 10).all() and cents.mean() < 10
    # The vocoder voiced exactly the f0 of the mel it was given (stitched across calls).
    voiced = s3gen.mel2wav.f0_predictor(decoder.vocoder.mel[None])[0].double()
    assert (decoder.vocoder.f0 - voiced).abs().max() < 1e-3
    # Frames committed by the final run (all tokens, so the whole decode's run) are its frames.
    tail = 2 * 40 - LOOKAHEAD_FRAMES
    assert (decoder.vocoder.mel[:, tail:] - whole_mel[:, tail:]).abs().max() < 1e-5
    assert (decoder.vocoder.mel[:, tail - 1] - whole_mel[:, tail - 1]).abs().max() > 1e-3
