"""HiFT vocoder: DFT kernels vs torch.stft/istft, weight-norm folding, the sine source
formula, lengths, seeding, the fade-in, checkpoint key layout, and parity on every
`i_*` golden of the kit."""
import json
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from models.s3gen.hift import (FADE_SAMPLES, HiFTConfig, HiFTGenerator, RealSTFT, SineSource, Snake,
                               SourceDraws, apply_fade_in, fade_in_envelope)

N_FFT, HOP = 16, 4
TINY = HiFTConfig(base_channels=16, f0_channels=8)  # real rates and kernels, few channels


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def tiny() -> HiFTGenerator:
    torch.manual_seed(0)
    return HiFTGenerator(TINY).eval()


def _torch_spec(x: torch.Tensor) -> torch.Tensor:
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=torch.hann_window(N_FFT, periodic=True), return_complex=True)
    return torch.cat([spec.real, spec.imag], dim=1)


def test_stft_matches_torch_stft():
    x = torch.randn(2, 403, generator=torch.Generator().manual_seed(1))
    ours = RealSTFT(N_FFT, HOP).stft(x)
    assert ours.shape == (2, N_FFT + 2, 403 // HOP + 1)
    torch.testing.assert_close(ours, _torch_spec(x), atol=1e-5, rtol=0)


def test_istft_matches_torch_istft():
    g = torch.Generator().manual_seed(2)
    real, imag = torch.randn(2, N_FFT // 2 + 1, 101, generator=g), torch.randn(2, N_FFT // 2 + 1, 101, generator=g)
    # imag at DC and Nyquist is nonzero here on purpose: both must ignore it
    expected = torch.istft(torch.complex(real, imag), N_FFT, HOP, N_FFT, window=torch.hann_window(N_FFT))
    ours = RealSTFT(N_FFT, HOP).istft(torch.cat([real, imag], dim=1))
    assert ours.shape == expected.shape == (2, HOP * 100)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_stft_istft_round_trip():
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(3))
    fourier = RealSTFT(N_FFT, HOP)
    torch.testing.assert_close(fourier.istft(fourier.stft(x)), x, atol=1e-5, rtol=0)


def test_snake_formula():
    snake = Snake(5)
    snake.alpha.copy_(torch.tensor([0.0, 0.3, 1.0, 2.5, -0.7]))
    x = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(4))
    a = snake.alpha.double().numpy()[:, None]
    xd = x.double().numpy()
    expected = xd + np.sin(a * xd) ** 2 / (a + 1e-9)
    np.testing.assert_allclose(snake(x).numpy(), expected, atol=1e-5)


