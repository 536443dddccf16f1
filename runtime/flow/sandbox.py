"""The sandbox templates run in: Jinja's immutable sandbox, bounded in what one message may cost.

Jinja's own sandbox refuses access to internals; :class:`BoundedSandbox` adds the bounds of
:mod:`.bounds` at every place a template can make Python work:

- operators ``*``, ``**``, ``%`` and ``+`` (intercepted, so never folded into constants at
  load), calls of methods, filters: the time budget first, then what the operation would build,
  predicted from its operands *before* it runs (``('x' * 100000).translate({120: 'y' * 100000})``
  would be 10**10 characters, ``(0).to_bytes(10**9)`` a gigabyte), then the value it built;
- list, tuple and dict literals and ``~``, which Jinja compiles to plain Python: a code
  generator of our own routes them through :meth:`BoundedSandbox.checked` and
  :meth:`BoundedSandbox.joined` (``{% set ns.s = ns.s ~ ns.s %}`` in a loop doubles a text);
- anything turned into text (output, ``|string``, ``|tojson``, ``~``, ``format``) must be small
  enough to fit first: printing ``[[0] * 1000] * 1000`` would take a million items.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, AnyStr

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .bounds import (
    MAX_EXPONENT,
    MAX_INT_BITS,
    MAX_TEXT,
    MAX_VALUE,
    at_most,
    check_format,
    check_text_of,
    check_time,
    check_value,
    measure,
)

TEXT_FILTERS = frozenset({
    "capitalize", "center", "e", "escape", "forceescape", "indent", "lower", "pprint", "safe", "string",
    "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap",
    "xmlattr",
})
"""Filters that turn their input into text, whatever it is."""


# ------------------------------------------------------------ calls of methods

def _check_text_method(text: AnyStr, name: str, args: tuple, kwargs: dict) -> None:
    """What a str or bytes method would build, predicted from its arguments."""
    if name in ("ljust", "rjust", "center", "zfill") and args and type(args[0]) is int:
        at_most(args[0], f"{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if type(tab) is int:
            at_most(len(text) + text.count(b"\t" if isinstance(text, bytes) else "\t") * tab, "expandtabs()")
    elif name == "replace" and len(args) >= 2 and type(args[0]) is type(args[1]) is type(text):
        hits = text.count(args[0]) if args[0] else len(text) + 1
        at_most(len(text) + hits * max(len(args[1]) - len(args[0]), 0), "replace()")
    elif name == "join" and args:
        _check_join(args[0], text)
    elif name == "translate" and args:
        _check_translate(text, args[0])
    elif name in ("format", "format_map"):
        check_format(text)
        for arg in (*args, *kwargs.values()):
            check_text_of(arg)


def _check_translate(text: str | bytes, table: Any) -> None:
    if isinstance(text, str) and isinstance(table, dict):
        grow = {k: len(v) - 1 for k, v in table.items() if isinstance(v, str) and len(v) > 1}
        if grow:
            at_most(len(text) + sum(grow.get(ord(c), 0) for c in text), "translate()")


def _check_join(items: Any, separator: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = sum(len(item) if isinstance(item, str) else measure(item) for item in items)
        at_most(size + len(str(separator or "")) * len(items), "join")


def _check_int_method(number: int, name: str, args: tuple, kwargs: dict) -> None:
    if name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if type(length) is int:
            at_most(length, "to_bytes()")


# ------------------------------------------------------------ filters

# What a filter would build, predicted from its arguments before it runs: each check takes the
# filter's own arguments (and ignores those that do not change the size).

def _center(value="", width=80, *_, **kw):
    if type(width) is int:
        at_most(width, "center")


def _indent(value="", width=4, *_, **kw):
    if type(width) is int:
        at_most(len(str(value)) + width * (str(value).count("\n") + 1), "indent")


def _wordwrap(value="", width=79, break_long_words=True, wrapstring=None, *_, **kw):
    lines = len(str(value)) // max(width if type(width) is int else 79, 1) + 1
    at_most(len(str(value)) + lines * len(wrapstring or "\n"), "wordwrap")


def _join(value=(), d="", *_, **kw):
    _check_join(value, d)


def _replace(value="", old="", new="", *_, **kw):
    if isinstance(value, str):
        _check_text_method(value, "replace", (str(old), str(new)), {})


def _slice(value=(), slices=1, *_, **kw):
    if type(slices) is int:
        at_most(slices, "slice")


def _format(value="", *args, **kw):
    check_format(value)
    for arg in (*args, *kw.values()):
        check_text_of(arg)


def _sum(value=(), attribute=None, start=0, *_, **kw):
    # Adding lists or texts copies what was added so far at every step: quadratic.
    if not isinstance(start, (int, float)) and isinstance(value, (list, tuple)):
        total = measure(start) + sum(measure(item) for item in value)
        at_most(total * len(value), "sum() of sequences", 20 * MAX_VALUE)


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _center, "indent": _indent, "wordwrap": _wordwrap, "join": _join, "replace": _replace,
    "slice": _slice, "format": _format, "sum": _sum,
}


def guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the time budget, its size-controlling arguments and, for a filter
    that makes text, its input, before it runs; and the size of what it returns."""
    check = _FILTER_CHECKS.get(name)
    makes_text = name in TEXT_FILTERS
    passes_context = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)  # keeps Jinja's pass_context / pass_environment mark
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        own = args[1:] if passes_context else args
        if makes_text and own:
            check_text_of(own[0])
        if check is not None:
            check(*own, **kwargs)
        return check_value(function(*args, **kwargs))
    return guarded


