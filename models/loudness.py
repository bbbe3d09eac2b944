"""Reference loudness normalisation (ITU-R BS.1770-4 integrated loudness, via pyloudnorm).

Chatterbox-Turbo scales every reference clip to -27 LUFS before embedding it, so quiet and
loud recordings condition the model alike. pyloudnorm is the reference's own meter: using
it keeps the gate, block and K-weighting details identical (chatterbox-spec.md §11.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TARGET_LUFS = -27.0


@dataclass(frozen=True)
class LoudnessGain:
    """The measured loudness (LUFS, float64), the linear gain to the target and whether it
    was applied (a silent clip measures -inf and is left as it is)."""

    loudness_lufs: float
    gain_linear: float
    applied: bool


def loudness_gain(wav: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS) -> LoudnessGain:
    """Integrated loudness of a mono clip and the gain 10^((target - L)/20) that reaches `target_lufs`.

    The clip must be float32 (pyloudnorm filters it in place in the input's dtype, as the
    reference does) and at least 0.4 s long (one gating block); a shorter one raises ValueError.
    """
    import pyloudnorm

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono clip, got shape {wav.shape}")
    meter = pyloudnorm.Meter(sample_rate)
    if len(wav) < meter.block_size * sample_rate:
        raise ValueError(f"clip of {len(wav) / sample_rate:.2f} s is shorter than one {meter.block_size} s "
                         "loudness block")
    loudness = float(meter.integrated_loudness(wav))
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return LoudnessGain(loudness, gain, math.isfinite(gain) and gain > 0.0)


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """`wav` scaled to `target_lufs` (float32 times float32(gain), as the reference computes it);
    unchanged when the gain is not finite and positive (silence)."""
    wav = np.asarray(wav, dtype=np.float32)
    gain = loudness_gain(wav, sample_rate, target_lufs)
    return wav * np.float32(gain.gain_linear) if gain.applied else wav
