"""The store's contract: one small Protocol that every backend implements.

A store keeps, for the whole cluster:

- conversation **records** (msgpack bytes: state, dedup window, outbox counter), each with a
  time after which it may be expired;
- the **fence**: for each partition, the epoch of the host that owns it. A commit names the
  epoch it writes under for each partition it touches; a partition fenced at another epoch
  refuses the whole commit (:class:`Fenced`), so a zombie host never overwrites newer state;
- durable **timers** (conversation, timer id, due time), **outbox** entries (replies to send,
  in order), the **dead letters** (outbox entries that could not be delivered) and the
  **replies** of recent turns (what a duplicate message gets back);
- append-only **logs** (a conversation's transcript, a web user's mailbox), each entry kept
  until its own expiry, read after a cursor;
- hand-off **tickets**, found by tenant, status and queue;
- the flow **registry** (every version of every flow per tenant, and which one is current)
  and small named **meta** values (the router's partition table).

A :class:`Commit` is applied atomically: all of it or, on :class:`Fenced` or
:class:`StoreUnavailable`, none of it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ParlourError


class StoreError(ParlourError):
    """A store operation failed."""


class BadCursor(StoreError, ValueError):
    """A cursor given to a listing is not one the store gave: the caller's mistake (400), not
    the store's."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; nothing was written. Retry."""


class Fenced(StoreError):
    """A commit or claim named an epoch older than a partition's fence: nothing was written.

    ``epochs`` maps each refusing partition to the epoch it is fenced at."""

    def __init__(self, epochs: dict[int, int]):
        self.epochs = epochs
        super().__init__(f"partitions fenced at newer epochs: {dict(sorted(epochs.items())[:8])}")


@dataclass(frozen=True, slots=True)
class Timer:
    key: str
    partition: int
    timer_id: str
    due_at: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A reply to send. ``id`` is the store's cursor (ordered); ``key`` and ``seq`` (the
    conversation's reply counter) make the idempotency key ``f"{key}#{seq}"``."""

    id: str
    key: str
    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An outbox entry given up on after its last attempt. ``id`` orders the queue; ``key``,
    ``seq`` and ``data`` are the entry's, kept whole so that a replay sends the same reply
    under the same idempotency key."""

    id: str
    key: str
    seq: int
    data: bytes
    reason: str
    attempts: int
    failed_at: float


def entry_numbers(ids: Sequence[str]) -> list[int]:
    """The ids of a store that numbers its entries (20 digits), in order; others left out."""
    return [int(i) for i in ids if isinstance(i, str) and i.isascii() and i.isdigit() and len(i) <= 20
            and int(i) < 2**63]


@dataclass(frozen=True, slots=True)
class FlowRecord:
    tenant: str
    flow: str
    version: str
    source: str
    path: str
    created_at: float
    current: bool


LOG_KEEP = 10_000
"""A log keeps at most its newest ``LOG_KEEP`` entries: a sweep drops older ones (Redis drops
them as it appends). Expiry bounds a log in time, this in size, whatever a flow sends."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of a log. ``id`` is its cursor: 20 digits, larger for later entries of the log."""

    id: str
    data: bytes


def log_cursor(after: str | None) -> int:
    """The number a log cursor stands for (0 for None); :class:`BadCursor` for anything that is
    not a cursor of a log, so that a caller's garbage is refused in one place for every store."""
    if after is None or after == "":
        return 0
    if not (isinstance(after, str) and after.isascii() and after.isdigit() and len(after) <= 20 and int(after) < 2**63):
        raise BadCursor(f"{after!r} is not a log cursor (up to 20 digits)")
    return int(after)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A hand-off ticket as the store keeps it: what it is found by, and its data (msgpack,
    :mod:`parlour.actors.tickets` reads it). ``id`` orders a tenant's tickets (older first);
    a ticket is kept until ``expires_at``."""

    tenant: str
    id: str
    key: str
    status: str
    queue: str
    updated_at: float
    data: bytes
    expires_at: float


RecordFilter = Callable[[str, bytes], bool]
"""Whether a conversation record (key, bytes) is wanted on a page of :meth:`Store.conversations`."""

MAX_EXAMINE = 10_000
"""The records one call of :meth:`Store.conversations` reads at most, by default, whatever it
keeps: a page asked with a filter that keeps nothing still ends, with a cursor to go on."""


@dataclass(frozen=True, slots=True)
class RecordPage:
    """A page of a tenant's conversation records: (key, record) pairs, and the cursor of the
    next page (None after the last). The cursor is the store's own: pass it back as it is."""

    records: list[tuple[str, bytes]]
    next: str | None


