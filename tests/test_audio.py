"""Audio helpers against the librosa calls the reference makes, and the golden trim interval."""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from models.audio import mel_filterbank, resample, trim_silence


def _bursts(n: int, seed: int) -> np.ndarray:
    """Random-envelope noise with exact silence at the start and near-silence at the end."""
    rng = np.random.default_rng(seed)
    knots = np.sort(rng.integers(0, n, 6))
    envelope = np.interp(np.arange(n), knots, rng.uniform(0, 1, 6) ** 4)
    wav = rng.standard_normal(n) * envelope * rng.uniform(1e-3, 1)
    wav[:2_000] = 0.0
    wav[-4_000:] *= 1e-3
    return wav.astype(np.float32)


@pytest.mark.parametrize("sr_in, sr_out", [(24_000, 16_000), (44_100, 16_000), (16_000, 24_000), (22_050, 24_000)])
@pytest.mark.parametrize("n", [1, 101, 24_001])
def test_resample_matches_librosa_soxr_hq(sr_in, sr_out, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ours = resample(x, sr_in, sr_out)
    ref = librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq")
    assert ours.dtype == np.float32
    assert len(ours) == int(np.ceil(n * sr_out / sr_in))
    np.testing.assert_array_equal(ours, ref)


def test_resample_same_rate_is_a_copy():
    x = np.arange(10, dtype=np.float32)
    y = resample(x, 16_000, 16_000)
    np.testing.assert_array_equal(x, y)
    assert y is not x


def test_resample_golden(parity_dir):
    for path in sorted((parity_dir / "golden").glob("a_*.npz")):
        data = np.load(path)
        np.testing.assert_allclose(resample(data["wav_24k"], 24_000, 16_000), data["wav_16k"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("seed", range(12))
def test_trim_matches_librosa(seed):
    n = int(np.random.default_rng(seed).integers(10_000, 40_000))
    wav = _bursts(n, seed)
    start, end = trim_silence(wav, top_db=20)
    assert (start, end) == tuple(int(i) for i in librosa.effects.trim(wav, top_db=20)[1])
    assert 0 < start < end < n  # both edges really trimmed


def test_trim_other_threshold_and_empty():
    wav = _bursts(20_000, 99)
    assert trim_silence(wav, top_db=40) == tuple(int(i) for i in librosa.effects.trim(wav, top_db=40)[1])
    assert trim_silence(np.zeros(0, np.float32)) == (0, 0)


def test_trim_golden(parity_dir):
    for path in sorted((parity_dir / "golden").glob("a_*.npz")):
        data = np.load(path)
        assert trim_silence(data["wav_16k"], top_db=20) == tuple(int(i) for i in data["trim_start_end"])


@pytest.mark.parametrize("sr, n_fft, n_mels, fmax", [(16_000, 400, 40, 8_000), (24_000, 1920, 80, 8_000),
                                                       (16_000, 400, 128, None)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, 0.0, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax)
    assert ours.dtype == np.float32 and ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)