def bounded_concat(parts: Iterable[str]) -> str:
    """What a template's output becomes: refused past :data:`MAX_TEXT` characters."""
    out, size = [], 0
    for part in parts:
        size += len(part)
        if size > MAX_TEXT:
            raise SecurityError(f"the rendered text is over the limit of {MAX_TEXT:,} characters")
        out.append(part)
    return "".join(out)


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with literals and ``~`` routed through the environment's checks."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment's target: `{% set a, b = pair %}`
            super().visit_Tuple(node, frame)
        else:
            self._checked(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(super().visit_Dict, node, frame)

    def _checked(self, visit: Callable[[Any, Frame], None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.checked(")
        visit(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, bounded in the work one message can cause."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(bounded_concat)  # how a template's output is joined

    def call_binop(self, context, operator, left, right):
        check_time()
        if operator == "**" and isinstance(right, (int, float)):
            if abs(right) > MAX_EXPONENT or (type(left) is int and left.bit_length() * right > MAX_INT_BITS):
                raise SecurityError(f"a power that large is not allowed (exponents up to {MAX_EXPONENT})")
        elif operator == "%":
            check_format(left)
            if isinstance(left, str):
                check_text_of(right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            at_most(len(left) + len(right), "+")
            at_most(measure(left) + measure(right), "+", MAX_VALUE)
        return check_value(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # Jinja's signature: no `self`
        check_time()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):  # str and bytes apart: _check_text_method matches arguments to its owner
            _check_text_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        elif isinstance(owner, bytes):
            _check_text_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        elif isinstance(owner, int):  # a bool too: `(a < b).to_bytes(10**9, 'big')`
            _check_int_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return check_value(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:  # "...".format, format_map
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__self__)
        return wrapped

    @staticmethod
    def checked(value: Any) -> Any:
        """A list, tuple or dict a template wrote as a literal."""
        check_time()
        return check_value(value)

    @staticmethod
    def joined(parts: tuple) -> str:
        """``a ~ b ~ c``: each part must fit as text before it is made one, and so must the whole."""
        check_time()
        for part in parts:
            check_text_of(part)
        text = "".join(part if type(part) is str else str(part) for part in parts)
        at_most(len(text), "~")
        return text


def _check_product(left: Any, right: Any) -> None:
    if type(left) is int and type(right) is int:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError("a product that large is not allowed")
        return
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and type(times) is int:
            at_most(len(sequence) * max(times, 0), "repetition")
            if not isinstance(sequence, str):
                at_most(measure(sequence) * max(times, 0), "repetition", MAX_VALUE)