async def take_page(records: AsyncGenerator[tuple[str, str, bytes], None], limit: int,
                    keep: RecordFilter | None, examine: int) -> RecordPage:
    """A page of ``records`` (cursor, key, record; unexpired, in the store's order): the first
    ``limit`` that ``keep`` wants, reading at most ``examine``; the next page starts after the
    cursor of the last one read. One record past the page is read, to tell whether there is a
    next page."""
    found: list[tuple[str, bytes]] = []
    read, last = 0, None
    async with aclosing(records):
        async for cursor, key, record in records:
            if not key:  # the store stops here: go on from its cursor
                return RecordPage(found, cursor)
            if read >= max(examine, 1) or len(found) >= limit:
                return RecordPage(found, last)
            read, last = read + 1, cursor
            if keep is None or keep(key, record):
                found.append((key, record))
    return RecordPage(found, None)


@dataclass(slots=True)
class Commit:
    """Everything one batch of turns changes, written as one atomic store operation.

    ``fences`` maps every partition the commit touches to the epoch the writer holds it at.
    ``records``: (key, partition, record bytes, expires_at epoch seconds).
    ``timers``: timers to set (a timer id set again moves its due time); ``cancels``: (key,
    partition, timer id) to delete. ``outbox``: (key, seq, data). ``replies``: (key, message
    id, data, expires_at). ``logs``: (log name, data, expires_at), appended in order.
    ``tickets``: tickets to write whole (a ticket id written again replaces it).
    """

    fences: dict[int, int] = field(default_factory=dict)
    records: list[tuple[str, int, bytes, float]] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancels: list[tuple[str, int, str]] = field(default_factory=list)
    outbox: list[tuple[str, int, bytes]] = field(default_factory=list)
    replies: list[tuple[str, str, bytes, float]] = field(default_factory=list)
    logs: list[tuple[str, bytes, float]] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)

    def extend(self, other: Commit) -> None:
        """Add ``other``'s changes to this commit."""
        self.fences.update(other.fences)
        self.records += other.records
        self.timers += other.timers
        self.cancels += other.cancels
        self.outbox += other.outbox
        self.replies += other.replies
        self.logs += other.logs
        self.tickets += other.tickets

    def __bool__(self) -> bool:
        return bool(self.records or self.timers or self.cancels or self.outbox or self.replies
                    or self.logs or self.tickets)


