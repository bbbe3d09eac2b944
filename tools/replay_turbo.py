"""Replay of the Chatterbox-Turbo parity stages (a, b, e, f, g, h, j; i is the English HiFT replay).

Every input comes from the golden file itself, so unseen cases replay the same way. Where a
stage has several steps, a step is fed the golden output of the step before it when the
README says that input is only reproducible to a tolerance (resampling), so a mismatch
points at one step. Tolerances: parity/turbo/README.md, "Tolerances at a glance".
"""
from __future__ import annotations

import numpy as np
import torch

from models.audio import resample
from models.loudness import loudness_gain
from models.s3gen.cfm import linear_t_span
from models.s3gen.estimator import timestep_embedding
from models.s3gen.mel import s3gen_mel
from models.constants import S3_SR, S3GEN_SR, STOP_SPEECH_TOKEN
from models.s3gen.s3gen import DEC_COND_LEN
from models.t3 import T3Cond
from models.t3_turbo import TurboKVCache, TurboSamplingParams, s3gen_tokens
from models.turbo_text import turbo_punc_norm
from tools.replay_reference import RESAMPLE_BAND_ATOL, RESAMPLE_BAND_HZ, _band_limited

ATOL_EXACT = 1e-4       # float32 rounding only ("exact" in the README; relative above |x| = 1)
ATOL_LOGITS = 2e-3      # speech logits after 24 GPT-2 blocks
ATOL_FLOW = 1e-3        # estimator output and mel after the Euler steps
LOUDNESS_ATOL = 1e-4    # LU
GAIN_RTOL = 1e-5
SOXR_ATOL = 1e-6        # our soxr HQ is librosa's soxr_hq: bit-for-bit up to float32 rounding
TOKEN_MISMATCHES = 1    # an FSQ pre-activation within float error of a rounding boundary


