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

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from urllib.parse import quote

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError

from .bounds import check_text_of
from .sandbox import BoundedSandbox, bounded_concat, guarded_filter

BUILTIN_NAMES = frozenset({"user", "message", "channel", "now", "env", "error"})
"""Names every template sees besides the flow's variables; a variable may not take them."""

# Interpreter internals reachable without a leading underscore (Jinja 3's own UNSAFE_* sets for
# functions and methods are empty, since Python 3 renamed them; the sandbox checks at run time).
_UNSAFE_ATTRIBUTES = frozenset({
    "func_globals", "func_code", "func_closure", "func_defaults", "func_dict", "im_func", "im_self", "im_class",
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "mro", "f_globals", "f_locals", "f_builtins", "f_code", "f_back", "tb_frame", "tb_next",
})
MAX_NESTING = 100
"""How deeply a template's syntax may nest: a chain of filters, calls, operators."""
_ATTRIBUTE_FILTERS = frozenset({"attr", "selectattr", "rejectattr", "groupby"})
_MARKERS = ("{{", "{%", "{#")


class ExpressionError(Exception):
    """A template or expression that does not compile, or is unsafe; ``line`` is the line
    within the template's own text (1-based) when Jinja can tell, else None."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class RenderError(Exception):
    """A template or expression failed while running (undefined name, bad operand, ...)."""


def _finalize(value: Any) -> Any:
    check_text_of(value)  # before Jinja turns it into text
    return "" if value is None else value


class Verbatim(str):
    """Text an http `url` template inserts as it is: operator `env` values, or `| verbatim`."""


def _url_part(value: Any) -> str:
    """What a `{{ }}` in an http `url` inserts: percent-encoded, so that a user's answer can
    never change the path or the query of a request (`../admin`, `?all=1`)."""
    if value is None:
        return ""
    if isinstance(value, Verbatim):
        return str(value)
    check_text_of(value)
    text = str(value)
    if text in (".", ".."):  # the URL library decodes %2E and would walk up the path
        raise SecurityError(f"a URL part may not be {text!r}")
    return quote(text, safe="")


def _environment(finalize: Callable[[Any], Any]) -> BoundedSandbox:
    environment = BoundedSandbox(autoescape=False, finalize=finalize, keep_trailing_newline=True)
    environment.filters = {name: guarded_filter(name, f) for name, f in environment.filters.items()}
    environment.filters["verbatim"] = lambda value: Verbatim("" if value is None else value)
    environment.globals.pop("lipsum", None)  # generates text in loops: no use to a chat flow
    environment.concat = bounded_concat  # type: ignore[assignment]
    return environment


ENVIRONMENT = _environment(_finalize)
URL_ENVIRONMENT = _environment(_url_part)


def _unsafe(name: object, *, item: bool = False) -> bool:
    """An attribute starting with '_', or an interpreter internal; for an item (``x['_id']``,
    a JSON key) only a dunder, since item access on data never reaches Python internals."""
    if not isinstance(name, str):
        return False
    private = name.startswith("__") if item else name.startswith("_")
    return private or name in _UNSAFE_ATTRIBUTES


def _names_reached(ast: nodes.Node):
    """Every attribute or item name the template reaches for: (name, is an item, line)."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            yield node.attr, False, node.lineno
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            yield node.arg.value, True, node.lineno
        elif isinstance(node, nodes.Filter):
            # Filters that look an attribute up by name: attr('x'), selectattr('x'), map(attribute='x')...
            named = node.args[:1] if node.name in _ATTRIBUTE_FILTERS else []
            named += [kw.value for kw in node.kwargs if kw.key == "attribute"]
            for arg in named:
                if isinstance(arg, nodes.Const):
                    yield arg.value, False, node.lineno


