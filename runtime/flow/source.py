"""Read YAML (or JSON) into plain data plus a map from each value's path to its line:column.

Pydantic reports errors by path (``("nodes", "ask_age", "validate", "min")``); the map turns
that path back into the place in the file, so every problem can say ``file:line:column``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import FlowError, Problem

Path = tuple[str | int, ...]

MAX_VALUES = 100_000
"""Values one document may hold once its aliases are expanded (a "billion laughs" guard)."""


@dataclass(frozen=True, slots=True)
class Spot:
    line: int
    column: int


@dataclass(slots=True)
class SourceMap:
    """Where each value (and each mapping key) of a document stands in its file."""

    path: str
    values: dict[Path, Spot] = field(default_factory=dict)
    keys: dict[Path, Spot] = field(default_factory=dict)
    blocks: set[Path] = field(default_factory=set)
    """Paths of literal block scalars (``|``), whose lines are the file's lines after the key."""

    def resolve(self, loc: Path) -> Path:
        """The path in the file that ``loc`` stands for.

        Components the file does not have are skipped rather than ending the walk: pydantic
        adds union tags, and shorthands (``say: "hi"`` read as ``say: [{text: "hi"}]``) add
        indices and keys that the author never wrote.
        """
        found: Path = ()
        for part in loc:
            if found + (part,) in self.values:
                found = found + (part,)
        return found

    def spot(self, loc: Path, *, key: bool = False) -> Spot:
        """The position of ``loc``, or of its nearest ancestor that exists in the file."""
        found = self.resolve(loc)
        if key and found and found[-1] == loc[-1] and found in self.keys:
            return self.keys[found]
        return self.values.get(found, Spot(1, 1))

    def problem(self, loc: Path, message: str, *, key: bool = False,
                severity: str = "error") -> Problem:
        spot = self.spot(loc, key=key)
        return Problem(self.path, spot.line, spot.column, message, severity)


def _spot(node: yaml.Node) -> Spot:
    return Spot(node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core-schema scalars instead of PyYAML's YAML 1.1 ones.

    Under 1.1, ``yes``/``no``/``on``/``off`` are booleans, ``11:30`` is the number 690 and
    ``2026-12-01`` is a date object; authors mean text by all three, and JSON (a subset of
    YAML 1.2) agrees. Only ``true``/``false``, decimal, ``0x``/``0o`` integers and decimal
    floats are typed; everything else is a string.
    """

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Resolve ``<<`` merge keys, keeping one pair per key as it goes: PyYAML's own version
        keeps every copy, so merges of merges of anchors grow tenfold a level (a 529-byte file
        built 1.6 GB before anything could count it)."""
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        explicit = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):  # the first mapping listed wins
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        None, None, "a merge key (<<) takes a mapping or a list of mappings", source.start_mark)
                self.flatten_mapping(source)
                for pair in source.value:
                    merged[pair[0].value if isinstance(pair[0], yaml.ScalarNode) else str(id(pair[0]))] = pair
        node.value = list(merged.values()) + explicit


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float",
         # a point or an exponent makes a float; `010` stays text (a zip code, an extension)
         r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
         "-+0123456789.")):
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(node.value, 0))


class _TooBig(Exception):
    pass


