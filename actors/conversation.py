"""The conversation: a virtual actor, resident in a host while it is in use.

Resident, a conversation is a :class:`Conversation`: its key, its partition and its record
exactly as last committed (msgpack bytes), so that a host holds hundreds of thousands of them
and passivating one is only forgetting it. A batch of work decodes the record once into a
:class:`Working` copy, runs each event through the pure interpreter in arrival order, and
packs the record again for the commit. The same code runs a conversation in a Ray actor of its
own (``isolation: dedicated``), through :func:`run_turns`.

Deduplication: the record keeps the 8-byte BLAKE2b digests of the conversation's latest
``window`` message ids. A message whose id is in the window does not move the flow. A channel
that retries for days (WhatsApp) gives each message its own time (``sent_at``); the record
then keeps the newest such time and a bound on those of the ids pushed out of the window
(:class:`~parlour.codec.Record`), so that the host asks the store about a message only when it
may be one of those (:meth:`Working.may_be_evicted`); the store keeps each such message's
replies for the channel's horizon (``HostConfig.replay_horizon_s``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from parlour.codec import Record, pack_record, unpack_record
from parlour.flow import (
    CancelTimer,
    Catalog,
    Effect,
    Error,
    Event,
    Reply,
    Send,
    State,
    UserMessage,
    advance,
)
from parlour.flow.state import FAILED
from parlour.messages import ConversationKey

DIGEST_BYTES = 8
DEFAULT_WINDOW = 32


def digest(message_id: str) -> bytes:
    return hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


class Conversation:
    """A resident conversation. ``record`` is what the store holds for it, byte for byte."""

    __slots__ = ("key", "partition", "record", "used_at")

    def __init__(self, key: str, partition: int, record: bytes | None, used_at: float):
        self.key = key
        self.partition = partition
        self.record = record
        self.used_at = used_at


@dataclass(frozen=True, slots=True)
class Step:
    """What one event did to a conversation."""

    message_id: str | None
    duplicate: bool
    effects: tuple[Effect, ...] = ()
    reply_seq: int = 0  # the conversation's reply counter before this step's replies
    flow: str | None = None
    node: str | None = None
    status: str | None = None
    ticket: str | None = None  # the hand-off open after the step
    user: dict | None = None

    @property
    def replies(self) -> tuple[Reply, ...]:
        return tuple(e.reply for e in self.effects if isinstance(e, Send))


class Working:
    """A conversation during one batch: its record decoded, changed turn by turn."""

    __slots__ = ("changed", "key", "record", "source", "window")

    def __init__(self, key: str, record: bytes | None, window: int = DEFAULT_WINDOW):
        self.key = key
        self.record = unpack_record(record) if record is not None else Record(State())
        self.source = record
        self.window = window
        self.changed = False

    @property
    def state(self) -> State:
        return self.record.state

    def seen(self, message_id: str) -> bool:
        return _holds(self.record.seen, digest(message_id))

    def may_be_evicted(self, message_id: str, sent_at: float | None) -> bool:
        """Whether ``message_id`` may have been taken and pushed out of the window since: not
        in the window, and not newer than every id pushed out (a replay carries its time)."""
        return sent_at is not None and sent_at <= self.record.evicted_at and not self.seen(message_id)

    def apply(self, catalog: Catalog, message_id: str | None, event: Event, now: float,
              sent_at: float | None = None) -> Step:
        """Run ``event``; a ``message_id`` already in the window runs nothing."""
        if message_id is not None:
            mark = digest(message_id)
            if _holds(self.record.seen, mark):
                return Step(message_id, duplicate=True)
            self._remember(mark, sent_at)
        state = self.record.state
        if isinstance(event, UserMessage) and (state.channel is None or state.user.get("id") is None):
            event = _addressed(event, self.key)  # the first message: who and where, from the key
        turn = advance(catalog, state, event, now)
        before = self.record.replies
        self.record.state = turn.state
        self.record.replies += sum(1 for e in turn.effects if isinstance(e, Send))
        self.record.at = int(now)
        self.changed = True
        state = turn.state
        return Step(message_id, False, turn.effects, before, state.flow, state.node, state.status, state.ticket,
                    state.user)

    def quarantine(self, message_id: str | None, reason: str) -> Step:
        """Do not run this event (it took its host down before): fail the conversation as the
        interpreter fails one that crashes, so that the user's next message starts afresh,
        and mark ``message_id`` (not seen before) seen, so that a replay is a duplicate."""
        if message_id is not None:
            self._remember(digest(message_id), None)
        state = self.record.state
        effects: list[Effect] = [Error(state.flow or "", state.node, reason, False)]
        if state.timer is not None:
            effects.append(CancelTimer(state.timer))
        self.record.state = replace(state, status=FAILED, wait_for=None, timer=None, request=None, stack=(), inbox=())
        self.changed = True
        return Step(message_id, False, tuple(effects), self.record.replies, state.flow, state.node, FAILED)

    def pack(self) -> bytes:
        return pack_record(self.record)

    def _remember(self, mark: bytes, sent_at: float | None) -> None:
        record = self.record
        if len(record.seen) >= self.window * DIGEST_BYTES and record.latest_at:
            # an id leaves the window: it was taken before this one, so no later than latest_at
            record.evicted_at = max(record.evicted_at, record.latest_at)
        if sent_at is not None:
            record.latest_at = max(record.latest_at, sent_at)
        record.seen = (record.seen + mark)[-self.window * DIGEST_BYTES:]


def _holds(seen: bytes, mark: bytes) -> bool:
    """Whether the window ``seen`` holds ``mark`` at a digest boundary."""
    at = seen.find(mark)
    while at != -1:
        if at % DIGEST_BYTES == 0:
            return True
        at = seen.find(mark, at + 1)
    return False


def _addressed(event: Event, key: str) -> Event:
    """A user message with the sender and channel filled in from the conversation's key."""
    if isinstance(event, UserMessage) and (event.user_id is None or event.channel is None):
        parsed = ConversationKey.parse(key)
        return replace(event, user_id=event.user_id or parsed.user, channel=event.channel or parsed.channel)
    return event


Arrival = tuple[str | None, Event, float | None]
"""An event to run: its message id (None for a timer or an HTTP result), the event, and the
channel's time for it (``Inbound.sent_at``)."""


def run_turns(catalog: Catalog, key: str, record: bytes | None, events: list[Arrival],
              now: float, window: int = DEFAULT_WINDOW) -> tuple[bytes | None, list[Step]]:
    """Run ``events`` on one conversation in order; its new record (None if unchanged) and
    what each event did. Pure: what a dedicated conversation actor runs."""
    working = Working(key, record, window)
    steps = [working.apply(catalog, message_id, event, now, sent_at) for message_id, event, sent_at in events]
    return (working.pack() if working.changed else None), steps
