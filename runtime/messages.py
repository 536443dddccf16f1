"""What crosses a process boundary between the gateway, the hosts and the caller.

A conversation is named by a :class:`ConversationKey` (tenant, channel, the channel's user or
chat id), which hashes to one of a fixed number of partitions. An :class:`Inbound` carries one
event for one conversation with the channel's own message id, which deduplicates a redelivery;
the host answers each with an :class:`Outcome`.

>>> key = ConversationKey("demo", "web", "u1")
>>> inbound = Inbound(key, "m-1", UserMessage("hi"))
>>> outcome.status in (APPLIED, DUPLICATE)          # the turn ran once; its replies are here
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from .errors import InvalidId
from .flow.events import Event, Reply

DEFAULT_PARTITIONS = 1024

APPLIED = "applied"
"""The event ran its turn, which is committed to the store."""
DUPLICATE = "duplicate"
"""The message id was seen before: the flow did not move; ``replies`` are the first turn's."""
MOVED = "moved"
"""The host does not own the conversation's partition (any more); ``epoch`` is the table's
epoch it knows of. The caller refreshes its table and sends again."""
FAILED = "failed"
"""Nothing was committed (the store was down, the host was restarting...). ``retryable``
tells whether sending the same message again may succeed."""


@dataclass(frozen=True, slots=True)
class ConversationKey:
    tenant: str
    channel: str
    user: str
    id: str = field(init=False, repr=False, compare=False)
    """The key as one string: ``tenant/channel/user`` (the user may hold '/')."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.tenant}/{self.channel}/{self.user}")
        for name in ("tenant", "channel"):
            value = getattr(self, name)
            if not value or "/" in value:
                raise InvalidId(f"a conversation's {name} must be non-empty text without '/', got {value[:64]!r}")
        if not self.user:
            raise InvalidId("a conversation's user must be non-empty")
        _check_text(self.id, "a conversation key")

    @classmethod
    def parse(cls, text: str) -> ConversationKey:
        tenant, channel, user = text.split("/", 2)
        return cls(tenant, channel, user)

    def partition(self, partitions: int = DEFAULT_PARTITIONS) -> int:
        return partition_of(self.id, partitions)


MAX_ID_CHARS = 1024


def _check_text(value: str, what: str) -> None:
    """Ids are stored as keys: valid Unicode (no lone surrogates), of a bounded length."""
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise InvalidId(f"{what} must be text of at most {MAX_ID_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidId(f"{what} is not valid Unicode: {exc.reason} at character {exc.start}") from None


MAILBOX_PREFIX = "mail/"


def mailbox_log(key: str) -> str:
    """The store log that is ``key``'s web mailbox: what the flow said to the user outside the
    answers to their messages (:mod:`parlour.gateway.mailbox` reads it).

    >>> mailbox_log("demo/web/u1")
    'mail/demo/web/u1'
    """
    return MAILBOX_PREFIX + key


def partition_of(key_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of a conversation; the same in every process (CRC-32, not ``hash()``)."""
    return zlib.crc32(key_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Inbound:
    """One event for one conversation. ``message_id`` is the channel's id for the message
    (wamid, update_id, a web client's id): a second Inbound with the same id never moves the
    flow again. ``sent_at`` is the channel's own time for the message (epoch seconds), from a
    channel that retries for long (WhatsApp: 7 days): a replay of it is then recognised for as
    long as the channel may retry, not only within the conversation's window of recent ids."""

    key: ConversationKey
    message_id: str
    event: Event
    trace: str | None = None
    sent_at: float | None = None

    def __post_init__(self) -> None:
        if not self.message_id:
            raise InvalidId("an inbound message needs the channel's message id, for deduplication")
        _check_text(self.message_id, "a message id")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one :class:`Inbound`."""

    message_id: str
    status: str
    replies: tuple[Reply, ...] = ()
    error: str | None = None
    retryable: bool = False
    epoch: int | None = None
    flow: str | None = None
    node: str | None = None
    conversation_status: str | None = None
    calling: bool = False
    """The turn started an HTTP call: its result may make the flow say more, later (through
    the outbox, and for the web channel its mailbox)."""

    @property
    def ok(self) -> bool:
        """The message is durably handled (applied now or before): acknowledge it."""
        return self.status in (APPLIED, DUPLICATE)


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """Which host owns each partition, as of ``epoch``. ``owners[p]`` indexes ``hosts``.

    Callers cache it; a host that answers :data:`MOVED` with a newer epoch makes them fetch
    it again from the router."""

    epoch: int
    hosts: tuple[str, ...]
    owners: tuple[int, ...]

    @property
    def partitions(self) -> int:
        return len(self.owners)

    def host_of(self, partition: int) -> str:
        return self.hosts[self.owners[partition]]

    def partitions_of(self, host: str) -> list[int]:
        index = self.hosts.index(host)
        return [p for p, owner in enumerate(self.owners) if owner == index]
