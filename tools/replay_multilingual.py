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
from tools.replay_t3 import ATOL_EXACT, ATOL_LOGITS, _cond, _np, replay_conditioning, replay_teacher_forced

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
