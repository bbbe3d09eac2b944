"""Long text -> chunks that one T3 generation can speak, and the seeds of the chunks.

One generation stops after 1000 speech tokens (40 s), which holds about 300 characters of
read text. Longer text is cut at sentence boundaries (English and German rules below) and
the sentences are packed greedily into chunks of at most `max_chars` characters.
Invariants of `split_text`: no chunk is empty or longer than `max_chars`, and
`" ".join(chunks) == " ".join(text.split())`; the one exception is a single word longer
than `max_chars` (a URL, a hash), which is cut inside itself.
"""
from __future__ import annotations

import hashlib
import operator

import numpy as np

from .constants import CHUNK_CHARS as DEFAULT_MAX_CHARS
from .constants import MAX_GENERATOR_SEED

LANGUAGES = ("en", "de")  # languages whose sentence rules are written below
# An over-long sentence is cut at its last clause mark (",", ";", ":", a dash) only if the
# piece before it keeps at least this share of max_chars; shorter pieces make poor
# generations, so the cut falls back to the last space instead.
MIN_CLAUSE_PIECE = 1 / 3

_CLOSERS = "\"'\u201d\u201c\u2019\u2018\u00bb\u00ab)]}"  # may follow sentence punctuation: 'stop." Then'
_OPENERS = "\"'\u201c\u201e\u2018\u201a\u00ab\u00bb([{\u00bf\u00a1*_-\u2013\u2014"
_DASHES = ("-", "\u2013", "\u2014")
_CLAUSE_MARKS = (",", ";", ":", ".", "!", "?", "\u2026", *_DASHES)  # a pause the model can speak

# Abbreviations: lower case, trailing dot removed, inner dots kept ("z.B." -> "z.b").
# Single letters ("J.", "z.", "B.") are handled as initials and need no entry.
_NEVER_END = frozenset("""
    mr mrs ms dr prof sr st mt capt col lt sgt rev hon gov pres vs cf al approx dept esp incl viz
    e.g i.e feb mar apr jun jul aug sep sept oct nov dec okt dez
    z.b u.a d.h u.u u.\u00e4 o.\u00e4 v.a z.t s.o s.u bzw nr ca hr hrn fr vgl ggf evtl inkl exkl zzgl
    bspw sog str tel jh jhd mio mrd tsd abb anm hrsg geb gest dipl dipl.-ing med rer nat
""".split())
# Abbreviations that are only ever such before a number ("No. 5", "Art. 3"), else words.
_BEFORE_NUMBER = frozenset("no nos fig figs vol pp ch chap sec art abs bd kap tab eq op".split())
# Abbreviations that often end a sentence: a boundary when a capital follows.
_MAY_END = frozenset("etc usw inc ltd corp co jr chr bros".split())


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")


def _is_dotted_acronym(key: str) -> bool:
    """'u.s', 'ph.d', 'a.m': letters between dots, as opposed to numbers like '3.14'."""
    return "." in key and all(part.isalpha() for part in key.split("."))


def _is_sentence_end(word: str, next_word: str, first_in_line: bool, language: str, cased: bool) -> bool:
    """Whether a sentence ends after `word`, given the word that follows it on the line."""
    core = word.rstrip(_CLOSERS)  # 'He said "Stop." Then': the quote stays with its sentence
    following = next_word.lstrip(_OPENERS)
    # In text written with capitals a sentence never starts in lower case: 'she asked "why?" and
    # left', "I waited... and waited", "approx. five".
    starts_lower = cased and following[:1].islower()
    if core.endswith(("?", "!", "\u2026", "..")):  # "?!" runs and ellipses
        return not starts_lower
    if not core.endswith(".") or starts_lower:
        return False
    stem = core[:-1].lstrip(_OPENERS)
    key = stem.lower()
    if not stem:
        return True
    if len(stem) == 1 and stem.isalpha():  # "J. R. R. Tolkien", German "z. B.", "d. h."
        return False
    if key in _NEVER_END:
        return False
    if key in _BEFORE_NUMBER and following[:1].isdigit():
        return False
    if stem.isdigit():
        # "1." at the start of a line numbers a list item; German writes ordinals with a dot
        # ("am 3. Oktober"), while 4-digit numbers there are years that can end a sentence.
        return not (first_in_line or (language == "de" and len(stem) <= 3))
    if key in _MAY_END or _is_dotted_acronym(key):
        return following[:1].isupper()
    return True


def _ends_with_clause_mark(text: str) -> bool:
    return text.rstrip(_CLOSERS).endswith(_CLAUSE_MARKS)


