"""parlour's exceptions: one tree, rooted at :class:`ParlourError`.

::

    ParlourError
     +-- FlowError            a flow (or flow test) file is invalid: carries every Problem found
     +-- FlowNotFound         a flow id or pinned version is not in the catalog
     +-- StateError           stored conversation state cannot be read (schema, migration)
     +-- InvalidId            a name or id from outside (a conversation's key, a message id) is refused
     +-- Unavailable          another process of the runtime (a host, a node server, the router)
     |                        cannot be reached now: dead, restarting, or not started; retryable
     +-- ConfigError          (parlour.config) a setting is invalid: every problem, by key
     +-- StoreError           (parlour.store) a store operation failed
     |    +-- StoreUnavailable    the store cannot be reached now; retryable
     |    +-- Fenced              a write under an epoch older than its partition's fence: nothing written
     |    +-- BadCursor           a listing's cursor is not one the store gave
     +-- ChannelError         (parlour.channels) a channel's webhook or API answer is refused
     |    +-- SignatureError      its signature does not verify
     |    +-- PayloadError        its body is not what the channel sends
     +-- BotError             (parlour.channels.registry) a bot's settings are invalid or unreadable
     |    +-- UnknownChannel      no adapter for that channel
     +-- SecretError          (parlour.vault) a tenant's secret cannot be set, read or opened
     |    +-- DeclaredInConfig    it is the config file's, not the API's to change
     |    +-- NoKey               no secrets key to seal or open it with
     +-- EgressDenied         (parlour.egress) an address the tenant may not reach
     +-- UnknownHost          (parlour.actors.router) a host the partition table does not name
     +-- DedicatedRefused     (parlour.actors.dedicated) over a cap of dedicated conversations
     +-- AdminError           (parlour.admin_client) the admin API answered an error to the CLI
     +-- ApiError             (parlour.gateway.errors) an HTTP error in the API's JSON shape

Each is defined beside what raises it (the module named); they are all drawn here.

Inside the flow language a few signals never leave it: ``ExpressionError`` becomes a Problem,
``RenderError`` an Error effect routed to ``on_error``, ``validators.Invalid`` a reply to the
user. Likewise ``parlour.http.MissingSecret`` becomes an HttpResult. None of them reaches a
caller, so none is part of this tree.

This module imports nothing, so every layer, the flow language included, may use it.
"""

from __future__ import annotations

from dataclasses import dataclass


class ParlourError(Exception):
    """The root of every error parlour raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a source file, positioned as ``path:line:column``.

    ``severity`` is ``"error"`` (the file is refused) or ``"warning"`` (it loads, but
    something looks wrong, e.g. a node nothing leads to).
    """

    path: str
    line: int
    column: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.path}:{self.line}:{self.column}: {tag}{self.message}"


class FlowError(ParlourError):
    """A flow or flow-test file was refused; ``problems`` lists every finding, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column))
        first = self.problems[0] if self.problems else None
        self.path = first.path if first else ""
        self.line = first.line if first else 0
        self.column = first.column if first else 0
        self.reason = first.message if first else ""
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


class FlowNotFound(ParlourError, LookupError):
    """A flow id, or the version a conversation is pinned to, is not in the catalog."""

    def __init__(self, flow: str, version: str | None = None):
        self.flow = flow
        self.version = version
        where = f"flow {flow!r}" + (f" version {version!r}" if version else "")
        super().__init__(f"{where} is not loaded")


class StateError(ParlourError, ValueError):
    """Stored conversation state is unreadable: corrupt, or of a schema with no migration."""


class InvalidId(ParlourError, ValueError):
    """A name or id taken from outside (a tenant, channel or user of a conversation key, a
    message id) is empty, too long, not valid Unicode or holds a character it may not: the
    caller answers 400 (it is also a ValueError, for callers that predate it)."""


class Unavailable(ParlourError, ConnectionError):
    """Another process of the runtime (a host, a node server, the router, the delivery
    supervisor) did not answer: dead, restarting or not started yet. What was asked may be
    asked again (an event's resend is deduplicated). :mod:`parlour.actors.remote` raises it
    for every error of Ray's, so that no other module needs to know Ray's exceptions."""

    def __init__(self, process: str, reason: str):
        self.process = process
        self.reason = reason
        super().__init__(f"{process} is unavailable: {reason}")
