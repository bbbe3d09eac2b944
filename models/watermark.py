"""The imperceptible Perth watermark that the reference puts on every output.

resemble-perth 1.0.1 imports pkg_resources; where that is missing its watermarker
class silently becomes None. We never crash on that: `Watermarker.available` is
False and `reason` says why, so the UI can say the watermark is off.
"""
from __future__ import annotations

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
