"""Replay of parity stage h: S3Gen flow (tokens -> mel) against a golden file.

Every quantity is recomputed from the file's own inputs (speech_tokens, prompt_token,
prompt_feat, xvector, noise, n_timesteps, inference_cfg_rate); the file's intermediates
are only compared against.
"""
from __future__ import annotations

import numpy as np
import torch

from models.s3gen.cfm import cosine_t_span

# Tolerances (max abs error). The README calls the intermediates exact to ~1e-4; the
# encoder passes 10 conformer layers and the estimator 14 ResNet + 56 transformer blocks
# in float32, so we allow 1e-4 there; t_span is a handful of float32 ops; the mel after
# 10 Euler steps is compared at the README's 1e-3.
ATOL_T_SPAN = 1e-6
ATOL_EXACT = 1e-4
ATOL_MEL = 1e-3


def replay_flow(data: np.lib.npyio.NpzFile, ctx, report) -> None:
    flow = ctx.s3gen_part("flow")
    speech_tokens = torch.from_numpy(data["speech_tokens"]).long()
    prompt_token = torch.from_numpy(data["prompt_token"]).long()
    prompt_feat = torch.from_numpy(data["prompt_feat"]).float()
    xvector = torch.from_numpy(data["xvector"]).float()
    noise = torch.from_numpy(data["noise"]).float()
    n_timesteps = int(data["n_timesteps"])
    cfg_rate = float(data["inference_cfg_rate"])

    with torch.inference_mode():
        inputs = flow.prepare(speech_tokens, prompt_token, prompt_feat, xvector)
        if "encoder_out" in data.files:  # the VC files leave it out (same weights and code)
            report.close("flow encoder_out", inputs.encoder_out[0], data["encoder_out"], ATOL_EXACT)
        report.close("flow mu", inputs.mu[0], data["mu"], ATOL_EXACT)
        report.close("flow spks", inputs.spks[0], data["spks"], ATOL_EXACT)
        report.close("flow cond", inputs.cond[0], data["cond"], ATOL_EXACT)
        if "mask" in data.files:
            report.close("flow mask", inputs.mask[0], data["mask"], 0.0)

        t_span = cosine_t_span(n_timesteps)
        report.close("flow t_span", t_span, data["t_span"], ATOL_T_SPAN)

        # One packed estimator call at t_span[0] on the file's noise: row 0 conditional, row 1 CFG.
        x0 = noise[None]
        packed = flow.decoder.cfg_inputs(x0, t_span[0], inputs.mu, inputs.spks, inputs.cond, inputs.mask)
        report.close("flow estimator_out_step0", flow.decoder.estimator(**packed), data["estimator_out_step0"],
                     ATOL_EXACT)

    mel = flow.inference(speech_tokens, prompt_token, prompt_feat, xvector, noise=noise,
                         n_timesteps=n_timesteps, cfg_rate=cfg_rate)
    report.close("flow mel", mel, data["mel"], ATOL_MEL)
