"""What one message may cost: the time budget of a turn and the size of what its templates build.

A turn normally takes some 20 µs. A flow's templates are code written by a tenant, though, and
without bounds one message could make a host build gigabytes (``'x' * 10**8``,
``[[0] * 100000] * 100000``, ``(0).to_bytes(10**9, 'big')``) or spin for minutes, stalling
every other tenant of the host. Two bounds hold, and both are checked *before* the work where
the work would happen in C, where no time check can interrupt it:

- **time**: the templates of one turn get :data:`TURN_BUDGET_S`, checked at every call,
  operator, filter, literal and ``~`` (:func:`check_time`), which is where loops spend theirs;
- **size**: every value a template builds is measured as it is built (:func:`measure`): its
  *logical* size, counting a list that appears 100,000 times 100,000 times (that is what
  printing, comparing or storing it costs), and its depth. A value may be at most
  :data:`MAX_VALUE` units (an item, a character or 64 bits of an integer each) and
  :data:`MAX_DEPTH` levels deep; a text or a list at most :data:`MAX_TEXT` long; anything
  turned into text must fit :data:`MAX_TEXT` characters first.

Measuring is cheap: a turn remembers the size of every list and tuple it measured, so an
aliased value (``[x] * 1000`` where ``x`` is big) is walked once. What these bounds still let
through is bounded by the time budget and, past that, by the host's watchdog
(:mod:`parlour.actors.watchdog`), which restarts a process stuck in one turn and quarantines
the message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

MAX_TEXT = 100_000
"""The longest text or list a template may build, pass or render (a chat message is a few
thousand characters)."""
MAX_VALUE = 10 * MAX_TEXT
"""The logical size of the largest value a template may build: items, characters and 64-bit
words of integers, counted as often as they appear."""
MAX_DEPTH = 32
"""How deeply a value a template builds may nest."""
MAX_EXPONENT = 256
MAX_INT_BITS = 8 * MAX_TEXT
TURN_BUDGET_S = 0.25
"""The time a turn's templates may take, some 10,000 times what a turn takes."""


class _Budget:
    """One turn's deadline, and the sizes of the lists and tuples it has measured (kept with
    the value, so that an id is never reused while the turn runs)."""

    __slots__ = ("deadline", "seconds", "sizes")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.sizes: dict[int, tuple[Any, int, int]] = {}


_budget: ContextVar[_Budget | None] = ContextVar("parlour_template_budget", default=None)


def start_budget(seconds: float = TURN_BUDGET_S) -> Token[_Budget | None]:
    """Bound the template work from now on to ``seconds`` (within an outer budget, keep it);
    give the token back to :func:`end_budget`. The hot path's form of :func:`work_budget`."""
    current = _budget.get()
    return _budget.set(_Budget(seconds) if current is None else current)


def end_budget(token: Token[_Budget | None]) -> None:
    _budget.reset(token)


@contextmanager
def work_budget(seconds: float = TURN_BUDGET_S) -> Iterator[None]:
    """Bound the template work done inside the block to ``seconds``."""
    token = start_budget(seconds)
    try:
        yield
    finally:
        end_budget(token)


def check_time() -> None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise SecurityError(f"the templates of one turn took longer than {budget.seconds:g} s")


# ------------------------------------------------------------ the size of a value

def measure(value: Any) -> int:
    """The logical size of ``value`` in units; SecurityError past :data:`MAX_VALUE` units or
    :data:`MAX_DEPTH` levels (the walk stops there, so measuring is bounded too)."""
    budget = _budget.get()
    return _measure(value, 0, budget.sizes if budget is not None else {})[0]


def _measure(value: Any, depth: int, sizes: dict[int, tuple[Any, int, int]]) -> tuple[int, int]:
    """``value``'s size and height (1 for a scalar), met ``depth`` levels down."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) + 1, 1
    if kind is int:
        return value.bit_length() // 64 + 1, 1
    if kind is list or kind is tuple:
        known = sizes.get(id(value))
        if known is None:
            size, height = _walk(value, depth, sizes)
            sizes[id(value)] = (value, size, height)
        else:
            size, height = known[1], known[2]
            if depth + height > MAX_DEPTH:
                _too_deep()
        return size, height
    if isinstance(value, dict):
        return _walk([item for pair in value.items() for item in pair], depth, sizes)
    if isinstance(value, (set, frozenset)):
        return _walk(value, depth, sizes)
    if isinstance(value, Namespace):
        return _walk(value._Namespace__attrs.values(), depth, sizes)
    if isinstance(value, (str, bytes)):  # Markup and other subclasses
        return len(value) + 1, 1
    return 1, 1


def _walk(items: Any, depth: int, sizes: dict[int, tuple[Any, int, int]]) -> tuple[int, int]:
    if depth >= MAX_DEPTH:
        _too_deep()
    size, height = 1, 0
    for item in items:
        item_size, item_height = _measure(item, depth + 1, sizes)
        size += item_size
        if item_height > height:
            height = item_height
        if size > MAX_VALUE:
            raise SecurityError(f"a value of more than {MAX_VALUE:,} items and characters (counted as often as "
                                "they appear) is over the limit")
    return size, height + 1


def _too_deep() -> None:
    raise SecurityError(f"a value nested more than {MAX_DEPTH} levels deep is over the limit")


def check_value(value: Any) -> Any:
    """``value`` if a template may hold it (see :func:`measure`), else SecurityError."""
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_TEXT:
        raise SecurityError(f"a value of {len(value):,} items is over the limit of {MAX_TEXT:,}")
    if not isinstance(value, (str, bytes, int, float, bool)) and value is not None:
        measure(value)
    return value


def check_text_of(value: Any) -> None:
    """Refuse to turn ``value`` into text when the text could not fit :data:`MAX_TEXT`: each
    unit of a value becomes at least one character."""
    if not isinstance(value, (str, int, float, bool)) and value is not None and measure(value) > MAX_TEXT:
        raise SecurityError(f"the text of a value that large would be over the limit of {MAX_TEXT:,} characters")


def at_most(predicted: int, what: str, limit: int = MAX_TEXT) -> None:
    if predicted > limit:
        raise SecurityError(f"{what} would make {predicted:,} items or characters, over the limit of {limit:,}")


# ------------------------------------------------------------ format strings

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_BRACE_FIELD = re.compile(r"\{([^{}]*)\}")


def check_format(text: Any) -> None:
    """Refuse a format string whose widths would build too much (``%100000000s``, ``{:>9999999}``,
    ``{0:{1}}``); literal digits in the text do not count."""
    if not isinstance(text, str):
        return
    widths = 0
    for width, precision in _PERCENT_SPEC.findall(text.replace("%%", "")):
        if "*" in (width, precision):
            raise SecurityError("a format width taken from the arguments (*) is not allowed")
        widths += int(width or 0) + int(precision or 0)
    braces = text.replace("{{", "").replace("}}", "")
    if re.search(r"\{[^{}]*\{", braces):
        raise SecurityError("a format field inside a format field is not allowed")
    for field in _BRACE_FIELD.findall(braces):
        spec = field.partition(":")[2]
        widths += sum(int(n) for n in re.findall(r"\d+", spec))
    at_most(widths, "the format widths")
