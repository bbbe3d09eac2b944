"""Replays of the multilingual parity goldens (kit folder multilingual/): b e f g j.

Every input comes from the golden file; each step of the text front-end is fed the golden
output of the step before it, so a mismatch points at one step. The shared modules (voice
encoder, S3Gen) come from the multilingual checkpoint's `.pt` files.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from models.multilingual.text import (SENTENCE_ENDERS, CangjieTable, MultilingualTokenizer, check_language,
                                      load_kana_converter)
from models.text_tokenizer import SPACE_TOKEN, punc_norm
from tools.replay_reference import SOXR_TOKEN_FRACTION
from tools.replay_t3 import ATOL_EXACT, ATOL_LOGITS, _cond, _np, replay_conditioning, replay_teacher_forced

# The x-vector of a soxr-resampled voice against the reference's torchaudio-resampled one: the
# two filters differ only above ~4 kHz (tools/replay_reference.py); the kit's voice moves it by 1.5e-4.
XVECTOR_SOXR_ATOL = 1e-3

__all__ = ["replay_text", "replay_conditioning", "replay_teacher_forced_mtl", "replay_decoding", "replay_e2e"]


def _tokenizer(ctx, data, cangjie: bool = True, kana: bool | None = None, segmenter=None) -> MultilingualTokenizer:
    """The front-end in the package state the golden was made with (`optional_packages`)."""
    packages = json.loads(str(data["optional_packages"])) if "optional_packages" in data.files else {}
    if kana is None:
        kana = packages.get("pykakasi") is not None
    converter = None
    if kana:
        converter, why = load_kana_converter()
        if converter is None:
            raise RuntimeError(why)
    base = ctx.text_tokenizer
    table = base.cangjie if cangjie else CangjieTable(())
    return MultilingualTokenizer(base.bpe, table, segmenter=segmenter, kana=converter)


def _same(report, name: str, actual, expected) -> None:
    report.equal(name, np.array(actual), np.array(expected))


def replay_text(data, ctx, report) -> None:
    raw_text = str(data["raw_text"])
    language = check_language(str(data["language_id_given"]))
    _same(report, "language_id", language, str(data["language_id"]))
    if raw_text.split():
        _same(report, "normalized_text", punc_norm(raw_text, SENTENCE_ENDERS), str(data["normalized_text"]))
    else:
        report.skip("normalized_text", "blank input: we raise ValueError where the reference speaks a canned line")

    tok = _tokenizer(ctx, data)
    text = tok.encode_text(str(data["normalized_text"]), language)
    _same(report, "preprocessed_text", text.preprocessed_text, str(data["preprocessed_text"]))
    _same(report, "language_text", tok.language_step(str(data["preprocessed_text"]), language),
          str(data["language_text"]))
    _same(report, "tagged_text", text.tagged_text, str(data["tagged_text"]))
    _same(report, "tokenizer_input", text.tagged_text.replace(" ", SPACE_TOKEN), str(data["tokenizer_input"]))
    report.equal("token_ids", np.array(text.ids, dtype=np.int64), data["token_ids"])
    report.equal("token_ids_with_sot_eot", np.array(tok.with_start_stop(text.ids), dtype=np.int64),
                 data["token_ids_with_sot_eot"])
    golden_ids = [int(i) for i in data["token_ids"]]
    report.equal("token_strings", np.array(tok.token_strings(golden_ids), dtype=str), data["token_strings"])
    _same(report, "decoded", tok.decode(golden_ids), str(data["decoded"]))
    n_unk = int(np.sum(data["token_ids"] == tok.bpe.unk_id))
    report.equal("[UNK] characters reported", np.array(len(text.unknown_characters)), np.array(n_unk))
    preprocessed = str(data["preprocessed_text"])

    if "token_ids_no_pykakasi" in data.files:
        plain = _tokenizer(ctx, data, kana=False)
        _same(report, "language_text_no_pykakasi", plain.language_step(preprocessed, language),
              str(data["language_text_no_pykakasi"]))
        report.equal("token_ids_no_pykakasi", np.array(plain.encode_text(str(data["normalized_text"]),
                                                                           language).ids, dtype=np.int64),
                     data["token_ids_no_pykakasi"])
    if "token_ids_segmented" in data.files:
        words = [str(w) for w in data["segmenter_words"]]

        def segmenter(text: str) -> list[str]:  # what pkuseg.cut() returned for this text
            if text != preprocessed:
                raise ValueError("segmenter called on other text than the golden's")
            return words

        segmented = _tokenizer(ctx, data, segmenter=segmenter)
        _same(report, "segmented_text", " ".join(words), str(data["segmented_text"]))
        _same(report, "language_text_segmented", segmented.language_step(preprocessed, language),
              str(data["language_text_segmented"]))
        report.equal("token_ids_segmented", np.array(segmented.encode_text(str(data["normalized_text"]),
                                                                           language).ids, dtype=np.int64),
                     data["token_ids_segmented"])
    if "token_ids_no_cangjie" in data.files:
        empty = _tokenizer(ctx, data, cangjie=False)
        _same(report, "language_text_no_cangjie", empty.language_step(preprocessed, language),
              str(data["language_text_no_cangjie"]))
        report.equal("token_ids_no_cangjie", np.array(empty.encode_text(str(data["normalized_text"]),
                                                                         language).ids, dtype=np.int64),
                     data["token_ids_no_cangjie"])


def replay_teacher_forced_mtl(data, ctx, report) -> None:
    """The English teacher-forced replay on the multilingual T3, plus the analyzer heads' attention."""
    from models.multilingual.alignment import ALIGNED_HEADS, AttentionProbe

    report.equal("aligned_heads", np.array(ALIGNED_HEADS, dtype=np.int64), data["aligned_heads"])
    start, len_cond, len_text = (int(data[k]) for k in ("speech_start", "len_cond", "len_text"))
    with AttentionProbe(ctx.t3, first_row=start) as probe:
        replay_teacher_forced(data, ctx, report)
        attn = probe.take()[:, :, len_cond:len_cond + len_text]
    report.close("aligned_attn_text", _np(attn), data["aligned_attn_text"], ATOL_EXACT)


