"""Per-script sentence splitting and chunk lengths for all 23 languages."""
from __future__ import annotations

import pytest

from models.multilingual.chunking import (GENERATION_SECONDS, SPACELESS, chunk_chars, max_tokens_for,
                                          sentence_ends, speech_seconds, split_sentences, split_text)
from models.multilingual.languages import LANGUAGE_IDS


@pytest.fixture(scope="module")
def mtl_tokenizer(parity_dir):
    from models.multilingual.text import MultilingualTokenizer

    kit = parity_dir / "multilingual"
    return MultilingualTokenizer.from_files(kit / "grapheme_mtl_merged_expanded_v1.json", kit / "Cangjie5_TC.json")


# Three sentences per language, each ended the way that language writes it.
SENTENCES = {
    "ar": ["مرحباً بالعالم!", "كيف حالك اليوم؟", "أنا بخير، شكراً."],
    "da": ["Hej med dig!", "Hvordan går det?", "Det går fint, tak."],
    "de": ["Guten Morgen!", "Wie geht es dir?", "Mir geht es gut, danke."],
    "el": ["Καλημέρα!", "Τι κάνεις σήμερα;", "Είμαι καλά, ευχαριστώ."],
    "en": ["Good morning!", "How are you today?", "I am fine, thanks."],
    "es": ["¡Buenos días!", "¿Cómo estás hoy?", "Estoy bien, gracias."],
    "fi": ["Hyvää huomenta!", "Mitä kuuluu tänään?", "Hyvää, kiitos."],
    "fr": ["Bonjour !", "Comment ça va aujourd'hui ?", "Très bien, merci."],
    "he": ["שלום עולם!", "מה שלומך היום?", "אני בסדר, תודה."],
    "hi": ["नमस्ते दुनिया!", "आज मौसम बहुत अच्छा है।", "ज़रूर आइए।"],
    "it": ["Buongiorno a tutti!", "Come state oggi?", "Bene, grazie."],
    "ja": ["おはようございます。", "今日は元気ですか？", "はい、元気です！"],
    "ko": ["안녕하세요!", "오늘 기분이 어때요?", "좋아요, 고마워요."],
    "ms": ["Selamat pagi!", "Apa khabar hari ini?", "Khabar baik, terima kasih."],
    "nl": ["Goedemorgen!", "Hoe gaat het vandaag?", "Goed, dank je."],
    "no": ["God morgen!", "Hvordan går det i dag?", "Bra, takk."],
    "pl": ["Dzień dobry!", "Jak się dziś masz?", "Dobrze, dziękuję."],
    "pt": ["Bom dia!", "Como você está hoje?", "Estou bem, obrigado."],
    "ru": ["Доброе утро!", "Как дела сегодня?", "Хорошо, спасибо."],
    "sv": ["God morgon!", "Hur mår du idag?", "Bra, tack."],
    "sw": ["Habari za asubuhi!", "Habari yako leo?", "Nzuri, asante."],
    "tr": ["Günaydın!", "Bugün nasılsın?", "İyiyim, teşekkürler."],
    "zh": ["你好，世界！", "今天天气怎么样？", "天气很好。"],
}


def test_every_language_has_cases():
    assert sorted(SENTENCES) == sorted(LANGUAGE_IDS)


@pytest.mark.parametrize("language", LANGUAGE_IDS)
def test_sentences_split_at_the_scripts_marks(language):
    sentences = SENTENCES[language]
    joiner = "" if language in SPACELESS else " "
    assert split_sentences(joiner.join(sentences), language) == sentences


