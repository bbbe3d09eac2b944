"""Text front-end of Chatterbox Multilingual: raw text + language -> T3 text token ids.

    raw --punc_norm--> normalised --lower, NFKD--> preprocessed --language step--> language text
        --"[xx]" prepended, spaces to [SPACE]--> BPE ids (no SOT/EOT; T3 adds them)

As chatterbox-tts 0.1.7 does it (facts: docs/chatterbox-spec.md 11.1, parity kit
multilingual/README.md). Language steps:
  zh  optional word segmentation (spacy-pkuseg), then Cangjie codes for every CJK glyph
  ja  kanji -> hiragana reading (pykakasi), then NFKD again
  ko  Hangul syllables -> conjoining jamo, then strip (after NFKD only the strip remains)
  he  diacritics (dicta-onnx): unavailable offline, text unchanged, as in the reference
  ru  stress marks (russian_text_stresser): not on PyPI, text unchanged, as in the reference
A step that cannot run is never fatal: the text goes on unchanged and a note says so.
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from tokenizers import Tokenizer

from ..text_tokenizer import TextTokenizer, punc_norm
from .languages import LANGUAGE_IDS, get_language

# The multilingual punc_norm also accepts ideographic/full-width sentence ends (no "." added).
SENTENCE_ENDERS = (".", "!", "?", "-", ",", "\u3001", "\uff0c", "\u3002", "\uff1f", "\uff01")

CANGJIE_START, CANGJIE_END = "[cj_", "]"
CANGJIE_STOP = "[cj_.]"  # closes one glyph's code
KANJI = range(0x4E00, 0x9FFF + 1)  # CJK Unified Ideographs, the reference's kanji test
HANGUL_SYLLABLES = ("\uac00", "\ud7af")  # the reference's range (its tail is unassigned)
HIRAGANA_PARTICLES = ("\u306f", "\u3078")  # は, へ: a reading starting with one gets a space before it

Segmenter = Callable[[str], Sequence[str]]  # Chinese text -> words


class KanaConverter(Protocol):
    """pykakasi's interface: segments with their original text and hiragana reading."""

    def convert(self, text: str) -> list[dict]: ...


# --- Chinese -----------------------------------------------------------------------


class CangjieTable:
    """Glyph -> Cangjie code tokens, from `Cangjie5_TC.json` (a JSON list of "glyph\\tcode[\\tmark]").

    A glyph listed under several codes takes the last one (file order). Glyphs sharing a
    code are told apart by the glyph's index among them (file order), written after the code
    when > 0. `tokens(glyph)` is e.g. "[cj_o][cj_n][cj_f][cj_.]" or None for no code.
    """

    def __init__(self, entries: Iterable[str]):
        self._code: dict[str, str] = {}
        self._glyphs: dict[str, list[str]] = {}
        for entry in entries:
            glyph, code = entry.split("\t")[:2]
            self._code[glyph] = code
            self._glyphs.setdefault(code, []).append(glyph)
        self._tokens: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> "CangjieTable":
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        if not isinstance(entries, list) or not all(isinstance(e, str) and "\t" in e for e in entries):
            raise ValueError(f"{path}: expected a JSON list of 'glyph<TAB>code' strings")
        return cls(entries)

    def __len__(self) -> int:
        return len(self._code)

    def tokens(self, glyph: str) -> str | None:
        if glyph not in self._tokens:
            code = self._code.get(glyph)
            if code is None:
                return None
            index = self._glyphs[code].index(glyph)
            letters = code + (str(index) if index > 0 else "")
            self._tokens[glyph] = "".join(f"{CANGJIE_START}{c}{CANGJIE_END}" for c in letters) + CANGJIE_STOP
        return self._tokens[glyph]


def cangjie_encode(text: str, table: CangjieTable, segmenter: Segmenter | None = None) -> str:
    """Every other-letter glyph (category Lo) with a code -> its code tokens; the rest unchanged.

    With a segmenter the words are first re-joined with single spaces (read as [SPACE]).
    """
    if segmenter is not None:
        text = " ".join(segmenter(text))
    out = []
    for ch in text:
        tokens = table.tokens(ch) if unicodedata.category(ch) == "Lo" else None
        out.append(ch if tokens is None else tokens)
    return "".join(out)


# --- Japanese, Korean ------------------------------------------------------------------


