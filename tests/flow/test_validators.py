"""runtime/flow/validators.py: each answer type turns text into a value, or refuses it."""

import re
from datetime import date

import pytest
import regex

from parlour.flow.validators import Invalid, Rule, check, date_bound, match_option

TODAY = date(2026, 3, 1)
NO = Invalid  # the expected "value" of a refused answer

COLOURS = (("red", "Red"), ("blue", "Sky Blue"))
US_ORDER = ("%m/%d/%Y",)

CASES = [
    # (rule, answer, value or NO)
    (Rule(), "  hello there ", "hello there"),
    (Rule(), "", NO),
    (Rule(), "   ", NO),
    (Rule(min_length=3), "ab", NO),
    (Rule(min_length=3), "abc", "abc"),
    (Rule(max_length=5), "abcde", "abcde"),
    (Rule(max_length=5), "abcdef", NO),
    (Rule(regex=regex.compile(r"^[A-Z]{3}$")), "ABC", "ABC"),
    (Rule(regex=regex.compile(r"^[A-Z]{3}$")), "abc", NO),
    (Rule(type="integer", regex=regex.compile(r"^\d+$")), "1,000", NO),  # regex first, on the raw text
    (Rule(type="integer"), "42", 42),
    (Rule(type="integer"), "-7", -7),
    (Rule(type="integer"), "+3", 3),
    (Rule(type="integer"), "1,000", 1000),
    (Rule(type="integer"), "1 000 000", 1_000_000),
    (Rule(type="integer"), "4.5", NO),
    (Rule(type="integer"), "forty", NO),
    (Rule(type="integer"), "1" * 19, NO),
    (Rule(type="integer", min=18), "17", NO),
    (Rule(type="integer", min=18), "18", 18),
    (Rule(type="integer", max=120), "120", 120),
    (Rule(type="integer", max=120), "121", NO),
    (Rule(type="number"), "3.5", 3.5),
    (Rule(type="number"), "3,5", 3.5),
    (Rule(type="number"), ".5", 0.5),
    (Rule(type="number"), "-2", -2.0),
    (Rule(type="number"), "1e3", NO),
    (Rule(type="number"), "nan", NO),
    (Rule(type="number"), "inf", NO),
    (Rule(type="number"), "3.5.1", NO),
    (Rule(type="number", min=0), "-0.1", NO),
    (Rule(type="number", min=0), "0", 0.0),
    (Rule(type="number", max=1.5), "1.5", 1.5),
    (Rule(type="number", max=1.5), "1.6", NO),
    (Rule(type="email"), "ann@example.org", "ann@example.org"),
    (Rule(type="email"), "Ann@EXAMPLE.org", "Ann@example.org"),
    (Rule(type="email"), "ann@", NO),
    (Rule(type="email"), "ann", NO),
    (Rule(type="email"), "a b@example.org", NO),
    (Rule(type="email"), "ann@localhost", NO),
    (Rule(type="email", min_length=50), "ann@example.org", "ann@example.org"),  # length is for text
    (Rule(type="phone"), "+14155552671", "+14155552671"),
    (Rule(type="phone"), "+1 (415) 555-2671", "+14155552671"),
    (Rule(type="phone"), "4155552671", NO),  # no country code and no region
    (Rule(type="phone", region="US"), "(415) 555-2671", "+14155552671"),
    (Rule(type="phone", region="GB"), "020 7946 0018", "+442079460018"),
    (Rule(type="phone", region="GB"), "+33 1 42 68 53 00", "+33142685300"),  # +prefix beats region
    (Rule(type="phone"), "+1 555", NO),
    (Rule(type="phone"), "+999 1234", NO),
    (Rule(type="phone"), "call me", NO),
    (Rule(type="date"), "2026-12-24", "2026-12-24"),
    (Rule(type="date"), "24/12/2026", "2026-12-24"),
    (Rule(type="date"), "24.12.2026", "2026-12-24"),
    (Rule(type="date"), "24-12-2026", "2026-12-24"),
    (Rule(type="date"), "24 December 2026", "2026-12-24"),
    (Rule(type="date"), "24 Dec 2026", "2026-12-24"),
    (Rule(type="date"), "December 24 2026", "2026-12-24"),
    (Rule(type="date"), "Dec 24, 2026", "2026-12-24"),
    (Rule(type="date"), "today", "2026-03-01"),
    (Rule(type="date"), " Tomorrow ", "2026-03-02"),
    (Rule(type="date"), "yesterday", "2026-02-28"),
    (Rule(type="date"), "31/02/2026", NO),
    (Rule(type="date"), "next week", NO),
    (Rule(type="date"), "12/24/2026", NO),
    (Rule(type="date", formats=US_ORDER), "12/24/2026", "2026-12-24"),
    (Rule(type="date", formats=US_ORDER), "24/12/2026", NO),
    (Rule(type="date", formats=US_ORDER), "today", "2026-03-01"),
    (Rule(type="date", min="today"), "yesterday", NO),
    (Rule(type="date", min="today"), "today", "2026-03-01"),
    (Rule(type="date", max="today+7"), "2026-03-08", "2026-03-08"),
    (Rule(type="date", max="today+7"), "2026-03-09", NO),
    (Rule(type="date", min="today-1"), "2026-02-28", "2026-02-28"),
    (Rule(type="date", min="today-1"), "2026-02-27", NO),
    (Rule(type="date", min="2026-01-01"), "2025-12-31", NO),
    (Rule(type="date", max="today+1"), "tomorrow", "2026-03-02"),
    (Rule(type="choice", choices=COLOURS), "red", "red"),
    (Rule(type="choice", choices=COLOURS), "RED", "red"),
    (Rule(type="choice", choices=COLOURS), "sky blue", "blue"),
    (Rule(type="choice", choices=COLOURS), "1", "red"),
    (Rule(type="choice", choices=COLOURS), "2", "blue"),
    (Rule(type="choice", choices=COLOURS), "3", NO),
    (Rule(type="choice", choices=COLOURS), "0", NO),
    (Rule(type="choice", choices=COLOURS), "green", NO),
]


