"""Voice conversion: the words of a source recording in a target voice (S3Gen alone, no T3).

    source file -> 16 kHz (soxr, from the file's own rate) -> S3 tokens of the whole clip
    target clip -> 24 kHz, first 10 s -> reference embedding (16 kHz by torchaudio's sinc, as the reference)
    tokens + target -> flow (10 Euler steps, CFG 0.7) -> HiFT -> fade-in -> Perth watermark

A source of up to `whole_max_tokens` is one S3Gen call: the reference `ChatterboxVC.generate`
computation (with a seed, the same noise as after `torch.manual_seed(seed)`). A longer source
would make the flow attend over minutes of frames at once, so it is converted in windows: each
window decodes its core tokens with `context_tokens` of source on either side, the noise of
every frame is fixed by its position in the whole source, neighbouring windows' mels are
crossfaded over `blend_frames` at the join, and one `StreamingVocoder` (continuous sine phase,
overlap by HiFT's receptive field) and one `StreamingWatermark` run over the whole stream, so
the joins carry no click. Each join is moved (up to `join_search_tokens`) to the quietest
stretch of the source near its nominal place, so with real weights it falls in a pause
(`piece_bounds`). Audio is yielded window by window as it is made.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from .audio import resample
from .reference import MAX_UPLOAD_BYTES, ReferenceAudioError, load_reference
from .s3gen.hift import SourceDraws, fade_in_envelope
from .constants import S3_SR, S3_TOKEN_RATE, S3GEN_MEL_FRAMES_PER_TOKEN as MEL_FRAMES_PER_TOKEN, S3GEN_SR
from .s3gen.s3gen import DEC_COND_LEN, ReferenceEmbedding, S3Gen
from .s3gen.streaming import StreamConfig, StreamingVocoder
from .watermark import StreamingWatermark, Watermarker

SAMPLE_RATE = S3GEN_SR
MAX_SOURCE_SECONDS = 600.0   # 10 minutes: 15,000 tokens, converted window by window
MIN_SOURCE_SECONDS = 0.1     # below this the tokenizer yields no token


@dataclass(frozen=True)
class VCConfig:
    """When a source is converted whole and how long windows join (tokens are 40 ms, frames 20 ms)."""

    whole_max_tokens: int = 500   # up to 20 s: one S3Gen call, exactly the reference's computation
    piece_tokens: int = 250       # longer sources: 10 s of new audio per window ...
    context_tokens: int = 25      # ... decoded with 1 s of source on either side (flow attention context)
    blend_frames: int = 20        # mel frames crossfaded at each join (0.4 s), inside the context
    join_search_tokens: int = 50  # a join moves up to 2 s to the source's quietest 0.4 s (a pause)

    def __post_init__(self):
        if self.piece_tokens < 1 or self.whole_max_tokens < 0:
            raise ValueError("need piece_tokens >= 1 and whole_max_tokens >= 0")
        if not 0 <= self.join_search_tokens < self.piece_tokens // 2:
            raise ValueError("join_search_tokens must be in [0, piece_tokens / 2)")
        # A window's mel starts one frame late when the prompt mel is odd (see Flow), so the
        # blend must end at least one frame inside the context on each side.
        if not 0 <= self.blend_frames // 2 <= MEL_FRAMES_PER_TOKEN * self.context_tokens - 1:
            raise ValueError("blend_frames / 2 must be < 2 * context_tokens")


def _decode(source: str | os.PathLike | tuple[int, np.ndarray], max_seconds: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples at the source's own rate (channels averaged, as librosa.load does)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ReferenceAudioError(f"audio file not found: {path.name}")
        if path.stat().st_size > MAX_UPLOAD_BYTES * 4:
            raise ReferenceAudioError(f"audio file is larger than {MAX_UPLOAD_BYTES * 4 / 2**20:.0f} MB")
        try:
            with sf.SoundFile(str(path)) as f:
                rate = f.samplerate
                if f.frames > max_seconds * rate:
                    raise ReferenceAudioError(
                        f"source is {f.frames / rate / 60:.1f} min long; the limit is {max_seconds / 60:.0f} min")
                samples = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise ReferenceAudioError(f"could not decode {path.name!r} as audio") from exc
    else:
        try:
            rate, samples = int(source[0]), np.asarray(source[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise ReferenceAudioError("audio must be a file path or (sample_rate, samples)") from exc
        if samples.dtype.kind == "i":
            samples = samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
            samples = samples.T
        samples = samples.reshape(len(samples), -1)
        if rate <= 0 or len(samples) > max_seconds * rate:
            raise ReferenceAudioError(f"source must have a positive rate and be at most {max_seconds / 60:.0f} min")
    if samples.size == 0 or not np.all(np.isfinite(samples)):
        raise ReferenceAudioError("audio is empty or contains NaN/infinite samples")
    return samples.mean(axis=1, dtype=np.float32), rate


def load_source(source: str | os.PathLike | tuple[int, np.ndarray],
                max_seconds: float = MAX_SOURCE_SECONDS) -> np.ndarray:
    """The source at 16 kHz as `librosa.load(source, sr=16000)`: soxr_hq straight from its own rate."""
    wav, rate = _decode(source, max_seconds)
    if len(wav) < MIN_SOURCE_SECONDS * rate:
        raise ReferenceAudioError(f"source is shorter than {MIN_SOURCE_SECONDS} s")
    if np.max(np.abs(wav)) == 0:
        raise ReferenceAudioError("source is silent")
    return resample(wav, rate, S3_SR)


def target_16k(wav24: np.ndarray) -> np.ndarray:
    """The reference's 16 kHz target: torchaudio `Resample(24000, 16000)` (Hann sinc) of the first 10 s."""
    import torchaudio

    kept = torch.from_numpy(np.ascontiguousarray(wav24[:DEC_COND_LEN], dtype=np.float32))
    return torchaudio.transforms.Resample(S3GEN_SR, S3_SR)(kept).numpy()