def _shortest(value) -> float:
    """A float32 golden scalar as the decimal the reference was called with (0.95, not 0.949999988)."""
    return float(np.format_float_positional(np.float32(value)))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _close_rel(report, name: str, actual, expected, atol: float) -> None:
    """Max abs error, relative above |x| = 1 (the README's "exact" convention)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.maximum(1.0, np.abs(expected))
    report.close(name, np.asarray(actual, dtype=np.float64) / scale, expected / scale, atol)


def _cond(data) -> T3Cond:
    return T3Cond(torch.from_numpy(np.asarray(data["speaker_emb"], dtype=np.float32)),
                  torch.from_numpy(np.asarray(data["cond_prompt_speech_tokens"], dtype=np.int64)))


# --- a: conditionals -----------------------------------------------------------------

def replay_conditionals(data, ctx, report) -> None:
    ref = np.asarray(data["ref_wav_24k"], dtype=np.float32)
    target = float(data["target_lufs"])
    gain = loudness_gain(ref, S3GEN_SR, target)
    report.close("loudness_lufs", gain.loudness_lufs, float(data["loudness_lufs"]), LOUDNESS_ATOL)
    golden_gain = float(data["gain_linear"])
    report.close("gain_linear (relative)", gain.gain_linear / golden_gain, 1.0, GAIN_RTOL)
    normalised = ref * np.float32(gain.gain_linear) if gain.applied else ref

    wav_16k = resample(normalised, S3GEN_SR, S3_SR)
    report.close("wav_16k (our soxr)", wav_16k, data["wav_16k"], SOXR_ATOL)
    golden_16k = np.asarray(data["wav_16k"], dtype=np.float32)

    ve = ctx.voice_encoder
    report.close("speaker_emb", _np(ve.embed_utterance(golden_16k))[None], data["speaker_emb"], ATOL_EXACT)
    report.close("speaker_emb (from our wav_16k)", _np(ve.embed_utterance(wav_16k))[None], data["speaker_emb"],
                 ATOL_EXACT)

    tokenizer = ctx.s3gen_part("tokenizer")
    enc_len, max_len = int(data["enc_cond_len"]), int(data["t3_prompt_max_len"])
    prompt = tokenizer.tokenize(torch.from_numpy(golden_16k[:enc_len]), max_len=max_len)
    report.equal("t3_prompt_tokens", prompt.numpy(), data["t3_prompt_tokens"], TOKEN_MISMATCHES)

    # S3Gen's reference: the first 10 s at 24 kHz; the reference resamples it with torchaudio.
    dec_len = int(data["dec_cond_len"])
    ref24 = normalised[:dec_len]
    ours_16k = resample(ref24, S3GEN_SR, S3_SR)
    golden_gen_16k = np.asarray(data["gen_ref_wav_16k"], dtype=np.float32)
    if ours_16k.shape != golden_gen_16k.shape:
        report.fail("gen_ref_wav_16k", f"length {len(ours_16k)} != golden {len(golden_gen_16k)}")
    else:
        report.close(f"gen_ref_wav_16k (soxr, < {RESAMPLE_BAND_HZ / 1000:g} kHz)",
                     _band_limited(ours_16k, S3_SR, RESAMPLE_BAND_HZ),
                     _band_limited(golden_gen_16k, S3_SR, RESAMPLE_BAND_HZ), RESAMPLE_BAND_ATOL)
    gen16 = torch.from_numpy(golden_gen_16k)
    report.close("xvector", _np(ctx.s3gen_part("speaker_encoder").embed(gen16)), data["xvector"], ATOL_EXACT)
    prompt_feat = s3gen_mel(torch.from_numpy(np.ascontiguousarray(ref24)))
    report.close("prompt_feat", _np(prompt_feat), data["prompt_feat"], ATOL_EXACT)
    prompt_token = tokenizer.tokenize(gen16)[: prompt_feat.shape[0] // 2]
    report.equal("prompt_token", prompt_token.numpy(), data["prompt_token"], TOKEN_MISMATCHES)
    report.equal("prompt_token_len", [len(prompt_token)], np.asarray(data["prompt_token_len"]).reshape(-1))


# --- b: text ------------------------------------------------------------------------

def replay_text(data, ctx, report) -> None:
    tok = ctx.turbo_tokenizer
    golden_normalized = str(data["normalized_text"])
    report.equal("normalized_text", np.array(turbo_punc_norm(str(data["raw_text"]))), np.array(golden_normalized))
    ids = tok.encode(golden_normalized)
    report.equal("token_ids", np.array(ids, dtype=np.int64), data["token_ids"])
    golden_ids = [int(i) for i in data["token_ids"]]
    if "token_strings" in data.files:
        report.equal("token_strings", np.array(tok.token_strings(golden_ids), dtype=str), data["token_strings"])
    if "decoded" in data.files:
        report.equal("decoded", np.array(tok.decode(golden_ids)), np.array(str(data["decoded"])))


# --- e, f, g: T3-Turbo ----------------------------------------------------------------

def replay_conditioning(data, ctx, report) -> None:
    t3 = ctx.turbo_t3
    cond = _cond(data)
    spkr = t3.cond_enc.spkr_enc(cond.speaker_emb)
    report.close("spkr_proj", _np(spkr[0]), data["spkr_proj"], ATOL_EXACT)
    cond_emb = t3.conditioning(cond)
    report.equal("len_cond", np.array(cond_emb.shape[1]), data["len_cond"])
    report.close("cond_emb", _np(cond_emb[0]), data["cond_emb"], ATOL_EXACT)


def replay_teacher_forced(data, ctx, report) -> None:
    t3 = ctx.turbo_t3
    embeds = t3.build_inputs(_cond(data), torch.from_numpy(data["text_token_ids"]),
                             torch.from_numpy(data["speech_tokens"]))
    len_cond, start = int(data["len_cond"]), int(data["speech_start"])
    report.equal("speech_start", np.array(len_cond + len(data["text_token_ids"])), data["speech_start"])
    report.close("input_embeds_tail", _np(embeds[0, len_cond:]), data["input_embeds_tail"], ATOL_EXACT)

    hidden = t3(embeds)[:, start:]
    _close_rel(report, "final_hidden_speech", _np(hidden[0]), data["final_hidden_speech"], ATOL_EXACT)
    logits = _np(t3.speech_head(hidden)[0])
    report.close("speech_logits", logits, data["speech_logits"], ATOL_LOGITS)
    report.equal("argmax_per_position", logits.argmax(-1), data["speech_logits"].argmax(-1))

    # The decoding path: the same sequence through our KV-cached blocks.
    cache = TurboKVCache(t3, embeds.shape[1])
    cached = t3.forward_cached(embeds, cache)[:, start:]
    report.close("speech_logits (KV-cached path)", _np(t3.speech_head(cached)[0]), data["speech_logits"],
                 ATOL_LOGITS)


def replay_decoding(data, ctx, report) -> None:
    t3 = ctx.turbo_t3
    sampled = "exp_draws" in data.files
    params = TurboSamplingParams(
        temperature=_shortest(data["temperature"]), top_k=int(data["top_k"]), top_p=_shortest(data["top_p"]),
        repetition_penalty=_shortest(data["repetition_penalty"]), max_gen_len=int(data["max_gen_len"]),
        greedy=not sampled)
    draws = None
    if sampled:
        recorded = torch.from_numpy(np.asarray(data["exp_draws"], dtype=np.float32))
        draws = lambda step: recorded[step][None]  # noqa: E731
    step_logits: list[np.ndarray] = []
    tokens = list(t3.stream_tokens(_cond(data), torch.from_numpy(data["text_token_ids"]), params, draws=draws,
                                   on_logits=lambda step, logits: step_logits.append(_np(logits[0]))))
    expected = np.asarray(data["tokens_generated"], dtype=np.int64)
    ours = np.asarray(tokens, dtype=np.int64)

    # Logits are comparable up to and including the first step whose history differs.
    n_common = min(len(ours), len(expected))
    differ = np.nonzero(ours[:n_common] != expected[:n_common])[0]
    n_logits = int(differ[0]) + 1 if len(differ) else n_common
    if len(differ):
        top2 = np.sort(data["speech_logits"][int(differ[0])])[-2:]
        print(f"{report.prefix}NOTE  first token mismatch at step {int(differ[0])}: "
              f"golden top-2 gap of the raw logits {top2[1] - top2[0]:.3e}")
    report.equal("tokens_generated", ours, expected)
    returned = ours[:-1] if len(ours) and ours[-1] == STOP_SPEECH_TOKEN else ours
    report.equal("tokens (final stop removed)", returned, np.asarray(data["tokens"], dtype=np.int64))
    hit_eos = bool(len(ours) > 1 and ours[-1] == STOP_SPEECH_TOKEN)
    report.equal("hit_eos", np.asarray(hit_eos), np.asarray(bool(data["hit_eos"])))
    report.close("speech_logits", np.stack(step_logits[:n_logits]), data["speech_logits"][:n_logits], ATOL_LOGITS)


# --- h: meanflow flow ---------------------------------------------------------------

def replay_flow(data, ctx, report) -> None:
    flow = ctx.s3gen_part("flow")
    estimator = flow.decoder.estimator
    speech_tokens = torch.from_numpy(data["speech_tokens"]).long()
    prompt_token = torch.from_numpy(data["prompt_token"]).long()
    prompt_feat = torch.from_numpy(data["prompt_feat"]).float()
    xvector = torch.from_numpy(data["xvector"]).float()
    noise = torch.from_numpy(data["noise"]).float()[None]
    n_timesteps = int(data["n_timesteps"])
    report.equal("meanflow decoder", np.array(flow.config.meanflow), np.asarray(bool(data["meanflow"])))

    with torch.inference_mode():
        inputs = flow.prepare(speech_tokens, prompt_token, prompt_feat, xvector)
        report.close("encoder_out", _np(inputs.encoder_out[0]), data["encoder_out"], ATOL_EXACT)
        report.close("mu", _np(inputs.mu[0]), data["mu"], ATOL_EXACT)
        report.close("spks", _np(inputs.spks[0]), data["spks"], ATOL_EXACT)
        report.close("cond", _np(inputs.cond[0]), data["cond"], ATOL_EXACT)
        report.close("mask", _np(inputs.mask[0]), data["mask"], 0.0)
        t_span = linear_t_span(n_timesteps)
        report.close("t_span", _np(t_span), data["t_span"], 0.0)

        if "torch_seed" in data.files:
            # The reference draws its start after torch.manual_seed(torch_seed); ours from a
            # generator seeded alike must give the same numbers.
            generator = torch.Generator().manual_seed(int(data["torch_seed"]))
            seeded = flow.initial_noise(inputs.mu.shape[-1], speech_tokens.numel(), generator)
            report.close("noise (seeded draw)", _np(seeded[0]), data["noise"], 0.0)

        c = estimator.config
        x = noise
        t_embs, r_embs, mixed, velocities = [], [], [], []
        for t, r in zip(t_span[:-1], t_span[1:]):
            t_embs.append(_np(estimator.time_mlp(timestep_embedding(t.reshape(1), c.in_channels, c.time_scale))[0]))
            r_embs.append(_np(estimator.time_mlp(timestep_embedding(r.reshape(1), c.in_channels, c.time_scale))[0]))
            mixed.append(_np(estimator.time_embedding(t.reshape(1), r.reshape(1))[0]))
            v = estimator(x, inputs.mask, inputs.mu, t.reshape(1), inputs.spks, inputs.cond, r=r.reshape(1))
            velocities.append(_np(v[0]))
            x = x + (r - t) * v
        report.close("t_emb", np.stack(t_embs), data["t_emb"], ATOL_EXACT)
        report.close("r_emb", np.stack(r_embs), data["r_emb"], ATOL_EXACT)
        report.close("time_mixer_out", np.stack(mixed), data["time_mixer_out"], ATOL_EXACT)
        report.close("estimator_out", np.stack(velocities), data["estimator_out"], ATOL_FLOW)

    mel = flow.inference(speech_tokens, prompt_token, prompt_feat, xvector, noise=noise, n_timesteps=n_timesteps)
    report.close("mel", _np(mel), data["mel"], ATOL_FLOW)


# --- j: generate() end to end -----------------------------------------------------------

def replay_e2e(data, ctx, report) -> None:
    """Deterministic parts exactly; then the whole run with a generator seeded like the
    reference's global RNG (same draws in the same order), compared token for token and,
    with the reference's torchaudio-resampled S3Gen prompt, sample for sample."""
    import torchaudio

    from models.s3gen.s3gen import ReferenceEmbedding
    from models.tts_turbo import MIN_REFERENCE_SECONDS, T3_PROMPT_SECONDS, T3_PROMPT_TOKENS

    tok = ctx.turbo_tokenizer
    normalized = turbo_punc_norm(str(data["text"]))
    report.equal("normalized_text", np.array(normalized), data["normalized_text"])
    t3_tokens = torch.from_numpy(np.asarray(data["t3_tokens"], dtype=np.int64))
    report.equal("s3gen_tokens (filter + 3 silence)", s3gen_tokens(t3_tokens).numpy(), data["s3gen_tokens"])

    ref = np.asarray(data["ref_wav_24k"], dtype=np.float32)
    if len(ref) / S3GEN_SR <= MIN_REFERENCE_SECONDS:
        report.fail("reference length", "the golden reference is not longer than 5 s")
        return
    if bool(data["norm_loudness"]):
        gain = loudness_gain(ref, S3GEN_SR)
        ref = ref * np.float32(gain.gain_linear) if gain.applied else ref
    wav16 = resample(ref, S3GEN_SR, S3_SR)
    s3gen = ctx.s3gen
    prompt = s3gen.tokenizer.tokenize(torch.from_numpy(wav16[: T3_PROMPT_SECONDS * S3_SR]), max_len=T3_PROMPT_TOKENS)
    cond = T3Cond(ctx.voice_encoder.embed_utterance(wav16)[None], prompt[None])

    generator = torch.Generator().manual_seed(int(data["torch_seed"]))
    params = TurboSamplingParams(
        temperature=_shortest(data["temperature"]), top_k=int(data["top_k"]), top_p=_shortest(data["top_p"]),
        repetition_penalty=_shortest(data["repetition_penalty"]))
    drawn = ctx.turbo_t3.generate(cond, tok.encode(normalized), params, generator)
    report.equal("t3_tokens (seeded generator)", drawn.numpy(), data["t3_tokens"])

    # S3Gen's reference embedding as the reference makes it (torchaudio's resampler).
    ref24 = torch.from_numpy(np.ascontiguousarray(ref[:DEC_COND_LEN]))
    gen16 = torchaudio.transforms.Resample(S3GEN_SR, S3_SR)(ref24)
    prompt_feat = s3gen_mel(ref24)
    gen = ReferenceEmbedding(s3gen.tokenizer.tokenize(gen16)[: prompt_feat.shape[0] // 2], prompt_feat,
                             s3gen.speaker_encoder.embed(gen16))
    report.equal("n_cfm_timesteps", np.array(s3gen.n_timesteps), data["n_cfm_timesteps"])
    wav = _np(s3gen.inference(s3gen_tokens(drawn), gen, generator=generator))
    expected = np.asarray(data["wav_before_watermark"])
    report.equal("wav length", np.array(len(wav)), np.array(len(expected)))
    if wav.shape == expected.shape:
        report.close("wav_before_watermark (seeded)", wav, expected, ATOL_FLOW)
