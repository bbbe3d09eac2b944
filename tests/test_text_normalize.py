"""Numbers, amounts, dates, times, units and abbreviations as words, English and German."""
from __future__ import annotations

import pytest

from models.text_languages import LANGUAGE_RULES, rules_for
from models.text_normalize import normalize_text


@pytest.mark.parametrize("text, expected", [
    ("25470", "twenty-five thousand four hundred and seventy"),
    ("Total: $1,234,567.89", "Total: one million two hundred and thirty-four thousand five hundred and "
                             "sixty-seven dollars and eighty-nine cents"),
    ("It costs $5 million.", "It costs five million dollars."),
    ("costs \u00a30.99 or 1 \u20ac", "costs ninety-nine pence or one euro"),
    ("Tickets cost 5 \u20ac each.", "Tickets cost five euros each."),
    ("100%", "one hundred percent"),
    ("It fell by -2.5%.", "It fell by minus two point five percent."),
    ("The war lasted 1914-1918.", "The war lasted nineteen fourteen to nineteen eighteen."),
    ("In 1984 there were 1984 people.",
     "In nineteen eighty-four there were one thousand nine hundred and eighty-four people."),
    ("Dr. Smith arrived at 3:30 pm on May 3rd, 2024.",
     "Doctor Smith arrived at three thirty p.m. on May third, twenty twenty-four."),
    ("Meet me at 10:05, e.g. near No. 5.", "Meet me at ten oh five, for example near Number five."),
    ("at 7 am and 15:00", "at seven a.m. and fifteen hundred"),
    ("I ran 5 km in 25 min, 1 mile in 1 h.", "I ran five kilometers in twenty-five minutes, one mile in one hour."),
    ("It was -5 \u00b0C.", "It was minus five degrees Celsius."),
    ("He came 1st and she 22nd.", "He came first and she twenty-second."),
    ("the 1,000,000th visitor", "the one millionth visitor"),
    ("the 1990s and the '80s, 5s later", "the nineteen nineties and the eighties, five seconds later"),
    ("pages 5-10", "pages five to ten"),
    ("on 2024-05-01", "on May first, twenty twenty-four"),
    ("the 3 May and 4th of July 1776", "the third of May and the fourth of July seventeen seventy-six"),
    ("Call #1 at 0800", "Call number one at zero eight zero zero"),
    ("ratio 1.5 and 0.05", "ratio one point five and zero point zero five"),
    ("apples, pears etc. Then", "apples, pears et cetera. Then"),
    ("Wow, 3D and MP3 and COVID-19", "Wow, three D and MP3 and COVID-nineteen"),
    ("No numbers here.", "No numbers here."),
    ("line 1\nline 2", "line one\nline two"),
])
def test_english(text, expected):
    assert normalize_text(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ("Das Ticket kostet 5 \u20ac pro Person.", "Das Ticket kostet fünf Euro pro Person."),
    ("25470", "fünfundzwanzigtausendvierhundertsiebzig"),
    ("Es kostet 1.234.567,89 \u20ac.", "Es kostet eine Million zweihundertvierunddreißigtausendfünfhundert"
                                      "siebenundsechzig Euro und neunundachtzig Cent."),
    ("1 \u20ac und 1,01 \u20ac", "ein Euro und ein Euro und ein Cent"),
    ("5 Mio. \u20ac", "fünf Millionen Euro"),
    ("100 %", "einhundert Prozent"),
    ("Der Krieg dauerte 1914-1918.", "Der Krieg dauerte neunzehnhundertvierzehn bis neunzehnhundertachtzehn."),
    ("im Jahr 1990", "im Jahr neunzehnhundertneunzig"),
    ("Am 3. Oktober 2024 um 15:30 Uhr.", "Am dritten Oktober zweitausendvierundzwanzig um fünfzehn Uhr dreißig."),
    ("Am 3.10.2024 war Feiertag.", "Am dritten Oktober zweitausendvierundzwanzig war Feiertag."),
    ("Um 1 Uhr und um 12.00 Uhr", "Um ein Uhr und um zwölf Uhr"),
    ("Der 2. Weltkrieg", "Der zweite Weltkrieg"),
    ("Ich bin 30. Du bist 20.", "Ich bin dreißig. Du bist zwanzig."),
    ("1. Milch kaufen", "eins. Milch kaufen"),
    ("z. B. Äpfel, Birnen usw. Dann kam Dr. Müller.",
     "zum Beispiel Äpfel, Birnen und so weiter. Dann kam Doktor Müller."),
    ("Z.B. so, d. h. anders, bzw. gar nicht", "Zum Beispiel so, das heißt anders, beziehungsweise gar nicht"),
    ("Es dauert 1 h und 1 min, also 61 Minuten.", "Es dauert eine Stunde und eine Minute, also einundsechzig Minuten."),
    ("ca. 3,5 kg und 1 km", "circa drei Komma fünf Kilogramm und ein Kilometer"),
    ("Es sind -5 \u00b0C.", "Es sind minus fünf Grad Celsius."),
    ("Die 90er und die 1920er", "Die neunziger und die neunzehnhundertzwanziger"),
    ("Nr. 5 und S. 12", "Nummer fünf und Seite zwölf"),
    ("Seiten 5-10", "Seiten fünf bis zehn"),
])
def test_german(text, expected):
    assert normalize_text(text, "de") == expected


def test_abbreviation_that_needs_a_number_is_left_alone_without_one():
    assert normalize_text("No. I will not.", "en") == "No. I will not."
    assert normalize_text("Nr. eins", "de") == "Nr. eins"


def test_every_language_entry_is_complete():
    for code, rules in LANGUAGE_RULES.items():
        assert rules.code == code and len(rules.months) == 12
        assert {"point", "percent", "minus", "to", "number", "oclock", "and"} <= set(rules.words)
        assert rules.decimal_mark != rules.group_mark
        assert normalize_text("7", code) != "7"  # num2words knows the language
    with pytest.raises(ValueError, match="no text rules"):
        rules_for("xx")
    with pytest.raises(ValueError, match="no text rules"):
        normalize_text("7", "xx")
