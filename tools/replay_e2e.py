"""Stage j: the full `generate()` golden. Its tokens and samples depend on torch's RNG
stream, which we do not reproduce, so only the deterministic parts are compared:
text normalisation, token filtering, and the audio length S3Gen makes from the tokens."""
from __future__ import annotations

import numpy as np
import torch

from models.t3 import drop_invalid_tokens
from models.text_tokenizer import punc_norm


def replay_e2e(data, ctx, report) -> None:
    report.equal("j.normalized_text", np.array(punc_norm(str(data["text"]))), data["normalized_text"])
    tokens = drop_invalid_tokens(torch.from_numpy(data["t3_tokens_raw"]))
    report.equal("j.s3gen_tokens (token filtering)", tokens.numpy(), data["s3gen_tokens"])

    s3gen = ctx.s3gen
    ref = s3gen.embed_ref(data["ref_wav_24k"])
    generator = torch.Generator().manual_seed(int(data["torch_seed"]))
    wav = s3gen.inference(torch.from_numpy(data["s3gen_tokens"]), ref, generator=generator).numpy()
    expected = data["wav_before_watermark"]
    report.equal("j.wav length (RNG-free)", np.array(len(wav)), np.array(len(expected)))
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    report.equal("j.wav finite and within +-0.99", np.array(bool(np.all(np.isfinite(wav)) and peak <= 0.99)),
                 np.array(True))
