"""S3 speech tokenizer: checkpoint layout, log-mel against a direct computation, token counts,
and parity with every `c_*` golden on the fake checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from models.loading import S3GEN_FILE, S3GEN_TOLERATED_MISSING, CheckpointError, load_strict, read_safetensors
from models.constants import SPEECH_CODEBOOK_SIZE as SPEECH_VOCAB_SIZE
from models.s3gen.tokenizer import S3Tokenizer, S3TokenizerConfig
from conftest import replay_goldens
from tools.parity import Context

SR = 16_000
TINY = S3TokenizerConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=1)  # head dim stays 64 (RoPE table)
BUFFERS = [k.removeprefix("tokenizer.") for k in S3GEN_TOLERATED_MISSING]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    import s3tokenizer

    wav, sr = sf.read(Path(s3tokenizer.__file__).parent / "assets" / "BAC009S0764W0121.wav", dtype="float32")
    assert sr == SR
    return wav


@pytest.fixture(scope="module")
def tiny() -> S3Tokenizer:
    torch.manual_seed(0)
    return S3Tokenizer(TINY).eval()


def _speech_of(speech: np.ndarray, seconds: float) -> torch.Tensor:
    return torch.from_numpy(np.resize(speech, int(seconds * SR)))


def test_keys_and_shapes_match_manifest(parity_dir):
    manifest = json.loads((parity_dir / "manifest" / "s3gen.json").read_text())
    expected = {t["key"].removeprefix("tokenizer."): tuple(t["shape"])
                for t in manifest["tensors"] if t["key"].startswith("tokenizer.")}
    with torch.device("meta"):  # shapes only: no 120M-parameter allocation
        model = S3Tokenizer()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_computed_buffers_equal_the_released_ones(fake_ckpt, tiny):
    for name in BUFFERS:
        stored = read_safetensors(fake_ckpt / S3GEN_FILE, prefix=f"tokenizer.{name}")[""]
        assert torch.equal(getattr(tiny, name), stored), name
    ref = librosa.filters.mel(sr=SR, n_fft=400, n_mels=128)
    np.testing.assert_array_equal(tiny._mel_filters.numpy(), ref)


def test_only_the_two_buffers_may_be_missing(tiny):
    state = {k: v for k, v in tiny.state_dict().items() if k not in BUFFERS}
    load_strict(tiny, state, "tiny", allowed_missing=BUFFERS)
    with pytest.raises(CheckpointError, match="window"):
        load_strict(tiny, state, "tiny", allowed_missing=["_mel_filters"])


def _direct_log_mel(wav: np.ndarray) -> np.ndarray:
    """Whisper-style log-mel by explicit framing and rfft (float64), for comparison."""
    padded = np.pad(wav.astype(np.float64), 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][:-1]  # drop last frame
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = librosa.filters.mel(sr=SR, n_fft=400, n_mels=128).astype(np.float64) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("n", [16_000, 16_079, 40_000])
def test_log_mel_matches_direct_computation(tiny, speech, n):
    wav = np.resize(speech, n)
    ours = tiny.log_mel(torch.from_numpy(wav))
    assert ours.shape == (128, n // 160)
    np.testing.assert_allclose(ours.numpy(), _direct_log_mel(wav), atol=1e-4)


def test_log_mel_floor_is_eight_decades_below_peak(tiny, speech):
    wav = torch.from_numpy(speech.copy())
    wav[: SR // 2] = 0.0  # digital silence would reach log10(1e-10) without the floor
    mel = tiny.log_mel(wav)
    assert torch.isclose(mel.min(), mel.max() - 2.0)  # 8 decades / 4


@pytest.mark.parametrize("seconds, max_len, expected", [(6.0, None, 150), (3.0, None, 75), (10.0, None, 250),
                                                        (6.0, 150, 150), (6.0, 100, 100), (4.0, 150, 100)])
def test_token_counts(tiny, speech, seconds, max_len, expected):
    tokens = tiny.tokenize(_speech_of(speech, seconds), max_len=max_len)
    assert tokens.shape == (expected,)
    assert tokens.dtype == torch.int64


def test_tokens_in_codebook_range_and_deterministic(tiny, speech):
    wav = _speech_of(speech, 4.0)
    tokens = tiny.tokenize(wav)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < SPEECH_VOCAB_SIZE
    assert torch.equal(tokens, tiny.tokenize(wav))


@pytest.mark.slow
def test_parity_goldens(fake_ckpt, parity_dir):
    replay_goldens(parity_dir, "c", Context(fake_ckpt))