def _id(case) -> str:
    rule, answer, expected = case
    bits = [rule.type] + [f"{k}={getattr(rule, k)}" for k in ("min", "max", "min_length", "max_length", "region")
                          if getattr(rule, k) is not None]
    return f"{'/'.join(bits)}:{answer!r}->{'NO' if expected is NO else expected!r}"


@pytest.mark.parametrize("rule, answer, expected", CASES, ids=[_id(c) for c in CASES])
def test_check(rule, answer, expected):
    if expected is NO:
        with pytest.raises(Invalid):
            check(rule, answer, TODAY)
    else:
        value = check(rule, answer, TODAY)
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize("rule, answer, words", [
    (Rule(), " ", "Please type an answer."),
    (Rule(min_length=3), "ab", "at least 3 characters"),
    (Rule(type="integer", min=18), "17", "at least 18"),
    (Rule(type="number", max=1.5), "2", "at most 1.5"),
    (Rule(type="phone"), "4155552671", "country code"),
    (Rule(type="phone"), "+1 555", "does not exist"),
    (Rule(type="date", min="today"), "yesterday", "on or after 2026-03-01"),
    (Rule(type="date", max="today+7"), "2026-04-01", "on or before 2026-03-08"),
    (Rule(type="choice", choices=COLOURS), "green", "Please choose one of: Red, Sky Blue."),
])
def test_refusal_says_why(rule, answer, words):
    with pytest.raises(Invalid, match=re.escape(words)):
        check(rule, answer, TODAY)


@pytest.mark.parametrize("bound, expected", [
    ("today", date(2026, 3, 1)),
    ("TODAY", date(2026, 3, 1)),
    ("today+7", date(2026, 3, 8)),
    ("today + 30", date(2026, 3, 31)),
    ("today-1", date(2026, 2, 28)),
    ("2026-05-01", date(2026, 5, 1)),
])
def test_date_bound(bound, expected):
    assert date_bound(bound, TODAY) == expected


@pytest.mark.parametrize("bound", ["tomorrow", "today*2", "01/05/2026", ""])
def test_date_bound_refuses_what_it_cannot_read(bound):
    with pytest.raises(ValueError):
        date_bound(bound, TODAY)


@pytest.mark.parametrize("typed, button, expected", [
    ("", "blue", "blue"),  # a pressed button wins
    ("red", "blue", "blue"),
    ("red", "gone", "red"),  # an unknown button id falls back to the text
    (" Sky Blue ", None, "blue"),
    ("BLUE", None, "blue"),
    ("2", None, "blue"),
    ("", None, None),
    ("3", None, None),
    ("-1", None, None),
    ("blu", None, None),
])
def test_match_option(typed, button, expected):
    assert match_option(COLOURS, typed, button) == expected


@pytest.mark.parametrize("typed", ["²", "9" * 5000], ids=["superscript-two", "5000-digits"])
def test_match_option_with_digits_int_cannot_read(typed):
    assert match_option(COLOURS, typed, None) is None
