"""Multilingual text front-end: every language, each language step, skipped steps reported,
and parity on every b_* golden of the multilingual kit (no checkpoint needed)."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from models.multilingual import text as mtl_text
from models.multilingual.languages import ACCENT_NOTE, LANGUAGE_IDS, LANGUAGES, get_language
from models.multilingual.text import (CangjieTable, MultilingualTokenizer, cangjie_encode, hangul_to_jamo,
                                      kanji_to_kana)


def test_language_table():
    assert len(LANGUAGE_IDS) == 23 and len(set(LANGUAGE_IDS)) == 23
    assert LANGUAGE_IDS == tuple(sorted(LANGUAGE_IDS))  # the reference's order
    names = [lang.name for lang in LANGUAGES.values()]
    assert len(set(names)) == 23 and all(lang.example.strip() for lang in LANGUAGES.values())
    assert get_language("ZH").name == "Chinese"
    with pytest.raises(ValueError, match="ar, da, de"):
        get_language("xx")
    assert "CFG" in ACCENT_NOTE and "accent" in ACCENT_NOTE


@pytest.mark.parametrize("language", LANGUAGE_IDS)
def test_every_language_example_is_tagged_and_known(mtl_tok, language):
    text = mtl_tok.tokenize(LANGUAGES[language].example, language)
    tag = mtl_tok.bpe.tokenizer.token_to_id(f"[{language}]")
    assert tag is not None and text.ids[0] == tag
    assert text.unknown_characters == ()
    assert text.tagged_text.startswith(f"[{language}]")
    assert text.preprocessed_text == unicodedata.normalize("NFKD", text.normalized_text.lower())


def test_language_ids_are_checked(mtl_tok):
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        mtl_tok.tokenize("Hello.", "xx")
    untagged = mtl_tok.tokenize("Hello.", None)
    assert untagged.language == "" and not untagged.tagged_text.startswith("[")
    assert mtl_tok.tokenize("Hello.", "EN").ids == mtl_tok.tokenize("Hello.", "en").ids
    with pytest.raises(ValueError, match="empty"):
        mtl_tok.tokenize("   ", "fr")


def test_multilingual_punc_norm_accepts_ideographic_enders(mtl_tok):
    assert mtl_tok.tokenize("你好。", "zh").normalized_text == "你好。"
    assert mtl_tok.tokenize("你好", "zh").normalized_text == "你好."
    assert mtl_tok.tokenize("Hola", "es").normalized_text == "Hola."


def test_hangul_decomposition_matches_unicode():
    syllables = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
    assert hangul_to_jamo(syllables) == unicodedata.normalize("NFD", syllables)
    assert hangul_to_jamo("  a\u1100 ") == "a\u1100"


def test_cangjie_codes_index_and_last_code_wins():
    table = CangjieTable(["甲\tab", "乙\tab", "丙\tcd", "乙\tef\tmark", "丁\tab"])
    assert table.tokens("甲") == "[cj_a][cj_b][cj_.]"
    assert table.tokens("丁") == "[cj_a][cj_b][cj_2][cj_.]"  # third glyph under "ab" (乙 counts there too)
    assert table.tokens("乙") == "[cj_e][cj_f][cj_.]"  # listed again later: the last code
    assert table.tokens("x") is None
    assert cangjie_encode("甲,x丙", table) == "[cj_a][cj_b][cj_.],x[cj_c][cj_d][cj_.]"
    assert cangjie_encode("甲丙", table, segmenter=lambda t: list(t)) == "[cj_a][cj_b][cj_.] [cj_c][cj_d][cj_.]"


class FakeKakasi:
    def __init__(self, segments):
        self.segments = segments

    def convert(self, text):
        assert text == "".join(orig for orig, _ in self.segments)
        return [{"orig": orig, "hira": hira} for orig, hira in self.segments]


def test_kanji_to_kana_rules():
    converter = FakeKakasi([("今日", "きょう"), ("は", "は"), ("東", "ひがし"), ("端", "はし"), ("カタカナ", "かたかな")])
    # Kanji segments become their reading (a space before one starting with は/へ); kana stay.
    assert kanji_to_kana("今日は東端カタカナ", converter) == unicodedata.normalize("NFKD", "きょうはひがし はしカタカナ")


def test_japanese_with_pykakasi_reads_kanji(mtl_tok):
    text = mtl_tok.tokenize("東京へ行きます。", "ja")
    assert "東" not in text.language_text and "とうきょう" in unicodedata.normalize("NFC", text.language_text)
    assert text.notes == ()


def test_skipped_steps_are_noted_not_fatal(mtl_kit):
    bare = MultilingualTokenizer.from_files(mtl_kit / "grapheme_mtl_merged_expanded_v1.json", None,
                                            optional_packages=False)
    ja = bare.tokenize("東京へ行きます。", "ja")
    assert "東京" in ja.language_text and any("Japanese" in n for n in ja.notes)
    zh = bare.tokenize("你好。", "zh")
    assert "你好" in zh.language_text and any("Cangjie" in n for n in zh.notes)
    assert any("segmentation" in n for n in bare.notes_for("zh"))
    assert any("Hebrew" in n for n in bare.tokenize("שלום.", "he").notes)
    assert any("Russian" in n for n in bare.tokenize("Привет.", "ru").notes)
    assert bare.notes_for("fr") == () and bare.tokenize("Bonjour.", "fr").notes == ()


def test_failing_segmenter_download_becomes_a_note(monkeypatch):
    import sys
    import types

    module = types.ModuleType("spacy_pkuseg")

    def pkuseg():
        raise ConnectionError("offline: cannot fetch spacy_ontonotes")

    module.pkuseg = pkuseg
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", module)
    segmenter, note = mtl_text.load_segmenter()
    assert segmenter is None and "ConnectionError" in note


def test_unknown_characters_are_reported(mtl_tok):
    text = mtl_tok.tokenize("Hello \u2603 world.", "en")  # a snowman is in no vocabulary
    assert text.unknown_characters == ("\u2603",)


class _TextContext:
    def __init__(self, tokenizer):
        self.text_tokenizer = tokenizer


def test_text_goldens_every_language(parity_dir, mtl_tok):
    """All b_* goldens of the multilingual kit, through tools/parity.py's replay."""
    from tools.parity import Report
    from tools.replay_multilingual import replay_text

    files = sorted((parity_dir / "multilingual" / "golden").glob("b_text_*.npz"))
    assert len(files) >= 25
    report = Report()
    base = MultilingualTokenizer(mtl_tok.bpe, mtl_tok.cangjie)
    for path in files:
        report.prefix = f"{path.name}: "
        replay_text(np.load(path, allow_pickle=False), _TextContext(base), report)
    assert report.failed == 0 and report.skipped == 0 and report.passed > 250, "\n".join(report.lines)


def test_dropdown_choices_name_every_language():
    from models.multilingual.languages import dropdown_choices

    choices = dropdown_choices()
    assert [i for _, i in choices] == list(LANGUAGE_IDS)
    assert ("Japanese (日本語)", "ja") in choices and ("English", "en") in choices
