"""What one message may cost: the bounds on the work a template or expression can cause.

A turn normally takes some 20 µs. A flow's templates are code, though, and without bounds one
message could make a host build gigabytes (``'x' * 10**8``, ``'{:>100000000}'.format(x)``) or
spin for minutes. The sandbox below refuses, *before* doing the work where it can:

- text, lists and format widths over :data:`MAX_TEXT`, and the calls and filters that would
  build them (``center``, ``ljust``, ``replace``, ``expandtabs``, ``join``, ``slice``...);
- powers and products of integers that grow past a few hundred thousand bits;
- work past a time budget per turn (:func:`work_budget`), checked at every call, operator and
  filter, which is where loops spend their time.

Plain numbers are not limited: ``"Order {}".format(1234567)`` is fine. What these bounds cannot
stop (a template that builds a large value out of ``~`` alone, in one turn, before it is used)
is bounded by the time budget and by what a turn may store and send.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEXT = 100_000
"""The longest text or list a template may build, pass or render (a chat message is a few
thousand characters)."""
MAX_EXPONENT = 256
MAX_INT_BITS = 8 * MAX_TEXT
TURN_BUDGET_S = 0.25
"""The time a turn's templates may take, some 10,000 times what a turn takes."""

_deadline: ContextVar[float | None] = ContextVar("parlour_template_deadline", default=None)


def start_budget(seconds: float = TURN_BUDGET_S) -> Token[float | None]:
    """Bound the template work from now on to ``seconds`` (within an outer budget, keep it);
    give the token back to :func:`end_budget`. The hot path's form of :func:`work_budget`."""
    current = _deadline.get()
    return _deadline.set(time.monotonic() + seconds if current is None else current)


def end_budget(token: Token[float | None]) -> None:
    _deadline.reset(token)


@contextmanager
def work_budget(seconds: float = TURN_BUDGET_S) -> Iterator[None]:
    """Bound the template work done inside the block to ``seconds``."""
    token = start_budget(seconds)
    try:
        yield
    finally:
        end_budget(token)


def check_time() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise SecurityError(f"the templates of one turn took longer than {TURN_BUDGET_S:g} s")


def check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_TEXT:
        raise SecurityError(f"a value of {len(value):,} items is over the limit of {MAX_TEXT:,}")
    return value


def _at_most(predicted: int, what: str) -> None:
    if predicted > MAX_TEXT:
        raise SecurityError(f"{what} would make {predicted:,} characters, over the limit of {MAX_TEXT:,}")


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
    _at_most(widths, "the format widths")


# ------------------------------------------------------------ calls of str methods

def _check_str_method(text: str, name: str, args: tuple, kwargs: dict) -> None:
    if name in ("ljust", "rjust", "center", "zfill") and args and type(args[0]) is int:
        _at_most(args[0], f"{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if type(tab) is int:
            _at_most(len(text) + text.count("\t") * tab, "expandtabs()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = text.count(args[0]) if args[0] else len(text) + 1
        _at_most(len(text) + hits * max(len(args[1]) - len(args[0]), 0), "replace()")
    elif name == "join" and args:
        _check_join(args[0], text)


def _check_join(items: Any, separator: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = sum(len(item) for item in items if isinstance(item, str))
        _at_most(size + len(str(separator or "")) * len(items), "join")


# ------------------------------------------------------------ filters

def _filter_checks() -> dict[str, Callable[..., None]]:
    def center(value="", width=80, *_, **kw):
        if type(width) is int:
            _at_most(width, "center")

    def indent(value="", width=4, *_, **kw):
        if type(width) is int:
            _at_most(len(str(value)) + width * (str(value).count("\n") + 1), "indent")

    def wordwrap(value="", width=79, break_long_words=True, wrapstring=None, *_, **kw):
        lines = len(str(value)) // max(width if type(width) is int else 79, 1) + 1
        _at_most(len(str(value)) + lines * len(wrapstring or "\n"), "wordwrap")

    def join(value=(), d="", *_, **kw):
        _check_join(value, d)

    def replace(value="", old="", new="", *_, **kw):
        if isinstance(value, str):
            _check_str_method(value, "replace", (str(old), str(new)), {})

    def slice_(value=(), slices=1, *_, **kw):
        if type(slices) is int:
            _at_most(slices, "slice")

    def format_(value="", *_, **kw):
        check_format(value)

    return {"center": center, "indent": indent, "wordwrap": wordwrap, "join": join, "replace": replace,
            "slice": slice_, "format": format_}


_FILTER_CHECKS = _filter_checks()


def guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the time budget and its size-controlling arguments before it runs,
    and the size of what it returns."""
    check = _FILTER_CHECKS.get(name)
    passes_context = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)  # keeps Jinja's pass_context / pass_environment mark
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        if check is not None:
            check(*(args[1:] if passes_context else args), **kwargs)
        return check_size(function(*args, **kwargs))
    return guarded


def bounded_concat(parts: Iterable[str]) -> str:
    out, size = [], 0
    for part in parts:
        size += len(part)
        if size > MAX_TEXT:
            raise SecurityError(f"the rendered text is over the limit of {MAX_TEXT:,} characters")
        out.append(part)
    return "".join(out)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, bounded in the work one message can cause. ``*``, ``**`` and
    ``%`` are intercepted (so also never folded into constants at load)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator, left, right):
        check_time()
        if operator == "**" and isinstance(right, (int, float)):
            if abs(right) > MAX_EXPONENT or (type(left) is int and left.bit_length() * right > MAX_INT_BITS):
                raise SecurityError(f"a power that large is not allowed (exponents up to {MAX_EXPONENT})")
        elif operator == "%":
            check_format(left)
        elif operator == "*":
            if type(left) is int and type(right) is int:
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise SecurityError("a product that large is not allowed")
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and type(times) is int:
                    _at_most(len(sequence) * max(times, 0), "repetition")
        return check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        check_time()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:  # "...".format, format_map
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__self__)
        return wrapped
