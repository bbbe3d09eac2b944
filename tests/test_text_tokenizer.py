"""Text front-end: punctuation normalisation cases, [UNK] reporting, and parity on b_* goldens."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.text_tokenizer import SPACE, START_TEXT, STOP_TEXT, UNK, TextTokenizer, TokenizedText, punc_norm


@pytest.fixture(scope="module")
def tok(parity_dir) -> TextTokenizer:
    return TextTokenizer.from_file(parity_dir / "tokenizer.json")


@pytest.mark.parametrize(
    "raw, expected",
    [
        # whitespace is collapsed before "; " becomes ", ", leaving two spaces
        ("hello; world", "Hello,  world."),
        ("Wait... what", "Wait,  what."),
        ("Wait\u2026 what", "Wait,  what."),
        ("Time: now", "Time, now."),
        ("this - that", "This, that."),
        # em/en dashes are replaced after the " - " rule, so they stay dashes
        ("Em\u2014dash \u2013 en", "Em-dash - en."),
        ("word , next", "Word, next."),
        ("\u201cQuoted\u201d and \u2018single\u2019", "\"Quoted\" and 'single'."),
        ("Multiple   spaces\n\tand lines  ", "Multiple spaces and lines."),
        # capitalisation looks at the raw first character, before stripping
        ("  leading space", "leading space."),
        ("Already ends!", "Already ends!"),
        ("Question?", "Question?"),
        ("Trailing comma,", "Trailing comma,"),
        ("Trailing dash -", "Trailing dash -"),
        ("\u00e4rger", "\u00c4rger."),
    ],
)
def test_punc_norm_cases(raw, expected):
    assert punc_norm(raw) == expected


@pytest.mark.parametrize("blank", ["", " ", "\n\t  ", "\u00a0"])
def test_punc_norm_rejects_blank_text(blank):
    with pytest.raises(ValueError, match="empty"):
        punc_norm(blank)


def test_special_ids_come_from_the_file(tok):
    assert (tok.start_id, tok.stop_id, tok.unk_id, tok.space_id) == (START_TEXT, STOP_TEXT, UNK, SPACE)
    assert tok.vocab_size == 704
    assert tok.with_start_stop([7, 8]) == [START_TEXT, 7, 8, STOP_TEXT]


def test_every_space_is_one_space_token(tok):
    ids = tok.encode("Hello,  world.")
    assert ids.count(SPACE) == 2
    assert tok.token_strings(ids).count("[SPACE]") == 2


def test_unknown_characters_are_reported(tok):
    text = "Hi \u4e2d and \U0001f600 and \u4e2d."
    assert tok.token_strings(tok.encode("\u4e2d")) == ["[UNK]"]  # really outside the vocabulary
    ids = tok.encode(text)
    assert ids.count(UNK) == 3
    assert tok.unknown_characters(text) == ["\u4e2d", "\U0001f600", "\u4e2d"]
    assert tok.decode(ids) == "Hi  and  and ."  # the reference decode drops [UNK]


def test_german_letters_are_in_the_vocabulary(tok):
    text = "Gr\u00fc\u00dfe \u00c4rger \u00d6l \u00dcbel \u00e4\u00f6\u00fc\u00df."
    ids = tok.encode(text)
    assert UNK not in ids
    assert tok.unknown_characters(text) == []
    assert tok.decode(ids) == text


def test_tokenize_bundles_normalisation_ids_and_unknowns(tok):
    out = tok.tokenize("caf\u00e9 \u2603 time")
    assert isinstance(out, TokenizedText)
    assert out.normalized_text == "Caf\u00e9 \u2603 time."
    assert list(out.ids) == tok.encode(out.normalized_text)
    assert out.unknown_characters == ("\u2603",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.ids = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        tok.tokenize("   ")


def test_decode_round_trip(tok):
    text = punc_norm("the quick brown fox; jumps over: the lazy dog... twice")
    assert tok.decode(tok.encode(text)) == text
    # The reference decode drops [STOP] but keeps [START].
    assert tok.decode(tok.with_start_stop(tok.encode(text))) == "[START]" + text


def test_parity_b_goldens(parity_dir, fake_ckpt):
    from conftest import replay_goldens
    from tools.parity import Context

    ctx = Context(fake_ckpt)
    files = sorted((parity_dir / "golden").glob("b_*.npz"))
    report = replay_goldens(parity_dir, "b", ctx)
    assert report.passed >= 5 * len(files)
    # Each golden's tokens are reproduced from its raw text alone, end to end.
    for path in files:
        data = np.load(path)
        assert list(ctx.text_tokenizer.tokenize(str(data["raw_text"])).ids) == data["token_ids"].tolist()
