"""Templates and expressions: Jinja2 in an immutable sandbox, compiled once when a flow loads.

A *template* is any text a flow sends or builds (``"Hi {{ name }}"``); an *expression* is an
``if`` condition or a ``set`` value (``age < 18``). Both see the same names: the flow's
variables, ``user``, ``message``, ``channel``, ``now``, ``env`` (and ``error`` after a failure,
``response`` in an http node's ``map``).

The sandbox refuses attribute access to internals at run time; :func:`compile_template` and
:func:`compile_expression` also refuse it at load time, so ``{{ ''.__class__.__mro__ }}`` is a
load error with a position, not a surprise in production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)

BUILTIN_NAMES = frozenset({"user", "message", "channel", "now", "env", "error"})
"""Names every template sees besides the flow's variables; a variable may not take them."""

_UNSAFE_ATTRIBUTES = (UNSAFE_FUNCTION_ATTRIBUTES | UNSAFE_METHOD_ATTRIBUTES | UNSAFE_GENERATOR_ATTRIBUTES
                      | UNSAFE_COROUTINE_ATTRIBUTES | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
                      | {"mro", "f_globals", "f_locals", "f_builtins", "tb_frame"})
_MARKERS = ("{{", "{%", "{#")


class ExpressionError(Exception):
    """A template or expression that does not compile, or is unsafe; ``column`` is 1-based
    within the source text when Jinja can tell, else None."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class RenderError(Exception):
    """A template or expression failed while running (undefined name, bad operand, ...)."""


def _finalize(value: Any) -> Any:
    return "" if value is None else value


ENVIRONMENT = ImmutableSandboxedEnvironment(autoescape=False, finalize=_finalize,
                                            keep_trailing_newline=True)


def _check_safe(ast: nodes.Node) -> None:
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Name):
            name = node.name
        else:
            continue
        if isinstance(name, str) and (name.startswith("_") or name in _UNSAFE_ATTRIBUTES):
            raise ExpressionError(f"{name!r} is not allowed: names starting with '_' and "
                                  "interpreter internals are outside the sandbox", node.lineno)


def _parse(source: str) -> nodes.Template:
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or "syntax error", exc.lineno) from exc
    _check_safe(ast)
    return ast


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template. Text without markers is kept as a constant and costs nothing."""

    source: str
    names: frozenset[str]
    _render: Callable[[Mapping[str, Any]], str] | None

    def render(self, scope: Mapping[str, Any]) -> str:
        if self._render is None:
            return self.source
        try:
            return self._render(scope)
        except Exception as exc:  # a user's template may fail in any way Python can
            raise RenderError(f"template {self.source!r}: {_describe(exc)}") from exc


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    names: frozenset[str]
    _evaluate: Callable[..., Any]

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        try:
            return self._evaluate(scope)
        except Exception as exc:
            raise RenderError(f"expression {self.source!r}: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def compile_template(source: str) -> Template:
    if not any(marker in source for marker in _MARKERS):
        return Template(source, frozenset(), None)
    ast = _parse(source)
    compiled = ENVIRONMENT.from_string(ast)
    return Template(source, frozenset(meta.find_undeclared_variables(ast)), compiled.render)


def compile_expression(source: str) -> Expression:
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression")
    if any(marker in text for marker in _MARKERS):
        raise ExpressionError("an expression is written without {{ }}: e.g. `age < 18`")
    ast = _parse("{{ " + text + " }}")
    try:
        evaluate = ENVIRONMENT.compile_expression(text, undefined_to_none=True)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or "syntax error", exc.lineno) from exc
    return Expression(source, frozenset(meta.find_undeclared_variables(ast)), evaluate)


def constant(value: Any) -> Expression:
    """An expression that always gives ``value`` (``set: {tries: 0}``)."""
    return Expression(repr(value), frozenset(), lambda scope: value)
