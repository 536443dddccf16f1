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

from jinja2 import TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from .bounds import check_text_of
from .sandbox import BoundedSandbox, guarded_filter
from .template_errors import explain

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
    within the template's own text (1-based) when Jinja can tell, else None; ``column`` the
    offending token's column on that line (1-based) when it could be found."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


def _syntax_error(exc: TemplateSyntaxError, source: str, *, expression: bool = False) -> ExpressionError:
    """Jinja's error in parlour's words, at its token (:mod:`.template_errors`)."""
    found = explain(source, exc.message or "syntax error", exc.lineno, ENVIRONMENT.filters, ENVIRONMENT.tests,
                    expression=expression)
    return ExpressionError(found.message, found.line, found.column)


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


class TenantEnv(Mapping[str, str]):
    """What templates see as ``env``: one tenant's operator values, read-only, inserted as they
    are into an http ``url`` (:class:`Verbatim`). A name the operator did not set is undefined
    (``env.X is defined``, ``env.X | default('y')`` work), and using it fails naming it."""

    __slots__ = ("_values", "_tenant")

    def __init__(self, values: Mapping[str, str] | None = None, tenant: str = ""):
        self._values = {k: Verbatim(v) for k, v in (values or {}).items()}
        self._tenant = tenant

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # what `{{ env }}` prints: the values, as a mapping would
        return repr(self._values)

    def _unset(self, name: object) -> str:  # private: a template must not reach it as `env.unset`
        """The error of a template that uses ``env.<name>``, which the operator did not set."""
        if not self._tenant:
            return f"env.{name} is not set"
        return f"env.{name} is not set for tenant {self._tenant!r} (tenants.{self._tenant}.env in the config)"


class EnvNotSet(UndefinedError):
    """A template used an ``env`` value its tenant does not have."""


class FlowUndefined(Undefined):
    """Jinja's lenient undefined (an unset variable renders as empty text), except for a name
    read from ``env``: printing or using it fails with an error that names it, where an empty
    base URL or token would fail later and elsewhere."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self._undefined_obj, TenantEnv):
            raise EnvNotSet(self._undefined_obj._unset(self._undefined_name))
        return super()._fail_with_undefined_error(*args, **kwargs)

    def __str__(self) -> str:
        if isinstance(self._undefined_obj, TenantEnv):
            self._fail_with_undefined_error()
        return super().__str__()


def _environment(finalize: Callable[[Any], Any]) -> BoundedSandbox:
    environment = BoundedSandbox(autoescape=False, finalize=finalize, keep_trailing_newline=True,
                                 undefined=FlowUndefined)
    environment.filters = {name: guarded_filter(name, f) for name, f in environment.filters.items()}
    environment.filters["verbatim"] = lambda value: Verbatim("" if value is None else value)
    environment.globals.pop("lipsum", None)  # generates text in loops: no use to a chat flow
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


def _parse(source: str, *, expression: bool = False) -> nodes.Template:
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source, expression=expression) from exc
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


def _env_names(ast: nodes.Node) -> frozenset[str]:
    """The ``env`` values a template reads by name: ``env.NAME`` and ``env['NAME']``."""
    found = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and _is_env(node.node):
            found.add(node.attr)
        elif isinstance(node, nodes.Getitem) and _is_env(node.node):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return frozenset(found)


def _is_env(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "env"


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template. Text without markers is kept as a constant and costs nothing."""

    source: str
    names: frozenset[str]
    _render: Callable[[Mapping[str, Any]], str] | None
    env: frozenset[str] = frozenset()
    """The ``env`` values it reads by name (checked against the tenant's when flows load)."""

    @property
    def constant(self) -> bool:
        return self._render is None

    def render(self, scope: Mapping[str, Any]) -> str:
        if self._render is None:
            return self.source
        try:
            return self._render(scope)
        except Exception as exc:  # noqa: BLE001 -- a user's template may fail in any way Python can
            error = _failed("template", self.source, exc)
        raise error


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    names: frozenset[str]
    _evaluate: Callable[..., Any]
    env: frozenset[str] = frozenset()

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        try:
            return self._evaluate(scope)
        except Exception as exc:  # noqa: BLE001 -- as a template's: any way Python can
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
        raise _syntax_error(exc, source) from exc
    except RecursionError:
        raise ExpressionError(f"nested more than {MAX_NESTING} levels deep") from None
    return Template(source, frozenset(meta.find_undeclared_variables(ast)), compiled.render, _env_names(ast))


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
    wrapped = "{{ " + text + " }}"
    try:
        ast = _parse(wrapped, expression=True)
        evaluate = ENVIRONMENT.compile_expression(text, undefined_to_none=True)
    except TemplateSyntaxError as exc:
        raise _expression_error(_syntax_error(exc, wrapped, expression=True), source) from exc
    except ExpressionError as exc:
        raise _expression_error(exc, source) from exc
    except RecursionError:
        raise ExpressionError(f"nested more than {MAX_NESTING} levels deep") from None
    return Expression(source, frozenset(meta.find_undeclared_variables(ast)), evaluate, _env_names(ast))


def _expression_error(exc: ExpressionError, source: str) -> ExpressionError:
    """``exc``, found in ``{{ <source stripped> }}``, with its column on ``source``'s own line."""
    if exc.column is None or exc.line != 1:
        return exc
    lead, text = len(source) - len(source.lstrip()), source.strip()
    return ExpressionError(str(exc), 1, min(max(exc.column - 3, 1), len(text) + 1) + lead)


def constant(value: Any) -> Expression:
    """An expression that always gives ``value`` (``set: {tries: 0}``)."""
    return Expression(repr(value), frozenset(), lambda scope: value)
