"""Long-text chunking: sentence rules (English, German), packing limits, losslessness and
per-chunk seeds. Pure logic, no weights."""
from __future__ import annotations

import random

import pytest

from models.constants import MAX_GENERATOR_SEED as MAX_SEED
from models.chunking import chunk_seed, split_sentences, split_text



def collapsed(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
     ["Dr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]),
    ("Mr. and Mrs. Jones live on Baker St. in London. They like it.",
     ["Mr. and Mrs. Jones live on Baker St. in London.", "They like it."]),
    ("Bring fruit, e.g. apples, i.e. something sweet. Also Prof. Lee vs. Mr. Wu.",
     ["Bring fruit, e.g. apples, i.e. something sweet.", "Also Prof. Lee vs. Mr. Wu."]),
    ("We sold apples, pears, etc. The rest was thrown away. Apples, pears, etc. were sold.",
     ["We sold apples, pears, etc.", "The rest was thrown away.", "Apples, pears, etc. were sold."]),
    ("Pi is about 3.14 and costs $1,000.50 in v2.0 of the app. Next sentence.",
     ["Pi is about 3.14 and costs $1,000.50 in v2.0 of the app.", "Next sentence."]),
    ("J. R. R. Tolkien wrote it. It is long.", ["J. R. R. Tolkien wrote it.", "It is long."]),
    ("See No. 5 and Fig. 3 in the U.S. It works. I said no. Then I left.",
     ["See No. 5 and Fig. 3 in the U.S.", "It works.", "I said no.", "Then I left."]),
    ("He was born in 1990. Then he moved.", ["He was born in 1990.", "Then he moved."]),
])
def test_english_sentences(text, expected):
    assert split_sentences(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("He said \u201cStop!\u201d Then he left.", ["He said \u201cStop!\u201d", "Then he left."]),
    ('She asked "why?" and left. (It was late.) Fine.',
     ['She asked "why?" and left.', "(It was late.)", "Fine."]),
])
def test_closing_quotes_stay_with_their_sentence(text, expected):
    assert split_sentences(text, "en") == expected


def test_ellipses_and_mark_runs():
    text = "I waited... and waited. Then\u2026 Silence. Really?! Yes!!! Fine?"
    assert split_sentences(text, "en") == [
        "I waited... and waited.", "Then\u2026", "Silence.", "Really?!", "Yes!!!", "Fine?"]


@pytest.mark.parametrize("text, expected", [
    ("Wir treffen uns am 3. Oktober in Berlin. Danach fahren wir weiter.",
     ["Wir treffen uns am 3. Oktober in Berlin.", "Danach fahren wir weiter."]),
    ("Der 2. Weltkrieg endete 1945. Das 20. Jh. war lang.",
     ["Der 2. Weltkrieg endete 1945.", "Das 20. Jh. war lang."]),
    ("Das kostet ca. 1.000,50 Euro, z. B. f\u00fcr Hr. Meier. Prof. Dr. M\u00fcller kommt, d. h. alle sind da.",
     ["Das kostet ca. 1.000,50 Euro, z. B. f\u00fcr Hr. Meier.", "Prof. Dr. M\u00fcller kommt, d. h. alle sind da."]),
    ("Er nannte z.B. Hunde, Katzen usw. Das war bzw. ist so, vgl. Nr. 4 und S. 12.",
     ["Er nannte z.B. Hunde, Katzen usw.", "Das war bzw. ist so, vgl. Nr. 4 und S. 12."]),
    ("Es kamen u. a. Fr. Schmidt und Hr. Weber. Alle waren da.",
     ["Es kamen u. a. Fr. Schmidt und Hr. Weber.", "Alle waren da."]),
    ("Er rief: \u201eHalt!\u201c Dann ging er. \u201eWohin?\u201c, fragte sie.",
     ["Er rief: \u201eHalt!\u201c", "Dann ging er.", "\u201eWohin?\u201c, fragte sie."]),
])
def test_german_sentences(text, expected):
    assert split_sentences(text, "de") == expected


def test_ordinal_dot_is_german_only():
    text = "Es kam am 3. Oktober. Er blieb."
    assert split_sentences(text, "de") == ["Es kam am 3. Oktober.", "Er blieb."]
    assert split_sentences("He came 3. Then he left.", "en") == ["He came 3.", "Then he left."]


def test_lines_are_boundaries():
    assert split_sentences("Chapter One\n\nIt was a dark night. The end", "en") == [
        "Chapter One", "It was a dark night.", "The end"]
    assert split_sentences("1. Buy milk.\n2. Call mom.", "en") == ["1. Buy milk.", "2. Call mom."]
    # A hard-wrapped line (no closing mark, next line in lower case) continues its sentence.
    assert split_sentences("The quick brown fox\njumps over the lazy dog.", "en") == [
        "The quick brown fox jumps over the lazy dog."]
    assert split_sentences("Roses are red\nViolets are blue", "en") == ["Roses are red", "Violets are blue"]


def test_text_without_capitals_is_cut_at_every_mark():
    assert split_sentences("hello. how are you? fine thanks", "en") == ["hello.", "how are you?", "fine thanks"]


def test_unknown_language_and_bad_limit_raise():
    with pytest.raises(ValueError, match="language"):
        split_text("Bonjour.", language="fr")
    with pytest.raises(ValueError, match="max_chars"):
        split_text("Hello.", max_chars=0)


def test_empty_input():
    assert split_text("") == []
    assert split_text(" \n\t \n") == []


