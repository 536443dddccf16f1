"""A conversation's state: plain data, pinned to a flow version, with a schema version.

The interpreter treats a :class:`State` as immutable and returns a new one each turn. Stores
keep :meth:`State.to_data` (msgpack-ready) and read it back with :meth:`State.from_data`, which
migrates older schemas through :data:`MIGRATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StateError

SCHEMA = 2
"""The schema version :meth:`State.to_data` writes."""

def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 adds the open prompt's id and the hand-off's ticket (neither in schema 1)."""
    return {**data, "schema": 2, "prompt": None, "ticket": None}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
"""``MIGRATIONS[n]`` turns the data of schema ``n`` into schema ``n + 1``."""

IDLE, WAITING, HANDOFF, ENDED, FAILED = "idle", "waiting", "handoff", "ended", "failed"


@dataclass(frozen=True, slots=True)
class Frame:
    """Where to come back to when a flow entered with ``goto: {return: true}`` ends."""

    flow: str
    version: str
    node: str


@dataclass(frozen=True, slots=True)
class State:
    """Where a conversation stands.

    ``status``: ``idle`` (never started), ``waiting`` (on ``node`` for ``wait_for``: a
    ``reply``, a ``timer``, an ``http`` result), ``handoff`` (a human has it), ``ended`` or
    ``failed`` (the next message starts a flow again by its triggers).

    ``prompt`` is the id of the prompt with buttons or a menu the conversation waits on (a
    button press names the prompt it answers); ``ticket`` is the id of the hand-off ticket
    while a human has the conversation.
    """

    flow: str | None = None
    version: str | None = None
    node: str | None = None
    status: str = IDLE
    wait_for: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    timer: str | None = None
    request: str | None = None
    stack: tuple[Frame, ...] = ()
    inbox: tuple[dict[str, Any], ...] = ()
    seq: int = 0
    user: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None
    prompt: str | None = None
    ticket: str | None = None

    @property
    def active(self) -> bool:
        return self.status in (WAITING, HANDOFF)

    def to_data(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "flow": self.flow, "version": self.version, "node": self.node,
            "status": self.status, "wait_for": self.wait_for, "vars": self.vars,
            "attempts": self.attempts, "timer": self.timer, "request": self.request,
            "stack": [[f.flow, f.version, f.node] for f in self.stack],
            "inbox": list(self.inbox), "seq": self.seq, "user": self.user, "channel": self.channel,
            "prompt": self.prompt, "ticket": self.ticket,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> State:
        try:
            schema = data["schema"]
            while schema < SCHEMA:
                data = MIGRATIONS[schema](dict(data))
                schema += 1
            if schema != SCHEMA:
                raise StateError(f"state schema {schema} is newer than this parlour ({SCHEMA})")
            return cls(
                flow=data["flow"], version=data["version"], node=data["node"],
                status=data["status"], wait_for=data["wait_for"], vars=dict(data["vars"]),
                attempts=data["attempts"], timer=data["timer"], request=data["request"],
                stack=tuple(Frame(*f) for f in data["stack"]), inbox=tuple(data["inbox"]),
                seq=data["seq"], user=dict(data["user"]), channel=data["channel"],
                prompt=data["prompt"], ticket=data["ticket"],
            )
        except StateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"unreadable conversation state: {exc!r}") from exc
