"""Long text in any of the 23 languages -> chunks that one generation can speak.

One T3 generation stops after 1000 speech tokens (40 s). A chunk holds CHUNK_SECONDS of
speech at the script's typical reading rate (languages.SCRIPT_CHARS_PER_SECOND), half the
limit, so slow speakers and pauses still fit: 300 characters of a Latin-script language,
90 of Chinese, 120 of Japanese, 130 of Korean. Text is cut at sentence ends, which each
script marks in its own way (。！？ in Chinese and Japanese, । in Hindi, ؟ in Arabic, ";" as
the Greek question mark, ...), and sentences are packed greedily into chunks. A sentence
longer than a chunk is cut at its last clause mark (、，, ، ...), else at a space, else
(Chinese and Japanese have none between words) between characters.
Invariants of `split_text`: no chunk is empty or longer than the limit; the chunks joined
with a space (Chinese, Japanese: with nothing) give the text with whitespace collapsed
(Chinese, Japanese: up to spaces at cuts), except where a word longer than the limit is cut.
"""
from __future__ import annotations

import math
import re

from ..guard import MAX_NEW_TOKENS, max_tokens_for_text
from .languages import SCRIPT_CHARS_PER_SECOND, chars_per_second, get_language

CHUNK_SECONDS = 20.0  # speech per chunk at the typical rate: half of one generation's 40 s
GENERATION_SECONDS = 40.0  # 1000 tokens at 25 per second
LATIN_CHARS_PER_SECOND = SCRIPT_CHARS_PER_SECOND["latin"]  # what guard.max_tokens_for_text is tuned for
SPACELESS = frozenset({"zh", "ja"})  # written without spaces between words
# A cut at a clause mark must keep at least this share of the limit before it (shorter pieces
# make poor generations); otherwise the cut falls back to a space.
MIN_CLAUSE_PIECE = 1 / 3

_ENDS = ".!?\u2026\uff01\uff1f\u3002\uff0e"  # . ! ? … and the full-width ！？。．
_ENDS_BY_LANGUAGE = {
    "el": ";\u037e",          # the Greek question mark (ASCII ; or U+037E)
    "hi": "\u0964\u0965",     # । ॥ danda, double danda
    "ar": "\u061f\u06d4",     # ؟ Arabic question mark, ۔ full stop
    "he": "\u05c3",           # ׃ sof pasuq
}
_CLAUSES = ",;:\u2014\u2013\u3001\uff0c\uff1b\uff1a"  # , ; : — – 、 ， ； ：
_CLAUSES_BY_LANGUAGE = {
    "el": "\u0387\u00b7",     # · ano teleia (the Greek semicolon)
    "ar": "\u060c\u061b",     # ، Arabic comma, ؛ Arabic semicolon
}
# Abbreviations before a name or number, in several languages: a dot after them ends nothing.
_TITLES = frozenset("""
    mr mrs ms dr prof st sr sra srta jr mme mlle hr fr frl dhr mevr sig dott ing nr no vs ca bzw
    z.b e.g i.e u.a d.h
""".split())
# May follow a sentence end and belong to its sentence: 'stop." Then', 「…。」
_CLOSERS = "\"'\u201d\u2019\u00bb)]}\u300d\u300f\uff09\u3011\u300b\u3009"


def sentence_ends(language: str) -> str:
    """Characters that end a sentence in `language`."""
    lang = get_language(language).id
    return _ENDS + _ENDS_BY_LANGUAGE.get(lang, "")


def clause_marks(language: str) -> str:
    """Characters after which `language` pauses within a sentence (";" is Greek's "?")."""
    lang = get_language(language).id
    marks = _CLAUSES + _CLAUSES_BY_LANGUAGE.get(lang, "")
    return marks.replace(";", "") if lang == "el" else marks


def chunk_chars(language: str) -> int:
    """Characters of `language` that hold CHUNK_SECONDS of read speech: the default chunk length."""
    return int(CHUNK_SECONDS * chars_per_second(language))


