"""Turn a validated :class:`~.model.FlowSpec` into a compiled :class:`~.compiled.Flow`.

Every template and expression is compiled here, once; one that does not compile (or reaches
outside the sandbox) becomes a :class:`~parlour.errors.Problem` at its place in the file.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, overload

import regex

from ..errors import Problem
from . import model as m
from .compiled import (
    Action,
    Ask,
    Branch,
    Choice,
    EndA,
    Flow,
    Goto,
    HandoffA,
    Http,
    Menu,
    MessageT,
    Node,
    SecretT,
    TriggerT,
    Wait,
)
from .expressions import (
    Expression,
    ExpressionError,
    RenderError,
    Template,
    compile_expression,
    compile_template,
    constant,
    url_starts_trusted,
)
from .source import Path, SourceMap
from .validators import DEFAULT_DATE_FORMATS, Rule, date_bound
from .values import plain

if TYPE_CHECKING:  # typeshed describes the stdlib's regex parser under its older public names
    import sre_constants as _constants
    import sre_parse as _parser
else:
    from re import _constants, _parser

MAX_REPEATS = 10_000
"""The product of nested counted repeats a regex may have: `regex` expands them when it compiles
(``(?:x{1000}){8000}`` took 2 GB), where Python's `re` would not."""
_COUNT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _repeat_product(source: str) -> int:
    """The largest product of counted repeats nested in ``source`` (``{n}``, ``{n,m}``)."""
    try:
        parsed = _parser.parse(source)  # the stdlib's parser: it only reads the pattern
    except (re.error, RecursionError, OverflowError):
        return math.prod(max(int(n), int(m or 0)) for n, m in _COUNT.findall(source)) if _COUNT.search(source) else 1
    return _nested_product(parsed.data)


def _nested_product(items: Iterable[tuple[Any, Any]]) -> int:
    """The largest product of counted repeats among parsed ``items`` (opcode, argument)."""
    largest = 1
    for op, arg in items:
        if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
            low, high, inner = arg
            count = low if high == _constants.MAXREPEAT else high
            largest = max(largest, max(count, 1) * _nested_product(inner))
        elif op in (_constants.SUBPATTERN, _constants.ATOMIC_GROUP):
            largest = max(largest, _nested_product(arg[-1]))
        elif op == _constants.BRANCH:
            largest = max([largest] + [_nested_product(branch) for branch in arg[1]])
        elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
            largest = max(largest, _nested_product(arg[1]))
    return largest