def _inverse_cdf(draws: np.ndarray):
    """The golden's replacement of the multinomial: smallest i with cumsum(probs)[i] > u * sum."""
    def sample(step: int, probs: torch.Tensor) -> int:
        cdf = np.cumsum(probs[0].double().cpu().numpy())
        return int(np.searchsorted(cdf, float(draws[step]) * cdf[-1], side="right"))
    return sample


def replay_decoding(data, ctx, report) -> None:
    from models.multilingual.alignment import AlignmentAnalyzer
    from models.multilingual.decoding import stream_tokens
    from models.sampling import SamplingParams
    from models.t3 import STOP_SPEECH_TOKEN

    t3 = ctx.t3
    sampled = "uniform_draws" in data.files
    params = SamplingParams(
        temperature=float(data["temperature"]), repetition_penalty=float(data["repetition_penalty"]),
        min_p=float(data["min_p"]), top_p=float(data["top_p"]), cfg_weight=float(data["cfg_weight"]),
        max_new_tokens=int(data["max_new_tokens"]), greedy=not sampled)
    text = torch.from_numpy(data["text_token_ids"])
    report.equal("analyzer_text_slice", np.array([t3.config.len_cond, t3.config.len_cond + len(text)]),
                 data["analyzer_text_slice"])
    analyzer = AlignmentAnalyzer(len(text), STOP_SPEECH_TOKEN)
    steps = []
    tokens = list(stream_tokens(t3, _cond(data, float(data["exaggeration"])), text, params,
                                sampler=_inverse_cdf(data["uniform_draws"]) if sampled else None,
                                on_step=steps.append, analyzer=analyzer))
    expected = np.asarray(data["tokens"], dtype=np.int64)
    ours = np.asarray(tokens, dtype=np.int64)
    n_common = min(len(ours), len(expected))
    differ = np.nonzero(ours[:n_common] != expected[:n_common])[0]
    n = int(differ[0]) + 1 if len(differ) else n_common  # steps with the golden's history
    if len(differ):
        print(f"{report.prefix}NOTE  first token mismatch at step {int(differ[0])}")
    report.equal("tokens", ours, expected)
    report.equal("hit_eos", np.asarray(bool(tokens) and tokens[-1] == STOP_SPEECH_TOKEN),
                 np.asarray(bool(data["hit_eos"])))
    report.close("cfg_logits", np.stack([_np(s.cfg_logits[0]) for s in steps[:n]]), data["cfg_logits"][:n],
                 ATOL_LOGITS)
    report.equal("kept_token_counts", np.array([int((s.probs > 0).sum()) for s in steps[:n]]),
                 data["kept_token_counts"][:n])
    if sampled:
        report.close("sampled_token_prob", np.array([float(s.probs[0, s.token]) for s in steps[:n]]),
                     data["sampled_token_prob"][:n], ATOL_EXACT)

    history = analyzer.history[:n]
    fields = {
        "analyzer_cur_text_posn": [h.cur_text_position for h in history],
        "analyzer_text_position": [h.text_position for h in history],
        "analyzer_started": [h.started for h in history],
        "analyzer_complete": [h.complete for h in history],
        "analyzer_long_tail": [h.long_tail for h in history],
        "analyzer_alignment_repetition": [h.alignment_repetition for h in history],
        "analyzer_token_repetition": [h.token_repetition for h in history],
        "analyzer_eos_suppressed": [h.stop_suppressed for h in history],
        "analyzer_forced_eos": [h.stop_forced for h in history],
        "analyzer_rows_per_step": [r.shape[1] for r in analyzer.head_rows[:n]],
        "analyzer_last_token": [int(t) for t in np.concatenate([[6561], ours])[:n]],
    }
    for name, values in fields.items():
        report.equal(name, np.array(values), np.asarray(data[name])[:n])
    rows = sum(r.shape[1] for r in analyzer.head_rows[:n])
    report.close("analyzer_alignment", analyzer.alignment[:rows].numpy(), data["analyzer_alignment"][:rows],
                 ATOL_EXACT)
    head_rows = torch.cat(analyzer.head_rows[:n], dim=1).transpose(0, 1).numpy()  # (rows, heads, S)
    report.close("analyzer_head_attn_text", head_rows, data["analyzer_head_attn_text"][:rows], ATOL_EXACT)


