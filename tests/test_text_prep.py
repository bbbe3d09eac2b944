"""Text preparation before chunking: separators and markup, nothing-to-speak refusals,
characters outside the vocabulary, tags and pauses (down to the token ids), and token
limits from the spoken length. English and German."""
from __future__ import annotations

import pytest

from models.guard import S3_TOKEN_RATE, max_tokens_for_text
from models.text_prep import (DEFAULT_PAUSE_S, ENGLISH_EVENT_TAGS, MAX_PAUSE_S, SEPARATOR_PAUSE_S, Pause,
                              PlannedChunk, chunk_token_limit, plan_chunks, plan_request, prepare_text,
                              vocabulary_characters)
from models.text_tokenizer import START_TEXT, STOP_TEXT, UNK, TextTokenizer


@pytest.fixture(scope="module")
def tok(parity_dir) -> TextTokenizer:
    return TextTokenizer.from_file(parity_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def chars(tok) -> frozenset[str]:
    return vocabulary_characters(tok)


def prep(text, language="en", **kwargs):
    kwargs.setdefault("known_tags", ENGLISH_EVENT_TAGS)
    return prepare_text(text, language, **kwargs)


def token_ids(tok, prepared) -> list[list[int]]:
    """The ids T3 would get for each chunk (START/STOP are added by T3, not here)."""
    return [list(tok.tokenize(c).ids) for c in plan_chunks(prepared, 300) if isinstance(c, str)]


# --- kind 1: decoration never reaches T3; nothing speakable is refused ----------------

@pytest.mark.parametrize("separator", ["***", "---", "===", "* * *", "___", "~~~", "- - -", "<hr>", "\u2042",
                                       "\u2500\u2500\u2500\u2500"])
@pytest.mark.parametrize("language, before, after", [("en", "Part one ends.", "Part two begins."),
                                                     ("de", "Teil eins endet.", "Teil zwei beginnt.")])
def test_separator_line_becomes_a_pause(separator, language, before, after):
    p = prep(f"{before}\n\n{separator}\n\n{after}", language)
    assert p.segments == (before, Pause(SEPARATOR_PAUSE_S), after)
    assert p.separators == 1 and any("separator" in n for n in p.notes)


@pytest.mark.parametrize("language, text, expected", [
    ("en", "# Chapter 1 #\nIt was a *dark* and __stormy__ night.", "Chapter one\nIt was a dark and stormy night."),
    ("de", "## Kapitel 2\n> Es war **einmal** ein [König](https://example.org).",
     "Kapitel zwei\nEs war einmal ein König."),
    ("en", "Shopping:\n- milk\n* bread\n\u2022 eggs", "Shopping:\nmilk\nbread\neggs"),
])
def test_markdown_marks_are_dropped_and_words_kept(language, text, expected):
    p = prep(text, language)
    assert p.segments == (expected,)
    assert p.changed and p.notes[0] == f"Read as: {expected}"


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("text", ['"', "\U0001F600\U0001F389", "***\n---", "[pause:2s]", "<haha>", "[STOP]", "  -- ! ?"])
def test_nothing_speakable_is_refused(language, text):
    with pytest.raises(ValueError, match="nothing to speak"):
        prep(text, language)


@pytest.mark.parametrize("language, name, text, advice", [
    ("en", "English", "\u4f60\u597d\uff0c\u4e16\u754c\u3002", "choose Multilingual for Chinese"),
    ("en", "English", "\u6211\u67093\u4e2a\u82f9\u679c", "choose Multilingual for Chinese"),
    ("de", "German", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?",
     "choose Multilingual for Russian"),
    ("en", "English", "\u3053\u3093\u306b\u3061\u306f", "choose Multilingual for Japanese"),
])
def test_foreign_script_is_refused_with_advice(language, name, text, advice):
    with pytest.raises(ValueError, match=f"this model reads {name}.*{advice}"):
        prep(text, language)


def test_a_foreign_word_inside_speakable_text_is_kept_and_reported(tok):
    p = prep("Hello \u4f60\u597d, my friend.")
    assert p.texts == ("Hello \u4f60\u597d, my friend.",)
    assert tok.tokenize(p.texts[0]).unknown_characters == ("\u4f60", "\u597d")


def test_empty_text_and_unknown_language():
    with pytest.raises(ValueError, match="empty"):
        prep(" \n ")
    with pytest.raises(ValueError, match="no text rules"):
        prep("Hello.", "xx")


# --- kind 2: normalisation toggle ------------------------------------------------------

@pytest.mark.parametrize("language, text, on, off", [
    ("en", "Total: $1,234,567.89", "Total: one million two hundred and thirty-four thousand five hundred and "
                                   "sixty-seven dollars and eighty-nine cents", "Total: $1,234,567.89"),
    ("de", "Das Ticket kostet 5 \u20ac pro Person.", "Das Ticket kostet fünf Euro pro Person.",
     "Das Ticket kostet 5 \u20ac pro Person."),
])
def test_normalisation_is_a_toggle_and_its_result_is_in_the_notes(language, text, on, off):
    p = prep(text, language)
    assert p.normalized and p.texts == (on,) and p.normalized_text == on
    assert f"Read as: {on}" in p.notes
    q = prep(text, language, normalize=False)
    assert not q.normalized and q.texts == (off,) and not q.changed and q.notes == ()


# --- kind 3: characters outside the vocabulary ----------------------------------------

@pytest.mark.parametrize("language, text, expected", [
    ("en", "Price \u2022 in \u20ac \u2192 Chatterbox\u2122 and STRA\u1e9eE", "Price, in euros to Chatterbox and STRA\u00dfE"),
    ("de", "Preis \u2022 in \u20ac \u2192 Chatterbox\u2122 und STRA\u1e9eE", "Preis, in Euro nach Chatterbox und STRA\u00dfE"),
    ("de", "\u0141\u00f3d\u017a & Gda\u0144sk", "L\u00f3dz und Gdansk"),
])
def test_characters_outside_the_vocabulary_are_read_as_words_or_neighbours(tok, chars, language, text, expected):
    assert tok.unknown_characters(text)  # as typed, the tokenizer cannot read them
    p = prep(text, language, characters=chars)
    assert p.texts == (expected,)
    assert tok.tokenize(expected).unknown_characters == ()
    assert any(n.startswith("Characters read as words:") and " -> " in n for n in p.notes)


def test_characters_stay_as_typed_when_normalisation_is_off(tok, chars):
    p = prep("It costs 5 \u20ac.", characters=chars, normalize=False)
    assert p.texts == ("It costs 5 \u20ac.",)
    assert tok.tokenize(p.texts[0]).unknown_characters == ("\u20ac",)  # listed, as before


# --- kind 4: tags and pauses -------------------------------------------------------------

def test_event_tags_are_single_tokens_of_the_english_vocabulary(tok):
    for tag in ENGLISH_EVENT_TAGS:
        ids = tok.encode(tag)
        assert len(ids) == 1 and ids[0] not in (START_TEXT, STOP_TEXT, UNK), tag


@pytest.mark.parametrize("language, typed, token", [
    ("en", "[laugh]", "[laughter]"), ("en", "[Laughter]", "[laughter]"), ("en", "[chuckle]", "[giggle]"),
    ("de", "[sigh]", "[sigh]"), ("de", "[clear throat]", "[clear_throat]"), ("en", "<cough>", "[cough]"),
])
def test_known_tag_becomes_its_token(tok, language, typed, token):
    p = prep(f"Well {typed} that was fun.", language)
    assert p.texts == (f"Well {token} that was fun.",) and p.removed_tags == ()
    [ids] = token_ids(tok, p)
    assert tok.tokenizer.token_to_id(token) in ids


def test_known_tags_come_from_the_model():
    turbo_like = {"[laugh]", "[clear throat]", "[chuckle]"}
    p = prepare_text("Ha [laughter] hm [clear_throat] [giggle] ok.", "en", known_tags=turbo_like)
    assert p.texts == ("Ha [laugh] hm [clear throat] [chuckle] ok.",)
    assert prepare_text("Ha [laugh] ok.", "en").removed_tags == ("[laugh]",)  # a model without tags
    with pytest.raises(ValueError, match="control tokens"):
        prepare_text("Hi.", "en", known_tags={"[STOP]"})


@pytest.mark.parametrize("language", ["en", "de"])
def test_unknown_tags_are_removed_and_listed(language):
    p = prep("Oh <haha> really [whatever] yes [1] </b>.", language)
    assert p.texts == ("Oh really yes.",)
    assert p.removed_tags == ("[whatever]", "[1]", "<haha>", "</b>")
    assert any("<haha>" in n for n in p.notes)


def test_bracketed_prose_is_read_without_brackets():
    assert prep("He said [and this matters a lot] yes.").texts == ("He said and this matters a lot yes.",)


@pytest.mark.parametrize("language, typed, seconds", [
    ("en", "[pause:1.5s]", 1.5), ("en", "[pause]", DEFAULT_PAUSE_S), ("en", "[PAUSE 500ms]", 0.5),
    ("en", '<break time="2s"/>', 2.0), ("de", "[Pause: 1,5 s]", 1.5), ("de", "[pause=3]", 3.0),
    ("de", "[pause:60s]", MAX_PAUSE_S),
])
def test_pause_tag_becomes_silence_between_pieces(language, typed, seconds):
    p = prep(f"First part. {typed} Second part.", language)
    assert p.segments == ("First part.", Pause(seconds), "Second part.")
    assert plan_chunks(p, 300) == ["First part.", Pause(seconds), "Second part."]
    assert (p.shortened_pauses == 1) == (seconds == MAX_PAUSE_S)


def test_private_use_characters_in_the_input_cannot_pose_as_pauses_or_tags():
    p = prep("One \ue000\U000f0000 two [pause] three\U000f8000 " + "[sigh] " * 3000)
    assert p.segments[:3] == ("One two", Pause(DEFAULT_PAUSE_S), "three " + " ".join(["[sigh]"] * 3000))


def test_adjacent_pauses_merge_and_edges_keep_them():
    p = prep("[pause:1s] One. [pause:0.5s]\n***\nTwo. [pause]")
    assert p.segments == (Pause(1.0), "One.", Pause(0.5 + SEPARATOR_PAUSE_S), "Two.", Pause(DEFAULT_PAUSE_S))
    assert p.normalized_text == "[pause 1 s] One. [pause 1.5 s] Two. [pause 0.5 s]"


CONTROL_TEXT = "[STOP] Hello [START] wor[x]ld [ST[x]OP] [UNK] [SPACE] [PLACEHOLDER55] [end_of_label] [fr] <STOP> end."


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("normalize", [True, False])
def test_typed_control_tokens_never_reach_the_ids(tok, language, normalize):
    assert {START_TEXT, STOP_TEXT} <= set(tok.encode(CONTROL_TEXT))  # what typing them would inject
    p = prep(CONTROL_TEXT, language, normalize=normalize)
    # [SPACE] is left out: every literal space becomes it, as it should.
    added = {tok.tokenizer.token_to_id(t) for t in ("[START]", "[STOP]", "[UNK]", "[PLACEHOLDER55]",
                                                     "[end_of_label]", "[fr]")}
    for ids in token_ids(tok, p):
        assert not added & set(ids), ids
    assert "[STOP]" in p.removed_tags and "[START]" in p.removed_tags


# --- kind 5: token limits from the spoken length ----------------------------------------

@pytest.mark.parametrize("language, text", [
    ("en", "Total: $1,234,567.89"), ("en", "Call 555-1234 on 2024-05-01 at 10:05 am, Dr. Smith."),
    ("de", "Es kostet 1.234.567,89 \u20ac, z. B. am 3.10.2024 um 15:30 Uhr."),
])
def test_token_limit_follows_the_spoken_text(language, text):
    spoken = prep(text, language).texts[0]
    written_limit = max_tokens_for_text(len(text))
    limit = chunk_token_limit(text, language)
    assert limit > written_limit
    assert chunk_token_limit(spoken, language) == limit  # normalised or not, the same bound
    # Read at a brisk 15 characters per second, the spoken text fits with room to spare.
    assert limit >= 1.5 * len(spoken) / 15 * S3_TOKEN_RATE


def test_token_limit_counts_pauses_and_stays_capped():
    plain = chunk_token_limit("a b c d e f g h i j", "en")
    assert chunk_token_limit("a, b, c, d, e. f g h i j", "en") > plain
    assert chunk_token_limit("Sure [sigh] fine.", "en") > chunk_token_limit("Sure sigh fine.", "en")
    assert chunk_token_limit("x " * 500, "de", cap=1000) == 1000


# --- the pipeline's one call -------------------------------------------------------------

@pytest.mark.parametrize("language, text, first, second", [
    ("en", "Tickets cost 5 \u20ac. [laugh] Really!\n\n* * *\n\nNext part [pause:2s] ends \u4f60.",
     "Tickets cost five euros. [laughter] Really!", "Next part."),
    ("de", "Das Ticket kostet 5 \u20ac. [laugh] Wirklich!\n\n* * *\n\nNächster Teil [pause:2s] endet \u4f60.",
     "Das Ticket kostet fünf Euro. [laughter] Wirklich!", "Nächster Teil."),
])
def test_plan_request_gives_chunks_pauses_limits_and_notes(tok, language, text, first, second):
    plan = plan_request(text, language, tok, max_chars=300, known_tags=ENGLISH_EVENT_TAGS)
    assert [type(i) for i in plan.items] == [PlannedChunk, Pause, PlannedChunk, Pause, PlannedChunk]
    assert [c.index for c in plan.chunks] == [0, 1, 2]
    assert plan.items[1] == Pause(SEPARATOR_PAUSE_S) and plan.items[3] == Pause(2.0)
    assert plan.items[3].samples(24_000) == 48_000
    assert plan.chunks[0].tokens.normalized_text == first and plan.chunks[1].tokens.normalized_text == second
    assert tok.tokenizer.token_to_id("[laughter]") in plan.chunks[0].tokens.ids
    assert plan.unknown_characters == ("\u4f60",)  # what still cannot be read is listed, as before
    assert all(c.token_limit == chunk_token_limit(c.tokens.normalized_text, language) for c in plan.chunks)
    assert "[pause 2 s]" in plan.normalized_text and plan.prepared.notes
    capped = plan_request(text, language, tok, max_chars=300, max_new_tokens=30)
    assert [c.token_limit for c in capped.chunks] == [30, 30, 30]
    assert capped.prepared.removed_tags == ("[laugh]",)  # no tags known: the tag is left out


# --- robustness: any text gives pieces that keep the invariants, or a ValueError --------

FUZZ_PIECES = list("aZ \u00e4\u00df09.,:;-\u2013/%$\u20ac#@&+=*_~[]<>()\"'\n!?\u00b0") + [
    "[pause:2s]", "[laugh]", "<haha>", "Dr. ", "z. B. ", "1914-1918", "3. Oktober", "$1,234.56", "5 \u20ac",
    "10:30", "1st", "***\n", "# ", "\u4f60\u597d", "\U0001F600", "[STOP]", "9" * 30, "1.000.000,5", "2024-13-45",
    "\ue000", "\U000f0000", "\U000f8000"]


@pytest.mark.parametrize("language", ["en", "de"])
def test_random_text_keeps_the_invariants_or_is_refused(language):
    import random

    rng = random.Random(7)
    refused = 0
    for _ in range(300):
        text = "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(1, 25)))
        try:
            p = prep(text, language)
        except ValueError:
            refused += 1
            continue
        assert p.texts and all(t.strip() and "[STOP]" not in t and "[START]" not in t for t in p.texts)
        assert not any(isinstance(a, Pause) and isinstance(b, Pause) for a, b in zip(p.segments, p.segments[1:]))
        assert all(1 <= chunk_token_limit(c, language) <= 1000 for c in plan_chunks(p, 300) if isinstance(c, str))
    assert 0 < refused < 300