def _check_safe(ast: nodes.Node) -> None:
    for name, item, line in _names_reached(ast):
        if _unsafe(name, item=item):
            raise ExpressionError(f"{name!r} is not allowed: names starting with '_' and "
                                  "interpreter internals are outside the sandbox", line)
    for node in ast.find_all((nodes.Macro, nodes.CallBlock)):
        raise ExpressionError("macros and call blocks are not allowed in flow templates", node.lineno)
    for loop in ast.find_all(nodes.For):
        if loop.recursive or any(True for _ in loop.find_all(nodes.For)):
            raise ExpressionError("nested or recursive loops are not allowed in flow templates: "
                                  "one message must stay cheap to answer", loop.lineno)


def _parse(source: str) -> nodes.Template:
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or "syntax error", exc.lineno) from exc
    except RecursionError:
        raise ExpressionError(f"nested more than {MAX_NESTING} levels deep") from None
    _check_nesting(ast)
    _check_safe(ast)
    return ast


def _check_nesting(ast: nodes.Node) -> None:
    """Refuse a template nested past :data:`MAX_NESTING` levels (5,000 chained filters):
    compiling and checking it would recurse past what Python allows."""
    stack = [(ast, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ExpressionError(f"nested more than {MAX_NESTING} levels deep (filters, calls, operators)",
                                  node.lineno)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template. Text without markers is kept as a constant and costs nothing."""

    source: str
    names: frozenset[str]
    _render: Callable[[Mapping[str, Any]], str] | None

    @property
    def constant(self) -> bool:
        return self._render is None

    def render(self, scope: Mapping[str, Any]) -> str:
        if self._render is None:
            return self.source
        try:
            return self._render(scope)
        except Exception as exc:  # a user's template may fail in any way Python can
            error = _failed("template", self.source, exc)
        raise error


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    names: frozenset[str]
    _evaluate: Callable[..., Any]

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        try:
            return self._evaluate(scope)
        except Exception as exc:
            error = _failed("expression", self.source, exc)
        raise error


def _failed(what: str, source: str, exc: Exception) -> RenderError:
    """The error a failed template or expression becomes. The failure's frames are cleared and
    it is not chained: their locals may hold the large values that made it fail, and a
    traceback is a reference cycle, which a host's rarely run collector would keep for long."""
    error = RenderError(f"{what} {source[:200]!r}: {_describe(exc)}")
    traceback.clear_frames(exc.__traceback__)
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return error


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


def compile_template(source: str, *, url: bool = False) -> Template:
    """A template; with ``url``, each ``{{ }}`` output is percent-encoded (see :func:`_url_part`)."""
    if not any(marker in source for marker in _MARKERS):
        return Template(source, frozenset(), None)
    ast = _parse(source)
    try:
        compiled = (URL_ENVIRONMENT if url else ENVIRONMENT).from_string(ast)
    except TemplateSyntaxError as exc:  # and TemplateAssertionError: an unknown filter or test
        raise ExpressionError(exc.message or "does not compile", exc.lineno) from exc
    except RecursionError:
        raise ExpressionError(f"nested more than {MAX_NESTING} levels deep") from None
    return Template(source, frozenset(meta.find_undeclared_variables(ast)), compiled.render)


def url_starts_trusted(source: str) -> bool:
    """Whether an http ``url`` template begins with literal text, an ``env`` value or something
    marked ``| verbatim``: anything else at its start is percent-encoded, ``https://`` included."""
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError:
        return True  # reported elsewhere
    first = ast.body[0].nodes[0] if ast.body and isinstance(ast.body[0], nodes.Output) and ast.body[0].nodes else None
    if first is None or isinstance(first, nodes.TemplateData):
        return True
    if isinstance(first, nodes.Filter) and first.name == "verbatim":
        return True
    return isinstance(first, nodes.Getattr) and isinstance(first.node, nodes.Name) and first.node.name == "env"


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
    except RecursionError:
        raise ExpressionError(f"nested more than {MAX_NESTING} levels deep") from None
    return Expression(source, frozenset(meta.find_undeclared_variables(ast)), evaluate)


def constant(value: Any) -> Expression:
    """An expression that always gives ``value`` (``set: {tries: 0}``)."""
    return Expression(repr(value), frozenset(), lambda scope: value)