def replay_e2e(data, ctx, report) -> None:
    """Deterministic parts of `generate()`: text, the voice from ve.pt/s3gen.pt, token filtering,
    the analyzer along the reference's own sampled tokens, and the audio length."""
    from models.multilingual.alignment import AlignmentAnalyzer
    from models.multilingual.decoding import stream_tokens
    from models.multilingual.tts import SAMPLE_RATE, prepare_conditionals
    from models.sampling import SamplingParams
    from models.t3 import STOP_SPEECH_TOKEN, drop_invalid_tokens

    language = check_language(str(data["language_id"]))
    _same(report, "j.normalized_text", punc_norm(str(data["text"]), SENTENCE_ENDERS), str(data["normalized_text"]))
    tok = _tokenizer(ctx, data, kana=language == "ja")
    ids = tok.with_start_stop(tok.encode_text(str(data["normalized_text"]), language).ids)
    report.equal("j.text_token_ids", np.array(ids, dtype=np.int64), data["text_token_ids"])

    conds = prepare_conditionals(ctx.voice_encoder, ctx.s3gen, (SAMPLE_RATE, data["ref_wav_24k"]),
                                 float(data["exaggeration"]))
    report.close("j.conds_speaker_emb", _np(conds.t3.speaker_emb), data["conds_speaker_emb"], ATOL_EXACT)
    # As stage c: a token may sit within float error of an FSQ rounding boundary.
    report.equal("j.conds_cond_prompt_speech_tokens", conds.t3.cond_prompt_speech_tokens.cpu().numpy(),
                 data["conds_cond_prompt_speech_tokens"], allowed_mismatches=1)
    # S3Gen's 16 kHz copy of the voice: the reference resamples with torchaudio's sinc, we with soxr
    # (tools/replay_reference.py): tokens within the soxr budget, the x-vector within its spread.
    budget = int(SOXR_TOKEN_FRACTION * len(data["conds_prompt_token"]))
    report.equal("j.conds_prompt_token (our soxr 16 kHz)", conds.gen.prompt_token.cpu().numpy(),
                 data["conds_prompt_token"], allowed_mismatches=budget)
    report.equal("j.conds_prompt_token_len", np.array([conds.gen.prompt_token.numel()]),
                 data["conds_prompt_token_len"])
    report.close("j.conds_prompt_feat", _np(conds.gen.prompt_feat), data["conds_prompt_feat"], ATOL_EXACT)
    report.close("j.conds_xvector (our soxr 16 kHz)", _np(conds.gen.embedding.reshape(-1)), data["conds_xvector"],
                 XVECTOR_SOXR_ATOL)

    raw = np.asarray(data["t3_tokens_raw"], dtype=np.int64)
    tokens = drop_invalid_tokens(torch.from_numpy(raw))
    report.equal("j.s3gen_tokens (token filtering)", tokens.numpy(), data["s3gen_tokens"])

    # The analyzer along the reference's own (RNG-dependent) tokens, fed back step by step.
    cond = _cond({"speaker_emb": data["conds_speaker_emb"],
                  "cond_prompt_speech_tokens": data["conds_cond_prompt_speech_tokens"]}, float(data["exaggeration"]))
    params = SamplingParams(temperature=float(data["temperature"]), repetition_penalty=float(data["repetition_penalty"]),
                            min_p=float(data["min_p"]), top_p=float(data["top_p"]),
                            cfg_weight=float(data["cfg_weight"]), max_new_tokens=len(raw))
    text = torch.from_numpy(np.asarray(data["text_token_ids"], dtype=np.int64))
    analyzer = AlignmentAnalyzer(len(text), STOP_SPEECH_TOKEN)
    list(stream_tokens(ctx.t3, cond, text, params, sampler=lambda step, _probs: int(raw[step]), analyzer=analyzer))
    history = analyzer.history
    report.equal("j.analyzer_cur_text_posn", np.array([h.cur_text_position for h in history]),
                 data["analyzer_cur_text_posn"])
    report.equal("j.analyzer_eos_suppressed", np.array([h.stop_suppressed for h in history]),
                 data["analyzer_eos_suppressed"])
    report.equal("j.analyzer_forced_eos", np.array([h.stop_forced for h in history]), data["analyzer_forced_eos"])

    gen = conds.gen
    generator = torch.Generator().manual_seed(int(data["torch_seed"]))
    wav = ctx.s3gen.inference(tokens, gen, generator=generator).numpy()
    expected = data["wav_before_watermark"]
    report.equal("j.wav length (RNG-free)", np.array(len(wav)), np.array(len(expected)))
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    report.equal("j.wav finite and within +-0.99", np.array(bool(np.all(np.isfinite(wav)) and peak <= 0.99)),
                 np.array(True))
