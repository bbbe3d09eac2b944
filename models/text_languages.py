"""Per-language facts of the text front-end: words, units, abbreviations, characters.

One `LanguageRules` entry per language (`LANGUAGE_RULES`, keyed by ISO 639-1 code, which is
also num2words' language name). `models.text_normalize` and `models.text_prep` read only
these tables, so a language of the multilingual model is added by writing its entry and,
where the rules differ, its date/ordinal patterns in `text_normalize._rules`. num2words
0.5.14 has 18 of the multilingual model's 23 languages; Greek, Hindi, Malay, Swahili and
Chinese would need their number words from elsewhere (or normalisation off).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Unit:
    """A unit's spoken forms; `feminine` picks German "eine" for one (eine Stunde)."""

    singular: str
    plural: str
    feminine: bool = False


@dataclass(frozen=True)
class Currency:
    """A currency's spoken forms and those of its hundredth (cent, penny)."""

    singular: str
    plural: str
    cent_singular: str
    cent_plural: str


@dataclass(frozen=True)
class Abbreviation:
    """What a written abbreviation says. `before_number`: only when a number follows ("No. 5");
    `may_end`: often ends a sentence ("usw."), so the sentence's period is kept after it."""

    spoken: str
    before_number: bool = False
    may_end: bool = False


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class LanguageRules:
    """Everything language-specific the normaliser and the preparation step need.

    Numbers are written with `group_mark` between thousands and `decimal_mark` before the
    fraction. `words` holds the connecting words (keys: point, percent, minus, to, number,
    oclock, hundred_hours, at, and). `year_cues` are words after which a bare 4-digit number
    is a year. `scripts` are the Unicode script names (first word of a character's name) the
    model reads; letters of any other script are foreign.
    """

    code: str
    name: str
    decimal_mark: str
    group_mark: str
    months: tuple[str, ...]
    words: Mapping[str, str]
    currencies: Mapping[str, Currency]   # symbol or ISO code -> spoken forms
    scales: Mapping[str, str]            # scale word after a number ("million", "Mio.") -> spoken
    units: Mapping[str, Unit]
    abbreviations: Mapping[str, Abbreviation]
    characters: Mapping[str, str]        # a character -> what to read instead ("" removes it)
    year_cues: frozenset[str]
    scripts: frozenset[str] = field(default_factory=lambda: frozenset({"LATIN"}))


_ENGLISH_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
                   "September", "October", "November", "December")
_GERMAN_MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
                  "September", "Oktober", "November", "Dezember")

# Symbols both languages share; the words differ.
_EUR, _USD, _GBP, _JPY = "EUR", "USD", "GBP", "JPY"
_CURRENCY_SYMBOLS = {"\u20ac": _EUR, "$": _USD, "\u00a3": _GBP, "\u00a5": _JPY,
                     "EUR": _EUR, "USD": _USD, "GBP": _GBP, "JPY": _JPY}

