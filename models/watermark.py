"""The imperceptible Perth watermark that the reference puts on every output.

resemble-perth 1.0.1 imports pkg_resources; where that is missing its watermarker
class silently becomes None. We never crash on that: `Watermarker.available` is
False and `reason` says why, so the UI can say the watermark is off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class Watermarker:
    """Applies and detects the Perth implicit watermark (CPU, bundled weights)."""

    def __init__(self) -> None:
        self.reason = ""
        self._impl = None
        try:
            import perth

            cls = perth.PerthImplicitWatermarker
            if cls is None:
                self.reason = "resemble-perth could not load its network (pkg_resources missing: needs setuptools<81)"
            else:
                self._impl = cls(device="cpu")
        except Exception as exc:  # any failure here must leave the app serving, unwatermarked
            self.reason = f"resemble-perth failed to load: {exc.__class__.__name__}: {exc}"

    @property
    def hop_s(self) -> float:
        """Seconds between Perth's STFT frames: windows that start on this grid frame alike."""
        hp = self._impl.perth_net.hp
        return hp.hop_size / hp.sample_rate

    @property
    def available(self) -> bool:
        return self._impl is not None

    def apply(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        if self._impl is None:
            raise RuntimeError(f"watermark unavailable: {self.reason}")
        wav = np.asarray(wav, dtype=np.float32)
        with torch.inference_mode():
            out = np.asarray(self._impl.apply_watermark(wav, sample_rate=sample_rate), dtype=np.float32)
        # Perth's STFT framing drops a few trailing samples; keep the length (960 per token).
        if len(out) < len(wav):
            out = np.concatenate([out, np.zeros(len(wav) - len(out), dtype=np.float32)])
        return out[: len(wav)]

    def detect(self, wav: np.ndarray, sample_rate: int) -> float:
        """Fraction of watermark bits detected (near 1 when present, near 0 when absent)."""
        if self._impl is None:
            raise RuntimeError(f"watermark unavailable: {self.reason}")
        with torch.inference_mode():
            bits = self._impl.get_watermark(np.asarray(wav, dtype=np.float32), sample_rate=sample_rate, round=True)
        return float(np.mean(bits))


@dataclass(frozen=True)
class WatermarkCheck:
    """Whether a clip carries the Perth watermark.

    `score` is Perth's decoder output averaged over the clip (0..1: near 1 marked, near 0
    not); `detected` is score >= 0.5 and `confidence` the probability of that verdict
    (score, or 1 - score).
    """

    detected: bool
    score: float
    confidence: float

    def describe(self) -> str:
        verdict = "Perth watermark detected" if self.detected else "no Perth watermark detected"
        return f"{verdict} (confidence {self.confidence:.0%}, score {self.score:.3f})"


WATERMARK_MIN_SECONDS = 0.5  # Perth decodes STFT frames of 64 ms; shorter clips give no verdict


def check_watermark(watermarker: Watermarker, wav: np.ndarray, sample_rate: int) -> WatermarkCheck:
    """Decode the Perth watermark of a mono clip. Raises ValueError for unusable audio and
    RuntimeError when the watermarker is unavailable."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or not np.all(np.isfinite(wav)):
        raise ValueError("watermark check needs mono audio without NaN or infinite samples")
    if len(wav) < WATERMARK_MIN_SECONDS * sample_rate:
        raise ValueError(f"clip is shorter than {WATERMARK_MIN_SECONDS} s: too short to check")
    if watermarker._impl is None:
        raise RuntimeError(f"watermark unavailable: {watermarker.reason}")
    with torch.inference_mode():
        raw = watermarker._impl.get_watermark(wav, sample_rate=sample_rate, round=False)
    score = float(np.clip(np.mean(raw), 0.0, 1.0))
    detected = score >= 0.5
    return WatermarkCheck(detected, score, score if detected else 1.0 - score)


WATERMARK_CONTEXT_S = 0.2  # Perth's STFT (64 ms window) and resampling reach far less than this


class StreamingWatermark:
    """Watermarks audio that arrives in pieces, giving the same samples as one `apply` call.

    Each call watermarks the new audio with at least `WATERMARK_CONTEXT_S` of already-returned
    audio before it and holds back the last `WATERMARK_CONTEXT_S` until more arrives or
    `finish`, so no returned sample was computed near an edge. Windows start on Perth's
    STFT frame grid, counted from the first sample, or their frames (and output) would
    differ. Measured on speech: joined pieces differ from the whole-clip watermark by < 1e-7.
    """

    def __init__(self, watermarker: Watermarker, sample_rate: int):
        self.watermarker, self.sample_rate = watermarker, sample_rate
        self.context = round(WATERMARK_CONTEXT_S * sample_rate)
        self.grid = round(watermarker.hop_s * sample_rate)
        if abs(self.grid - watermarker.hop_s * sample_rate) > 1e-9 or self.grid < 1:
            raise ValueError(f"sample rate {sample_rate} Hz puts Perth's frames off the sample grid")
        self._audio = np.zeros(0, dtype=np.float32)  # plain audio: returned context + held back
        self._held = 0                               # samples at the end of _audio not yet returned
        self._offset = 0                             # stream position of _audio[0], on the grid

    def push(self, piece: np.ndarray, final: bool = False) -> np.ndarray:
        """Take new plain samples; return the watermarked samples that are now final."""
        self._audio = np.concatenate([self._audio, np.asarray(piece, dtype=np.float32)])
        self._held += len(piece)
        out_len = self._held if final else max(0, self._held - self.context)
        if out_len == 0:
            return np.zeros(0, dtype=np.float32)
        marked = self.watermarker.apply(self._audio, self.sample_rate)
        start = len(self._audio) - self._held
        out = marked[start:start + out_len]
        self._held -= out_len
        keep_from = len(self._audio) - self._held - self.context
        keep_from = max(0, (self._offset + keep_from) // self.grid * self.grid - self._offset)
        self._audio = self._audio[keep_from:]
        self._offset += keep_from
        return out

    def finish(self) -> np.ndarray:
        """Every sample still held back."""
        return self.push(np.zeros(0, dtype=np.float32), final=True)