class _Reader:
    """Builds the data and the map in one walk, refusing duplicate keys as it goes."""

    def __init__(self, text: str, smap: SourceMap):
        self.loader = _Loader(text)
        self.smap = smap
        self.problems: list[Problem] = []
        self.walking: set[int] = set()  # ids of the nodes being walked: an alias to one is a cycle
        self.count = 0

    def read(self) -> Any:
        try:
            root = self.loader.get_single_node()
            if root is None:
                return None
            return self._walk(root, ())
        finally:
            self.loader.dispose()

    def _walk(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooBig
        if id(node) in self.walking:
            self.problems.append(self.smap.problem(path[:-1], "an alias refers to a value that contains it"))
            return None
        self.smap.values[path] = _spot(node)
        self.walking.add(id(node))
        try:
            return self._value(node, path)
        finally:
            self.walking.discard(id(node))

    def _value(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            explicit = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)  # resolve `<<: *anchor`: merged pairs come first
            merged = len(node.value) - explicit
            out: dict[Any, Any] = {}
            from_merge: set[str] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(self.smap.problem(path, "a mapping key must be a plain name"))
                    continue
                # Keys are names: keep their text, so that `yes:` or `1:` stay strings.
                key = key_node.value
                if key in out and key not in from_merge:
                    first = self.smap.keys[path + (key,)]
                    spot = _spot(key_node)
                    self.problems.append(Problem(
                        self.smap.path, spot.line, spot.column,
                        f"duplicate key {key!r} (first defined at line {first.line})"))
                    continue
                if index < merged:
                    from_merge.add(key)
                else:
                    from_merge.discard(key)  # an explicit key overrides a merged one
                self.smap.keys[path + (key,)] = _spot(key_node)
                out[key] = self._walk(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._walk(item, path + (i,)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.style == "|":
            self.smap.blocks.add(path)  # a literal block: line N of the text is line N after the key
        try:
            return self.loader.construct_object(node, deep=True)
        except _UNFIT_TAG:  # an explicit tag its text does not fit: `!!int abc`, `!!bool maybe`
            spot = _spot(node)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problems.append(Problem(self.smap.path, spot.line, spot.column,
                                         f"{tag} {node.value!r}: the value does not fit its tag"))
            return None


_UNFIT_TAG = (yaml.YAMLError, ValueError, KeyError, AttributeError)
"""What the safe loader's constructors raise for a scalar its tag does not fit: an unknown or
collection tag (YAMLError), `!!int abc` or `!!timestamp 2020-02-30` (ValueError), `!!bool maybe`
(KeyError), `!!timestamp abc` (AttributeError)."""

_CLOSERS = {"flow sequence": "]", "flow mapping": "}"}


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, path: str) -> Problem:
    """A YAML syntax error at the place to mend. PyYAML marks the token where it gave up: for
    something left open (a `[` or `{` never closed, a quote never closed, `key:value` without
    its space) that is on a later line, often the next key or the end of the file; the mistake
    is at the end of the content before that line, or where the unclosed thing opened."""
    mark, context = exc.problem_mark or exc.context_mark, exc.context or ""
    spot = Spot(mark.line + 1, mark.column + 1) if mark else Spot(1, 1)
    reason = exc.problem or context or "invalid YAML"
    opened = Spot(exc.context_mark.line + 1, exc.context_mark.column + 1) if exc.context_mark else None
    lines = text.split("\n")
    if mark is not None and opened is not None and spot.line > opened.line:
        kind = context.removeprefix("while parsing a ").removeprefix("while scanning a ")
        left_open = _left_open(kind, reason, lines, spot, opened, path)
        if left_open is not None:
            return left_open
    if mark is not None and reason.startswith("expected the node content") and mark.column == _indent(lines, spot.line):
        before = _content_end(lines, spot.line - 1) or spot  # `key: [` or `key: {` at the end of a line or file
        return Problem(path, before.line, before.column, "YAML syntax: a value is missing here")
    return Problem(path, spot.line, spot.column, f"YAML syntax: {reason}")


def _left_open(kind: str, reason: str, lines: list[str], spot: Spot, opened: Spot, path: str) -> Problem | None:
    """The error at ``spot``, on a line after the one where a ``kind`` of thing ``opened``, as
    that thing left open; None when it is not that."""
    if kind in ("quoted scalar", "block scalar") and "end of stream" in reason:
        return Problem(path, opened.line, opened.column,
                       f"YAML syntax: the {kind.split()[0]} text opened here is never closed")
    if kind == "simple key":
        return Problem(path, opened.line, opened.column,
                       "YAML syntax: expected ': ' (a colon and a space) after a key on this line")
    if kind in _CLOSERS and _indent(lines, spot.line) <= _indent(lines, opened.line):
        # The collection ends, unclosed, before the first line no deeper than the one it opened on.
        end = next((n for n in range(opened.line + 1, spot.line + 1)
                    if _without_comment(lines[n - 1] if n <= len(lines) else "").strip()
                    and _indent(lines, n) <= _indent(lines, opened.line)), spot.line)
        before = _content_end(lines, end - 1) or spot
        return Problem(path, before.line, before.column,
                       f"YAML syntax: expected ',' or '{_CLOSERS[kind]}' here: the {kind} opened at line "
                       f"{opened.line}, column {opened.column} is not closed")
    if kind in _CLOSERS and spot.column - 1 == _indent(lines, spot.line):  # `"a": 1` `"b": 2` on two lines
        before = _content_end(lines, spot.line - 1) or spot
        return Problem(path, before.line, before.column, f"YAML syntax: expected ',' or '{_CLOSERS[kind]}' here, "
                       f"before the next entry on line {spot.line}")
    return None


def _indent(lines: list[str], number: int) -> int:
    """The indentation of line ``number`` (1-based); a line past the end has none."""
    line = lines[number - 1] if number <= len(lines) else ""
    return len(line) - len(line.lstrip(" ")) if line.strip() else 0


def _content_end(lines: list[str], last: int) -> Spot | None:
    """Where the content of lines 1 to ``last`` ends: just after the last character that is
    neither space nor part of a comment; None when there is none."""
    for number in range(min(last, len(lines)), 0, -1):
        content = _without_comment(lines[number - 1]).rstrip()
        if content:
            return Spot(number, len(content) + 1)
    return None


def _without_comment(line: str) -> str:
    """A line without its ``# comment`` (a ``#`` after a space, outside quotes, starts one)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def read_source(text: str, path: str) -> tuple[Any, SourceMap]:
    """Parse ``text`` (YAML or JSON) from ``path``; raise :class:`FlowError` on bad syntax."""
    smap = SourceMap(path)
    try:
        reader = _Reader(text, smap)  # refuses characters YAML does not allow (NUL, U+FFFE)
        data = reader.read()
    except yaml.reader.ReaderError as exc:
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        problem = Problem(path, line, column, f"character U+{exc.character:04X} is not allowed in YAML")
        raise FlowError([problem]) from None
    except yaml.MarkedYAMLError as exc:
        raise FlowError([_syntax_problem(exc, text, path)]) from exc
    except yaml.YAMLError as exc:
        raise FlowError([Problem(path, 1, 1, f"YAML: {exc}")]) from exc
    except _TooBig:
        raise FlowError([Problem(path, 1, 1, f"the document holds more than {MAX_VALUES:,} values "
                                 "once its aliases are expanded")]) from None
    except RecursionError:
        raise FlowError([Problem(path, 1, 1, "the document is nested too deeply")]) from None
    if reader.problems:
        raise FlowError(reader.problems)
    return data, smap
