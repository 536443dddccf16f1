"""Static checks: what a flow means, beyond its shape.

Errors refuse the flow: a reference to a node or flow that does not exist, keys that do not
apply to a node's kind, a loop that can never stop without the user, conflicting triggers.
Warnings let it load: a node nothing leads to, an unknown variable, a loop that only a
condition ends (the step limit cuts it at run time). Checks that need the flows loaded
with it, or its tenant's secrets and env, are in :mod:`.deploy_checks`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator

from ..errors import Problem
from . import model as m
from .expressions import BUILTIN_NAMES
from .source import Path, SourceMap

# Node keys that apply only to some kinds of node; "wait" means `wait: reply`.
_APPLIES_TO = {
    "save": ("ask", "menu", "wait"), "validate": ("ask",), "retries": ("ask", "menu"),
    "on_fail": ("ask", "menu"), "timeout_s": ("ask", "menu", "wait"), "on_timeout": ("ask", "menu", "wait"),
}
_FIELD = {"validate": "validate_"}


def _is_node(loc: Path) -> bool:
    """A problem with a whole node points at the node's name."""
    return len(loc) == 2 and loc[0] == "nodes"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def kind_of(node: m.Node) -> tuple[str | None, list[str]]:
    present = [a for a in m.ACTIONS if (getattr(node, a) if a != "end" else node.end)]
    return (present[0] if present else None), present


