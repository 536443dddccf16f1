"""Transcripts and hand-off tickets: what a turn writes beside the conversation's record.

Every turn appends one entry to its conversation's **transcript** (the store's log
``transcript/{key}``): what came in (a user's message, a timer, an API result, an agent's
action), what the flow said, and where it stood after. It is written in the turn's own commit,
so a transcript never shows a turn that did not happen, nor misses one that did.

A ``handoff`` node opens a **ticket** (:class:`~parlour.store.Ticket`) in the same commit: the
conversation, its flow and node, the reason and queue the flow gave, the time. While the
conversation is handed off, the user's messages land in its transcript tagged with the ticket,
in order and deduplicated like every message; an agent reads them there. An agent's actions
reach the conversation as events (:class:`~parlour.flow.AgentAction`, :class:`~parlour.flow.Resume`)
through its host, like any message, so the host that owns the conversation is the only writer
of its tickets, and a ticket's changes are fenced like its state.

A tenant with a hand-off webhook gets each ticket event in the outbox too, under the key
``{tenant}/handoff/{ticket}``, numbered per ticket, for the delivery supervisor to post.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from parlour.codec import TEXT_ERRORS
from parlour.errors import StateError
from parlour.flow import (
    AgentAction,
    Event,
    Forward,
    Handoff,
    HttpResult,
    Resume,
    Start,
    TicketChanged,
    TimerFired,
    UserMessage,
)
from parlour.messages import ConversationKey
from parlour.store import Commit, Store, Ticket

OPEN, ASSIGNED, CLOSED = "open", "assigned", "closed"
STATUSES = (OPEN, ASSIGNED, CLOSED)
HOOK_CHANNEL = "handoff"


def transcript_log(key: str) -> str:
    return f"transcript/{key}"


def hook_key(tenant: str, ticket_id: str) -> str:
    """The outbox key of a ticket's webhook events: its own lane, in order."""
    return f"{tenant}/{HOOK_CHANNEL}/{ticket_id}"


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, unicode_errors=TEXT_ERRORS)


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, unicode_errors=TEXT_ERRORS)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StateError(f"{what} is not msgpack: {exc}") from exc
    if not isinstance(value, dict):
        raise StateError(f"{what} is not a map")
    return value


# ---------------------------------------------------------------- transcripts


def event_data(event: Event, message_id: str | None) -> dict[str, Any]:
    """What came in, as the transcript shows it (an API result's body is left out: the flow
    saves what it needs of it, and it may be large)."""
    if isinstance(event, UserMessage):
        return {"kind": "message", "id": message_id, "text": event.text, "button": event.button, "type": event.kind}
    if isinstance(event, AgentAction):
        return {"kind": "agent", "action": event.action, "agent": event.agent, "text": event.text, "id": message_id}
    if isinstance(event, Resume):
        return {"kind": "resume", "agent": event.agent, "node": event.node, "id": message_id}
    if isinstance(event, Start):
        return {"kind": "start", "flow": event.flow, "id": message_id}
    if isinstance(event, TimerFired):
        return {"kind": "timer"}
    if isinstance(event, HttpResult):
        return {"kind": "http", "status": event.status, "error": event.error}
    return {"kind": type(event).__name__}


def turn_entry(event: Event, message_id: str | None, effects, out: list[dict[str, Any]], ticket: str | None,
               status: str | None, flow: str | None, node: str | None, now: float) -> bytes:
    """One transcript entry: a turn, with the ticket open during it (if any). ``out`` is what
    it said, as :func:`~parlour.codec.reply_data` (the host has it already)."""
    opened = next((e.ticket for e in effects if isinstance(e, Handoff)), None) if ticket is None else None
    return _pack([now, event_data(event, message_id), out, ticket or opened or _ended(effects), status, flow, node])


def _ended(effects) -> str | None:
    return next((e.ticket for e in effects if isinstance(e, TicketChanged)), None)


def reset_entry(ticket: str | None, now: float) -> bytes:
    """The transcript entry of a reset by the operator: the conversation is idle after it, and
    the ticket it had open (if any) is closed by it."""
    return _pack([now, {"kind": "reset"}, [], ticket, "idle", None, None])


TURN_FIELDS = ("at", "in", "out", "ticket", "status", "flow", "node")
"""A transcript entry is a msgpack list of these, in this order (a list packs faster than a map,
and it is written on every turn)."""


def read_turn(data: bytes) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, unicode_errors=TEXT_ERRORS)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StateError(f"a transcript entry is not msgpack: {exc}") from exc
    if not isinstance(value, list) or len(value) != len(TURN_FIELDS):
        raise StateError("a transcript entry is a list of 7")
    return dict(zip(TURN_FIELDS, value, strict=True))


# ---------------------------------------------------------------- tickets