def test_greedy_packing():
    assert split_text("One two. Three four. Five six.", max_chars=20) == ["One two. Three four.", "Five six."]
    assert split_text("One two. Three four. Five six.", max_chars=19) == ["One two.", "Three four.", "Five six."]


def test_line_without_punctuation_ends_its_chunk():
    assert split_text("Chapter One\nIt was a dark night. The end") == ["Chapter One", "It was a dark night. The end"]
    assert split_text("Intro done. Roses are red\nViolets are blue") == ["Intro done. Roses are red", "Violets are blue"]


def test_long_sentence_is_cut_at_clause_marks():
    sentence = "alpha beta gamma, " * 20
    chunks = split_text(sentence, max_chars=100)
    assert all(len(c) <= 100 for c in chunks)
    assert all(c.endswith(",") for c in chunks)
    assert " ".join(chunks) == collapsed(sentence)
    # Semicolons and dashes count too.
    text = "word " * 30 + "; " + "more " * 35 + "\u2014 " + "end " * 10
    chunks = split_text(text, max_chars=200)
    assert chunks[0].endswith(";") and chunks[1].endswith("\u2014")


def test_early_clause_mark_is_not_used():
    # A comma after 4 characters would leave a tiny chunk: cut at the last space instead.
    text = "Well, " + "word " * 100
    chunks = split_text(text, max_chars=120)
    assert len(chunks[0]) > 100 and not chunks[0].endswith(",")


def test_run_without_punctuation_is_cut_between_words():
    words = [f"w{i}" for i in range(400)]
    text = " ".join(words)
    chunks = split_text(text, max_chars=50)
    assert all(len(c) <= 50 for c in chunks)
    assert [w for c in chunks for w in c.split(" ")] == words


def test_single_overlong_word_is_cut():
    word = "x" * 650
    assert split_text(f"Go {word} now.", max_chars=300) == ["Go", "x" * 300, "x" * 300, "x" * 50 + " now."]


def test_prose_chunks_end_at_sentences():
    rng = random.Random(3)
    words = ["cat", "house", "running", "blue", "quickly", "Mr. Lee", "e.g.", "3.14"]
    sentences = ["The " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) + "." for _ in range(200)]
    chunks = split_text(" ".join(sentences), max_chars=300)
    assert all(len(c) <= 300 for c in chunks)
    assert all(c.endswith(".") and c[0].isupper() for c in chunks)
    assert len(chunks) > 10
    for before, after in zip(chunks[:-1], chunks[1:]):  # greedy: the next sentence did not fit
        first = split_sentences(after)[0]
        assert len(before) + 1 + len(first) > 300


_POOL = ["the", "Der", "Dr.", "Mr.", "e.g.", "z.", "B.", "z.B.", "usw.", "etc.", "3.", "1990.", "3.14",
         "1.000,50", "v2.0", "J.", "word", "Wort,", "end.", "Ende!", "why?!", "wait...", "so\u2026",
         '"Stop."', "\u201eHalt!\u201c", "(aside.)", "-", "\u2014", "long-compound-word", "und;", "Also:",
         "a", "I", "\u00fcber", "Stra\u00dfe."]
_SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", "\n\n", " \n ", "\r\n"]


def _random_text(rng: random.Random, extra_words: list[str] = ()) -> str:
    pool = _POOL + list(extra_words)
    n = rng.randint(0, 120)
    parts = []
    for _ in range(n):
        parts += [rng.choice(pool), rng.choice(_SEPARATORS)]
    return rng.choice(["", " ", "\n"]) + "".join(parts)


@pytest.mark.parametrize("language", ["en", "de"])
def test_random_texts_are_lossless_and_bounded(language):
    for seed in range(300):
        rng = random.Random(seed)
        text = _random_text(rng)
        max_chars = rng.randint(20, 400)  # longer than every word of the pool
        sentences = split_sentences(text, language)
        chunks = split_text(text, max_chars, language)
        assert " ".join(sentences) == collapsed(text), seed
        assert " ".join(chunks) == collapsed(text), seed
        assert all(0 < len(c) <= max_chars and c == c.strip() for c in chunks), seed
        assert (chunks == []) == (collapsed(text) == ""), seed


def test_random_texts_with_overlong_words_lose_nothing():
    for seed in range(200):
        rng = random.Random(1000 + seed)
        text = _random_text(rng, extra_words=["y" * rng.randint(10, 40)])
        max_chars = rng.randint(1, 15)
        chunks = split_text(text, max_chars, "en")
        assert all(0 < len(c) <= max_chars for c in chunks), seed
        assert "".join(chunks).replace(" ", "") == "".join(text.split()), seed


# --- audio joins --------------------------------------------------------------------


def test_chunk_seed_is_deterministic_distinct_and_in_range():
    for seed in (0, 1, 12345, MAX_SEED):
        seeds = [chunk_seed(seed, i) for i in range(2000)]
        assert seeds == [chunk_seed(seed, i) for i in range(2000)]
        assert len(set(seeds)) == len(seeds)
        assert all(0 <= s <= MAX_SEED for s in seeds)
        assert seeds[0] == seed  # one-chunk text sounds as without chunking
    assert chunk_seed(1, 5) != chunk_seed(2, 5)
    with pytest.raises(ValueError):
        chunk_seed(-1, 0)
    with pytest.raises(ValueError):
        chunk_seed(MAX_SEED + 1, 0)
    with pytest.raises(ValueError):
        chunk_seed(1, -1)
    with pytest.raises(TypeError):
        chunk_seed(1.5, 0)
