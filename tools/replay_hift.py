"""Parity stage i: HiFT vocoder (mel -> 24 kHz waveform) and the output fade-in.

The file's recorded random draws (harmonic start phases, sine noise) are injected, so the
whole chain is deterministic; each piece is computed from our own previous piece (only the
mel comes from the file). Tolerances, from the parity README:
  f0            atol 1e-4 after dividing both by the golden's max |f0| (Hz values are ~100s)
  uv            exact
  source, conv_post_out, wav_before_fade, wav   atol 1e-3 (float32 phase accumulation
                over L samples; conv_post_out's golden is itself ~5e-4 from float64)
  trim_fade     atol 1e-6
"""
from __future__ import annotations

import numpy as np
import torch

from models.s3gen.hift import SourceDraws, apply_fade_in, fade_in_envelope

F0_REL_TOL = 1e-4
SIGNAL_TOL = 1e-3
FADE_TOL = 1e-6


def replay_hift(data, ctx, report) -> None:
    hift = ctx.s3gen_part("mel2wav")
    mel = torch.from_numpy(data["mel"]).float()[None]  # (1, 80, T)
    draws = SourceDraws(torch.from_numpy(data["phase_uniform_draw"]).float(),
                        torch.from_numpy(data["sine_noise_randn"]).float())
    with torch.inference_mode():
        out = hift(mel, draws)
        wav = apply_fade_in(out.wav[0])

    f0_golden = data["f0"]
    scale = max(float(np.abs(f0_golden).max()), 1.0)
    report.close("f0 / max|f0|", out.f0[0].numpy() / scale, f0_golden / scale, F0_REL_TOL)
    report.equal("uv", out.uv[0].numpy(), data["uv"])
    report.close("source", out.source[0].numpy(), data["source"], SIGNAL_TOL)
    if "conv_post_out" in data.files:  # the VC files leave it out (same weights and code)
        report.close("conv_post_out", out.conv_post_out[0].numpy(), data["conv_post_out"], SIGNAL_TOL)
    report.close("wav_before_fade", out.wav[0].numpy(), data["wav_before_fade"], SIGNAL_TOL)
    report.close("trim_fade", fade_in_envelope().numpy(), data["trim_fade"], FADE_TOL)
    report.close("wav", wav.numpy(), data["wav"], SIGNAL_TOL)

    # Our sampler consumes a generator exactly as the reference consumes torch's global RNG
    # after `torch.manual_seed(torch_seed)`, so the same seed must give the recorded draws.
    if "torch_seed" in data.files:
        generator = torch.Generator().manual_seed(int(data["torch_seed"]))
        length = data["sine_noise_randn"].shape[-1]
        seeded = SourceDraws.sample(1, data["phase_uniform_draw"].shape[0], length, generator)
        report.close("seeded phase draw", seeded.phases[0].numpy(), data["phase_uniform_draw"], 0.0)
        report.close("seeded noise draw", seeded.noise[0].numpy(), data["sine_noise_randn"], 0.0)
