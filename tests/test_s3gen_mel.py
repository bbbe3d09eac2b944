"""S3Gen's 24 kHz log-mel against an explicit-framing reference, its frame count, batching,
and the `prompt_feat` of every `d_*` golden (no checkpoint needed)."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from models.s3gen.mel import HOP, s3gen_mel


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """Reflect pad 720, frame by hand, Hann window, rfft in float64, Slaney mel, ln."""
    padded = np.pad(wav.astype(np.float64), 720, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 1920)[::480]
    window = torch.hann_window(1920, dtype=torch.float64).numpy()
    spec = np.fft.rfft(frames * window, axis=-1)
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = magnitude @ librosa.filters.mel(sr=24_000, n_fft=1920, n_mels=80, fmin=0, fmax=8000).T.astype(np.float64)
    return np.log(np.maximum(mel, 1e-5))


def _voice_like(n: int, seed: int) -> np.ndarray:
    """Harmonics of a gliding 120-180 Hz pitch plus noise, with a silent gap (exercises the floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 24_000
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24_000
    wav = sum(np.sin(k * phase) / k for k in range(1, 30)) * 0.2 + 0.01 * rng.standard_normal(n)
    wav[n // 3 : n // 3 + 4_800] = 0.0
    return wav.astype(np.float32)


@pytest.mark.parametrize("n", [24_000, 36_000, 48_123])
def test_matches_explicit_framing(n):
    wav = _voice_like(n, n)
    ours = s3gen_mel(torch.from_numpy(wav))
    assert ours.shape == (n // HOP, 80)
    np.testing.assert_allclose(ours.numpy(), _reference_mel(wav), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seconds", [1.0, 3.0, 10.0])
def test_frame_count_is_fifty_per_second(seconds):
    n = int(seconds * 24_000)
    assert s3gen_mel(torch.zeros(n)).shape == (n // 480, 80)
    assert n // 480 == 50 * seconds


def test_silence_hits_the_log_floor():
    mel = s3gen_mel(torch.zeros(4_800))  # magnitude sqrt(1e-9) per bin stays under the 1e-5 floor
    torch.testing.assert_close(mel, torch.full_like(mel, float(np.log(1e-5))))


def test_batch_rows_equal_single_rows():
    wavs = torch.from_numpy(np.stack([_voice_like(24_000, 1), _voice_like(24_000, 2)]))
    batch = s3gen_mel(wavs)
    assert batch.shape == (2, 50, 80)
    for row, wav in zip(batch, wavs):
        torch.testing.assert_close(row, s3gen_mel(wav), atol=1e-5, rtol=0)


def test_prompt_feat_goldens(parity_dir):
    files = sorted((parity_dir / "golden").glob("d_*.npz"))
    assert files
    for path in files:
        data = np.load(path)
        ours = s3gen_mel(torch.from_numpy(data["ref_wav_24k"]))
        np.testing.assert_allclose(ours.numpy(), data["prompt_feat"], atol=1e-4, rtol=0)
