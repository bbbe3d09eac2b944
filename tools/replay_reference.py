"""Parity stages c (S3 speech tokenizer) and d (S3Gen reference embedding).

Each function recomputes a golden file's outputs from that file's own inputs, so unseen
references, lengths and token counts replay the same way. Tolerances follow the parity README.
"""
from __future__ import annotations

import numpy as np
import torch

from models.audio import resample
from models.s3gen.campplus import CAMPPlus
from models.constants import S3_SR, S3GEN_SR
from models.s3gen.mel import s3gen_mel

LOG_MEL_ATOL = 1e-4  # tokenizer log-mel and S3Gen mel: float32-exact computations
XVECTOR_ATOL = 1e-4
# Kaldi log energies near the float-eps floor (log 1.19e-7) move by up to ~1e-3 with float32
# rounding alone (README d); everywhere else the fbank agrees to 1e-4.
FBANK_ATOL = 2e-3
# An FSQ pre-activation within float error of a rounding boundary may flip one token (README c).
TOKEN_MISMATCHES = 1

# soxr 'HQ' (ours, and librosa's) and torchaudio's Hann-windowed sinc (the reference's embed_ref)
# have different anti-aliasing filters: on the kit's three voices they differ by up to 0.04 in
# 7-8 kHz content, but by only 3e-4 to 4.5e-4 below 4 kHz. Compare that band, with ~2x margin.
RESAMPLE_BAND_HZ = 4_000.0
RESAMPLE_BAND_ATOL = 1e-3
# The T3 prompt is librosa's soxr resampling of the same clip: ours matches it to the bit.
SOXR_ATOL = 1e-6
# Tokens of our soxr-resampled reference against the golden (torchaudio-resampled) ones. The
# fake tokenizer is chaotic (white noise of RMS 1e-4 flips 10 % of tokens): soxr flips 19-29 %
# on the kit's voices, a linear-interpolation resampler 57 %, an unrelated signal ~98 %.
# Half the tokens therefore separates "differently filtered" from "wrong signal".
SOXR_TOKEN_FRACTION = 0.5


def _wav(data, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(data[name], dtype=np.float32))


def _band_limited(wav: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(np.asarray(wav, dtype=np.float64))
    spec[np.fft.rfftfreq(len(wav), 1.0 / sample_rate) >= cutoff_hz] = 0.0
    return np.fft.irfft(spec, len(wav))


def replay_s3_tokenizer(data, ctx, report) -> None:
    tokenizer = ctx.s3gen_part("tokenizer")
    for prefix, max_len in (("t3_prompt", int(data["t3_prompt_max_len"])), ("gen_ref", None)):
        wav16 = _wav(data, f"{prefix}_wav_16k")
        report.close(f"{prefix}_log_mel", tokenizer.log_mel(wav16), data[f"{prefix}_log_mel"], LOG_MEL_ATOL)
        tokens = tokenizer.tokenize(wav16, max_len=max_len)
        report.equal(f"{prefix}_tokens", tokens, data[f"{prefix}_tokens"], TOKEN_MISMATCHES)

    # Our resampler on the file's 24 kHz reference: the T3 prompt is librosa's (= soxr) resampling
    # of the same clip, so its first seconds must match exactly; gen_ref_wav_16k is torchaudio's.
    ours = resample(np.asarray(data["gen_ref_wav_24k"]), S3GEN_SR, S3_SR)
    t3_prompt = np.asarray(data["t3_prompt_wav_16k"])
    report.close("t3_prompt_wav_16k (our soxr)", ours[: len(t3_prompt)], t3_prompt, SOXR_ATOL)
    golden = np.asarray(data["gen_ref_wav_16k"])
    if ours.shape != golden.shape:
        report.fail("gen_ref_wav_16k (our soxr)", f"length {len(ours)} != golden {len(golden)}")
        return
    report.close(
        f"gen_ref_wav_16k (soxr, < {RESAMPLE_BAND_HZ / 1000:g} kHz)",
        _band_limited(ours, S3_SR, RESAMPLE_BAND_HZ),
        _band_limited(golden, S3_SR, RESAMPLE_BAND_HZ),
        RESAMPLE_BAND_ATOL,
    )


def replay_reference_embedding(data, ctx, report) -> None:
    wav16, wav24 = _wav(data, "ref_wav_16k"), _wav(data, "ref_wav_24k")
    speaker_encoder = ctx.s3gen_part("speaker_encoder")
    report.close("campplus_fbank", CAMPPlus.features(wav16), data["campplus_fbank"], FBANK_ATOL)
    report.close("xvector", speaker_encoder.embed(wav16), data["xvector"], XVECTOR_ATOL)

    prompt_feat = s3gen_mel(wav24)
    report.close("prompt_feat", prompt_feat, data["prompt_feat"], LOG_MEL_ATOL)

    # Spec §7.1: tokens are cut to mel frames // 2 when the clip is not a multiple of 40 ms
    # (a cut only; fewer tokens stay as they are).
    n_tokens = prompt_feat.shape[0] // 2
    tokenizer = ctx.s3gen_part("tokenizer")
    tokens = tokenizer.tokenize(wav16)[:n_tokens]
    report.equal("prompt_token", tokens, data["prompt_token"], TOKEN_MISMATCHES)
    report.equal("prompt_token_len", [len(tokens)], np.asarray(data["prompt_token_len"]).reshape(-1))

    wav16_soxr = torch.from_numpy(resample(wav24.numpy(), S3GEN_SR, S3_SR))
    soxr_tokens = tokenizer.tokenize(wav16_soxr)[:n_tokens]
    budget = int(SOXR_TOKEN_FRACTION * len(data["prompt_token"]))
    report.equal("prompt_token (our soxr 16 kHz)", soxr_tokens, data["prompt_token"], budget)