@dataclass
class Pending:
    """A batch's ticket changes, applied once the turns ran and before the commit."""

    opened: list[tuple[str, Handoff, str | None, str | None, dict]] = field(default_factory=list)
    changes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.opened or self.changes)

    def extend(self, other: Pending) -> None:
        self.opened += other.opened
        self.changes += other.changes

    def note(self, key: str, event: Event, effects, ticket: str | None, flow: str | None, node: str | None,
             user: dict) -> None:
        """What one step did to tickets: opened one, moved one, or added to one's messages."""
        for effect in effects:
            if isinstance(effect, Handoff) and effect.ticket:
                self.opened.append((key, effect, flow, node, user))
            elif isinstance(effect, TicketChanged):
                self.changes.append((key, effect.ticket, {"status": effect.status, "agent": effect.agent}))
        if ticket and any(isinstance(e, Forward) for e in effects):
            self.changes.append((key, ticket, {"message": event_data(event, None)}))
        if ticket and isinstance(event, AgentAction) and event.action == "message" and event.ticket == ticket:
            self.changes.append((key, ticket, {"reply": event.text, "agent": event.agent}))


@dataclass(frozen=True, slots=True)
class TicketPolicy:
    open_ttl_s: float = 30 * 86_400.0
    """An open ticket is kept this long after its last change (as an abandoned conversation)."""
    closed_ttl_s: float = 30 * 86_400.0
    hooks: frozenset[str] = frozenset()
    """The tenants with a hand-off webhook: their ticket events go to the outbox too."""


def ticket_data(ticket: Ticket) -> dict[str, Any]:
    return _unpack(ticket.data, f"ticket {ticket.id}")


def _row(data: dict[str, Any], policy: TicketPolicy, partition_epoch: None = None) -> Ticket:
    ttl = policy.closed_ttl_s if data["status"] == CLOSED else policy.open_ttl_s
    return Ticket(data["tenant"], data["id"], data["key"], data["status"], data["queue"] or "",
                  data["updated_at"], _pack(data), data["updated_at"] + ttl)


def _opened(key: str, handoff: Handoff, flow: str | None, node: str | None, user: dict, now: float) -> dict[str, Any]:
    parsed = ConversationKey.parse(key)
    return {"id": handoff.ticket, "tenant": parsed.tenant, "key": key, "channel": parsed.channel,
            "user": {"id": parsed.user, "name": user.get("name")}, "flow": flow, "node": node,
            "reason": handoff.reason, "queue": handoff.queue, "status": OPEN, "agent": None,
            "created_at": now, "updated_at": now, "closed_at": None, "resolution": None,
            "messages": 0, "events": 0}


def _change(data: dict[str, Any], change: dict[str, Any], now: float) -> tuple[str, dict[str, Any]]:
    """Apply one change to a ticket's data; the webhook event it makes, and its details."""
    data["updated_at"] = now
    if "message" in change:
        data["messages"] += 1
        return "message", {"message": change["message"]}
    if "reply" in change:
        return "reply", {"reply": {"text": change["reply"], "agent": change["agent"]}}
    status = change["status"]
    if status == ASSIGNED:
        data["status"], data["agent"] = ASSIGNED, change["agent"]
        return "assigned", {}
    data["status"], data["closed_at"], data["resolution"] = CLOSED, now, status
    data["agent"] = change["agent"] or data["agent"]
    return status, {}


async def settle(store: Store, commit: Commit, pending: Pending, policy: TicketPolicy, now: float) -> None:
    """Write ``pending``'s tickets into ``commit``: the new ones whole, the changed ones read
    from the store (one read each; only a batch that moves a ticket pays it) and written whole."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for key, handoff, flow, node, user in pending.opened:
        row = _opened(key, handoff, flow, node, user, now)
        rows[(row["tenant"], row["id"])] = row
        events.append((row, "opened", {}))
    for key, ticket_id, change in pending.changes:
        tenant = key.split("/", 1)[0]
        data = rows.get((tenant, ticket_id))
        if data is None:
            stored = await store.ticket(tenant, ticket_id)
            if stored is None:
                continue  # expired, or written by a lane that lost its partition: nothing to move
            data = rows[(tenant, ticket_id)] = ticket_data(stored)
        name, details = _change(data, change, now)
        events.append((data, name, details))
    for data, name, details in events:
        data["events"] += 1
        if data["tenant"] in policy.hooks:
            body = {"schema": 1, "event": name, "ticket": public(data), **details, "at": now}
            commit.outbox.append((hook_key(data["tenant"], data["id"]), data["events"], _pack(body)))
    commit.tickets += [_row(data, policy) for data in rows.values()]


def public(data: dict[str, Any]) -> dict[str, Any]:
    """A ticket as the API and the webhook show it."""
    return {name: data[name] for name in (
        "id", "key", "channel", "user", "flow", "node", "reason", "queue", "status", "agent",
        "created_at", "updated_at", "closed_at", "resolution", "messages")}


def unpack_hook(data: bytes) -> dict[str, Any]:
    """A webhook event from the outbox (what :func:`settle` wrote)."""
    value = _unpack(data, "a hand-off webhook event")
    if value.get("schema") != 1:
        raise StateError("a hand-off webhook event is a map of schema 1")
    return value
