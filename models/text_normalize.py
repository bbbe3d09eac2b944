"""Numbers, amounts, dates, times, units and abbreviations -> words (English, German).

T3 reads digits and symbols badly: "$1,234,567.89" or "5 €" come out garbled or not at all.
`normalize_text` rewrites them as the words a reader would say, using num2words for the
number words and the tables of `models.text_languages` for everything else. Rules run in a
fixed order, most specific first (an ISO date before a number range before a plain number).

What is covered (both languages unless noted): abbreviations from the table; currencies
before or after the amount, with cents and scale words ("$5 million"); percentages; units
after a number; dates (ISO, "May 3rd, 2024", "3 May", German "3.10.2024" and "3. Oktober");
times ("3:30 pm", "15:30 Uhr"); year ranges and number ranges; ordinals ("21st", German "3.");
decades ("1990s", "90er"); years (English after a cue word such as "in", "since"; German every
4-digit number from 1100 to 1999 or 2000 to 2099 is read as a year, which is also how German
reads such counts); cardinals, decimals, negatives and "#5".
Not covered: Roman numerals, fractions written with "/", phone numbers, IP addresses and
version strings (read as numbers), URLs and e-mail addresses, US/UK numeric dates
("10/03/2024"), German case and gender beyond three rules (num2words' forms; "ein"/"eine"
before a unit or currency; an ordinal after am/im/vom/zum/beim/dem/den/des takes -n),
German ordinals right before a capitalised sentence starter are read as cardinals.
"""
from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Callable

from num2words import num2words

from .text_languages import LanguageRules, rules_for

MAX_DIGITS = 21  # longer digit strings (IDs, hashes) are read digit by digit
# An ordinal after one of these takes the dative/accusative ending: "am dritten Oktober".
_GERMAN_DATIVE = frozenset("am im vom zum beim dem den des".split())
# Words that start a German sentence: "Ich bin 30. Du bist 20." ends a sentence after 30.
_GERMAN_STARTERS = frozenset("""der die das den dem des ein eine ich du er sie es wir ihr man und aber dann doch
    denn so da hier dort heute morgen gestern jetzt nun also wenn als ob wie was wer wo warum danach""".split())
_EN_SUFFIX = r"(?:st|nd|rd|th)"


def _alternation(words) -> str:
    """Regex alternation of literal `words`, longest first (so "km/h" wins over "km")."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _number_pattern(rules: LanguageRules) -> str:
    g, d = re.escape(rules.group_mark), re.escape(rules.decimal_mark)
    return rf"\d{{1,3}}(?:{g}\d{{3}})+(?:{d}\d+)?|\d+(?:{d}\d+)?"


class _Speaker:
    """Number words of one language (num2words) with the language's marks and forms."""

    def __init__(self, rules: LanguageRules):
        self.rules = rules
        self.lang = rules.code

    def split(self, written: str) -> tuple[str, str]:
        """'1,234.5' -> ('1234', '5'); the fraction is '' without a decimal mark."""
        whole, _, frac = written.replace(self.rules.group_mark, "").partition(self.rules.decimal_mark)
        return whole, frac

    def value(self, written: str) -> Decimal:
        whole, frac = self.split(written)
        return Decimal(f"{whole}.{frac or 0}")

    def digits(self, digits: str) -> str:
        return " ".join(num2words(int(d), lang=self.lang) for d in digits)

    def integer(self, whole: str, before_noun: bool = False, feminine: bool = False) -> str:
        if len(whole) > MAX_DIGITS or (len(whole) > 1 and whole.startswith("0")):
            return self.digits(whole)
        words = num2words(int(whole), lang=self.lang).replace(",", "")
        if self.lang == "de" and before_noun and words.endswith("eins"):
            words = words[:-1] + ("e" if feminine else "")  # "eins" -> "ein Euro" / "eine Stunde"
        return words

    def number(self, written: str, before_noun: bool = False, feminine: bool = False) -> str:
        whole, frac = self.split(written)
        words = self.integer(whole, before_noun and not frac, feminine)
        if frac:
            words += f" {self.rules.words['point']} {self.digits(frac)}"
        return words

    def ordinal(self, n: int, before: str = "") -> str:
        if len(str(n)) > MAX_DIGITS:
            return self.digits(str(n))
        words = num2words(n, lang=self.lang, to="ordinal").replace(",", "")
        if self.lang == "de" and before.lower() in _GERMAN_DATIVE:
            words += "n"
        return words

    def year(self, written: str) -> str:
        return num2words(int(written), lang=self.lang, to="year").replace(",", "")


