"""Reading a user's reference voice clip, with clear errors for anything unusable.

A clip arrives as a file path (upload, microphone recording) or as `(sample_rate, samples)`
(the API). It is checked before any model sees it: size cap before decoding, decodable,
finite, not silent, long enough. Long clips are decoded only as far as needed, and
the result says how much was used. Output is mono float32 at 24 kHz.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import resample

REF_SR = 24_000                  # the rate the pipeline works at (Hz)
MAX_UPLOAD_BYTES = 50 * 2**20    # rejected before decoding
MIN_SECONDS = 1.0                # shorter clips give unusable speaker embeddings
MAX_SECONDS_USED = 30.0          # S3Gen uses 10 s, T3's prompt 6 s; the voice encoder averages the rest
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: nothing audible to clone
MAX_SAMPLE_RATE = 384_000


class ReferenceAudioError(ValueError):
    """The reference clip cannot be used; the message says why in plain words."""


@dataclass(frozen=True)
class ReferenceClip:
    """A validated reference voice: mono float32 at 24 kHz, and what was done to it."""

    wav: np.ndarray
    seconds_used: float
    seconds_total: float
    source_rate: int
    source_channels: int

    @property
    def truncated(self) -> bool:
        return self.seconds_total > self.seconds_used + 1e-6

    def describe(self) -> str:
        used = f"{self.seconds_used:.1f} s"
        if self.truncated:
            used += f" of {self.seconds_total:.1f} s (only the first {MAX_SECONDS_USED:.0f} s are used)"
        chans = "mono" if self.source_channels == 1 else f"{self.source_channels} channels mixed to mono"
        return f"Reference: {used}, {self.source_rate} Hz, {chans}"


def _to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":
        return (samples.astype(np.float64) / float(-np.iinfo(samples.dtype).min)).astype(np.float32)
    if samples.dtype.kind == "u":
        info = np.iinfo(samples.dtype)
        mid = (info.max + 1) / 2
        return ((samples.astype(np.float64) - mid) / mid).astype(np.float32)
    raise ReferenceAudioError(f"unsupported sample type {samples.dtype}")


def _decode_file(path: Path) -> tuple[np.ndarray, int, int, float]:
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ReferenceAudioError(
            f"reference file is {size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MB")
    if size == 0:
        raise ReferenceAudioError("reference file is empty")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            wanted = frames if frames > 0 else -1
            if rate > 0 and frames > 0:
                wanted = min(frames, int(MAX_SECONDS_USED * rate))
            samples = f.read(wanted, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # The library's message names the server-side path: keep it in the chained exception only.
        raise ReferenceAudioError(
            f"could not decode {path.name!r} as audio (supported: wav, flac, ogg, mp3)") from exc
    total = frames / rate if frames > 0 and rate > 0 else samples.shape[0] / max(rate, 1)
    return samples, rate, channels, total


def load_reference(source: str | os.PathLike | tuple[int, np.ndarray]) -> ReferenceClip:
    """Validate and convert a reference clip; raises ReferenceAudioError with a readable reason."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ReferenceAudioError(f"reference file not found: {path}")
        samples, rate, channels, total = _decode_file(path)
    else:
        try:
            rate, samples = source
            rate = int(rate)
            samples = np.asarray(samples)
        except (TypeError, ValueError) as exc:
            raise ReferenceAudioError("reference audio must be a file path or (sample_rate, samples)") from exc
        if samples.ndim == 1:
            samples = samples[:, None]
        elif samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
            samples = samples.T  # (channels, time) as some callers send it
        elif samples.ndim != 2:
            raise ReferenceAudioError(f"reference audio must be 1-D or 2-D, got shape {samples.shape}")
        samples = _to_float(samples)
        channels = samples.shape[1]
        total = samples.shape[0] / rate if rate > 0 else 0.0
        if rate > 0:
            samples = samples[: int(MAX_SECONDS_USED * rate)]
    if not 1_000 <= rate <= MAX_SAMPLE_RATE:
        raise ReferenceAudioError(f"unsupported sample rate {rate} Hz")
    if samples.size == 0:
        raise ReferenceAudioError("reference audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise ReferenceAudioError("reference audio contains NaN or infinite samples")
    if np.max(np.abs(samples)) > 1.0 + 1e-6:
        # Float input outside [-1, 1] is a scaling error upstream, not a voice.
        raise ReferenceAudioError("reference audio samples must lie in [-1, 1]")
    mono = samples.mean(axis=1, dtype=np.float32)
    seconds = mono.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise ReferenceAudioError(
            f"reference clip is {seconds:.2f} s long; at least {MIN_SECONDS:.0f} s of speech is needed")
    if np.max(np.abs(mono)) < SILENCE_PEAK:
        raise ReferenceAudioError("reference clip is silent")
    wav = resample(mono, rate, REF_SR) if rate != REF_SR else mono
    return ReferenceClip(np.ascontiguousarray(wav, dtype=np.float32), seconds, max(total, seconds), rate, channels)
