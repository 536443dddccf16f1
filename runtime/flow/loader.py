"""Loading flows from files: parse, validate the shape, compile, check; report every problem.

>>> flow = load_flow("flows/registration.yaml")
>>> catalog = load_catalog(["flows/"], env={"MEMBERS_API": "http://127.0.0.1:9999"})

A directory loads every ``*.yaml``, ``*.yml`` and ``*.json`` in it, except JSON Schemas
(``*.schema.json``) and flow test files, which are told by their content, whatever their name
(see :func:`is_flow_test`).
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import FlowError, Problem
from . import model as m
from .checks import FlowChecker, did_you_mean
from .compiled import Catalog, Flow
from .compiler import Compiler
from .deploy_checks import check_together
from .source import SourceMap, read_source

FLOW_SUFFIXES = (".yaml", ".yml", ".json")
TEST_KEYS = frozenset({"steps", "http", "env", "now", "user", "channel"})
"""Top-level keys only a flow test file has; a flow has ``nodes`` and ``start`` instead."""


def is_flow_file(path: FsPath) -> bool:
    """Whether a file found in a directory may hold a flow (or a flow test: only its content tells)."""
    name = path.name
    return name.endswith(FLOW_SUFFIXES) and not name.endswith(".schema.json")


def is_flow_test(data: Any) -> bool:
    """Whether a parsed document is a flow test, not a flow: a mapping with a key only tests have
    (``steps``, ``http``, ...) and with neither ``nodes`` nor ``start``. Told by content, so that
    ``pizza_test.yaml`` or a test kept in its own folder is never read as a broken flow."""
    return isinstance(data, dict) and bool(TEST_KEYS & data.keys()) and not {"nodes", "start"} & data.keys()


def candidate_files(paths: Iterable[str | FsPath]) -> list[tuple[FsPath, bool]]:
    """The files named by ``paths``, each with whether it was named itself (True) or found in a
    directory searched recursively (False)."""
    found: list[tuple[FsPath, bool]] = []
    for path in map(FsPath, paths):
        if path.is_dir():
            found.extend((p, False) for p in sorted(path.rglob("*")) if p.is_file() and is_flow_file(p))
        else:
            found.append((path, True))
    return found


def flow_files(paths: Iterable[str | FsPath]) -> list[FsPath]:
    """The files under ``paths`` that may hold flows; test files among them are left out when loaded."""
    return [path for path, _ in candidate_files(paths)]


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional: ``Annotated[list[Option], ...] | None`` -> ``list[Option]``;
    of a union of a plain type and a model (``str | SecretRef``), the model."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            structured = [a for a in args if typing.get_origin(a) in (list, dict, typing.Annotated)]
            tp = (models or structured or args)[0]
        else:
            return tp


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that holds the value at ``loc`` under ``model`` (to list its keys)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


_PATTERNS = {
    m.NAME: "letters, digits and _, not starting with a digit",
    m.NODE_ID: "letters, digits, _, . and -",
    m.FLOW_ID: "lowercase letters, digits, _ and -",
}


@functools.cache
def _tags(root: type[BaseModel]) -> frozenset[str]:
    """Names pydantic puts in an error's path for union members: model and type names."""
    names, todo = {"str", "int", "float", "bool", "list", "dict", "none"}, [root]
    while todo:
        model = todo.pop()
        if model.__name__ in names:
            continue
        names.add(model.__name__)
        for info in model.model_fields.values():
            todo += [a for a in _annotations(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return frozenset(names)


def _annotations(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    return [tp] + [found for arg in args for found in _annotations(arg)]


def translate(exc: ValidationError, smap: SourceMap, root: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors as problems at their place in the file, in words an author reads."""
    tags = _tags(root)
    errors = [(err, tuple(p for p in err["loc"] if not _is_tag(p, tags))) for err in exc.errors(include_url=False)]
    problems: dict[tuple[int, int, str], Problem] = {}
    for err, loc in errors:
        message = err["msg"].removeprefix("Value error, ")
        if loc != tuple(err["loc"]) and err["type"].endswith("_type"):
            said = _union_message(err, loc, errors, message)
            if said is None:
                continue
            message = said
        problem = _problem(err, loc, message, smap, root)
        problems.setdefault((problem.line, problem.column, problem.message), problem)
    return list(problems.values())


def _is_tag(part: str | int, tags: frozenset[str]) -> bool:
    """Whether a part of an error's path is pydantic's name for a union member, not the file's."""
    return isinstance(part, str) and (part in tags or part.startswith("function-"))


Located = tuple[ErrorDetails, tuple[str | int, ...]]
"""A pydantic error, with its path in the file (union members' tags left out)."""


def _union_message(err: ErrorDetails, loc: tuple[str | int, ...], errors: list[Located], message: str) -> str | None:
    """What to say of a value that fits no member of a union, once: None when another member's
    error says what is wrong, or when another error says it already."""
    if any(other is not err and len(where) > len(loc) and where[:len(loc)] == loc for other, where in errors):
        return None  # the value is meant for another member of a union, which says what is wrong
    members = [o for o, where in errors if where == loc and o["type"].endswith("_type")]
    if len(members) <= 1:
        return message
    if members[0] is not err:  # fits no member: say so once
        return None
    fits = " or ".join(dict.fromkeys(o["msg"].removeprefix("Input should be ") for o in members))
    return f"Input should be {fits}".replace("a valid dictionary or instance of SecretRef", "a secret, {secret: NAME}")


def _problem(err: ErrorDetails, loc: tuple[str | int, ...], message: str, smap: SourceMap,
             root: type[BaseModel]) -> Problem:
    """One pydantic error as a problem, placed and worded by its kind."""
    kind, pattern = err["type"], err.get("ctx", {}).get("pattern")
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        keys = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
        message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), keys)}"
        if keys:
            message += f"; expected one of: {', '.join(keys)}"
        return smap.problem(loc, message, key=True)
    if kind == "missing":
        return smap.problem(loc[:-1], f"missing required key {loc[-1]!r}"
                            + (f" in {_dotted(loc[:-1])}" if loc[:-1] else ""))
    if loc and loc[-1] == "[key]":
        rule = _PATTERNS.get(pattern, message) if isinstance(pattern, str) else message
        return smap.problem(loc[:-1], f"{_dotted(loc[:-2])}: {loc[-2]!r} is not a valid name: {rule}", key=True)
    if kind == "string_pattern_mismatch" and pattern in _PATTERNS:
        message = f"{err['input']!r} is not a valid name: {_PATTERNS[pattern]}"
    value = err.get("input")
    quoted = isinstance(value, bool) and "quote it" not in message
    hint = " (unquoted true/false is a boolean in YAML: quote it)" if quoted else ""
    return smap.problem(loc, f"{_dotted(loc)}: {message}{hint}")


@dataclass
class Loaded:
    """The result of loading files: the flows that loaded and every problem found."""

    flows: list[Flow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    specs: list[tuple[m.FlowSpec, SourceMap]] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


Compiled = tuple[Flow | None, m.FlowSpec | None, SourceMap | None, list[Problem]]


def compile_source(text: str, path: str) -> Compiled:
    """Load one flow from its text; problems instead of exceptions."""
    try:
        data, smap = read_source(text, path)
    except FlowError as exc:
        return None, None, None, exc.problems
    return compile_data(data, smap, text, path)


def _test_not_flow(path: str) -> Problem:
    return Problem(path, 1, 1, "this is a flow test file (it has `steps`, no `start` or `nodes`), not a flow: "
                               "run it with `parlour test`")


def compile_data(data: Any, smap: SourceMap, text: str, path: str) -> Compiled:
    """Compile a flow already read by :func:`read_source`."""
    if is_flow_test(data):
        return None, None, smap, [_test_not_flow(path)]
    if not isinstance(data, dict):
        return None, None, smap, [Problem(path, 1, 1, "a flow file is a mapping with `flow`, `start` and `nodes`")]
    try:
        spec = m.FlowSpec.model_validate(data)
    except ValidationError as exc:
        return None, None, smap, translate(exc, smap, m.FlowSpec) + _meaning_despite_shape(data, exc, smap, text)
    compiler = Compiler(spec, smap, text)
    flow = compiler.flow()
    problems = compiler.problems + FlowChecker(spec, smap, compiler.templates).run()
    return flow, spec, smap, list(dict.fromkeys(problems))  # an aliased value is one problem, once


_OPTIONAL = frozenset(m.FlowSpec.model_fields) - {"flow", "start", "nodes", "menus"}


def _meaning_despite_shape(data: dict, exc: ValidationError, smap: SourceMap, text: str) -> list[Problem]:
    """The errors of meaning in a flow that also has errors of shape, so that one typo does not
    hide the rest. Each node or menu of the wrong shape is replaced by a neutral stand-in, and an
    optional top-level key of the wrong shape dropped; warnings are left out, since stand-ins
    would skew them (a node only the broken one led to would look unreachable)."""
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        return []
    broken = {tuple(err["loc"][:2]) for err in exc.errors() if err["loc"]}
    # A name that is itself invalid (`my node:`) cannot stay, even as a stand-in: it is left out,
    # and so are the "no node ..." reports that leaving it out would cause.
    misnamed = {tuple(err["loc"][:2]) for err in exc.errors() if tuple(err["loc"][2:3]) == ("[key]",)}
    stand_in_target = next((k for k in nodes if ("nodes", k) not in misnamed), None)
    if stand_in_target is None:
        return []
    partial = {k: v for k, v in data.items() if not (k in _OPTIONAL and (k,) in {b[:1] for b in broken})}
    partial["nodes"] = {k: ({"end": True} if ("nodes", k) in broken else v)
                        for k, v in nodes.items() if ("nodes", k) not in misnamed}
    if isinstance(data.get("menus"), dict):
        partial["menus"] = {k: ({"options": [{"id": "stand-in", "next": stand_in_target}]}
                                if ("menus", k) in broken else v)
                            for k, v in data["menus"].items() if ("menus", k) not in misnamed}
    for key in ("flow", "start"):
        if (key,) in broken or key not in data:
            partial[key] = "stand-in" if key == "flow" else stand_in_target
    try:
        spec = m.FlowSpec.model_validate(partial)
    except ValidationError:
        return []
    compiler = Compiler(spec, smap, text)
    compiler.flow()
    found = compiler.problems + FlowChecker(spec, smap, compiler.templates).run()
    left_out = tuple(f"no node {name!r}" for _, name in misnamed) + tuple(f"no menu {name!r}" for _, name in misnamed)
    return [p for p in found if p.severity == "error" and not p.message.startswith(left_out or ("\0",))]


def load_paths(paths: Iterable[str | FsPath]) -> Loaded:
    """Load every flow under ``paths`` and check them together."""
    loaded = Loaded()
    for file, named in candidate_files(paths):
        try:
            text = file.read_text(encoding="utf-8")
            data, smap = read_source(text, str(file))
        except (OSError, UnicodeDecodeError) as exc:
            loaded.problems.append(Problem(str(file), 1, 1, f"cannot read: {exc}"))
            continue
        except FlowError as exc:
            loaded.problems.extend(exc.problems)
            continue
        if is_flow_test(data) and not named:
            continue  # a test beside its flows: `parlour test` runs it
        flow, spec, _, problems = compile_data(data, smap, text, str(file))  # the same map back
        loaded.problems.extend(problems)
        if flow is not None and not any(p.severity == "error" for p in problems):
            loaded.flows.append(flow)
        if spec is not None:
            loaded.specs.append((spec, smap))
    loaded.problems.extend(check_together(loaded.specs))
    return loaded


def load_flow(path: str | FsPath) -> Flow:
    """Load one flow file; :class:`FlowError` lists every error."""
    result = load_paths([path])
    if result.errors or not result.flows:
        raise FlowError(result.errors or [Problem(str(path), 1, 1, "no flow found")])
    return result.flows[0]


def load_text(text: str, path: str = "<flow>") -> Flow:
    flow, _, _, problems = compile_source(text, path)
    errors = [p for p in problems if p.severity == "error"]
    if errors or flow is None:
        raise FlowError(errors)
    return flow


def load_catalog(paths: Iterable[str | FsPath], env: Mapping[str, str] | None = None) -> Catalog:
    """Load flows into a :class:`Catalog`; :class:`FlowError` if any has an error."""
    result = load_paths(paths)
    if result.errors:
        raise FlowError(result.errors)
    if not result.flows:
        raise FlowError([Problem(str(p), 1, 1, "no flow files found") for p in paths])
    return Catalog(result.flows, env=env)