class FlowChecker:
    def __init__(self, spec: m.FlowSpec, smap: SourceMap, templates: list[tuple[frozenset[str], Path, frozenset[str]]]):
        self.spec = spec
        self.smap = smap
        self.templates = templates
        self.problems: list[Problem] = []

    def error(self, loc: Path, message: str, *, key: bool = False) -> None:
        self.problems.append(self.smap.problem(loc, message, key=key or _is_node(loc)))

    def warn(self, loc: Path, message: str) -> None:
        self.problems.append(self.smap.problem(loc, message, key=_is_node(loc), severity="warning"))

    def run(self) -> list[Problem]:
        for name in self.spec.vars:
            self.check_var_name(name, ("vars", name), key=True)
        for node_id, node in self.spec.nodes.items():
            self.check_node(node_id, node, ("nodes", node_id))
        used = {node.menu.use for node in self.spec.nodes.values() if node.menu is not None}
        for name, menu in self.spec.menus.items():
            self.check_menu_spec(menu, ("menus", name), needs_next=True)
            if name not in used:
                self.problems.append(self.smap.problem(("menus", name), f"menu {name!r} is not used by any node",
                                                       key=True, severity="warning"))
        self.check_references()
        self.check_reachable()
        self.check_loops()
        self.check_variables()
        self.check_triggers()
        return self.problems

    # ------------------------------------------------------------ one node

    def check_node(self, node_id: str, node: m.Node, loc: Path) -> None:
        kind, present = kind_of(node)
        if len(present) > 1:
            self.error(loc + (present[1],), f"a node has one action; this one has {', '.join(present)}", key=True)
        self.check_keys(node, kind, loc)
        self.check_message_rows(node, loc)
        self.check_names(node, loc)
        self.check_action(node, loc)

    def check_keys(self, node: m.Node, kind: str | None, loc: Path) -> None:
        """Keys that apply only to some kinds of node, or only together."""
        waits_for_reply = kind == "wait" and node.wait is not None and node.wait.until == "reply"
        effective = "wait" if waits_for_reply else ("" if kind == "wait" else kind)
        for key, kinds in _APPLIES_TO.items():
            if getattr(node, _FIELD.get(key, key)) is not None and effective not in kinds:
                where = ", ".join("wait: reply" if k == "wait" else k for k in kinds)
                self.error(loc + (key,), f"`{key}` applies to {where} nodes only", key=True)
        if (node.timeout_s is None) != (node.on_timeout is None):
            self.error(loc + ("timeout_s" if node.timeout_s is not None else "on_timeout",),
                       "`timeout_s` and `on_timeout` go together", key=True)
        if node.retries is not None and node.on_fail is None:
            self.error(loc + ("retries",), "`retries` needs `on_fail`: where to go after the last try", key=True)
        if kind in ("end", "branch") and node.next is not None:
            self.error(loc + ("next",), f"a {kind} node has no `next`", key=True)
        if kind is None and node.next is None:
            self.error(loc, "this node neither acts nor has a `next`: add `next`, or `end: true`")

    def check_message_rows(self, node: m.Node, loc: Path) -> None:
        """Buttons and list rows of a message (a `say`, an `ask`) lead nowhere: a menu's do."""
        messages = [(msg, loc + ("say", i)) for i, msg in enumerate(node.say or ())]
        messages += [(node.ask, loc + ("ask",))] if node.ask is not None else []
        for msg, mloc in messages:
            rows: list[tuple[Path, m.Option]] = [(("buttons", j), b) for j, b in enumerate(msg.buttons or ())]
            rows += [(("list", "options", j), b) for j, b in enumerate(msg.list.options if msg.list else ())]
            for where, button in rows:
                if button.next is not None:
                    self.error(mloc + where + ("next",), "buttons and list rows of a message do not lead "
                               "anywhere: use a `menu` for choices", key=True)

    def check_names(self, node: m.Node, loc: Path) -> None:
        """The variables a node sets are not built-in names."""
        names: list[tuple[str, Path, bool]] = [(name, ("set", name), True) for name in node.set or ()]  # True: a key
        names += [(node.save, ("save",), False)] if node.save else []
        if node.http:
            names += [(node.http.save, ("http", "save"), False)] if node.http.save else []
            names += [(name, ("http", "map", name), True) for name in node.http.map]
        for name, where, is_key in names:
            self.check_var_name(name, loc + where, key=is_key)

    def check_action(self, node: m.Node, loc: Path) -> None:
        """The checks of the node's action: the first it has, as :func:`kind_of` counts them."""
        if node.ask:
            self.check_ask(node, loc)
        elif node.menu:
            self.check_menu_spec(node.menu, loc + ("menu",), needs_next=node.next is None)
        elif node.branch:
            self.check_branch(node.branch, loc)
        elif node.http:
            self.check_http(node, node.http, loc)
        elif node.handoff:
            return  # a hand-off's shape, checked by its model, is all there is to check
        elif node.wait:
            self.check_wait(node, node.wait, loc)
        elif node.goto:
            self.check_goto(node, node.goto, loc)

    def check_var_name(self, name: str, loc: Path, *, key: bool) -> None:
        if name in BUILTIN_NAMES:
            self.error(loc, f"{name!r} is a built-in name; choose another variable name", key=key)

    def check_ask(self, node: m.Node, loc: Path) -> None:
        v = node.validate_
        if node.next is None:
            self.error(loc, "an ask node needs `next`")
        if v is None:
            return
        vloc = loc + ("validate",)
        if (v.type == "choice") != (v.choices is not None):
            self.error(vloc, "`choices` go with `type: choice`, and `type: choice` needs `choices`")
        for key, types in (("min", ("integer", "number", "date")), ("max", ("integer", "number", "date")),
                           ("length", ("text",)), ("region", ("phone",)), ("formats", ("date",))):
            if getattr(v, key) is not None and v.type not in types:
                self.error(vloc + (key,), f"`{key}` applies to type {' or '.join(types)}, not {v.type}", key=True)

    def check_menu_spec(self, menu: m.MenuSpec, loc: Path, needs_next: bool) -> None:
        if menu.use is not None:
            if menu.text or menu.options or menu.invalid:
                self.error(loc + ("use",), "a menu with `use` takes no other keys", key=True)
            return
        if not menu.options:
            self.error(loc, "a menu needs `options`")
            return
        seen: set[str] = set()
        for i, option in enumerate(menu.options):
            if option.id in seen:
                self.error(loc + ("options", i, "id"), f"duplicate option id {option.id!r}")
            seen.add(option.id)
            if needs_next and option.next is None:
                self.error(loc + ("options", i), f"option {option.id!r} needs `next`"
                           + ("" if loc[0] == "menus" else " (or give the node a `next`)"))

    def check_branch(self, cases: list[m.Case], loc: Path) -> None:
        for i, case in enumerate(cases):
            cloc = loc + ("branch", i)
            if case.else_ is not None:
                if case.if_ is not None or case.next is not None:
                    self.error(cloc, "`else` stands alone: `- else: node`")
                if i != len(cases) - 1:
                    self.error(cloc, "`else` must be the last case")
            elif case.if_ is None or case.next is None:
                self.error(cloc, "a case is `- if: condition` with `next: node`, or `- else: node`")
        if not any(c.else_ for c in cases):
            self.warn(loc + ("branch",), "no `else`: when no condition holds the turn fails")

    def check_wait(self, node: m.Node, w: m.WaitSpec, loc: Path) -> None:
        given = [k for k, v in (("for", w.for_), ("at", w.at), ("until", w.until)) if v is not None]
        if len(given) != 1:
            self.error(loc + ("wait",), "a wait takes one of `for`, `at` or `until: reply`")
        if node.next is None:
            self.error(loc, "a wait node needs `next`")

    def check_goto(self, node: m.Node, g: m.GotoSpec, loc: Path) -> None:
        if g.node is None and g.flow is None:
            self.error(loc + ("goto",), "goto needs a `node` or a `flow`")
        if g.return_ and g.flow is None:
            self.error(loc + ("goto", "return"), "`return` applies to a goto into another flow", key=True)
        if g.return_ and node.next is None:
            self.error(loc + ("goto",), "goto with `return: true` needs `next`: where to come back to")
        if not g.return_ and node.next is not None:
            self.error(loc + ("next",), "a goto without `return` never reaches `next`", key=True)

    def check_http(self, node: m.Node, h: m.HttpSpec, loc: Path) -> None:
        bodies = [k for k in ("json", "form", "body") if getattr(h, "json_" if k == "json" else k) is not None]
        if len(bodies) > 1:
            self.error(loc + ("http",), f"an http node sends one body; this one has {', '.join(bodies)}")
        if node.on_error and h.on_error:
            self.error(loc + ("on_error",), "`on_error` is given twice (on the node and in `http`)", key=True)
        if node.next is None:
            self.error(loc, "an http node needs `next`")

    # ------------------------------------------------------------ the graph

    def edges(self) -> Iterator[tuple[str | None, Path, str]]:
        """Every node reference: (from node or None for the flow, where, to node)."""
        spec = self.spec
        yield None, ("start",), spec.start
        if spec.on_error:
            yield None, ("on_error",), spec.on_error
        for word, target in spec.commands.items():
            yield None, ("commands", word), target
        for name, menu in spec.menus.items():
            for i, o in enumerate(menu.options or ()):
                if o.next:
                    yield None, ("menus", name, "options", i, "next"), o.next
        for node_id, node in spec.nodes.items():
            yield from self.node_edges(node_id, node)

    def node_edges(self, node_id: str, node: m.Node) -> Iterator[tuple[str | None, Path, str]]:
        loc: Path = ("nodes", node_id)
        for key in ("next", "on_fail", "on_error", "on_timeout"):
            if getattr(node, key):
                yield node_id, loc + (key,), getattr(node, key)
        if node.http and node.http.on_error:
            yield node_id, loc + ("http", "on_error"), node.http.on_error
        for i, case in enumerate(node.branch or ()):
            if case.next:
                yield node_id, loc + ("branch", i, "next"), case.next
            if case.else_:
                yield node_id, loc + ("branch", i, "else"), case.else_
        if node.menu:
            yield from self.menu_edges(node_id, node.menu, loc + ("menu",))
        if node.goto and node.goto.node and node.goto.flow is None:
            yield node_id, loc + ("goto",), node.goto.node

    def menu_edges(self, node_id: str, menu: m.MenuSpec, loc: Path) -> Iterator[tuple[str | None, Path, str]]:
        """A node's menu's options' references: its own, or those of the shared menu it uses."""
        if menu.use in self.spec.menus:
            for o in self.spec.menus[menu.use].options or ():
                if o.next:
                    yield node_id, loc, o.next
        for i, o in enumerate(menu.options or ()):
            if o.next:
                yield node_id, loc + ("options", i, "next"), o.next

    def check_references(self) -> None:
        for _, loc, target in self.edges():
            if target not in self.spec.nodes:
                self.error(loc, f"no node {target!r}{did_you_mean(target, self.spec.nodes)}")

    def graph(self, instant_only: bool) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {n: set() for n in self.spec.nodes}
        for source, loc, target in self.edges():
            if source is None or target not in out:
                continue
            if instant_only:
                node = self.spec.nodes[source]
                kind, _ = kind_of(node)
                if kind not in (None, "branch", "goto") or loc[-1] in ("on_error", "on_fail", "on_timeout"):
                    continue
                if kind == "goto" and node.goto is not None and node.goto.return_ and loc[-1] == "next":
                    continue  # the flow it calls may wait before coming back
            out[source].add(target)
        return out

    def check_reachable(self) -> None:
        """One warning per group of unreachable nodes, at the node that leads to the rest; none
        for the nodes a broken reference most likely meant (`next: welcom` and `welcome`), whose
        cause is that reference's error, reported once."""
        graph = self.graph(instant_only=False)
        seen = {t for s, _, t in self.edges() if s is None and t in graph}
        seen |= {n for start in seen for n in _reachable(graph, start)}
        lost = {n: _reachable(graph, n) - seen for n in graph if n not in seen}
        seen |= self._meant_by_broken_references(seen, lost)  # as if the typo were fixed
        lost = {n: group - seen for n, group in lost.items() if n not in seen}
        led_to = {m for n, group in lost.items() for m in group if m != n}
        heads = [n for n in lost if n not in led_to] + [n for n in lost if n in led_to]  # cycles last
        covered: set[str] = set()
        for head in heads:
            if head in covered:
                continue
            others = sorted(lost[head] - {head} - covered)
            covered |= {head, *others}
            also = f" (nor to {', '.join(map(repr, others))}, reached only through it)" if others else ""
            self.warn(("nodes", head), f"node {head!r} is unreachable: nothing leads to it{also}")

    def _meant_by_broken_references(self, seen: set[str], lost: dict[str, set[str]]) -> set[str]:
        """The unreachable nodes that a reference to a missing node (from a reachable place)
        would reach if it named what "did you mean" suggests."""
        meant: set[str] = set()
        for source, _, target in self.edges():
            if target in self.spec.nodes or (source is not None and source not in seen):
                continue
            close = difflib.get_close_matches(target, list(self.spec.nodes), n=1, cutoff=0.6)
            if close and close[0] in lost:  # the node "did you mean" names, and what it leads to
                meant |= {close[0], *lost[close[0]]}
        return meant

    def check_loops(self) -> None:
        graph = self.graph(instant_only=True)
        reach = {n: _reachable(graph, n) for n in graph}
        done: set[str] = set()
        for node_id in graph:
            if node_id in done or node_id not in reach[node_id]:
                continue
            loop = sorted(n for n in reach[node_id] if node_id in reach[n])
            done.update(loop)
            path = " -> ".join(loop + [loop[0]])
            if all(graph[n] <= set(loop) for n in loop):
                self.error(("nodes", loop[0]), f"loop {path} never waits for the user and never ends")
            else:
                self.warn(("nodes", loop[0]), f"loop {path} does not wait for the user: only a condition "
                          "ends it (a turn is cut after max_steps)")

    # ------------------------------------------------------------ names

    def variables(self) -> set[str]:
        names = set(self.spec.vars) | BUILTIN_NAMES
        for node in self.spec.nodes.values():
            names.update(node.set or ())
            names.update(n for n in (node.save, node.http.save if node.http else None) if n)
            names.update(node.http.map if node.http else ())
        return names

    def check_variables(self) -> None:
        known = self.variables()
        for names, loc, extra in self.templates:
            for name in sorted(names - known - extra):
                self.warn(loc, f"unknown variable {name!r}{did_you_mean(name, known | extra)}")

    def check_triggers(self) -> None:
        for i, t in enumerate(self.spec.triggers):
            given = [k for k in ("keyword", "regex", "default") if getattr(t, k)]
            if len(given) != 1:
                self.error(("triggers", i), "a trigger is one of `keyword`, `regex` or `default: true`")
        words: dict[str, str] = {}
        for word in self.spec.commands:
            folded = word.strip().casefold()
            if folded in words:
                self.error(("commands", word), f"command {word!r} repeats {words[folded]!r}", key=True)
            words[folded] = word


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph[n])
    return seen
