"""Parity stages of voice conversion (`../parity/vc/`): source tokens (c), target reference (d)
and the whole `generate()` (j). The flow (h) and vocoder (i) files use the English replays.

Every quantity is recomputed from the file's own inputs through the code the converter runs
(`models.vc`), so unseen sources and targets (longer than 10 s, other rates) replay the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from models.s3gen.campplus import CAMPPlus
from models.s3gen.mel import S3GEN_SR, s3gen_mel
from models.vc import VoiceConverter, load_source, target_16k
from tools.replay_reference import FBANK_ATOL, LOG_MEL_ATOL, TOKEN_MISMATCHES, XVECTOR_ATOL, SOXR_ATOL

# torchaudio's sinc resampler is what the reference runs on the target: same code, same numbers.
TORCHAUDIO_ATOL = 1e-6
# Whole conversion with the file's seed: the flow's mel is within 1e-3 (README h) and HiFT's
# phase accumulates float32 error over the clip (README i: 1e-3); the audio is compared at 2e-3.
WAV_ATOL = 2e-3
# Perth resamples with librosa and runs a small network: ~1e-5 between installs; 1e-3 is loose.
WATERMARK_ATOL = 1e-3


def _f32(data, name: str) -> np.ndarray:
    return np.asarray(data[name], dtype=np.float32)


def replay_source_tokens(data, ctx, report) -> None:
    """c: the source at 16 kHz (librosa soxr from its own rate), its log-mel and all its tokens."""
    wav16 = load_source((S3GEN_SR, _f32(data, "source_wav_24k")))
    golden16 = _f32(data, "source_wav_16k")
    if wav16.shape != golden16.shape:
        report.fail("source_wav_16k (our soxr)", f"length {len(wav16)} != golden {len(golden16)}")
    else:
        report.close("source_wav_16k (our soxr)", wav16, golden16, SOXR_ATOL)
    tokenizer = ctx.s3gen_part("tokenizer")
    x16 = torch.from_numpy(golden16)
    report.close("source log_mel", tokenizer.log_mel(x16), data["log_mel"], LOG_MEL_ATOL)
    tokens = tokenizer.tokenize(x16)  # the whole source: no max_len, no trimming
    report.equal("source speech_tokens", tokens, data["speech_tokens"], TOKEN_MISMATCHES)
    report.equal("source speech_token_len", [len(tokens)], np.asarray(data["speech_token_len"]).reshape(-1))


def replay_target(data, ctx, report) -> None:
    """d: the target's first `dec_cond_len` samples -> x-vector, prompt tokens and prompt mel."""
    kept = _f32(data, "target_wav_24k")[: int(data["dec_cond_len"])]
    wav16 = target_16k(kept)
    golden16 = _f32(data, "ref_wav_16k")
    if wav16.shape != golden16.shape:
        report.fail("ref_wav_16k (torchaudio sinc)", f"length {len(wav16)} != golden {len(golden16)}")
    else:
        report.close("ref_wav_16k (torchaudio sinc)", wav16, golden16, TORCHAUDIO_ATOL)
    x16 = torch.from_numpy(golden16)
    report.close("target campplus_fbank", CAMPPlus.features(x16), data["campplus_fbank"], FBANK_ATOL)
    report.close("target xvector", ctx.s3gen_part("speaker_encoder").embed(x16), data["xvector"], XVECTOR_ATOL)
    prompt_feat = s3gen_mel(torch.from_numpy(kept))
    report.close("target prompt_feat", prompt_feat, data["prompt_feat"], LOG_MEL_ATOL)
    tokens = ctx.s3gen_part("tokenizer").tokenize(x16)[: prompt_feat.shape[0] // 2]
    report.equal("target prompt_token", tokens, data["prompt_token"], TOKEN_MISMATCHES)
    report.equal("target prompt_token_len", [len(tokens)], np.asarray(data["prompt_token_len"]).reshape(-1))


def replay_vc_generate(data, ctx, report) -> None:
    """j: the converter end to end with the file's seed (our RNG use equals torch.manual_seed's).

    A source of up to `whole_max_tokens` goes through `VoiceConverter.stream` itself (one S3Gen
    call, the reference computation); a longer one is converted in windows by design, so then
    the reference computation is checked with one direct S3Gen call and the converter for its length.
    """
    from models.watermark import Watermarker

    converter = VoiceConverter(ctx.s3gen, watermarker=None)
    seed = int(data["torch_seed"])
    wav16 = load_source((S3GEN_SR, _f32(data, "source_wav_24k")))
    tokens = converter.source_tokens(wav16)
    golden_tokens = torch.from_numpy(np.asarray(data["s3gen_tokens"])).long()
    report.equal("j.s3gen_tokens", tokens, golden_tokens, TOKEN_MISMATCHES)
    target = converter.embed_target(_f32(data, "target_wav_24k"))
    expected = _f32(data, "wav_before_watermark")
    same_tokens = tokens.shape == golden_tokens.shape and bool(torch.equal(tokens, golden_tokens))
    if same_tokens and len(tokens) <= converter.config.whole_max_tokens:
        wav = converter.convert(wav16, target, seed=seed)
        report.close("j.wav_before_watermark (converter, seeded)", wav, expected, WAV_ATOL)
    else:  # a token at a rounding boundary flipped, or a long source: the reference computation directly
        wav = ctx.s3gen.inference(golden_tokens, target, generator=torch.Generator().manual_seed(seed)).numpy()
        report.close("j.wav_before_watermark (S3Gen, seeded)", wav, expected, WAV_ATOL)
        if len(tokens) > converter.config.whole_max_tokens:
            windowed = converter.convert(wav16, target, seed=seed)
            report.equal("j.wav length (windowed converter)", np.array(len(windowed)), np.array(len(expected)))
    marker = Watermarker()
    if not marker.available:
        report.skip("j.wav (watermark)", marker.reason)
        return
    report.close("j.wav (Perth on our audio)", marker.apply(wav, S3GEN_SR), data["wav"], WAV_ATOL)
