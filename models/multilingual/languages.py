"""The 23 languages of Chatterbox Multilingual: ids, names, scripts and example sentences.

Data for the front-end, the chunker and the UI. The ids are the model's language tags
(`[fr]`, `[zh]`, ...); the order is the reference's list (alphabetical by id).
`chars_per_second` is how many characters of that script typical read speech gets through
(code points as written, spaces and punctuation included): it measures how much text one
generation can speak (see models/multilingual/chunking.py). These are round figures from
common speech-rate measurements (e.g. ~14-15 characters/s for English and other Latin-script
languages, 4-5 syllables = characters/s for Mandarin, 7-8 morae/s for Japanese), not
properties of the model; they only size chunks and bound generations, with a wide margin.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language the multilingual model speaks."""

    id: str                 # the model's tag, e.g. "fr" -> token "[fr]"
    name: str               # display name, in English
    native_name: str        # the name in the language itself
    script: str             # key of SCRIPT_CHARS_PER_SECOND
    example: str            # a short example sentence for the UI (our own: a walk in the park)


# Characters of read speech per second, per script (see the module docstring).
SCRIPT_CHARS_PER_SECOND: dict[str, float] = {
    "latin": 15.0,
    "greek": 15.0,
    "cyrillic": 14.0,
    "arabic": 12.0,       # short vowels are not written: fewer letters per second
    "hebrew": 12.0,       # likewise
    "devanagari": 13.0,   # vowel signs and viramas are code points of their own
    "hangul": 6.5,        # one block = one syllable
    "japanese": 6.0,      # kana = one mora each, a kanji ~2 morae, at 7-8 morae/s
    "han": 4.5,           # one character = one syllable
}

LANGUAGES: dict[str, Language] = {lang.id: lang for lang in (
    Language("ar", "Arabic", "العربية", "arabic", "الطقس جميل اليوم، فلنذهب في نزهة إلى الحديقة."),
    Language("da", "Danish", "Dansk", "latin", "Vejret er dejligt i dag, så lad os gå en tur i parken."),
    Language("de", "German", "Deutsch", "latin",
             "Das Wetter ist heute herrlich, also lass uns im Park spazieren gehen."),
    Language("el", "Greek", "Ελληνικά", "greek", "Ο καιρός είναι υπέροχος σήμερα, ας πάμε μια βόλτα στο πάρκο."),
    Language("en", "English", "English", "latin", "The weather is lovely today, so let's take a walk in the park."),
    Language("es", "Spanish", "Español", "latin",
             "Hoy hace un tiempo estupendo, así que vamos a dar un paseo por el parque."),
    Language("fi", "Finnish", "Suomi", "latin", "Tänään on ihana sää, joten lähdetään kävelylle puistoon."),
    Language("fr", "French", "Français", "latin",
             "Il fait un temps magnifique aujourd'hui, allons nous promener dans le parc."),
    Language("he", "Hebrew", "עברית", "hebrew", "מזג האוויר נפלא היום, בואו נצא לטיול בפארק."),
    Language("hi", "Hindi", "हिन्दी", "devanagari", "आज मौसम बहुत सुहाना है, चलो पार्क में टहलने चलते हैं।"),
    Language("it", "Italian", "Italiano", "latin",
             "Oggi il tempo è splendido, andiamo a fare una passeggiata nel parco."),
    Language("ja", "Japanese", "日本語", "japanese", "今日はとても良い天気なので、公園を散歩しましょう。"),
    Language("ko", "Korean", "한국어", "hangul", "오늘 날씨가 정말 좋네요. 공원에 산책하러 가요."),
    Language("ms", "Malay", "Bahasa Melayu", "latin",
             "Cuaca sangat baik hari ini, jadi mari kita bersiar-siar di taman."),
    Language("nl", "Dutch", "Nederlands", "latin",
             "Het is heerlijk weer vandaag, dus laten we een wandeling maken in het park."),
    Language("no", "Norwegian", "Norsk", "latin", "Været er nydelig i dag, så la oss gå en tur i parken."),
    Language("pl", "Polish", "Polski", "latin", "Dziś jest piękna pogoda, więc chodźmy na spacer do parku."),
    Language("pt", "Portuguese", "Português", "latin",
             "Hoje está um dia lindo, por isso vamos dar um passeio no parque."),
    Language("ru", "Russian", "Русский", "cyrillic", "Сегодня прекрасная погода, давайте погуляем в парке."),
    Language("sv", "Swedish", "Svenska", "latin", "Vädret är underbart i dag, så vi tar en promenad i parken."),
    Language("sw", "Swahili", "Kiswahili", "latin",
             "Hali ya hewa ni nzuri leo, kwa hivyo twende tukatembee bustanini."),
    Language("tr", "Turkish", "Türkçe", "latin", "Bugün hava çok güzel, hadi parkta yürüyüşe çıkalım."),
    Language("zh", "Chinese", "中文", "han", "今天天气很好，我们去公园散步吧。"),
)}

LANGUAGE_IDS: tuple[str, ...] = tuple(LANGUAGES)

# Shown beside the language choice: the reference voice carries its accent into the output.
ACCENT_NOTE = (
    "The reference voice sets the accent: a recording in another language makes the speech sound "
    "accented in the chosen one. For a native accent, use a reference in the same language, or set "
    "CFG to 0, which lets the model follow the language tag more than the voice prompt."
)


def dropdown_choices() -> list[tuple[str, str]]:
    """(label, id) pairs for a language dropdown, e.g. ("Japanese (日本語)", "ja"), in id order."""
    return [(lang.name if lang.name == lang.native_name else f"{lang.name} ({lang.native_name})", lang.id)
            for lang in LANGUAGES.values()]


def get_language(language_id: str) -> Language:
    """The language with this id (case-insensitive); ValueError naming the 23 ids otherwise."""
    key = language_id.lower() if isinstance(language_id, str) else language_id
    if key not in LANGUAGES:
        raise ValueError(f"unsupported language {language_id!r}; choose one of: {', '.join(LANGUAGE_IDS)}")
    return LANGUAGES[key]


def language_id(value: str) -> str:
    """The id of a language given by id, English name or native name, in any case ("ja",
    "Japanese", "日本語" -> "ja"); ValueError naming the 23 ids otherwise."""
    if isinstance(value, str):
        key = value.strip().casefold()
        for lang in LANGUAGES.values():
            if key in (lang.id, lang.name.casefold(), lang.native_name.casefold()):
                return lang.id
    raise ValueError(f"unsupported language {value!r}; choose one of: {', '.join(LANGUAGE_IDS)} "
                     f"(or their English names)")


def chars_per_second(language_id: str) -> float:
    """Characters of `language_id`'s script that typical read speech gets through per second."""
    return SCRIPT_CHARS_PER_SECOND[get_language(language_id).script]