class Store(Protocol):
    """One backend. Every method is a coroutine; none blocks the event loop."""

    url: str

    async def open(self) -> None: ...
    async def aclose(self) -> None: ...

    # conversations
    async def load(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The records of ``keys`` that exist and have not expired."""
    async def commit(self, commit: Commit) -> None:
        """Apply ``commit`` atomically; :class:`Fenced` or :class:`StoreUnavailable` if not."""
    async def claim(self, epochs: dict[int, int]) -> None:
        """Fence each partition at its epoch; :class:`Fenced` (nothing changed) if any
        partition is already fenced at a newer one."""
    async def fences(self, partitions: Sequence[int]) -> dict[int, int]: ...
    async def due_timers(self, partitions: Sequence[int], until: float, limit: int) -> list[Timer]:
        """Timers of ``partitions`` due at or before ``until``, earliest first."""
    async def reply(self, key: str, message_id: str) -> bytes | None:
        """The replies a committed turn gave to ``message_id``, while kept."""
    async def replied(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``pairs`` (key, message id) have a committed turn's replies kept: the
        messages a conversation took within their replies' time to live, also once out of its
        dedup window. One round trip, whatever the number of pairs.

        >>> await store.replied([("t/whatsapp/4477", "wamid.1"), ("t/whatsapp/4477", "wamid.9")])
        {('t/whatsapp/4477', 'wamid.1')}
        """
    async def recent(self, key: str, limit: int = 10) -> list[tuple[str, bytes, float]]:
        """The kept replies of ``key``'s latest turns, newest first: (message id, replies data,
        kept until). Newest is the last written (of one commit's, the later entry); a message id
        written again is listed once, where it was last written. At most ``limit``; the Redis
        store keeps only the 50 newest.

        >>> [message_id for message_id, _data, _until in await store.recent("t/web/ann", 3)]
        ['m7', 'm6', 'm5']
        """
    async def conversations(self, tenant: str, after: str | None = None, limit: int = 100,
                            keep: RecordFilter | None = None, examine: int = MAX_EXAMINE) -> RecordPage:
        """``tenant``'s unexpired conversation records after the cursor ``after``: at most
        ``limit`` of those ``keep`` wants (all without it), having read at most ``examine``.
        Memory and SQLite go in key order; Redis in its ``SCAN`` order, where a conversation
        written during a listing may be listed twice or not at all, as ``SCAN`` promises.
        :class:`BadCursor` if ``after`` is not a cursor this store gave.

        >>> page = await store.conversations("acme", limit=2)
        >>> [key for key, _ in page.records], page.next is not None
        (['acme/web/ann', 'acme/web/bob'], True)
        """
    async def sweep(self, now: float) -> int:
        """Delete the records, replies, log entries and tickets expired at ``now`` and the log
        entries beyond :data:`LOG_KEEP`; how many were deleted (Redis expires its own: 0)."""

    # logs
    async def read_log(self, log: str, after: str | None = None, limit: int = 100) -> list[LogEntry]:
        """The unexpired entries of ``log`` after the cursor ``after``, oldest first, at most
        ``limit``; :class:`BadCursor` if ``after`` is not a cursor (:func:`log_cursor`).

        >>> [e.data for e in await store.read_log("mail/t/web/ann", after="00000000000000000041")]
        [b'...', b'...']
        """
    async def tail_log(self, log: str, limit: int) -> list[LogEntry]:
        """The newest ``limit`` unexpired entries of ``log``, oldest first."""
    async def trim_log(self, log: str, upto: str) -> int:
        """Delete the entries of ``log`` up to the cursor ``upto`` included; how many."""

    # tickets
    async def tickets(self, tenant: str, status: str | None = None, queue: str | None = None,
                      after: str | None = None, limit: int = 50) -> list[Ticket]:
        """``tenant``'s unexpired tickets with ids after ``after``, in id order, of ``status``
        and ``queue`` when given; at most ``limit``."""
    async def ticket(self, tenant: str, ticket_id: str) -> Ticket | None:
        """One of ``tenant``'s tickets, unexpired; None if it has none of that id."""

    # outbox
    async def read_outbox(self, after: str | None, limit: int) -> list[OutboxEntry]: ...
    async def ack_outbox(self, ids: Sequence[str]) -> None: ...

    # dead letters
    async def bury(self, entry: OutboxEntry, reason: str, attempts: int, at: float) -> None:
        """Move ``entry`` from the outbox to the dead letters, in one step: it is never in
        both, and never in neither."""
    async def dead_letters(self, after: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The dead letters after the cursor ``after``, oldest first."""
    async def revive(self, ids: Sequence[str]) -> int:
        """Put these dead letters back at the end of the outbox, each in one step; how many
        there were. An id that is not a dead letter's (already revived or dropped, or not an
        id of this store at all) is skipped."""
    async def drop_dead(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; how many there were (other ids are skipped)."""

    # registry and meta
    async def put_flow(self, record: FlowRecord) -> None:
        """Store a flow version (idempotent for the same version); when ``record.current``,
        it becomes the version new conversations start on."""
    async def flows(self, tenant: str | None = None) -> list[FlowRecord]: ...
    async def delete_flow(self, tenant: str, flow: str) -> int:
        """Delete every version of ``tenant``'s ``flow`` from the registry; how many it had."""
    async def get_meta(self, name: str) -> bytes | None: ...
    async def put_meta(self, name: str, value: bytes) -> None: ...
    async def add_meta(self, name: str, value: bytes) -> bytes:
        """Set ``name`` to ``value`` unless it has a value already; the value it has then. Of
        writers racing on a new name, the first wins and all are told its value (a binding that
        must never change once made, as a WhatsApp user id's conversation)."""
