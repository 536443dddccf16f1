"""Checking a user's answer to an ``ask``: each type turns text into a value or refuses it.

Every checker is a pure function ``(rule, text, today) -> value`` that raises :class:`Invalid`
with the default reason; the node's own ``error`` text, if any, replaces that reason.
Values are plain data ready for msgpack: ``int``, ``float``, ``str`` (dates as ISO strings).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import email_validator
import phonenumbers

from .regexes import RegexBudget

DEFAULT_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y", "%d %B %Y", "%d %b %Y",
                        "%B %d %Y", "%b %d %Y", "%B %d, %Y", "%b %d, %Y")
_RELATIVE_DAYS = {"today": 0, "tomorrow": 1, "yesterday": -1}
_OPTION_NUMBER = re.compile(r"[0-9]{1,4}")  # ASCII only: "²".isdigit() is true, int("²") fails
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_DATE_BOUND = re.compile(r"^today\s*(?:([+-])\s*(\d{1,5}))?$")  # up to 99,999 days: within year 9999


class Invalid(ValueError):
    """The answer is refused; ``str(exc)`` is a reason a user can read."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled ``validate``: what the interpreter checks answers against."""

    type: str = "text"
    regex: Any = None  # a `regex` pattern: searched within the message's RegexBudget
    min: Any = None
    max: Any = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (id, title)
    region: str | None = None
    formats: tuple[str, ...] = DEFAULT_DATE_FORMATS


def check(rule: Rule, text: str, today: date, budget: RegexBudget | None = None) -> Any:
    """The value of ``text`` under ``rule``, or :class:`Invalid` with a readable reason;
    :class:`RegexTimeout` if the rule's regex runs out of the message's ``budget``."""
    answer = text.strip()
    if not answer:
        raise Invalid("Please type an answer.")
    if rule.regex is not None and not (budget or RegexBudget()).search(rule.regex, answer):
        raise Invalid("That answer is not in the expected format.")
    return _CHECKERS[rule.type](rule, answer, today)


def _text(rule: Rule, answer: str, today: date) -> str:
    if rule.min_length is not None and len(answer) < rule.min_length:
        raise Invalid(f"Please use at least {rule.min_length} characters.")
    if rule.max_length is not None and len(answer) > rule.max_length:
        raise Invalid(f"Please use at most {rule.max_length} characters.")
    return answer


def _bounded(rule: Rule, value: int | float, what: str) -> None:
    if rule.min is not None and value < rule.min:
        raise Invalid(f"Please enter {what} of at least {rule.min}.")
    if rule.max is not None and value > rule.max:
        raise Invalid(f"Please enter {what} of at most {rule.max}.")


def _integer(rule: Rule, answer: str, today: date) -> int:
    digits = answer.replace(" ", "").replace(",", "")
    if not re.fullmatch(r"[+-]?\d{1,18}", digits):
        raise Invalid("Please enter a whole number.")
    value = int(digits)
    _bounded(rule, value, "a number")
    return value


def _number(rule: Rule, answer: str, today: date) -> float:
    text = answer.replace(" ", "")
    if _THOUSANDS.fullmatch(text):  # 1,000 or 1,000.5
        text = text.replace(",", "")
    elif text.count(",") == 1 and "." not in text:  # a decimal comma: 3,5
        text = text.replace(",", ".")
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text):
        raise Invalid("Please enter a number.")
    value = float(text)
    _bounded(rule, value, "a number")
    return value


def _email(rule: Rule, answer: str, today: date) -> str:
    try:
        found = email_validator.validate_email(answer, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise Invalid("Please enter a valid email address.") from exc
    return found.normalized


def _phone(rule: Rule, answer: str, today: date) -> str:
    try:
        number = phonenumbers.parse(answer, rule.region)
    except phonenumbers.NumberParseException as exc:
        raise Invalid("Please enter a phone number with its country code, e.g. +14155552671.") from exc
    if not phonenumbers.is_valid_number(number):
        raise Invalid("That phone number does not exist.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_date(answer: str, formats: Sequence[str], today: date) -> date:
    word = answer.strip().lower()
    if word in _RELATIVE_DAYS:
        return today + timedelta(days=_RELATIVE_DAYS[word])
    for fmt in formats:
        try:
            return datetime.strptime(answer.strip(), fmt).date()
        except ValueError:
            continue
    raise Invalid("Please enter a date like 2026-12-24 or 24/12/2026.")


def date_bound(text: str, today: date) -> date:
    """A ``min``/``max`` of a date rule: an ISO date, ``today``, ``today+7`` or ``today-1``."""
    found = _DATE_BOUND.match(text.strip().lower())
    if found:
        sign, days = found.groups()
        delta = int(days or 0) * (-1 if sign == "-" else 1)
        return today + timedelta(days=delta)
    return date.fromisoformat(text.strip())


def _date(rule: Rule, answer: str, today: date) -> str:
    value = parse_date(answer, rule.formats, today)
    if rule.min is not None and value < date_bound(rule.min, today):
        raise Invalid(f"Please enter a date on or after {date_bound(rule.min, today).isoformat()}.")
    if rule.max is not None and value > date_bound(rule.max, today):
        raise Invalid(f"Please enter a date on or before {date_bound(rule.max, today).isoformat()}.")
    return value.isoformat()


def match_option(options: Sequence[tuple[str, str]], answer: str, button: str | None) -> str | None:
    """The id of the option a user picked, by button id, by title or id typed, or by number."""
    if button is not None:
        for option_id, _ in options:
            if option_id == button:
                return option_id
    typed = answer.strip().casefold()
    if not typed:
        return None
    for option_id, title in options:
        if typed == option_id.casefold() or typed == title.casefold():
            return option_id
    if _OPTION_NUMBER.fullmatch(typed) and 1 <= int(typed) <= len(options):
        return options[int(typed) - 1][0]
    return None


def _choice(rule: Rule, answer: str, today: date) -> str:
    picked = match_option(rule.choices, answer, None)
    if picked is None:
        raise Invalid("Please choose one of: " + ", ".join(title for _, title in rule.choices) + ".")
    return picked


_CHECKERS: dict[str, Callable[[Rule, str, date], Any]] = {
    "text": _text, "integer": _integer, "number": _number, "email": _email,
    "phone": _phone, "date": _date, "choice": _choice,
}
