"""Voice encoder: windowing, mel against a torch.stft oracle, embedding invariants, parity on a_*."""
from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch

from models.voice_encoder import VoiceEncoder, VoiceEncoderConfig

SR = 16_000


@pytest.fixture(scope="module")
def ve() -> VoiceEncoder:
    torch.manual_seed(0)
    return VoiceEncoder(VoiceEncoderConfig()).eval()


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts with quiet gaps and silent edges, so trimming and windows have work."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    wav = 0.3 * rng.standard_normal(n) * envelope
    edge = SR // 4
    wav[:edge] = 0.0
    wav[-edge:] *= 1e-4
    return wav.astype(np.float32)


def test_state_dict_matches_manifest(ve, parity_dir):
    manifest = json.loads((parity_dir / "manifest" / "ve.json").read_text())
    expected = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    assert {k: tuple(v.shape) for k, v in ve.state_dict().items()} == expected


def test_frame_step_is_77():
    assert VoiceEncoderConfig().frame_step == 77


@pytest.mark.parametrize("seconds, n_windows", [(2.0, 1), (5.0, 5), (10.0, 12)])
def test_window_counts(ve, seconds, n_windows):
    n_frames = 1 + int(seconds * SR) // ve.config.hop_length
    assert ve.mel(np.zeros(int(seconds * SR), np.float32)).shape == (n_frames, 40)
    assert ve.num_windows(n_frames)[0] == n_windows
    assert ve.partial_windows(torch.zeros(n_frames, 40)).shape == (n_windows, 160, 40)


def test_partial_windows_slice_and_zero_pad(ve):
    mel = torch.arange(1000 * 40, dtype=torch.float32).reshape(1000, 40) + 1
    windows = ve.partial_windows(mel)
    n, target = ve.num_windows(1000)
    assert (n, target) == (12, 1007)  # 7 frames of zero padding at the end
    for i in (0, 5, n - 1):
        start = i * 77
        real = mel[start:start + 160]
        assert torch.equal(windows[i, : len(real)], real)
        assert torch.all(windows[i, len(real):] == 0)
    # Too short for a second window: truncated to one.
    assert torch.equal(ve.partial_windows(mel[:201])[0], mel[:160])


def test_mel_matches_torch_stft_oracle(ve):
    wav = _speechlike(1.3)
    x = torch.from_numpy(wav).double()
    spec = torch.stft(x, 400, hop_length=160, window=torch.hann_window(400, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True)
    basis = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=400, n_mels=40, fmin=0, fmax=8000)).double()
    oracle = (basis @ spec.abs() ** 2).T.numpy()
    ours = ve.mel(wav).numpy()
    assert ours.dtype == np.float32 and ours.shape == oracle.shape
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=1e-5 * oracle.max())


def test_embeddings_are_unit_norm(ve):
    with torch.inference_mode():
        partials = ve.partial_windows(ve.mel(_speechlike(4.0)))
        partial_embeds = ve(partials)
        embed = ve.embed_utterance(_speechlike(4.0))
    assert partial_embeds.shape == (partials.shape[0], 256)
    torch.testing.assert_close(partial_embeds.norm(dim=1), torch.ones(len(partials)))
    assert torch.all(partial_embeds >= 0)  # ReLU before the norm
    assert embed.shape == (256,)
    assert abs(float(embed.norm()) - 1.0) < 1e-6


def test_embed_follows_weight_dtype(ve):
    wav = _speechlike(2.0, seed=1)  # one window keeps float64 fast
    with torch.inference_mode():
        ref = ve.embed_utterance(wav)
        ve64 = VoiceEncoder(ve.config)
        ve64.load_state_dict(ve.state_dict())
        ve64 = ve64.double().eval()
        out = ve64.embed_utterance(wav)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-5, rtol=0)


def test_silent_or_tiny_audio_is_rejected(ve):
    with pytest.raises(ValueError, match="silent"):
        ve.embed_utterance(np.zeros(SR, np.float32))
    with pytest.raises(ValueError, match="short"):
        ve.mel(np.ones(100, np.float32))


def test_parity_a_goldens(parity_dir, fake_ckpt):
    from conftest import replay_goldens
    from tools.parity import Context

    files = sorted((parity_dir / "golden").glob("a_*.npz"))
    report = replay_goldens(parity_dir, "a", Context(fake_ckpt))
    assert report.passed >= 9 * len(files)