ENGLISH = LanguageRules(
    code="en",
    name="English",
    decimal_mark=".",
    group_mark=",",
    months=_ENGLISH_MONTHS,
    words=_frozen({"point": "point", "percent": "percent", "minus": "minus", "to": "to", "number": "number",
                   "oclock": "o'clock", "hundred_hours": "hundred", "at": "at", "and": "and"}),
    currencies=_frozen({k: {_EUR: Currency("euro", "euros", "cent", "cents"),
                            _USD: Currency("dollar", "dollars", "cent", "cents"),
                            _GBP: Currency("pound", "pounds", "penny", "pence"),
                            _JPY: Currency("yen", "yen", "sen", "sen")}[v] for k, v in _CURRENCY_SYMBOLS.items()}),
    scales=_frozen({"thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion",
                    "bn": "billion", "m": "million", "k": "thousand"}),
    units=_frozen({
        "km/h": Unit("kilometer per hour", "kilometers per hour"), "mph": Unit("mile per hour", "miles per hour"),
        "km": Unit("kilometer", "kilometers"), "cm": Unit("centimeter", "centimeters"),
        "mm": Unit("millimeter", "millimeters"), "m": Unit("meter", "meters"),
        "m\u00b2": Unit("square meter", "square meters"), "m\u00b3": Unit("cubic meter", "cubic meters"),
        "kg": Unit("kilogram", "kilograms"), "mg": Unit("milligram", "milligrams"), "g": Unit("gram", "grams"),
        "ml": Unit("milliliter", "milliliters"), "l": Unit("liter", "liters"), "L": Unit("liter", "liters"),
        "\u00b0C": Unit("degree Celsius", "degrees Celsius"), "\u00b0F": Unit("degree Fahrenheit", "degrees Fahrenheit"),
        "\u00b0": Unit("degree", "degrees"),
        "h": Unit("hour", "hours"), "min": Unit("minute", "minutes"), "s": Unit("second", "seconds"),
        "ms": Unit("millisecond", "milliseconds"),
        "kB": Unit("kilobyte", "kilobytes"), "KB": Unit("kilobyte", "kilobytes"), "MB": Unit("megabyte", "megabytes"),
        "GB": Unit("gigabyte", "gigabytes"), "TB": Unit("terabyte", "terabytes"),
        "Hz": Unit("hertz", "hertz"), "kHz": Unit("kilohertz", "kilohertz"), "MHz": Unit("megahertz", "megahertz"),
        "GHz": Unit("gigahertz", "gigahertz"), "kWh": Unit("kilowatt hour", "kilowatt hours"),
        "kW": Unit("kilowatt", "kilowatts"), "W": Unit("watt", "watts"), "V": Unit("volt", "volts"),
        "mi": Unit("mile", "miles"), "ft": Unit("foot", "feet"), "lb": Unit("pound", "pounds"),
        "lbs": Unit("pound", "pounds"), "oz": Unit("ounce", "ounces"),
    }),
    abbreviations=_frozen({
        "Dr.": Abbreviation("Doctor"), "Mr.": Abbreviation("Mister"), "Mrs.": Abbreviation("Missus"),
        "Ms.": Abbreviation("Miz"), "Prof.": Abbreviation("Professor"), "Jr.": Abbreviation("Junior", may_end=True),
        "Sr.": Abbreviation("Senior", may_end=True), "vs.": Abbreviation("versus"), "Mt.": Abbreviation("Mount"),
        "Capt.": Abbreviation("Captain"), "Lt.": Abbreviation("Lieutenant"), "Sgt.": Abbreviation("Sergeant"),
        "Gen.": Abbreviation("General"), "Gov.": Abbreviation("Governor"),
        "approx.": Abbreviation("approximately"), "etc.": Abbreviation("et cetera", may_end=True),
        "e.g.": Abbreviation("for example"), "i.e.": Abbreviation("that is"),
        "No.": Abbreviation("number", before_number=True), "Nos.": Abbreviation("numbers", before_number=True),
        "Fig.": Abbreviation("figure", before_number=True), "Vol.": Abbreviation("volume", before_number=True),
        "Ch.": Abbreviation("chapter", before_number=True), "p.": Abbreviation("page", before_number=True),
        "pp.": Abbreviation("pages", before_number=True),
    }),
    characters=_frozen({
        "\u20ac": " euros ", "&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "\u00d7": " times ",
        "\u2192": " to ", "\u21d2": " so ", "\u2248": " about ", "~": " about ", "\u2116": " number ",
        "\u2122": "", "\u00ae": "", "\u2022": ", ", "\u00b7": ", ", "\u25e6": ", ", "\u25aa": ", ",
        "\u25ba": ", ", "\u2023": ", ", "\u1e9e": "\u00df", "\u00bd": " one half ", "\u00bc": " one quarter ",
        "\u00be": " three quarters ", "%": " percent ", "\u2030": " per mille ",
    }),
    year_cues=frozenset("in since until till by from to of year around circa before after during between "
                        "early late mid summer winter spring autumn fall".split()),
)