def speech_seconds(text: str, language: str) -> float:
    """Typical read-aloud duration of `text` in `language`, in seconds (an estimate)."""
    return len(text) / chars_per_second(language)


def max_tokens_for(text: str, language: str, cap: int = MAX_NEW_TOKENS) -> int:
    """A generous bound on the speech tokens of `text` (guard.max_tokens_for_text, with the
    length first converted to Latin-script characters of the same speaking time)."""
    latin_chars = math.ceil(len(text) * LATIN_CHARS_PER_SECOND / chars_per_second(language))
    return max_tokens_for_text(latin_chars, cap)


def _end_pattern(language: str) -> re.Pattern:
    ends = re.escape(sentence_ends(language))
    return re.compile(f"[{ends}]+[{re.escape(_CLOSERS)}]*")


def _is_end(line: str, start: int, end: int, language: str) -> bool:
    """Whether the end-mark run line[start:end] ends a sentence."""
    after = line[end:end + 1]
    run = line[start:end].rstrip(_CLOSERS)
    if language in SPACELESS and set(run) - {"."}:
        return True  # 。！？ (and ! ?) end a sentence wherever they stand; "." may be a decimal point
    if after and not after.isspace():
        return False  # "3.14", "e.g", "a.m."
    if not after or set(run) - {"."}:
        return True  # end of line, or ! ? ; (Greek) and friends
    # A lone dot: not after an initial ("J. R. R."), nor before a lower-case word in cased text.
    word = line[:start].rsplit(" ", 1)[-1]
    if (len(word) == 1 and word.isalpha()) or word.lower() in _TITLES:
        return False
    following = line[end:].lstrip()[:1]
    return not (following.islower() and any(c.isupper() for c in line))


def split_sentences(text: str, language: str) -> list[str]:
    """Sentences of `text`, whitespace collapsed; a line break also ends one."""
    language = get_language(language).id
    pattern = _end_pattern(language)
    sentences = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        start = 0
        for match in pattern.finditer(line):
            if _is_end(line, match.start(), match.end(), language):
                sentences.append(line[start:match.end()].strip())
                start = match.end()
        if line[start:].strip():
            sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _cut(sentence: str, max_chars: int, language: str) -> int:
    """Where to end the first piece of an over-long sentence (0 < cut <= max_chars)."""
    marks = clause_marks(language)
    spaced = language not in SPACELESS
    lowest = max(1, math.ceil(max_chars * MIN_CLAUSE_PIECE))
    for cut in range(max_chars, lowest - 1, -1):
        after = sentence[cut:cut + 1]
        if sentence[cut - 1] in marks and (after.isspace() if spaced else not after.isdigit()):
            return cut
    if spaced:
        space = sentence.rfind(" ", 1, max_chars + 1)
        if space > 0:
            return space
    return max_chars


def _fit(sentence: str, max_chars: int, language: str) -> list[str]:
    pieces = []
    while len(sentence) > max_chars:
        cut = _cut(sentence, max_chars, language)
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces


def split_text(text: str, language: str, max_chars: int | None = None) -> list[str]:
    """Chunks of at most `max_chars` characters (default `chunk_chars(language)`), cut between
    sentences where possible. A line ending without punctuation (a heading, a verse line)
    also ends its chunk. Empty text gives []."""
    language = get_language(language).id
    max_chars = chunk_chars(language) if max_chars is None else max_chars
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    joiner = "" if language in SPACELESS else " "
    pauses = sentence_ends(language) + clause_marks(language)
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text, language):
        for piece in _fit(sentence, max_chars, language):
            if current and len(current) + len(joiner) + len(piece) > max_chars:
                chunks.append(current)
                current = ""
            current = f"{current}{joiner}{piece}" if current else piece
            if not piece.rstrip(_CLOSERS).endswith(tuple(pauses)):
                chunks.append(current)
                current = ""
    if current:
        chunks.append(current)
    return chunks
