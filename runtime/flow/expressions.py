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
from jinja2.sandbox import ImmutableSandboxedEnvironment

BUILTIN_NAMES = frozenset({"user", "message", "channel", "now", "env", "error"})
"""Names every template sees besides the flow's variables; a variable may not take them."""

# Interpreter internals reachable without a leading underscore (Jinja 3's own UNSAFE_* sets for
# functions and methods are empty, since Python 3 renamed them; the sandbox checks at run time).
_UNSAFE_ATTRIBUTES = frozenset({
    "func_globals", "func_code", "func_closure", "func_defaults", "func_dict", "im_func", "im_self", "im_class",
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "mro", "f_globals", "f_locals", "f_builtins", "f_code", "f_back", "tb_frame", "tb_next",
})
_ATTRIBUTE_FILTERS = frozenset({"attr", "selectattr", "rejectattr", "groupby"})
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


def _unsafe(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _UNSAFE_ATTRIBUTES)


def _names_reached(ast: nodes.Node):
    """Every attribute or item name the template reaches for, with its line."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            yield node.attr, node.lineno
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            yield node.arg.value, node.lineno
        elif isinstance(node, nodes.Name):
            yield node.name, node.lineno
        elif isinstance(node, nodes.Filter):
            # Filters that look an attribute up by name: attr('x'), selectattr('x'), map(attribute='x')...
            named = node.args[:1] if node.name in _ATTRIBUTE_FILTERS else []
            named += [kw.value for kw in node.kwargs if kw.key == "attribute"]
            for arg in named:
                if isinstance(arg, nodes.Const):
                    yield arg.value, node.lineno


def _check_safe(ast: nodes.Node) -> None:
    for name, line in _names_reached(ast):
        if _unsafe(name):
            raise ExpressionError(f"{name!r} is not allowed: names starting with '_' and "
                                  "interpreter internals are outside the sandbox", line)


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
    try:
        compiled = ENVIRONMENT.from_string(ast)
    except TemplateSyntaxError as exc:  # and TemplateAssertionError: an unknown filter or test
        raise ExpressionError(exc.message or "does not compile", exc.lineno) from exc
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