SOURCE_SAMPLES_PER_TOKEN = S3_SR // S3_TOKEN_RATE  # 640: an S3 token is 40 ms of the 16 kHz source


def piece_bounds(wav16: np.ndarray, n_tokens: int, config: VCConfig | None = None) -> list[int]:
    """Token bounds [0, b1, ..., n] of the windows a long source is converted in.

    Each join b_k is placed within `join_search_tokens` of `b_{k-1} + piece_tokens` where the
    source's mean power over the blend (`blend_frames / 4` tokens either side) is lowest,
    ties going to the nominal place; windows go on while more than 1.5 pieces remain, so the
    last one holds 0.5-1.5 pieces. In the output the join between windows is centred on
    sample 960·b_k − 480·lost (lost = 1 when the target's prompt mel has an odd frame count).
    A source of at most `whole_max_tokens` is one window.
    """
    c = config or VCConfig()
    if n_tokens <= c.whole_max_tokens:
        return [0, n_tokens]
    spt = SOURCE_SAMPLES_PER_TOKEN
    power = np.zeros(n_tokens, dtype=np.float64)
    wav = np.asarray(wav16[: n_tokens * spt], dtype=np.float64)
    full = len(wav) // spt
    power[:full] = np.mean(wav[: full * spt].reshape(full, spt) ** 2, axis=1)
    if full < n_tokens and len(wav) > full * spt:
        power[full] = np.mean(wav[full * spt:] ** 2)
    reach = max(1, math.ceil(c.blend_frames / (2 * MEL_FRAMES_PER_TOKEN)))

    def blend_power(b: int) -> float:  # mean power of the tokens the blend at b covers
        return float(np.mean(power[max(0, b - reach):min(n_tokens, b + reach)]))

    bounds = [0]
    while n_tokens - bounds[-1] > c.piece_tokens + c.piece_tokens // 2:
        nominal = bounds[-1] + c.piece_tokens
        candidates = range(nominal - c.join_search_tokens,
                           min(nominal + c.join_search_tokens, n_tokens - c.piece_tokens // 2) + 1)
        bounds.append(min(candidates, key=lambda b: (blend_power(b), abs(b - nominal))))
    return bounds + [n_tokens]


class _BlockNoise:
    """The sine source's N(0, 1) noise (1, H, L) for a whole long source, made per block on demand.

    Block b comes from its own generator seeded `seed + b`, so any slice reads the same
    numbers however often and in whatever pieces it is asked for, without holding minutes
    of 9-harmonic noise in memory. Supports `noise[..., a:b]`, as `StreamingVocoder` reads it.
    """

    BLOCK = 48_000

    def __init__(self, harmonics: int, seed: int, device: torch.device):
        self.harmonics, self.seed, self.device = harmonics, seed, device
        self._cache: dict[int, Tensor] = {}

    def _block(self, b: int) -> Tensor:
        if b not in self._cache:
            if len(self._cache) > 8:
                self._cache.pop(min(self._cache))
            g = torch.Generator().manual_seed(self.seed + b)
            self._cache[b] = torch.randn(1, self.harmonics, self.BLOCK, generator=g).to(self.device)
        return self._cache[b]

    def __getitem__(self, key) -> Tensor:
        sl = key[-1] if isinstance(key, tuple) else key
        start, stop = sl.start or 0, sl.stop
        first, last = start // self.BLOCK, max(start // self.BLOCK, (stop - 1) // self.BLOCK)
        blocks = [self._block(b) for b in range(first, last + 1)]
        offset = first * self.BLOCK
        return torch.cat(blocks, dim=-1)[..., start - offset:stop - offset]


class VoiceConverter:
    """Converts sources into target voices with a shared, already-loaded S3Gen.

    Owns nothing but references to the S3Gen and watermarker it is given (the TTS pipeline's),
    and a config; every call is independent (no stored target), so concurrent requests with
    different targets do not interfere.
    """

    def __init__(self, s3gen: S3Gen, watermarker: Watermarker | None = None, config: VCConfig | None = None):
        self.s3gen, self.watermarker, self.config = s3gen, watermarker, config or VCConfig()

    def embed_target(self, target: str | os.PathLike | tuple[int, np.ndarray] | np.ndarray) -> ReferenceEmbedding:
        """A target clip (path, (rate, samples), or 24 kHz samples) -> S3Gen reference of its first 10 s."""
        if isinstance(target, np.ndarray):
            wav24 = np.asarray(target, dtype=np.float32)
        else:
            wav24 = load_reference(target).wav  # validated, mono, soxr to 24 kHz as librosa.load(sr=24000)
        wav24 = wav24[:DEC_COND_LEN]
        return self.s3gen.embed_ref(wav24, wav16=target_16k(wav24))

    def source_tokens(self, wav16: np.ndarray) -> Tensor:
        """S3 tokens (N,) of the whole 16 kHz source (no max_len; > 30 s uses the tokenizer's windows)."""
        tokens = self.s3gen.tokenizer.tokenize(torch.from_numpy(np.asarray(wav16, dtype=np.float32)))
        if tokens.numel() == 0:
            raise ValueError("the source is too short to hold any speech token (40 ms each)")
        return tokens

    def convert(self, wav16: np.ndarray, target: ReferenceEmbedding, seed: int = 0) -> np.ndarray:
        """The whole converted waveform (float32, 24 kHz); see `stream`."""
        pieces = list(self.stream(wav16, target, seed))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    @torch.inference_mode()
    def stream(self, wav16: np.ndarray, target: ReferenceEmbedding, seed: int = 0) -> Iterator[np.ndarray]:
        """Converted audio pieces (float32, 24 kHz), watermarked when a watermarker is available.

        Total length 960·N samples for N source tokens (480 fewer when the target's prompt
        mel has an odd frame count), as the reference. Raises ValueError for a source
        without tokens.
        """
        tokens = self.source_tokens(wav16)
        target = target.to(self.s3gen.device)
        generator = torch.Generator().manual_seed(int(seed))
        marker = self.watermarker if self.watermarker is not None and self.watermarker.available else None
        if tokens.numel() <= self.config.whole_max_tokens:
            wav = self.s3gen.inference(tokens, target, generator=generator).float().cpu().numpy()
            yield marker.apply(wav, SAMPLE_RATE) if marker is not None else wav
            return
        watermark = StreamingWatermark(marker, SAMPLE_RATE) if marker is not None else None
        done = 0
        bounds = piece_bounds(wav16, tokens.numel(), self.config)
        for piece in self._windows(tokens, target, generator, bounds):
            piece = self._fade_in(piece, done)
            done += len(piece)
            out = watermark.push(piece) if watermark is not None else piece
            if len(out):
                yield out
        if watermark is not None:
            rest = watermark.finish()
            if len(rest):
                yield rest

    @staticmethod
    def _fade_in(piece: np.ndarray, start: int) -> np.ndarray:
        envelope = fade_in_envelope().numpy()
        if start >= len(envelope) or not len(piece):
            return piece
        n = min(len(piece), len(envelope) - start)
        return np.concatenate([piece[:n] * envelope[start:start + n], piece[n:]]).astype(np.float32)

    def _windows(self, tokens: Tensor, ref: ReferenceEmbedding, generator: torch.Generator,
                 bounds: list[int]) -> Iterator[np.ndarray]:
        """Raw (unfaded, unwatermarked) audio of a long source, one window (`bounds`) at a time."""
        c, flow, hift = self.config, self.s3gen.flow, self.s3gen.mel2wav
        fpt = MEL_FRAMES_PER_TOKEN
        n, n_prompt, prompt_frames = tokens.numel(), ref.prompt_token.numel(), ref.prompt_feat.shape[0]
        lost = prompt_frames - fpt * n_prompt  # 1 when the prompt mel is odd: the first source frame is cut
        dev = flow.device
        # Every frame's noise is fixed by its place in prompt + whole source, drawn once.
        prompt_noise = torch.randn(1, flow.config.n_feats, fpt * n_prompt, generator=generator).to(dev)
        source_noise = torch.randn(1, flow.config.n_feats, fpt * n, generator=generator).to(dev)
        harmonics = hift.config.nb_harmonics + 1
        phases = torch.rand(1, harmonics, generator=generator) * 2 * math.pi - math.pi
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        draws = SourceDraws(phases.to(dev), _BlockNoise(harmonics, noise_seed, dev))
        vocoder = StreamingVocoder(hift, draws, StreamConfig())
        half = c.blend_frames // 2
        pending: Tensor | None = None  # the previous window's mel over the next join's blend region
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            lo, hi = max(0, a - c.context_tokens), min(n, b + c.context_tokens)
            noise = torch.cat([prompt_noise, source_noise[..., fpt * lo:fpt * hi]], dim=-1)
            mel = flow.inference(tokens[lo:hi], ref.prompt_token, ref.prompt_feat, ref.embedding,
                                 noise=noise, n_timesteps=self.s3gen.n_timesteps)
            first = fpt * lo + lost  # source frame of mel[:, 0]
            start = lost if k == 0 else fpt * a - half
            end = fpt * n if b == n else fpt * b - half
            out = mel[:, start - first:end - first]
            if pending is not None and half:
                ramp = (torch.arange(2 * half, device=out.device, dtype=out.dtype) + 0.5) / (2 * half)
                out = torch.cat([pending * (1 - ramp) + out[:, :2 * half] * ramp, out[:, 2 * half:]], dim=1)
            if b < n:
                pending = mel[:, end - first:end - first + 2 * half]
            yield vocoder.push(out, final=b == n).float().cpu().numpy()
