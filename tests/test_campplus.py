"""CAMPPlus: Kaldi fbank against torchaudio's, CAM context pooling against a naive loop,
checkpoint layout, and parity with every `d_*` golden (fbank, x-vector, prompt mel and tokens)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from models.s3gen.campplus import CAMLayer, CAMPPlus, FbankConfig, kaldi_fbank
from conftest import replay_goldens
from tools.parity import Context


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    import s3tokenizer

    wav, sr = sf.read(Path(s3tokenizer.__file__).parent / "assets" / "BAC009S0764W0121.wav", dtype="float32")
    assert sr == FbankConfig().sample_rate
    return torch.from_numpy(wav)


@pytest.fixture(scope="module")
def random_model() -> CAMPPlus:
    torch.manual_seed(0)
    model = CAMPPlus()
    # Kaiming convs (upstream's init) keep the deep stack input-sensitive; with PyTorch's default
    # init every input maps to nearly the same x-vector. Running stats are made non-trivial.
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            torch.nn.init.kaiming_normal_(m.weight)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _oracle(wav: torch.Tensor) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(wav[None], num_mel_bins=80)


def test_fbank_matches_torchaudio_on_speech(speech):
    ours = kaldi_fbank(speech)
    assert ours.shape == (1 + (len(speech) - 400) // 160, 80)
    torch.testing.assert_close(ours, _oracle(speech), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n, scale", [(400, 0.5), (16_161, 1.0), (23_999, 1e-3), (8_000, 1e-6)])
def test_fbank_matches_torchaudio_on_noise(n, scale):
    wav = scale * torch.randn(n, generator=torch.Generator().manual_seed(n))
    ours = kaldi_fbank(wav)
    assert ours.shape[0] == 1 + (n - 400) // 160
    torch.testing.assert_close(ours, _oracle(wav), atol=1e-5, rtol=0)


def test_features_remove_the_per_bin_mean(speech):
    feats = CAMPPlus.features(speech)
    torch.testing.assert_close(feats.mean(0), torch.zeros(80), atol=1e-5, rtol=0)
    torch.testing.assert_close(feats, kaldi_fbank(speech) - kaldi_fbank(speech).mean(0), atol=1e-6, rtol=0)


def test_fbank_goldens_without_checkpoint(parity_dir):
    files = sorted((parity_dir / "golden").glob("d_*.npz"))
    assert files
    for path in files:
        data = np.load(path)
        feats = CAMPPlus.features(torch.from_numpy(data["ref_wav_16k"]))
        np.testing.assert_allclose(feats.numpy(), data["campplus_fbank"], atol=2e-3, rtol=0)


@pytest.mark.parametrize("frames", [37, 100, 250])
def test_cam_context_against_naive_segments(frames):
    torch.manual_seed(frames)
    layer = CAMLayer(8, 4, kernel_size=3, dilation=2, segment_frames=100).eval()
    x = torch.randn(2, 8, frames)
    context = torch.empty_like(x)
    for t in range(frames):  # utterance mean + mean of this frame's 100-frame segment
        start = t // 100 * 100
        context[..., t] = x.mean(-1) + x[..., start:start + 100].mean(-1)
    gate = torch.sigmoid(layer.linear2(torch.relu(layer.linear1(context))))
    expected = layer.linear_local(x) * gate
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)


def test_keys_and_shapes_match_manifest(parity_dir, random_model):
    manifest = json.loads((parity_dir / "manifest" / "s3gen.json").read_text())
    expected = {t["key"].removeprefix("speaker_encoder."): tuple(t["shape"])
                for t in manifest["tensors"] if t["key"].startswith("speaker_encoder.")}
    assert {k: tuple(v.shape) for k, v in random_model.state_dict().items()} == expected


def test_embedding_shape_and_batch_independence(random_model, speech):
    speech = speech[:32_000]  # 2 s keeps this quick; CAM segments (100 frames) still vary
    one = random_model.embed(speech)
    assert one.shape == (192,) and torch.isfinite(one).all()
    feats = CAMPPlus.features(speech)
    with torch.inference_mode():
        batch = random_model(torch.stack([feats, feats.flip(0)]))
    torch.testing.assert_close(batch[0], one, atol=1e-4, rtol=1e-4)  # batched conv kernels round differently
    assert (batch[1] - one).abs().max() > 0.1  # time order matters (TDNN + CAM), pooling aside


@pytest.mark.slow
def test_parity_goldens(fake_ckpt, parity_dir):
    replay_goldens(parity_dir, "d", Context(fake_ckpt))