_SINGLE_EXPRESSION = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: int | float | str) -> float:
    """Seconds in ``value``: a number of seconds, or text such as ``90s``, ``15m``, ``1h30m``."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration (e.g. 90s, 15m, 2h, 1d, 1h30m)") from None
        else:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds < math.inf:
        raise ValueError(f"a duration must be a positive, finite number of seconds, got {value!r}")
    return seconds


def _raw_offset(raw: str, index: int) -> int | None:
    """How far into ``raw`` (a scalar as written, from its first character to the end of its
    line) the ``index``-th character of its value stands; None past its end."""
    quote = raw[0] if raw[0] in "'\"" else None
    position, seen = (1 if quote else 0), 0
    while seen < index:
        if position >= len(raw) or (quote and raw[position] == quote and raw[position:position + 2] != quote * 2):
            return None
        step = 1
        if quote == '"' and raw[position] == "\\":
            step = {"x": 4, "u": 6, "U": 10}.get(raw[position + 1:position + 2], 2)
        elif quote == "'" and raw[position:position + 2] == "''":
            step = 2
        position, seen = position + step, seen + 1
    return position if position < len(raw) else None


class Compiler:
    def __init__(self, spec: m.FlowSpec, smap: SourceMap, source: str):
        self.spec = spec
        self.smap = smap
        self.source = source
        self.lines = source.splitlines()
        self.problems: list[Problem] = []
        self.templates: list[tuple[frozenset[str], Path, frozenset[str]]] = []
        self._cache: dict[tuple, Any] = {}
        """(names used, where, names allowed there besides the variables), for the checks."""
        self.env_uses: list[tuple[str, Path, str]] = []
        """Each ``env.NAME`` read, and where: checked against a tenant's env once it is known."""

    def compiled(self, compile_: Callable[..., Any], text: str, **options: Any) -> Any:
        """Compile ``text`` once per flow: YAML aliases can repeat one text thousands of times."""
        key = (compile_, text, tuple(options.items()))
        if key not in self._cache:
            try:
                self._cache[key] = compile_(text, **options)
            except ExpressionError as exc:
                self._cache[key] = exc
        found = self._cache[key]
        if isinstance(found, ExpressionError):
            raise found
        return found

    def env_spot(self, loc: Path, text: str, name: str) -> tuple[int, int]:
        """Where ``env.NAME`` (or ``env['NAME']``) stands in the file; the value's place when
        it cannot be told."""
        found = re.search(r"\benv\s*(?:\.\s*" + re.escape(name) + r"\b|\[\s*['\"]" + re.escape(name) + ")", text)
        if found:
            before = text[:found.start()]
            spot = self.token_spot(loc, text, before.count("\n") + 1, found.start() - (before.rfind("\n") + 1) + 1)
            if spot is not None:
                return spot
        where = self.smap.spot(loc)
        return where.line, where.column

    def token_spot(self, loc: Path, text: str, line: int, column: int) -> tuple[int, int] | None:
        """The file's line and column of ``line``:``column`` of ``text``, the value at ``loc``:
        exact on a literal block (``|``) and on a scalar written on one line (plain or quoted,
        escapes counted); None for text YAML folds, which moves its columns, or when the file
        there does not hold that character (a shorthand's value the author did not write)."""
        where = self.smap.spot(loc)
        own = text.split("\n")[line - 1][column - 1:column] if line <= text.count("\n") + 1 else ""
        if self.smap.resolve(loc) in self.smap.blocks:
            number = where.line + line
            raw = self.lines[number - 1] if number <= len(self.lines) else ""
            spot = number, self.block_indent(where.line) + column
            return spot if raw[spot[1] - 1:spot[1]] == own or not own else None
        raw = self.lines[where.line - 1][where.column - 1:] if where.line <= len(self.lines) else ""
        if line != 1 or not raw or raw[0] in "|>":
            return None
        offset = _raw_offset(raw, column - 1)
        if offset is None or (own and raw[offset] not in (own, "\\")):  # "" is just past the text
            return None
        return where.line, where.column + offset

    def block_indent(self, key_line: int) -> int:
        """The indentation of a block scalar whose key is on ``key_line``: its first line's."""
        first = next((raw for raw in self.lines[key_line:] if raw.strip()), "")
        return len(first) - len(first.lstrip(" "))

    def problem(self, loc: Path, message: str) -> None:
        self.problems.append(self.smap.problem(loc, message))

    def compile_problem(self, loc: Path, text: str, what: str, exc: ExpressionError) -> None:
        """Where a template fails: its offending token when the text's place in the file can
        be told, a block scalar's own line at least, else the value's start, naming the line
        within the text."""
        line = exc.line or 1
        spot = self.token_spot(loc, text, line, exc.column) if exc.column is not None else None
        if spot is None and self.smap.resolve(loc) in self.smap.blocks:
            number = self.smap.spot(loc).line + line
            raw = self.lines[number - 1] if number <= len(self.lines) else ""
            spot = number, len(raw) - len(raw.lstrip()) + 1
        if spot is not None:
            self.problems.append(Problem(self.smap.path, *spot, f"{what} does not compile: {exc}"))
            return
        within = f" (line {line} of the text)" if line > 1 else ""
        self.problem(loc, f"{what} does not compile: {exc}{within}")

    # ------------------------------------------------------------ pieces

    @overload
    def template(self, text: str, loc: Path, *, url: bool = False) -> Template: ...
    @overload
    def template(self, text: None, loc: Path, *, url: bool = False) -> None: ...
    @overload
    def template(self, text: str | None, loc: Path, *, url: bool = False) -> Template | None: ...

    def template(self, text: str | None, loc: Path, *, url: bool = False) -> Template | None:
        if text is None:
            return None
        try:
            compiled = self.compiled(compile_template, text, url=url)
        except ExpressionError as exc:
            self.compile_problem(loc, text, "template", exc)
            return Template(text, frozenset(), None)
        self.templates.append((compiled.names, loc, frozenset()))
        self.env_uses += [(name, loc, text) for name in sorted(compiled.env)]
        return compiled

    def expression(self, value: Any, loc: Path, extra: frozenset[str] = frozenset()) -> Expression:
        if not isinstance(value, str):
            return constant(value)
        try:
            compiled = self.compiled(compile_expression, value)
        except ExpressionError as exc:
            self.compile_problem(loc, value, "expression", exc)
            return constant(None)
        self.templates.append((compiled.names, loc, extra))
        self.env_uses += [(name, loc, value) for name in sorted(compiled.env)]
        return compiled

    def choices(self, options: list[m.Option] | None, loc: Path) -> tuple[Choice, ...]:
        return tuple(Choice(o.id, self.template(o.label, loc + (i, "title")), o.next,
                            self.template(o.description, loc + (i, "description")))
                     for i, o in enumerate(options or ()))

    def message(self, msg: m.Message, loc: Path) -> MessageT:
        buttons = self.choices(msg.buttons, loc + ("buttons",))
        rows = self.choices(msg.list.options if msg.list else None, loc + ("list", "options"))
        media = msg.media
        return MessageT(
            text=self.template(msg.text, loc + ("text",)), buttons=buttons,
            list_button=self.template(msg.list.button, loc + ("list", "button")) if msg.list else None,
            list=rows, media_url=self.template(media.url, loc + ("media", "url")) if media else None,
            media_kind=media.kind if media else None, media_filename=media.filename if media else None)

    def rule(self, v: m.Validate | None, loc: Path) -> Rule:
        if v is None:
            return Rule()
        pattern = None
        if v.regex is not None:
            pattern = self.pattern(v.regex, loc + ("regex",), 0)
        bounds = {}
        for name in ("min", "max"):
            value = getattr(v, name)
            if value is None:
                continue
            if v.type == "date":
                value = str(value)
                try:
                    date_bound(value, date(2000, 1, 1))
                except ValueError:
                    self.problem(loc + (name,), f"{name} of a date must be an ISO date, today, or today+N")
            elif v.type in ("integer", "number") and isinstance(value, str):
                self.problem(loc + (name,), f"{name} of an {v.type} answer must be a number"
                             if v.type == "integer" else f"{name} of a {v.type} answer must be a number")
                value = None
            bounds[name] = value
        return Rule(type=v.type, regex=pattern, min=bounds.get("min"), max=bounds.get("max"),
                    min_length=v.length.min if v.length else None,
                    max_length=v.length.max if v.length else None,
                    choices=tuple((o.id, o.label) for o in v.choices or ()), region=v.region,
                    formats=tuple(v.formats) if v.formats else DEFAULT_DATE_FORMATS)

    def json_body(self, value: Any, loc: Path) -> Any:
        """A JSON body's structure with templates at its string leaves; a leaf that is one
        ``{{ expression }}`` and nothing else keeps the expression's type (36, not "36")."""
        if isinstance(value, str):
            single = _SINGLE_EXPRESSION.fullmatch(value)
            if single and "{{" not in single.group(1) and "}}" not in single.group(1):
                return self.expression(single.group(1), loc)
            return self.template(value, loc)
        if isinstance(value, dict):
            return {k: self.json_body(v, loc + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_body(v, loc + (i,)) for i, v in enumerate(value)]
        return value

    def pairs(self, values: dict[str, Any], loc: Path) -> tuple[tuple[str, Template | SecretT], ...]:
        return tuple((k, SecretT(v.secret, v.prefix) if isinstance(v, m.SecretRef) else self.template(v, loc + (k,)))
                     for k, v in values.items())

    # ------------------------------------------------------------ actions

    def action(self, node: m.Node, loc: Path) -> Action | None:
        if node.ask is not None:
            rule = self.rule(node.validate_, loc + ("validate",))
            prompt = node.ask
            if rule.type == "choice" and not prompt.buttons and not prompt.list:
                prompt = prompt.model_copy(update={"buttons": [m.Option(id=i, title=t) for i, t in rule.choices]})
            error = node.validate_.error if node.validate_ else None
            return Ask(self.message(prompt, loc + ("ask",)), node.save, rule,
                       self.template(error, loc + ("validate", "error")), *self.retries(node))
        if node.menu is not None:
            return self.menu(node, node.menu, loc)
        if node.branch is not None:
            cases = tuple((self.expression(c.if_, loc + ("branch", i, "if")), c.next)
                          for i, c in enumerate(node.branch) if c.if_ is not None and c.next is not None)
            return Branch(cases, next((c.else_ for c in node.branch if c.else_ is not None), None))
        if node.http is not None:
            return self.http(node.http, loc + ("http",))
        if node.handoff is not None:
            return HandoffA(self.template(node.handoff.reason, loc + ("handoff", "reason")), node.handoff.queue)
        if node.wait is not None:
            return self.wait(node, node.wait, loc + ("wait",))
        if node.goto is not None:
            return Goto(node.goto.node, node.goto.flow, node.goto.return_)
        if node.end:
            return EndA()
        return None

    def retries(self, node: m.Node) -> tuple[int | None, str | None]:
        retries = node.retries if node.retries is not None else (2 if node.on_fail else None)
        return retries, node.on_fail

    def menu_parts(self, spec: m.MenuSpec, loc: Path) -> tuple[Template, tuple[Choice, ...], Template | None]:
        return (self.template(spec.text or "", loc + ("text",)), self.choices(spec.options, loc + ("options",)),
                self.template(spec.invalid, loc + ("invalid",)))

    def menu(self, node: m.Node, spec: m.MenuSpec, loc: Path) -> Menu:
        if spec.use is None:
            parts = self.menu_parts(spec, loc + ("menu",))
        elif spec.use in self.shared_menus:
            parts = self.shared_menus[spec.use]
        else:
            self.problem(loc + ("menu",), f"no menu {spec.use!r} under `menus`")
            parts = self.menu_parts(m.MenuSpec(), loc + ("menu",))
        return Menu(*parts, node.save, *self.retries(node))

    def http(self, h: m.HttpSpec, loc: Path) -> Http:
        if not url_starts_trusted(h.url):
            self.problems.append(self.smap.problem(
                loc + ("url",), "the start of this url is percent-encoded like any inserted value: begin it "
                "with text, {{ env.NAME }} or a trusted value marked | verbatim", severity="warning"))
        return Http(
            method=h.method, url=self.template(h.url, loc + ("url",), url=True),
            headers=self.pairs(h.headers, loc + ("headers",)), query=self.pairs(h.query, loc + ("query",)),
            json=self.json_body(h.json_, loc + ("json",)),
            form=tuple((k, self.template(v, loc + ("form", k))) for k, v in h.form.items()) if h.form else None,
            body=self.template(h.body, loc + ("body",)), timeout_s=h.timeout_s, retries=h.retries,
            save=h.save,
            map=tuple((k, self.expression(v, loc + ("map", k), frozenset({"response"}))) for k, v in h.map.items()))

    def wait(self, node: m.Node, w: m.WaitSpec, loc: Path) -> Wait:
        if w.for_ is not None:
            try:
                return Wait(seconds=parse_duration(w.for_))
            except ValueError as exc:
                self.problem(loc + ("for",), str(exc))
                return Wait(seconds=1.0)
        if w.at is not None:
            return Wait(at=self.template(w.at, loc + ("at",)))
        return Wait(reply=True, save=node.save)

    # ------------------------------------------------------------ the flow

    def node(self, node_id: str, node: m.Node) -> Node:
        loc: Path = ("nodes", node_id)
        sets = tuple((k, self.expression(v, loc + ("set", k))) for k, v in (node.set or {}).items())
        say = tuple(self.message(msg, loc + ("say", i)) for i, msg in enumerate(node.say or ()))
        on_error = node.on_error or (node.http.on_error if node.http else None)
        return Node(node_id, sets, say, self.action(node, loc), node.next, on_error,
                    node.timeout_s, node.on_timeout)

    def pattern(self, source: str, loc: Path, flags: int) -> regex.Pattern | None:
        """An author's regular expression, compiled with `regex`, which the interpreter runs
        with a timeout (a pattern that backtracks badly must not stall a host)."""
        repeats = _repeat_product(source)
        if repeats > MAX_REPEATS:
            self.problem(loc, f"regex repeats too much: its nested counts multiply to {repeats:,} "
                              f"(at most {MAX_REPEATS:,})")
            return None
        try:
            return regex.compile(source, flags)
        except regex.error as exc:
            self.problem(loc, f"regex does not compile: {exc}")
            return None

    def trigger(self, t: m.Trigger, loc: Path) -> TriggerT:
        pattern = self.pattern(t.regex, loc + ("regex",), regex.IGNORECASE) if t.regex is not None else None
        return TriggerT(tuple(k.strip().casefold() for k in t.keyword or ()), pattern, bool(t.default),
                        frozenset(t.channels) if t.channels is not None else None)

    def variables(self) -> dict[str, Any]:
        """The flow's ``vars``, checked to be data a conversation can hold."""
        values = {}
        for name, value in self.spec.vars.items():
            try:
                values[name] = plain(value, name)
            except RenderError as exc:
                self.problem(("vars", name), str(exc))
        return values

    def flow(self) -> Flow:
        spec = self.spec
        # Reusable menus compile once, used or not, and every node that uses one shares it.
        self.shared_menus = {name: self.menu_parts(menu, ("menus", name)) for name, menu in spec.menus.items()}
        nodes = {node_id: self.node(node_id, node) for node_id, node in spec.nodes.items()}
        version = spec.version or hashlib.sha256(self.source.encode()).hexdigest()[:12]
        return Flow(
            id=spec.flow, version=version, description=spec.description, start=spec.start,
            nodes=MappingProxyType(nodes),
            commands=MappingProxyType({k.strip().casefold(): v for k, v in spec.commands.items()}),
            vars=MappingProxyType(self.variables()),
            triggers=tuple(self.trigger(t, ("triggers", i)) for i, t in enumerate(spec.triggers)),
            on_error=spec.on_error, max_steps=spec.max_steps, isolation=spec.isolation,
            path=self.smap.path, source=self.source,
            env_uses=tuple(dict.fromkeys((name, *self.env_spot(loc, text, name)) for name, loc, text in self.env_uses)))
