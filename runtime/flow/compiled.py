"""Loaded flows as immutable tables: what the interpreter runs.

A :class:`Flow` is compiled once (templates and expressions included) and shared by every
conversation on it. A :class:`Catalog` holds the flows a runtime serves, every loaded version of
each (a conversation stays on the version it started on), the trigger index, and the
environment values templates may read as ``env``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import regex

from ..errors import FlowNotFound
from .events import Button
from .expressions import Expression, Template, TenantEnv
from .regexes import RegexBudget, RegexTimeout
from .validators import Rule


@dataclass(frozen=True, slots=True)
class Choice:
    id: str
    title: Template
    next: str | None = None
    description: Template | None = None
    constant: Button | None = field(default=None, compare=False)
    """The button itself, built once, when neither title nor description has a template."""

    def __post_init__(self) -> None:
        if self.title.constant and (self.description is None or self.description.constant):
            button = Button(self.id, self.title.source, self.description.source if self.description else None)
            object.__setattr__(self, "constant", button)


@dataclass(frozen=True, slots=True)
class MessageT:
    text: Template | None = None
    buttons: tuple[Choice, ...] = ()
    list_button: Template | None = None
    list: tuple[Choice, ...] = ()
    media_url: Template | None = None
    media_kind: str | None = None
    media_filename: str | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    prompt: MessageT
    save: str | None
    rule: Rule
    error: Template | None
    retries: int | None
    on_fail: str | None


@dataclass(frozen=True, slots=True)
class Menu:
    text: Template
    options: tuple[Choice, ...]
    invalid: Template | None
    save: str | None
    retries: int | None
    on_fail: str | None


@dataclass(frozen=True, slots=True)
class Branch:
    cases: tuple[tuple[Expression, str], ...]
    otherwise: str | None


@dataclass(frozen=True, slots=True)
class SecretT:
    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class Http:
    method: str
    url: Template
    headers: tuple[tuple[str, Template | SecretT], ...]
    query: tuple[tuple[str, Template | SecretT], ...]
    json: Any  # the body's structure with a Template at each string leaf
    form: tuple[tuple[str, Template], ...] | None
    body: Template | None
    timeout_s: float
    retries: int
    save: str | None
    map: tuple[tuple[str, Expression], ...]


@dataclass(frozen=True, slots=True)
class HandoffA:
    reason: Template
    queue: str | None


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float | None = None
    at: Template | None = None
    reply: bool = False
    save: str | None = None


@dataclass(frozen=True, slots=True)
class Goto:
    node: str | None
    flow: str | None
    returns: bool


@dataclass(frozen=True, slots=True)
class EndA:
    pass


Action = Ask | Menu | Branch | Http | HandoffA | Wait | Goto | EndA


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    sets: tuple[tuple[str, Expression], ...]
    say: tuple[MessageT, ...]
    action: Action | None
    next: str | None
    on_error: str | None
    timeout_s: float | None
    on_timeout: str | None


@dataclass(frozen=True, slots=True)
class TriggerT:
    keywords: tuple[str, ...] = ()
    regex: regex.Pattern | None = None
    default: bool = False
    channels: frozenset[str] | None = None

    def applies_to(self, channel: str | None) -> bool:
        return self.channels is None or channel in self.channels

    def searches(self, text: str, budget: RegexBudget) -> bool:
        """Whether the trigger's regex finds ``text``; a search past the message's budget does not."""
        if self.regex is None:
            return False
        try:
            return budget.search(self.regex, text) is not None
        except RegexTimeout:
            return False


@dataclass(frozen=True, slots=True)
class Flow:
    """A compiled flow: an immutable table shared by every conversation on it."""

    id: str
    version: str
    description: str
    start: str
    nodes: Mapping[str, Node] = field(repr=False)
    commands: Mapping[str, str]  # casefolded word -> node id
    vars: Mapping[str, Any]
    triggers: tuple[TriggerT, ...]
    on_error: str | None
    max_steps: int
    isolation: str
    path: str
    source: str = field(repr=False)
    env_uses: tuple[tuple[str, int, int], ...] = field(default=(), repr=False)
    """Each ``env.NAME`` the flow reads, with its line and column in :attr:`path`."""


MATCHED_KEPT = 64


class Catalog:
    """The flows a runtime serves: every loaded version of each, and which one is current.

    >>> catalog = Catalog([flow], env={"MEMBERS_API": "https://members.example.org"})
    >>> catalog.current("registration").version
    """

    def __init__(self, flows: Iterable[Flow] = (), env: Mapping[str, str] | None = None, tenant: str = ""):
        self._versions: dict[str, dict[str, Flow]] = {}
        self._current: dict[str, str] = {}
        self._matched: OrderedDict[tuple[bytes, str | None], str | None] = OrderedDict()
        # Operator values: an http `url` inserts them as they are (a base URL), not encoded; one
        # not set fails where a template uses it, naming it and ``tenant``.
        self.env: Mapping[str, str] = TenantEnv(env, tenant)
        for flow in flows:
            self.add(flow)

    def add(self, flow: Flow, *, make_current: bool = True) -> None:
        self._versions.setdefault(flow.id, {})[flow.version] = flow
        if make_current or flow.id not in self._current:
            self._current[flow.id] = flow.version
        self._matched.clear()

    def current(self, flow_id: str) -> Flow:
        try:
            return self._versions[flow_id][self._current[flow_id]]
        except KeyError:
            raise FlowNotFound(flow_id) from None

    def get(self, flow_id: str, version: str | None) -> Flow:
        """The flow at ``version`` (the one a conversation is pinned to), else the current one."""
        if version is None:
            return self.current(flow_id)
        try:
            return self._versions[flow_id][version]
        except KeyError:
            raise FlowNotFound(flow_id, version) from None

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._current

    def __iter__(self):
        return (self.current(flow_id) for flow_id in self._current)

    def match(self, text: str, channel: str | None, budget: RegexBudget | None = None) -> str | None:
        """The flow a new conversation starts with: keyword, then regex, then default. Every
        regex trigger searches within one ``budget`` (:mod:`.regexes`); the answer for the last
        :data:`MATCHED_KEPT` texts is kept, so that a host that asks twice for one message (to
        place a dedicated conversation, then to run it) spends the budget once."""
        mark = (hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(), channel)
        if mark in self._matched:
            return self._matched[mark]
        found = self._match(text, channel, budget or RegexBudget())
        self._matched[mark] = found
        if len(self._matched) > MATCHED_KEPT:
            self._matched.popitem(last=False)
        return found

    def _match(self, text: str, channel: str | None, budget: RegexBudget) -> str | None:
        word = text.strip().casefold()
        flows = list(self)
        for flow in flows:
            if any(word in t.keywords for t in flow.triggers if t.applies_to(channel)):
                return flow.id
        for flow in flows:
            if any(t.searches(text, budget) for t in flow.triggers if t.applies_to(channel)):
                return flow.id
        for flow in flows:
            if any(t.default for t in flow.triggers if t.applies_to(channel)):
                return flow.id
        return None