def _first_letter_is_upper(line: str) -> bool:
    return next((ch.isupper() for ch in line if ch.isalpha()), False)


def _logical_lines(text: str) -> list[str]:
    """Non-blank lines with whitespace collapsed; a hard-wrapped line is joined to the next.

    A line is taken as wrapped (not a heading or a verse line) when it lacks closing
    punctuation and the next line, with no blank line between, starts in lower case.
    """
    lines: list[str] = []
    after_blank = True
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            after_blank = True
            continue
        wrapped = lines and not after_blank and not _ends_with_clause_mark(lines[-1])
        if wrapped and line.lstrip(_OPENERS)[:1].islower():
            lines[-1] += " " + line
        else:
            lines.append(line)
        after_blank = False
    return lines


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Sentences of `text` (whitespace collapsed); every line break also ends one.

    `" ".join(split_sentences(text)) == " ".join(text.split())`. Text written entirely
    without capitals is cut after every sentence mark; otherwise a sentence must start
    with a character that is not a lower-case letter.
    """
    _check_language(language)
    sentences = []
    for line in _logical_lines(text):
        words = line.split(" ")
        cased = _first_letter_is_upper(line)
        start = 0
        for i in range(len(words) - 1):
            if _is_sentence_end(words[i], words[i + 1], i == 0, language, cased):
                sentences.append(" ".join(words[start:i + 1]))
                start = i + 1
        sentences.append(" ".join(words[start:]))
    return sentences


def _best_cut(words: list[str], start: int, end: int, max_chars: int) -> int:
    """Where to end the piece words[start:g] (start < g <= end): the last clause mark, if not too early."""
    lengths = np.cumsum([len(w) + 1 for w in words[start:end]]) - 1  # length of words[start:g] at g-start-1
    for g in range(end, start, -1):
        if lengths[g - start - 1] < max_chars * MIN_CLAUSE_PIECE:
            break
        if _ends_with_clause_mark(words[g - 1]):
            return g
    return end


def _fit(sentence: str, max_chars: int) -> list[str]:
    """A sentence cut into pieces of at most max_chars: at clause marks, else at spaces."""
    if len(sentence) <= max_chars:
        return [sentence]
    words = sentence.split(" ")
    pieces = []
    start = 0
    while start < len(words):
        if len(words[start]) > max_chars:  # nothing else can keep the limit
            pieces.append(words[start][:max_chars])
            words[start] = words[start][max_chars:]
            continue
        end, length = start + 1, len(words[start])
        while end < len(words) and length + 1 + len(words[end]) <= max_chars:
            length += 1 + len(words[end])
            end += 1
        if end < len(words):
            end = _best_cut(words, start, end, max_chars)
        pieces.append(" ".join(words[start:end]))
        start = end
    return pieces


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS, language: str = "en") -> list[str]:
    """Chunks of at most `max_chars` characters, cut between sentences where possible.

    Sentences (see `split_sentences`) are packed greedily; a sentence longer than
    `max_chars` is cut at clause marks, then at spaces. A line that ends without
    punctuation (a heading, a list item, a verse line) also ends its chunk, since the
    model pauses at a chunk end but would run the line into the next sentence.
    Empty or whitespace-only text gives [].
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text, language):
        for piece in _fit(sentence, max_chars):
            if current and len(current) + 1 + len(piece) > max_chars:
                chunks.append(current)
                current = ""
            current = f"{current} {piece}" if current else piece
            if not _ends_with_clause_mark(piece):
                chunks.append(current)
                current = ""
    if current:
        chunks.append(current)
    return chunks


# --- audio -------------------------------------------------------------------------


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk `index` of a request seeded with `seed`, in [0, MAX_GENERATOR_SEED].

    Chunk 0 keeps the request seed, so text that fits one chunk sounds as it would without
    chunking; later chunks get a hash of (seed, index), so each has its own generator
    while the whole request is reproducible from one seed.
    """
    seed, index = operator.index(seed), operator.index(index)
    if not 0 <= seed <= MAX_GENERATOR_SEED:
        raise ValueError(f"seed must be in [0, {MAX_GENERATOR_SEED}], got {seed}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if index == 0:
        return seed
    return _hashed_seed(f"{seed}/{index}")


def noise_seed(seed: int, index: int) -> int:
    """Seed of S3Gen's noise for chunk `index` when it is decoded in token blocks.

    That noise is drawn before T3 samples, so it needs its own generator: T3 keeps
    `chunk_seed`'s and samples the tokens of a run without blocks.
    """
    return _hashed_seed(f"{operator.index(seed)}/{operator.index(index)}/s3gen-noise")


def _hashed_seed(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits
