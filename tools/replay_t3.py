"""Replay of the T3 parity stages: e (conditioning), f (teacher forced), g (greedy decoding).

Every input comes from the golden file itself (voice, text, tokens, exaggeration, CFG
and sampling parameters), so unseen cases replay the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from models.sampling import SamplingParams, apply_repetition_penalty
from models.constants import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
from models.t3 import T3Cond

ATOL_EXACT = 1e-4  # embeddings and the conditioning encoder: float rounding only
ATOL_LOGITS = 2e-3  # after 30 layers: attention order and matmul blocking differ


def exaggeration_field(value: float) -> str:
    """Golden field name of the conditioning at one exaggeration: 0.5 -> cond_emb_exag_0p50."""
    return f"cond_emb_exag_{float(value):.2f}".replace(".", "p")


def _cond(data, exaggeration: float) -> T3Cond:
    return T3Cond(
        speaker_emb=torch.from_numpy(np.asarray(data["speaker_emb"], dtype=np.float32)),
        cond_prompt_speech_tokens=torch.from_numpy(np.asarray(data["cond_prompt_speech_tokens"], dtype=np.int64)),
        emotion_adv=float(exaggeration),
    )


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def replay_conditioning(data, ctx, report) -> None:
    t3 = ctx.t3
    cond = _cond(data, float(data["exaggerations"][0]))
    prompt = t3.prompt_embeds(cond.cond_prompt_speech_tokens)
    report.close("cond_prompt_speech_emb", _np(prompt[0]), data["cond_prompt_speech_emb"], ATOL_EXACT)
    report.close("perceiver_out", _np(t3.cond_enc.perceiver(prompt)[0]), data["perceiver_out"], ATOL_EXACT)
    spkr = t3.cond_enc.spkr_enc(cond.speaker_emb.to(t3.device, t3.dtype))
    report.close("spkr_proj", _np(spkr[0]), data["spkr_proj"], ATOL_EXACT)
    for value in np.asarray(data["exaggerations"]).reshape(-1):
        name = exaggeration_field(value)
        if name not in data.files:
            report.fail(name, f"golden has no field {name} for exaggeration {float(value)}")
            continue
        cond_emb = t3.conditioning(_cond(data, float(value)))
        report.close(name, _np(cond_emb[0]), data[name], ATOL_EXACT)


def replay_teacher_forced(data, ctx, report) -> None:
    t3 = ctx.t3
    expected_embeds = data["input_embeds"]
    cfg_weight = float(data["cfg_weight"])
    with_cfg_row = expected_embeds.shape[0] == 2
    embeds = t3.build_inputs(
        _cond(data, float(data["exaggeration"])),
        torch.from_numpy(data["text_token_ids"]),
        with_cfg_row=with_cfg_row,
        speech_tokens=torch.from_numpy(data["speech_tokens"]),
    )
    report.close("input_embeds", _np(embeds), expected_embeds, ATOL_EXACT)

    start = int(data["speech_start"])
    hidden = t3(embeds)[:, start:]
    logits = t3.speech_head(hidden)
    report.close("final_hidden_speech", _np(hidden), data["final_hidden_speech"], ATOL_LOGITS)
    report.close("speech_logits", _np(logits), data["speech_logits"], ATOL_LOGITS)

    def cfg_combine(rows: np.ndarray) -> np.ndarray:
        if rows.shape[0] == 1:
            return rows[0]
        return rows[0] + cfg_weight * (rows[0] - rows[1])

    ours = cfg_combine(_np(logits).astype(np.float64))
    golden = cfg_combine(data["speech_logits"].astype(np.float64))
    report.equal("cfg_argmax_per_position", ours.argmax(-1), golden.argmax(-1))


def replay_greedy(data, ctx, report) -> None:
    t3 = ctx.t3
    params = SamplingParams(
        temperature=float(data["temperature"]),
        repetition_penalty=float(data["repetition_penalty"]),
        min_p=float(data["min_p"]),
        top_p=float(data["top_p"]),
        cfg_weight=float(data["cfg_weight"]),
        max_new_tokens=int(data["max_new_tokens"]),
        greedy=True,
    )
    step_logits: list[np.ndarray] = []
    tokens = list(t3.stream_tokens(
        _cond(data, float(data["exaggeration"])),
        torch.from_numpy(data["text_token_ids"]),
        params,
        on_logits=lambda step, logits: step_logits.append(_np(logits[0])),
    ))
    expected = np.asarray(data["tokens"], dtype=np.int64)
    ours = np.asarray(tokens, dtype=np.int64)

    # Logits are comparable up to and including the first step whose history differs.
    n_common = min(len(ours), len(expected))
    differ = np.nonzero(ours[:n_common] != expected[:n_common])[0]
    n_logits = int(differ[0]) + 1 if len(differ) else n_common
    if len(differ):
        step = int(differ[0])
        history = np.concatenate([[START_SPEECH_TOKEN], expected[:step]])
        penalised = apply_repetition_penalty(
            torch.from_numpy(data["cfg_logits"][step : step + 1].astype(np.float64)),
            torch.from_numpy(history)[None],
            params.repetition_penalty,
        )[0].numpy()
        top2 = np.sort(penalised)[-2:]
        print(f"{report.prefix}NOTE  first token mismatch at step {step}: "
              f"golden top-2 gap of penalised logits {top2[1] - top2[0]:.3e}")

    report.equal("tokens", ours, expected)
    hit_eos = bool(tokens) and tokens[-1] == STOP_SPEECH_TOKEN
    report.equal("hit_eos", np.asarray(hit_eos), np.asarray(bool(data["hit_eos"])))
    report.close("cfg_logits", np.stack(step_logits[:n_logits]), data["cfg_logits"][:n_logits], ATOL_LOGITS)
