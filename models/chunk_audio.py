"""One text chunk's speech tokens -> its finished audio pieces (trimmed, watermarked).

The pipeline feeds a chunk's tokens as the runaway guard releases them and plays what
comes back. `WholeChunk` decodes once the chunk's tokens are complete: the reference's
computation, one S3Gen call. `BlockChunk` decodes in token blocks while T3 still runs
(`models.s3gen.streaming`), so the first audio comes after ~20 tokens instead of the
whole chunk; its pieces join seamlessly but differ slightly from `WholeChunk`'s audio,
because S3Gen's attention sees each block's frames before the later tokens exist.
Both apply the same end-of-chunk rules: the same tokens are decoded (`speech_ids`, then
the model's `tail` tokens: Turbo's three silence tokens), trailing silence is trimmed when
asked, and the Perth watermark covers every sample.
"""
from __future__ import annotations

import numpy as np
import torch

from .guard import frame_rms, trim_trailing_silence
from .s3gen.s3gen import ReferenceEmbedding, S3Gen
from .s3gen.streaming import StreamConfig, StreamingS3Gen
from .t3 import SPEECH_CODEBOOK_SIZE, STOP_SPEECH_TOKEN
from .watermark import StreamingWatermark, Watermarker


def speech_ids(tokens) -> torch.Tensor:
    """A chunk's raw T3 tokens -> the ids S3Gen decodes (1-D int64; may be empty).

    Codebook ids (< 6561) before the first stop token; any other id, a stray start-of-speech
    id included, is skipped. Block decoding (`StreamingS3Gen.push`) applies the same rule
    token by token, so a chunk has the same length decoded either way. The reference's
    filter (`t3.drop_invalid_tokens`, which parity replays follow) instead drops everything
    before a start id; block decoding cannot, since that audio may already be playing.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    stops = (tokens == STOP_SPEECH_TOKEN).nonzero()
    if len(stops):
        tokens = tokens[:int(stops[0])]
    return tokens[tokens < SPEECH_CODEBOOK_SIZE]


class WholeChunk:
    """Collects a chunk's tokens and decodes them in one S3Gen call at `finish`.

    The generator is the one T3 sampled with, continued: S3Gen's noise is drawn after the
    tokens, as in the reference. `tail` is appended to a chunk with speech before decoding.
    """

    def __init__(self, s3gen: S3Gen, ref: ReferenceEmbedding, generator: torch.Generator,
                 watermarker: Watermarker | None, sample_rate: int, tail: tuple[int, ...] = ()):
        self.s3gen, self.ref, self.generator = s3gen, ref, generator
        self.watermarker, self.sample_rate = watermarker, sample_rate
        self.tail = tail
        self.tokens: list[int] = []

    def push(self, tokens: list[int]) -> list[np.ndarray]:
        self.tokens.extend(tokens)
        return []

    def finish(self, trim: bool) -> list[np.ndarray]:
        speech = speech_ids(self.tokens)
        if speech.numel() == 0:
            return []
        speech = torch.cat([speech, torch.tensor(self.tail, dtype=torch.long)])
        wav = self.s3gen.inference(speech, self.ref, generator=self.generator).float().cpu().numpy()
        if trim:
            wav = trim_trailing_silence(wav, self.sample_rate)
        if self.watermarker is not None:
            wav = self.watermarker.apply(wav, self.sample_rate)
        return [wav] if len(wav) else []


class BlockChunk:
    """Decodes a chunk in token blocks as its tokens arrive, returning audio as it is final.

    `noise_generator` must not be T3's: the whole chunk's noise is drawn from it up front,
    before T3 has sampled, and T3's tokens stay those of a `WholeChunk` run with the same
    seed. Trimming can only shorten audio not yet returned, so it applies to the final
    piece, measured against the loudest frame of the whole chunk. `tail` is pushed at
    `finish` after a chunk with speech (`config.max_tokens` must leave room for it).
    """

    def __init__(self, s3gen: S3Gen, ref: ReferenceEmbedding, noise_generator: torch.Generator,
                 watermarker: Watermarker | None, sample_rate: int, config: StreamConfig,
                 tail: tuple[int, ...] = ()):
        self.decoder = StreamingS3Gen(s3gen, ref, noise_generator, config)
        self.sample_rate = sample_rate
        self.watermark = StreamingWatermark(watermarker, sample_rate) if watermarker is not None else None
        self.peak_rms = 0.0
        self.tail = tail
        self.ended = False  # a stop token arrived: the chunk's speech is complete

    def push(self, tokens: list[int]) -> list[np.ndarray]:
        pieces = []
        for token in tokens:
            # The stop token is kept from the decoder (which would then refuse the tail).
            self.ended = self.ended or int(token) == STOP_SPEECH_TOKEN
            piece = None if self.ended else self.decoder.push(token)
            if piece is not None:
                pieces.append(self._out(piece.float().cpu().numpy()))
        return [p for p in pieces if len(p)]

    def finish(self, trim: bool) -> list[np.ndarray]:
        pieces = []
        if self.decoder.tokens:
            for token in self.tail:
                piece = self.decoder.push(token)
                if piece is not None:
                    pieces.append(self._out(piece.float().cpu().numpy()))
        wav = self.decoder.finish().float().cpu().numpy()
        if trim:
            wav = trim_trailing_silence(wav, self.sample_rate, peak_rms=self.peak_rms)
        out = self._out(wav)
        if self.watermark is not None:
            out = np.concatenate([out, self.watermark.finish()])
        return [p for p in pieces + [out] if len(p)]

    def _out(self, wav: np.ndarray) -> np.ndarray:
        if len(wav):
            self.peak_rms = max(self.peak_rms, float(frame_rms(wav, self.sample_rate).max()))
        return self.watermark.push(wav) if self.watermark is not None else wav