def test_fold_weight_norm_keeps_effective_weights():
    model = HiFTGenerator(TINY).eval()
    g = torch.Generator().manual_seed(5)
    wrapped = {name: m for name, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
    expected = {}
    for name, module in wrapped.items():
        p = module.parametrizations.weight
        p.original1.copy_(torch.randn(p.original1.shape, generator=g))
        p.original0.copy_(torch.rand(p.original0.shape, generator=g) + 0.5)  # g != ||v||
        v = p.original1.double()
        norm = v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))  # over all dims but 0
        expected[name] = (p.original0.double() * v / norm).float()
    assert isinstance(wrapped["ups.0"], torch.nn.ConvTranspose1d)
    # ConvTranspose1d's dim 0 is its input-channel axis: that is where g lives
    assert wrapped["ups.0"].parametrizations.weight.original0.shape == (TINY.base_channels, 1, 1)
    mel = torch.randn(1, 80, 6, generator=g)
    draws = SourceDraws.sample(1, TINY.nb_harmonics + 1, 6 * 480, torch.Generator().manual_seed(6))
    before = model(mel, draws).conv_post_out
    model.fold_weight_norm()
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for name, module in wrapped.items():
        torch.testing.assert_close(module.weight, expected[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(mel, draws).conv_post_out, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("frames", [1, 7, 100])
def test_lengths(tiny, frames):
    mel = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(frames))
    draws = SourceDraws.sample(1, TINY.nb_harmonics + 1, 480 * frames, torch.Generator().manual_seed(0))
    out = tiny(mel, draws)
    assert out.f0.shape == (1, frames)
    assert out.source.shape == out.uv.shape == out.wav.shape == (1, 480 * frames)
    assert out.conv_post_out.shape == (1, N_FFT + 2, 120 * frames + 1)
    assert tiny.inference(mel[0], generator=torch.Generator().manual_seed(0)).shape == (480 * frames,)


def test_same_seed_same_wav(tiny):
    mel = torch.randn(80, 20, generator=torch.Generator().manual_seed(7))
    a = tiny.inference(mel, generator=torch.Generator().manual_seed(11))
    b = tiny.inference(mel, generator=torch.Generator().manual_seed(11))
    c = tiny.inference(mel, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.abs().max() <= TINY.audio_limit


def test_injected_draws_replace_the_generator(tiny):
    mel = torch.randn(80, 5, generator=torch.Generator().manual_seed(8))
    draws = SourceDraws.sample(1, TINY.nb_harmonics + 1, 480 * 5, torch.Generator().manual_seed(13))
    via_draws = tiny.inference(mel, draws=draws)
    via_seed = tiny.inference(mel, generator=torch.Generator().manual_seed(13))
    assert torch.equal(via_draws, via_seed)
    # the fundamental's start phase is forced to 0, so its draw has no effect
    shifted = SourceDraws(draws.phases + torch.tensor([1.0] + [0.0] * TINY.nb_harmonics), draws.noise)
    assert torch.equal(tiny.inference(mel, draws=shifted), via_draws)


def test_sine_source_formula():
    source = SineSource(TINY)
    h, length = TINY.nb_harmonics + 1, 960
    f0 = torch.cat([torch.full((length // 2,), 150.0), torch.full((length // 2,), 5.0)])[None]  # voiced, unvoiced
    g = torch.Generator().manual_seed(9)
    draws = SourceDraws(torch.rand(h, generator=g) * 6 - 3, torch.randn(h, length, generator=g))
    out, uv = source(f0, draws)
    f = f0[0].double().numpy()
    uv_np = (f > TINY.nsf_voiced_threshold).astype(np.float64)
    phases = draws.phases.double().numpy().copy()
    phases[0] = 0.0
    harm = np.arange(1, h + 1)[:, None]
    sines = TINY.nsf_alpha * np.sin(2 * np.pi * np.cumsum(f * harm / TINY.sampling_rate, axis=1) + phases[:, None])
    waves = sines * uv_np + (uv_np * TINY.nsf_sigma + (1 - uv_np) * TINY.nsf_alpha / 3) * draws.noise.double().numpy()
    w, b = source.l_linear.weight.double().numpy(), source.l_linear.bias.double().numpy()
    expected = np.tanh(w @ waves + b[:, None])[0]
    np.testing.assert_array_equal(uv[0].numpy(), uv_np)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


def test_fade_in():
    envelope = fade_in_envelope()
    assert envelope.shape == (2 * FADE_SAMPLES,)
    wav = torch.full((3000,), 0.5)
    faded = apply_fade_in(wav)
    assert torch.all(faded[:FADE_SAMPLES] == 0)
    rise = faded[FADE_SAMPLES:2 * FADE_SAMPLES]
    assert torch.all(rise[1:] >= rise[:-1]) and rise[0] == 0 and rise[-1] == pytest.approx(0.5)
    assert torch.equal(faded[2 * FADE_SAMPLES:], wav[2 * FADE_SAMPLES:])
    assert torch.equal(apply_fade_in(torch.ones(100)), torch.zeros(100))  # shorter than the fade


def test_state_dict_matches_manifest(parity_dir):
    manifest = json.loads((parity_dir / "manifest" / "s3gen.json").read_text())
    prefix = "mel2wav."
    expected = {t["key"][len(prefix):]: tuple(t["shape"]) for t in manifest["tensors"] if t["key"].startswith(prefix)}
    actual = {k: tuple(v.shape) for k, v in HiFTGenerator().state_dict().items()}
    assert actual == expected


def test_parity_goldens(fake_ckpt, parity_dir):
    from conftest import replay_goldens
    from tools.parity import Context

    replay_goldens(parity_dir, "i", Context(fake_ckpt))
