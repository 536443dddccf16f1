"""Bytes for the store: msgpack, each value with its schema version inside.

- a conversation's **record**: its state, its window of recent message ids, its reply counter;
- **replies** (what a turn said, kept for a duplicate of its message) and **outbox** entries.

>>> unpack_state(pack_state(state)) == state
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import StateError
from .flow.events import Button, Reply
from .flow.state import State

TEXT_ERRORS = "surrogatepass"
"""Text may hold lone surrogates (JSON's "\\ud800" decodes to one): they are stored as they
are, so that no user's text or API's answer can make a conversation impossible to store."""

RECORD_SCHEMA = 2
RECORD_MIGRATIONS: dict[int, Callable[[list[Any]], list[Any]]] = {
    1: lambda value: [2, *value[1:4], 0, *value[4:]],  # schema 2 added the last turn's time (unknown: 0)
}
"""``RECORD_MIGRATIONS[n]`` turns a record of schema ``n`` into schema ``n + 1`` (the state
inside has migrations of its own: :data:`parlour.flow.state.MIGRATIONS`)."""


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, unicode_errors=TEXT_ERRORS)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise StateError(f"{what} is not msgpack: {exc}") from exc


def pack_state(state: State) -> bytes:
    return msgpack.packb(state.to_data(), use_bin_type=True, unicode_errors=TEXT_ERRORS)


def unpack_state(data: bytes) -> State:
    """The state in ``data``, migrated to the current schema; :class:`StateError` if unreadable."""
    value = _unpack(data, "conversation state")
    if not isinstance(value, dict):
        raise StateError(f"conversation state is a {type(value).__name__}, not a map")
    return State.from_data(value)


@dataclass(slots=True)
class Record:
    """A conversation as stored: ``seen`` holds the 8-byte digests of its latest message ids
    (newest last), ``replies`` counts the replies it ever sent (the outbox's sequence).
    ``latest_at`` is the newest channel time (``Inbound.sent_at``) of a message it took, and
    ``evicted_at`` an upper bound of the channel times of the ids pushed out of ``seen``: a
    message newer than that cannot be one of them. Both are 0 until a channel gives times, and
    are stored only then. ``at`` is the time of its last turn, to the second (0 for a
    conversation last written by a parlour before record schema 2): an operator finds stuck
    conversations by it."""

    state: State
    seen: bytes = b""
    replies: int = 0
    latest_at: float = 0.0
    evicted_at: float = 0.0
    at: int = 0


def pack_record(record: Record) -> bytes:
    fields = [RECORD_SCHEMA, record.state.to_data(), record.seen, record.replies, record.at]
    if record.latest_at:  # an optional tail: conversations of channels without times pay nothing
        fields.append([record.latest_at, record.evicted_at])
    return msgpack.packb(fields, use_bin_type=True, unicode_errors=TEXT_ERRORS)


def unpack_record(data: bytes) -> Record:
    value = _unpack(data, "conversation record")
    if not isinstance(value, list) or not value or not isinstance(value[0], int):
        raise StateError("a conversation record is a list that starts with its schema version")
    while value[0] < RECORD_SCHEMA:
        value = RECORD_MIGRATIONS[value[0]](value)
    if value[0] != RECORD_SCHEMA:
        raise StateError(f"record schema {value[0]} is newer than this parlour ({RECORD_SCHEMA})")
    try:
        _, state, seen, replies, at, *times = value
        latest_at, evicted_at = times[0] if times else (0.0, 0.0)
    except (ValueError, TypeError) as exc:
        raise StateError(f"unreadable conversation record: {exc}") from exc
    if not isinstance(state, dict):
        raise StateError("a conversation record holds its state as a map")
    return Record(State.from_data(state), bytes(seen), int(replies), float(latest_at), float(evicted_at), int(at))


def reply_data(reply: Reply) -> dict[str, Any]:
    """``reply`` as plain data, leaving out what it does not use."""
    # field by field, not a loop over the slots: it runs for every reply of every turn
    data: dict[str, Any] = {"text": reply.text} if reply.text else {}
    if reply.buttons:
        data["buttons"] = [[b.id, b.title, b.description] for b in reply.buttons]
    if reply.list_button:
        data["list_button"] = reply.list_button
    if reply.list:
        data["list"] = [[b.id, b.title, b.description] for b in reply.list]
    if reply.media_url or reply.media_kind or reply.media_filename:
        for name in ("media_url", "media_kind", "media_filename"):
            if value := getattr(reply, name):
                data[name] = value
    if reply.prompt:
        data["prompt"] = reply.prompt
    return data


def reply_of(data: dict[str, Any]) -> Reply:
    fields = dict(data)
    for name in ("buttons", "list"):
        if name in fields:
            fields[name] = tuple(Button(*b) for b in fields[name])
    return Reply(**fields)


def pack_replies(replies: list[Reply] | tuple[Reply, ...] | list[dict[str, Any]]) -> bytes:
    """``replies`` (or their :func:`reply_data`) for the store."""
    return msgpack.packb([r if isinstance(r, dict) else reply_data(r) for r in replies], use_bin_type=True,
                         unicode_errors=TEXT_ERRORS)


def unpack_replies(data: bytes) -> tuple[Reply, ...]:
    value = _unpack(data, "stored replies")
    if not isinstance(value, list):
        raise StateError("stored replies are a list")
    return tuple(reply_of(item) for item in value)


def pack_outbound(key: str, seq: int, message_id: str | None, reply: Reply | dict[str, Any], at: float) -> bytes:
    """An outbox entry: a reply for the delivery supervisor, whose idempotency key is
    ``f"{key}#{seq}"``."""
    data = reply if isinstance(reply, dict) else reply_data(reply)
    return msgpack.packb({"schema": 1, "key": key, "seq": seq, "message_id": message_id,
                          "reply": data, "at": at}, use_bin_type=True, unicode_errors=TEXT_ERRORS)


def unpack_outbound(data: bytes) -> dict[str, Any]:
    value = _unpack(data, "outbox entry")
    if not isinstance(value, dict) or value.get("schema") != 1:
        raise StateError("an outbox entry is a map of schema 1")
    value["reply"] = reply_of(value["reply"])
    return value