@pytest.mark.parametrize("language", LANGUAGE_IDS)
def test_long_text_chunks_fit_one_generation(language):
    joiner = "" if language in SPACELESS else " "
    unit = joiner.join(SENTENCES[language])
    text = joiner.join([unit] * 40)
    limit = chunk_chars(language)
    chunks = split_text(text, language)
    assert len(chunks) > 1
    assert all(0 < len(c) <= limit for c in chunks)
    assert all(c.endswith(tuple(sentence_ends(language))) for c in chunks)  # cut at sentence ends only
    assert all(speech_seconds(c, language) <= GENERATION_SECONDS / 2 for c in chunks)
    if language in SPACELESS:
        assert "".join(chunks).replace(" ", "") == "".join(text.split())
    else:
        assert " ".join(chunks) == " ".join(text.split())


def test_chunk_length_follows_the_script():
    assert chunk_chars("en") == 300
    assert chunk_chars("zh") < chunk_chars("ja") < chunk_chars("ko") < chunk_chars("ar") < chunk_chars("en")
    # Same speaking time, same bound on speech tokens, whatever the script.
    assert max_tokens_for("x" * 90, "zh") == max_tokens_for("x" * 300, "en") == 1000
    assert max_tokens_for("你好。", "zh") > max_tokens_for("Hi.", "en")


def _long_text(sentences: list[str], joiner: str, n_chars: int) -> str:
    parts, length, i = [], 0, 0
    while length < n_chars:
        parts.append(sentences[i % len(sentences)])
        length += len(parts[-1]) + len(joiner)
        i += 1
    return joiner.join(parts)


@pytest.mark.parametrize("language, sentences", [
    ("zh", ["上个月，我们达到了一个新的里程碑。", "我们的频道观看次数达到了二十亿次！", "这真是太好了吗？",
            "感谢每一位观众的支持和鼓励，我们会继续努力，为大家带来更多更好的内容。"]),
    ("ar", ["في الشهر الماضي، وصلنا إلى معلم جديد بمليارين من المشاهدات على قناتنا.", "هل تصدق ذلك؟",
            "شكراً لكل من شاهد وشارك ودعم هذا العمل طوال هذه السنوات!"]),
])
def test_2000_characters_split_at_sentence_ends(mtl_tokenizer, language, sentences):
    joiner = "" if language in SPACELESS else " "
    text = _long_text(sentences, joiner, 2000)
    assert len(text) >= 2000
    chunks = split_text(text, language)
    ends = tuple(sentence_ends(language))
    for chunk in chunks:
        assert chunk.endswith(ends) and len(chunk) <= chunk_chars(language)
        assert any(chunk.startswith(s) for s in sentences)  # starts where a sentence starts
        # It fits one generation: text positions of T3 and the speech-token budget at a slow pace.
        ids = mtl_tokenizer.tokenize(chunk, language).ids
        assert len(ids) + 2 <= 2050
        assert 2 * speech_seconds(chunk, language) <= GENERATION_SECONDS


def test_over_long_sentences_cut_at_clause_marks_then_characters():
    clauses = "这是一个很长的句子，" * 30 + "。"
    assert [len(c) for c in split_text(clauses, "zh")] == [90, 90, 90, 31]
    assert all(c.endswith(("，", "。")) for c in split_text(clauses, "zh"))
    unbroken = "字" * 200
    assert split_text(unbroken, "zh") == ["字" * 90, "字" * 90, "字" * 20]
    arabic = "كلمة، " * 80
    assert all(c.endswith("،") for c in split_text(arabic, "ar")[:-1])


def test_decimal_points_initials_and_titles_do_not_end_sentences():
    assert split_sentences("Dr. Smith met J. R. Tolkien. It cost 3.5 euros.", "en") == [
        "Dr. Smith met J. R. Tolkien.", "It cost 3.5 euros."]
    assert split_sentences("価格は3.5ドルです。安い！", "ja") == ["価格は3.5ドルです。", "安い！"]


def test_headings_end_their_chunk_and_bad_input():
    assert split_text("Kapitel eins\nEs war einmal.", "de") == ["Kapitel eins", "Es war einmal."]
    assert split_text("   ", "fr") == []
    with pytest.raises(ValueError):
        split_text("Hola.", "xx")
    with pytest.raises(ValueError):
        split_text("Hola.", "es", max_chars=0)