GERMAN = LanguageRules(
    code="de",
    name="German",
    decimal_mark=",",
    group_mark=".",
    months=_GERMAN_MONTHS,
    words=_frozen({"point": "Komma", "percent": "Prozent", "minus": "minus", "to": "bis", "number": "Nummer",
                   "oclock": "Uhr", "hundred_hours": "Uhr", "at": "at", "and": "und"}),
    currencies=_frozen({k: {_EUR: Currency("Euro", "Euro", "Cent", "Cent"),
                            _USD: Currency("Dollar", "Dollar", "Cent", "Cent"),
                            _GBP: Currency("Pfund", "Pfund", "Penny", "Pence"),
                            _JPY: Currency("Yen", "Yen", "Sen", "Sen")}[v] for k, v in _CURRENCY_SYMBOLS.items()}),
    scales=_frozen({"Tausend": "Tausend", "Million": "Million", "Millionen": "Millionen",
                    "Milliarde": "Milliarde", "Milliarden": "Milliarden", "Billion": "Billion",
                    "Billionen": "Billionen", "Mio.": "Millionen", "Mrd.": "Milliarden", "Tsd.": "Tausend"}),
    units=_frozen({
        "km/h": Unit("Kilometer pro Stunde", "Kilometer pro Stunde"),
        "km": Unit("Kilometer", "Kilometer"), "cm": Unit("Zentimeter", "Zentimeter"),
        "mm": Unit("Millimeter", "Millimeter"), "m": Unit("Meter", "Meter"),
        "m\u00b2": Unit("Quadratmeter", "Quadratmeter"), "m\u00b3": Unit("Kubikmeter", "Kubikmeter"),
        "kg": Unit("Kilogramm", "Kilogramm"), "mg": Unit("Milligramm", "Milligramm"), "g": Unit("Gramm", "Gramm"),
        "t": Unit("Tonne", "Tonnen", feminine=True),
        "ml": Unit("Milliliter", "Milliliter"), "l": Unit("Liter", "Liter"), "L": Unit("Liter", "Liter"),
        "\u00b0C": Unit("Grad Celsius", "Grad Celsius"), "\u00b0F": Unit("Grad Fahrenheit", "Grad Fahrenheit"),
        "\u00b0": Unit("Grad", "Grad"),
        "h": Unit("Stunde", "Stunden", feminine=True), "Std.": Unit("Stunde", "Stunden", feminine=True),
        "min": Unit("Minute", "Minuten", feminine=True), "Min.": Unit("Minute", "Minuten", feminine=True),
        "s": Unit("Sekunde", "Sekunden", feminine=True), "Sek.": Unit("Sekunde", "Sekunden", feminine=True),
        "ms": Unit("Millisekunde", "Millisekunden", feminine=True),
        "kB": Unit("Kilobyte", "Kilobyte"), "KB": Unit("Kilobyte", "Kilobyte"), "MB": Unit("Megabyte", "Megabyte"),
        "GB": Unit("Gigabyte", "Gigabyte"), "TB": Unit("Terabyte", "Terabyte"),
        "Hz": Unit("Hertz", "Hertz"), "kHz": Unit("Kilohertz", "Kilohertz"), "MHz": Unit("Megahertz", "Megahertz"),
        "GHz": Unit("Gigahertz", "Gigahertz"), "kWh": Unit("Kilowattstunde", "Kilowattstunden", feminine=True),
        "kW": Unit("Kilowatt", "Kilowatt"), "W": Unit("Watt", "Watt"), "V": Unit("Volt", "Volt"),
    }),
    abbreviations=_frozen({
        "Dr.": Abbreviation("Doktor"), "Prof.": Abbreviation("Professor"), "Hr.": Abbreviation("Herr"),
        "Hrn.": Abbreviation("Herrn"), "Fr.": Abbreviation("Frau"), "St.": Abbreviation("Sankt"),
        "z.B.": Abbreviation("zum Beispiel"), "d.h.": Abbreviation("das heißt"),
        "u.a.": Abbreviation("unter anderem", may_end=True), "o.\u00c4.": Abbreviation("oder Ähnliches", may_end=True),
        "u.U.": Abbreviation("unter Umständen"), "v.a.": Abbreviation("vor allem"), "z.T.": Abbreviation("zum Teil"),
        "s.o.": Abbreviation("siehe oben", may_end=True), "s.u.": Abbreviation("siehe unten", may_end=True),
        "usw.": Abbreviation("und so weiter", may_end=True), "etc.": Abbreviation("et cetera", may_end=True),
        "bzw.": Abbreviation("beziehungsweise"), "ca.": Abbreviation("circa"), "evtl.": Abbreviation("eventuell"),
        "ggf.": Abbreviation("gegebenenfalls"), "vgl.": Abbreviation("vergleiche"), "inkl.": Abbreviation("inklusive"),
        "zzgl.": Abbreviation("zuzüglich"), "bspw.": Abbreviation("beispielsweise"), "Str.": Abbreviation("Straße"),
        "Tel.": Abbreviation("Telefon"), "Jh.": Abbreviation("Jahrhundert", may_end=True),
        "Nr.": Abbreviation("Nummer", before_number=True), "Abb.": Abbreviation("Abbildung", before_number=True),
        "S.": Abbreviation("Seite", before_number=True), "Kap.": Abbreviation("Kapitel", before_number=True),
    }),
    characters=_frozen({
        "\u20ac": " Euro ", "&": " und ", "@": " ät ", "+": " plus ", "=": " gleich ", "\u00d7": " mal ",
        "\u2192": " nach ", "\u21d2": " also ", "\u2248": " etwa ", "~": " etwa ", "\u2116": " Nummer ",
        "\u2122": "", "\u00ae": "", "\u2022": ", ", "\u00b7": ", ", "\u25e6": ", ", "\u25aa": ", ",
        "\u25ba": ", ", "\u2023": ", ", "\u1e9e": "\u00df", "\u00bd": " einhalb ", "\u00bc": " ein Viertel ",
        "\u00be": " drei Viertel ", "%": " Prozent ", "\u2030": " Promille ",
    }),
    year_cues=frozenset("im seit bis von vom ab um jahr jahre jahres anno nach vor zwischen "
                        "sommer winter frühjahr frühling herbst ende anfang mitte".split()),
)

LANGUAGE_RULES: Mapping[str, LanguageRules] = _frozen({r.code: r for r in (ENGLISH, GERMAN)})


def rules_for(language: str) -> LanguageRules:
    """The entry of `language` (ISO 639-1); ValueError naming the supported ones."""
    try:
        return LANGUAGE_RULES[language]
    except KeyError:
        raise ValueError(f"no text rules for language {language!r}; known: {', '.join(LANGUAGE_RULES)}") from None
