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
    example: str            # one example sentence for the UI


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
    Language("ar", "Arabic", "العربية", "arabic",
             "في الشهر الماضي، وصلنا إلى معلم جديد بمليارين من المشاهدات على قناتنا على يوتيوب."),
    Language("da", "Danish", "Dansk", "latin",
             "Sidste måned nåede vi en ny milepæl med to milliarder visninger på vores YouTube-kanal."),
    Language("de", "German", "Deutsch", "latin",
             "Letzten Monat haben wir einen neuen Meilenstein erreicht: zwei Milliarden Aufrufe auf unserem "
             "YouTube-Kanal."),
    Language("el", "Greek", "Ελληνικά", "greek",
             "Τον περασμένο μήνα, φτάσαμε σε ένα νέο ορόσημο με δύο δισεκατομμύρια προβολές στο κανάλι μας "
             "στο YouTube."),
    Language("en", "English", "English", "latin",
             "Last month, we reached a new milestone with two billion views on our YouTube channel."),
    Language("es", "Spanish", "Español", "latin",
             "El mes pasado alcanzamos un nuevo hito: dos mil millones de visualizaciones en nuestro canal de "
             "YouTube."),
    Language("fi", "Finnish", "Suomi", "latin",
             "Viime kuussa saavutimme uuden virstanpylvään: kaksi miljardia katselukertaa YouTube-kanavallamme."),
    Language("fr", "French", "Français", "latin",
             "Le mois dernier, nous avons atteint un nouveau jalon avec deux milliards de vues sur notre chaîne "
             "YouTube."),
    Language("he", "Hebrew", "עברית", "hebrew",
             "בחודש שעבר הגענו לאבן דרך חדשה עם שני מיליארד צפיות בערוץ היוטיוב שלנו."),
    Language("hi", "Hindi", "हिन्दी", "devanagari",
             "पिछले महीने हमने एक नया मील का पत्थर छुआ: हमारे YouTube चैनल पर दो अरब व्यूज़।"),
    Language("it", "Italian", "Italiano", "latin",
             "Il mese scorso abbiamo raggiunto un nuovo traguardo: due miliardi di visualizzazioni sul nostro "
             "canale YouTube."),
    Language("ja", "Japanese", "日本語", "japanese",
             "先月、私たちのYouTubeチャンネルで二十億回の再生回数という新たな節目に達しました。"),
    Language("ko", "Korean", "한국어", "hangul",
             "지난달 우리는 유튜브 채널에서 이십억 조회수라는 새로운 이정표에 도달했습니다."),
    Language("ms", "Malay", "Bahasa Melayu", "latin",
             "Bulan lepas, kami mencapai pencapaian baharu dengan dua bilion tontonan di saluran YouTube kami."),
    Language("nl", "Dutch", "Nederlands", "latin",
             "Vorige maand bereikten we een nieuwe mijlpaal met twee miljard weergaven op ons YouTube-kanaal."),
    Language("no", "Norwegian", "Norsk", "latin",
             "Forrige måned nådde vi en ny milepæl med to milliarder visninger på YouTube-kanalen vår."),
    Language("pl", "Polish", "Polski", "latin",
             "W zeszłym miesiącu osiągnęliśmy nowy kamień milowy: dwa miliardy wyświetleń na naszym kanale "
             "YouTube."),
    Language("pt", "Portuguese", "Português", "latin",
             "No mês passado, alcançámos um novo marco: dois mil milhões de visualizações no nosso canal do "
             "YouTube."),
    Language("ru", "Russian", "Русский", "cyrillic",
             "В прошлом месяце мы достигли нового рубежа: два миллиарда просмотров на нашем YouTube-канале."),
    Language("sv", "Swedish", "Svenska", "latin",
             "Förra månaden nådde vi en ny milstolpe med två miljarder visningar på vår YouTube-kanal."),
    Language("sw", "Swahili", "Kiswahili", "latin",
             "Mwezi uliopita, tulifika hatua mpya ya maoni bilioni mbili kwenye kituo chetu cha YouTube."),
    Language("tr", "Turkish", "Türkçe", "latin",
             "Geçen ay YouTube kanalımızda iki milyar görüntüleme ile yeni bir dönüm noktasına ulaştık."),
    Language("zh", "Chinese", "中文", "han",
             "上个月，我们达到了一个新的里程碑。我们的YouTube频道观看次数达到了二十亿次！"),
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


def chars_per_second(language_id: str) -> float:
    """Characters of `language_id`'s script that typical read speech gets through per second."""
    return SCRIPT_CHARS_PER_SECOND[get_language(language_id).script]