def kanji_to_kana(text: str, converter: KanaConverter) -> str:
    """Segments holding a kanji -> their hiragana reading; kana and everything else as written; NFKD."""
    out = []
    for segment in converter.convert(text):
        orig, reading = segment["orig"], segment["hira"]
        if any(ord(c) in KANJI for c in orig):
            out.append(" " + reading if reading.startswith(HIRAGANA_PARTICLES) else reading)
        else:
            out.append(orig)
    return unicodedata.normalize("NFKD", "".join(out))


def hangul_to_jamo(text: str) -> str:
    """Hangul syllables -> leading consonant + vowel (+ trailing consonant) jamo, then strip()."""
    out = []
    for ch in text:
        if HANGUL_SYLLABLES[0] <= ch <= HANGUL_SYLLABLES[1]:
            base = ord(ch) - 0xAC00
            out.append(chr(0x1100 + base // (21 * 28)) + chr(0x1161 + base % (21 * 28) // 28))
            if base % 28:
                out.append(chr(0x11A7 + base % 28))
        else:
            out.append(ch)
    return "".join(out).strip()


# --- optional packages ------------------------------------------------------------------


def load_kana_converter() -> tuple[KanaConverter | None, str | None]:
    """pykakasi's converter (dictionaries bundled, works offline), or None and why not."""
    try:
        import pykakasi
        return pykakasi.kakasi(), None
    except Exception as exc:  # not installed, or broken: Japanese then goes unconverted
        return None, (f"Japanese: kanji are not converted to kana readings (pykakasi unavailable: "
                      f"{exc.__class__.__name__}); the model reads the kanji as written.")


def load_segmenter() -> tuple[Segmenter | None, str | None]:
    """spacy-pkuseg's Chinese word segmenter, or None and why not.

    Its constructor downloads a model from GitHub; offline (or not installed) Chinese goes
    unsegmented, as the reference does without the package.
    """
    try:
        from spacy_pkuseg import pkuseg
        return pkuseg().cut, None
    except Exception as exc:  # ImportError, or a failed model download (ConnectionError, ...)
        return None, (f"Chinese: no word segmentation (spacy-pkuseg and its model are not available: "
                      f"{exc.__class__.__name__}); characters are read without word boundaries.")


def load_russian_stresser() -> tuple[Callable[[str], str] | None, str | None]:
    """russian_text_stresser's stress marking (not on PyPI), or None and why not."""
    try:
        from russian_text_stresser.text_stresser import RussianTextStresser
        return RussianTextStresser().stress_text, None
    except Exception as exc:
        return None, (f"Russian: no stress marks added (russian_text_stresser is not installable from PyPI: "
                      f"{exc.__class__.__name__}); the model guesses the stress.")


HEBREW_NOTE = ("Hebrew: no diacritics (niqqud) added: dicta-onnx needs a model that is not available offline; "
               "the model reads the unpointed text.")
NO_CANGJIE_NOTE = ("Chinese: the Cangjie table (Cangjie5_TC.json) was not found; Chinese characters are passed "
                   "on unencoded and are mostly unknown to the model.")


# --- the tokenizer ----------------------------------------------------------------------


@dataclass(frozen=True)
class MultilingualText:
    """One text as T3 reads it, with every intermediate form and what was skipped.

    ids exclude SOT/EOT. `notes` name the language steps that could not run (empty if none).
    `unknown_characters` are the character occurrences that became [UNK].
    """

    language: str              # "" = no language tag
    normalized_text: str       # after punc_norm
    preprocessed_text: str     # lower-cased, NFKD
    language_text: str         # after the language step
    tagged_text: str           # "[xx]" + language_text
    ids: tuple[int, ...]
    unknown_characters: tuple[str, ...]
    notes: tuple[str, ...]


def check_language(language: str | None) -> str:
    """The lower-cased language id; "" for None/empty (no tag); ValueError if unsupported."""
    if language is None or language == "":
        return ""
    if not isinstance(language, str):
        raise ValueError(f"language must be a string, got {language!r}")
    return get_language(language).id


class MultilingualTokenizer:
    """The multilingual text front-end: language steps plus the BPE vocabulary (2454 ids).

    Owns the BPE tokenizer (`grapheme_mtl_merged_expanded_v1.json`), the Cangjie table and the
    optional-package helpers, each possibly missing (then `notes_for(language)` says what is
    skipped). It does not add SOT/EOT (T3 does).
    """

    def __init__(self, bpe: TextTokenizer, cangjie: CangjieTable | None = None,
                 segmenter: Segmenter | None = None, kana: KanaConverter | None = None,
                 russian_stresser: Callable[[str], str] | None = None,
                 unavailable: dict[str, str] | None = None):
        self.bpe = bpe
        self.cangjie = cangjie if cangjie is not None else CangjieTable(())
        self.segmenter = segmenter
        self.kana = kana
        self.russian_stresser = russian_stresser
        notes = dict(unavailable or {})
        if len(self.cangjie) == 0:
            notes["zh-cangjie"] = NO_CANGJIE_NOTE
        notes.setdefault("he", HEBREW_NOTE)
        self._notes = notes

    @classmethod
    def from_files(cls, tokenizer_json: str | Path, cangjie_json: str | Path | None,
                   optional_packages: bool = True) -> "MultilingualTokenizer":
        """Load the vocabulary and Cangjie table; with `optional_packages`, also try pykakasi,
        spacy-pkuseg and russian_text_stresser (each skipped with a note if unavailable)."""
        bpe = TextTokenizer(Tokenizer.from_file(str(tokenizer_json)))
        cangjie = CangjieTable.from_file(cangjie_json) if cangjie_json is not None else None
        unavailable: dict[str, str] = {}
        kana = segmenter = stresser = None
        if optional_packages:
            kana, why = load_kana_converter()
            if why:
                unavailable["ja"] = why
            segmenter, why = load_segmenter()
            if why:
                unavailable["zh-segmentation"] = why
            stresser, why = load_russian_stresser()
            if why:
                unavailable["ru"] = why
        else:
            unavailable.update(ja="Japanese: kanji are not converted to kana readings (pykakasi not loaded).",
                               ru="Russian: no stress marks added (russian_text_stresser not loaded).")
            unavailable["zh-segmentation"] = "Chinese: no word segmentation (spacy-pkuseg not loaded)."
        return cls(bpe, cangjie, segmenter, kana, stresser, unavailable)

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    def notes_for(self, language: str | None) -> tuple[str, ...]:
        """What this setup skips for `language` (for the UI to show when it is chosen)."""
        language = check_language(language)
        keys = {"zh": ("zh-cangjie", "zh-segmentation"), "ja": ("ja",), "he": ("he",), "ru": ("ru",)}
        return tuple(self._notes[k] for k in keys.get(language, ()) if k in self._notes)

    def language_step(self, text: str, language: str) -> str:
        """The per-language step on lower-cased NFKD text."""
        if language == "zh":
            return cangjie_encode(text, self.cangjie, self.segmenter)
        if language == "ja":
            return kanji_to_kana(text, self.kana) if self.kana is not None else text
        if language == "ko":
            return hangul_to_jamo(text)
        if language == "ru" and self.russian_stresser is not None:
            try:
                return self.russian_stresser(text)
            except Exception:  # the reference also falls back to the plain text
                return text
        return text  # he: unchanged (see HEBREW_NOTE); others have no step

    def encode_text(self, normalized_text: str, language: str | None) -> MultilingualText:
        """Front-end from already normalised text (punc_norm done)."""
        language = check_language(language)
        preprocessed = unicodedata.normalize("NFKD", normalized_text.lower())
        language_text = self.language_step(preprocessed, language)
        tagged = f"[{language}]{language_text}" if language else language_text
        ids = self.bpe.encode(tagged)
        unknown = tuple(self.bpe.unknown_characters(tagged)) if self.bpe.unk_id in ids else ()
        return MultilingualText(language, normalized_text, preprocessed, language_text, tagged, tuple(ids),
                                unknown, self.notes_for(language))

    def tokenize(self, raw_text: str, language: str | None) -> MultilingualText:
        """punc_norm (multilingual sentence ends), then `encode_text`. ValueError on empty text
        or an unsupported language."""
        language = check_language(language)
        return self.encode_text(punc_norm(raw_text, SENTENCE_ENDERS), language)

    def with_start_stop(self, ids: Sequence[int]) -> list[int]:
        return self.bpe.with_start_stop(ids)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return self.bpe.token_strings(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.bpe.decode(ids)


SUPPORTED_LANGUAGES = LANGUAGE_IDS
