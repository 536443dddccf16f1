"""Checks of flows against what they are deployed with: the other flows loaded with them
(ids, keywords, gotos between flows), and their tenant's secrets and ``env`` values.

A flow alone is checked by :mod:`.checks`; these need the company it keeps, so the loader,
an upload and a node's start run them once that is known.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import Problem
from . import model as m
from .checks import did_you_mean
from .compiled import Flow
from .source import SourceMap


def check_together(loaded: list[tuple[m.FlowSpec, SourceMap]]) -> list[Problem]:
    """Checks across the flows loaded together: ids, keywords and defaults, gotos between flows."""
    return _duplicate_ids(loaded) + _trigger_claims(loaded) + _gotos_between_flows(loaded)


def _duplicate_ids(loaded: list[tuple[m.FlowSpec, SourceMap]]) -> list[Problem]:
    problems: list[Problem] = []
    first_seen: dict[str, SourceMap] = {}
    for spec, smap in loaded:
        if spec.flow in first_seen:
            other = first_seen[spec.flow]
            problems.append(smap.problem(("flow",), f"duplicate flow id {spec.flow!r} "
                                         f"(also in {other.path}:{other.spot(('flow',)).line})"))
        first_seen.setdefault(spec.flow, smap)
    return problems


def _trigger_claims(loaded: list[tuple[m.FlowSpec, SourceMap]]) -> list[Problem]:
    """Two flows may claim the same keyword, or both be the default, only on channels that do
    not overlap (a trigger without `channels` overlaps every channel)."""
    problems: list[Problem] = []
    claims: dict[str, list[tuple[str, frozenset[str] | None]]] = {}  # claim -> [(flow, channels)]
    for spec, smap in loaded:
        for i, t in enumerate(spec.triggers):
            names = [("keyword " + repr(k.strip().casefold()), ("triggers", i, "keyword")) for k in t.keyword or ()]
            names += [("the default trigger", ("triggers", i, "default"))] if t.default else []
            channels = frozenset(t.channels) if t.channels is not None else None
            for name, loc in names:
                for other, theirs in claims.get(name, ()):
                    if other != spec.flow and (channels is None or theirs is None or channels & theirs):
                        problems.append(smap.problem(loc, f"{name} is claimed by flow {other!r} too"))
                        break
                claims.setdefault(name, []).append((spec.flow, channels))
    return problems


def _gotos_between_flows(loaded: list[tuple[m.FlowSpec, SourceMap]]) -> list[Problem]:
    problems: list[Problem] = []
    flows: dict[str, m.FlowSpec] = {}
    for spec, _ in loaded:
        flows.setdefault(spec.flow, spec)
    for spec, smap in loaded:
        for node_id, node in spec.nodes.items():
            if not (node.goto and node.goto.flow):
                continue
            target = flows.get(node.goto.flow)
            if target is None:
                problems.append(smap.problem(("nodes", node_id, "goto", "flow"),
                                             f"no flow {node.goto.flow!r} among those loaded"
                                             f"{did_you_mean(node.goto.flow, flows)}"))
            elif node.goto.node and node.goto.node not in target.nodes:
                problems.append(smap.problem(("nodes", node_id, "goto", "node"),
                                             f"flow {target.flow!r} has no node {node.goto.node!r}"
                                             f"{did_you_mean(node.goto.node, target.nodes)}"))
    return problems


def gotos_into(flow_id: str, loaded: list[tuple[m.FlowSpec, SourceMap]]) -> list[Problem]:
    """Where the other flows ``loaded`` go to ``flow_id``: what stops it being deleted."""
    return [smap.problem(("nodes", node_id, "goto", "flow"), f"flow {spec.flow!r} goes to {flow_id!r}")
            for spec, smap in loaded if spec.flow != flow_id
            for node_id, node in spec.nodes.items() if node.goto and node.goto.flow == flow_id]


def check_secrets(spec: m.FlowSpec, smap: SourceMap, have: Iterable[str], tenant: str, *,
                  severity: str = "error") -> list[Problem]:
    """A problem at each ``{secret: NAME}`` of ``spec`` that names a secret ``tenant`` does not
    ``have``: its http node would send without it (and fail), so the flow is refused instead."""
    have = set(have)
    problems = []
    for node_id, node in spec.nodes.items():
        if node.http is None:
            continue
        for part in ("headers", "query"):
            for key, value in getattr(node.http, part).items():
                if isinstance(value, m.SecretRef) and value.secret not in have:
                    problems.append(smap.problem(
                        ("nodes", node_id, "http", part, key),
                        f"secret {value.secret!r} is not set for tenant {tenant!r}{did_you_mean(value.secret, have)}: "
                        f"set it with `parlour secrets set {tenant} {value.secret}` (or in the config file's "
                        f"tenants.{tenant}.secrets)", severity=severity))
    return problems


def check_env(flow: Flow, have: Iterable[str], tenant: str | None = None, *,
              severity: str = "warning") -> list[Problem]:
    """A problem at each ``env.NAME`` ``flow`` uses that is not in ``have``: the template that
    reads it would fail at run time (``env.NAME is not set for tenant ...``). A warning by
    default: a flow may test ``env.NAME is defined``, and the value may be set later."""
    have = set(have)
    where = f" for tenant {tenant!r}" if tenant else ""
    return [Problem(flow.path, line, column, f"env.{name} is used but not set{where}",
                    severity)
            for name, line, column in flow.env_uses if name not in have]
