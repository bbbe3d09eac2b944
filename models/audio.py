"""Audio helpers shared by the pipeline: resampling, silence trimming, mel filterbanks.

Each reproduces the library call the reference makes (librosa 0.11 defaults), so the
pipeline gets the same numbers without importing librosa's heavy feature stack at run time.
"""
from __future__ import annotations

import math

import numpy as np
import soxr

# librosa's res_type "soxr_hq" hands quality "soxr_hq" to soxr, which is its "HQ" preset.
SOXR_QUALITY = "HQ"

# librosa.effects.trim defaults (samples at the signal's own rate).
TRIM_FRAME_LENGTH = 2048
TRIM_HOP_LENGTH = 512
_DB_FLOOR_POWER = 1e-10  # amplitude_to_db's amin (1e-5) squared

# Slaney mel scale: linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling as `librosa.resample(res_type="soxr_hq")`, float32 out.

    The length is fixed to ceil(len * sr_out / sr_in), as librosa does.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"resample expects a mono 1-D signal, got shape {wav.shape}")
    if sr_in == sr_out:
        return wav.copy()
    out = soxr.resample(wav, sr_in, sr_out, quality=SOXR_QUALITY)
    n_out = int(math.ceil(len(wav) * sr_out / sr_in))
    if len(out) < n_out:
        out = np.pad(out, (0, n_out - len(out)))
    return np.asarray(out[:n_out], dtype=np.float32)


def trim_silence(
    wav: np.ndarray,
    top_db: float = 20.0,
    frame_length: int = TRIM_FRAME_LENGTH,
    hop_length: int = TRIM_HOP_LENGTH,
) -> tuple[int, int]:
    """Sample interval [start, end) kept by `librosa.effects.trim(wav, top_db)`.

    Frames are centred (zero padding), their RMS is compared in dB with the loudest
    frame's; leading and trailing frames quieter than `top_db` below it are dropped.
    Returns (0, 0) when every frame is silent. Float32 arithmetic mirrors librosa's so
    that frames on the threshold fall the same way.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"trim_silence expects a mono 1-D signal, got shape {wav.shape}")
    half = frame_length // 2
    padded = np.pad(wav, (half, half), mode="constant")
    if len(padded) < frame_length:
        return 0, 0
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=-1))
    power = np.square(rms)
    ref_power = np.max(rms) ** 2
    db = 10.0 * np.log10(np.maximum(_DB_FLOOR_POWER, power))
    db -= 10.0 * np.log10(np.maximum(_DB_FLOOR_POWER, ref_power))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    start = int(loud[0]) * hop_length
    end = min(len(wav), (int(loud[-1]) + 1) * hop_length)
    return start, end


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_start_mel = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
    linear = hz / _SLANEY_HZ_PER_MEL
    with np.errstate(divide="ignore"):
        logpart = log_start_mel + np.log(hz / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_START_HZ, logpart, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_start_mel = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
    linear = _SLANEY_HZ_PER_MEL * mel
    logpart = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mel - log_start_mel))
    return np.where(mel >= log_start_mel, logpart, linear)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters (n_mels, 1 + n_fft // 2), float32.

    The same matrix as `librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin, fmax)`
    (htk=False, norm="slaney"): computed in float64, rounded to float32 before and after
    the area normalisation, as librosa does.
    """
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges_mel = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (weights * area_norm[:, None]).astype(np.float32)