def _word_before(match: re.Match) -> str:
    found = re.search(r"(\w+)\W*$", match.string[:match.start()])
    return found.group(1) if found else ""


def _at_line_start(match: re.Match) -> bool:
    return match.string[:match.start()].rsplit("\n", 1)[-1].strip() == ""


def _spaced(words: str, match: re.Match) -> str:
    """Words replacing a match, with a space where a letter or digit touches either end."""
    before = match.string[match.start() - 1:match.start()]
    after = match.string[match.end():match.end() + 1]
    lead = " " if before and (before.isalnum()) else ""
    trail = " " if after and (after.isalnum()) else ""
    return f"{lead}{words}{trail}"


@functools.lru_cache(maxsize=None)
def _rules(language: str) -> list[tuple[re.Pattern, Callable[[re.Match], str]]]:
    """The (pattern, replacement function) list of `language`, in the order they apply."""
    rules = rules_for(language)
    say = _Speaker(rules)
    num = _number_pattern(rules)
    w = rules.words
    months = _alternation(rules.months)
    month_number = {m.lower(): i + 1 for i, m in enumerate(rules.months)}
    de = language == "de"

    def abbreviation(m: re.Match) -> str:
        written = re.sub(r"\s+", "", m.group(0))
        abbr = abbreviations[written[0].lower() + written[1:]]
        spoken = abbr.spoken
        if written[0].isupper() and spoken[0].islower():
            spoken = spoken[0].upper() + spoken[1:]
        rest = m.string[m.end():]
        if abbr.may_end and (not rest.strip() or re.match(r"\s*\n|\s+[A-ZÄÖÜ]", rest)):
            spoken += "."
        return spoken

    abbreviations = {k[0].lower() + k[1:]: v for k, v in rules.abbreviations.items()}
    abbr_patterns = []
    for key, abbr in sorted(rules.abbreviations.items(), key=lambda kv: len(kv[0]), reverse=True):
        first = f"[{re.escape(key[0].lower())}{re.escape(key[0].upper())}]"
        body = re.escape(key[1:]).replace(r"\.", r"\.\s?")
        body = body[:-3] if body.endswith(r"\.\s?") else body  # the final dot takes no space after it
        follow = r"(?=\s?\d)" if abbr.before_number else r"(?!\w)"
        abbr_patterns.append(f"{first}{body}{follow}")
    abbr_re = re.compile(rf"(?<![\w.])(?:{'|'.join(abbr_patterns)})")

    currency_symbols = _alternation(rules.currencies)
    scales = _alternation(rules.scales)

    def money(m: re.Match) -> str:
        cur = rules.currencies[m.group("sym")]
        written, scale = m.group("num"), m.group("scale")
        if scale:
            return _spaced(f"{say.number(written)} {rules.scales[scale]} {cur.plural}", m)
        whole, frac = say.split(written)
        if len(frac) > 2:  # "$0.005": not a cent amount
            return _spaced(f"{say.number(written)} {cur.plural}", m)
        cents = int(frac.ljust(2, "0")) if frac else 0
        parts = []
        if int(whole) or not cents:
            parts.append(f"{say.integer(whole, before_noun=True)} {cur.singular if int(whole) == 1 else cur.plural}")
        if cents:
            parts.append(f"{say.integer(str(cents), before_noun=True)} "
                         f"{cur.cent_singular if cents == 1 else cur.cent_plural}")
        return _spaced(f" {w['and']} ".join(parts), m)

    def signed(m: re.Match, words: str) -> str:
        return f"{w['minus']} {words}" if m.group("neg") else words

    def percent(m: re.Match) -> str:
        return _spaced(signed(m, f"{say.number(m.group('num'))} {w['percent']}"), m)

    def unit(m: re.Match) -> str:
        u = rules.units[m.group("unit")]
        one = say.value(m.group("num")) == 1
        return _spaced(signed(m, f"{say.number(m.group('num'), before_noun=True, feminine=u.feminine)} "
                                 f"{u.singular if one else u.plural}"), m)

    def spoken_date(day: int, month: int, year: str | None, before: str) -> str:
        name = rules.months[month - 1]
        if de:
            text = f"{say.ordinal(day, before)} {name}"
            return f"{text} {say.year(year) if len(year) == 4 else say.integer(year)}" if year else text
        text = f"{name} {say.ordinal(day)}"
        return f"{text}, {say.year(year)}" if year else text

    def iso_date(m: re.Match) -> str:
        year, month, day = m.group(1), int(m.group(2)), int(m.group(3))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0)
        return spoken_date(day, month, year, _word_before(m))

    def numeric_date(m: re.Match) -> str:  # German d.m.yyyy
        day, month = int(m.group(1)), int(m.group(2))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0)
        return spoken_date(day, month, m.group(3), _word_before(m))

    def day_month(m: re.Match) -> str:
        day, month = int(m.group("day")), month_number[m.group("month").lower()]
        if de:
            return spoken_date(day, month, m.group("year"), _word_before(m))
        article = "" if _word_before(m).lower() == "the" else "the "
        text = f"{article}{say.ordinal(day)} of {rules.months[month - 1]}"
        return f"{text} {say.year(m.group('year'))}" if m.group("year") else text

    def month_day(m: re.Match) -> str:
        return spoken_date(int(m.group("day")), month_number[m.group("month").lower()], m.group("year"), "")

    def clock(m: re.Match) -> str:
        written_minutes = m.group("m")  # None or "" when only the hour is written ("7 am", "5 Uhr")
        hour, minute = int(m.group("h")), int(written_minutes or 0)
        if hour > 24 or minute > 59:
            return m.group(0)
        suffix = m.groupdict().get("ampm")
        if de:
            text = f"{say.integer(str(hour), before_noun=True)} {w['oclock']}"
            return text + (f" {say.integer(str(minute))}" if minute else "")
        text = say.integer(str(hour))
        if minute == 0 and written_minutes:  # "3:00" is three o'clock, "15:00" fifteen hundred
            text += f" {w['oclock']}" if hour <= 12 or suffix else f" {w['hundred_hours']}"
        elif 0 < minute < 10:
            text += f" oh {say.integer(str(minute))}"
        elif minute:
            text += f" {say.integer(str(minute))}"
        if suffix:
            text += f" {suffix[0].lower()}.m."
        return _spaced(text, m)

    def year_range(m: re.Match) -> str:
        second = m.group(2)
        end = say.year(second) if len(second) == 4 else say.integer(second)
        return _spaced(f"{say.year(m.group(1))} {w['to']} {end}", m)

    def number_range(m: re.Match) -> str:
        return _spaced(f"{say.number(m.group(1))} {w['to']} {say.number(m.group(2))}", m)

    def ordinal_en(m: re.Match) -> str:
        return say.ordinal(int(m.group(1).replace(",", "")))

    def ordinal_de(m: re.Match) -> str:
        if _at_line_start(m) or m.group("next").lower() in _GERMAN_STARTERS:
            return m.group(0)  # a list number or a sentence end; the cardinal rule reads it
        return say.ordinal(int(m.group(1)), _word_before(m))

    def decade(m: re.Match) -> str:
        if de:
            digits = m.group(1)
            return (say.year(digits) if len(digits) == 4 else say.integer(digits)) + "er"
        digits = m.group(1) or m.group(2)
        words = say.year(digits) if len(digits) == 4 else say.integer(digits)
        return words[:-1] + "ies" if words.endswith("y") else words + "s"

    def year(m: re.Match) -> str:
        era = m.group("era")
        if not de and not era and _word_before(m).lower() not in rules.year_cues:
            return m.group(0)  # a count: the cardinal rule reads it
        return _spaced(say.year(m.group(1)) + (f" {era}" if era else ""), m)

    def hash_number(m: re.Match) -> str:
        return _spaced(f"{w['number']} {say.integer(m.group(1))}", m)

    def cardinal(m: re.Match) -> str:
        return _spaced(signed(m, say.number(m.group("num"))), m)

    units = _alternation(rules.units)
    year_4 = r"(1[1-9]\d\d|20\d\d)"
    edge = r"(?<![\w.,:/])"  # a number starts here: not inside a word, a version or a date
    neg = r"(?P<neg>(?<![^\s(])[-\u2212])?"  # a minus sign after a space, "(" or the start
    out = [
        (abbr_re, abbreviation),
        (re.compile(rf"(?<!\w)(?P<sym>{currency_symbols})\s?(?P<num>{num})(?:\s?(?P<scale>{scales})(?!\w))?"), money),
        (re.compile(rf"{edge}(?P<num>{num})(?:\s?(?P<scale>{scales}))?\s?(?P<sym>{currency_symbols})(?!\w)"), money),
        (re.compile(rf"{neg}{edge}(?P<num>{num})\s?%"), percent),
        (re.compile(rf"{edge}(\d{{4}})-(\d\d)-(\d\d)(?!\d)"), iso_date),
    ]
    if de:
        out += [
            (re.compile(r"(?<![\w.,])(\d{1,2})\.\s?(\d{1,2})\.(?:\s?(\d{4}|\d{2})(?![\d.,]\d))?"), numeric_date),
            (re.compile(rf"(?<![\w.,])(?P<day>\d{{1,2}})\.\s?(?P<month>{months})(?:\s+(?P<year>\d{{4}}))?(?!\w)"),
             day_month),
            (re.compile(r"(?<![\w.,:])(?P<h>\d{1,2})(?:[:.](?P<m>\d\d))?\s?Uhr(?!\w)"), clock),
            (re.compile(r"(?<![\w.,:])(?P<h>\d{1,2}):(?P<m>\d\d)(?![\d:])"), clock),
        ]
    else:
        out += [
            (re.compile(rf"(?<!\w)(?P<month>{months})\s+(?P<day>\d{{1,2}}){_EN_SUFFIX}?(?:,?\s+(?P<year>\d{{4}}))?(?!\w)"),
             month_day),
            (re.compile(rf"(?<![\w.,])(?P<day>\d{{1,2}}){_EN_SUFFIX}?\s+(?:of\s+)?(?P<month>{months})"
                        rf"(?:,?\s+(?P<year>\d{{4}}))?(?!\w)"), day_month),
            (re.compile(r"(?<![\w.,:])(?P<h>\d{1,2}):(?P<m>\d\d)(?![\d:])(?:\s?(?P<ampm>[aApP])\.?\s?[mM]\b\.?)?"), clock),
            (re.compile(r"(?<![\w.,:])(?P<h>\d{1,2})(?P<m>)\s?(?P<ampm>[aApP])\.?\s?[mM]\b\.?"), clock),
        ]
    decades = r"(?<![\w.,'])(\d\d|\d{4})er(?!\w)" if de else r"(?<![\w.,])(?:'(\d0)|(\d{3}0))'?s(?!\w)"
    out += [
        (re.compile(decades), decade),  # before units: "1990s" is not 1990 seconds
        (re.compile(rf"{neg}{edge}(?P<num>{num})\s?(?P<unit>{units})(?![\w/\u00b2\u00b3])"), unit),
        (re.compile(rf"{edge}{year_4}\s?[-\u2013\u2014]\s?(\d{{4}}|\d\d)(?![\d.,]\d)"), year_range),
        (re.compile(rf"{edge}({num})(?:-|\s?[\u2013\u2014]\s?)({num})(?![\d.,]\d)"), number_range),
    ]
    if de:
        out.append((re.compile(r"(?<![\w.,])(\d{1,3})\.(?=[ \t]+(?P<next>[^\W\d_]+))"), ordinal_de))
    else:
        out.append((re.compile(rf"(?<![\w.,])(\d{{1,3}}(?:,\d{{3}})+|\d+){_EN_SUFFIX}(?!\w)"), ordinal_en))
    era = r"BC|AD|BCE|CE" if not de else r"v\. ?Chr\.|n\. ?Chr\."
    out += [
        (re.compile(rf"{edge}{year_4}(?![\d.,]\d)(?:\s?(?P<era>{era}))?"), year),
        (re.compile(r"#\s?(\d+)"), hash_number),
        (re.compile(rf"{neg}{edge}(?P<num>{num})(?!\d)"), cardinal),
    ]
    return out


def normalize_text(text: str, language: str) -> str:
    """`text` with numbers, amounts, dates, times, units and abbreviations written as words.

    Line breaks are kept (they are sentence boundaries for chunking); runs of spaces that
    the rewriting leaves are collapsed. Raises ValueError for a language without rules.
    """
    rules_for(language)
    for pattern, replace in _rules(language):
        text = pattern.sub(replace, text)
    return re.sub(r"[ \t]{2,}", " ", text)
