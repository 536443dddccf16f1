"""The web mailbox: what a flow said to a web user outside the answers to their messages.

A web message's replies travel in its answer. What a timer or an API call's result makes the
flow say later has no answer to travel in: the host puts it in the store's outbox (which
:class:`~parlour.gateway.web.WebPush` pushes to the user's open chat sockets) and, in the same
commit, appends it to the user's mailbox, the store log :func:`parlour.messages.mailbox_log`,
kept ``limits.mailbox_ttl_s`` (7 days) and at most its newest ``LOG_KEEP`` entries. A client
with no socket open (a page closed, a mobile app, a server) reads it over HTTP::

    GET    /v1/{tenant}/web/messages?user=u1&after=<cursor>&wait_s=20
    200    {"replies": [{"cursor": "00000000000000000042", "seq": 7, "at": 1764..., "text": ...}],
            "next": "00000000000000000042", "more": false}
    DELETE /v1/{tenant}/web/messages?user=u1&upto=00000000000000000042
    200    {"acknowledged": 1}

``wait_s`` holds a read of an empty mailbox open until something arrives (woken by the push
of this node, else found by reading the store every ``poll_s``) or the wait ends. ``seq`` is
the reply's number in its conversation, the one a push carries too: a client that both listens
and reads shows each ``seq`` once.

The web channel takes no token (a public widget talks to it): the user id is the bearer of the
conversation, for reading and acknowledging as for sending, and costs the same rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from parlour.codec import unpack_outbound
from parlour.errors import ParlourError
from parlour.messages import ConversationKey, mailbox_log
from parlour.store import LogEntry, Store, StoreError, log_cursor

from .errors import ApiError, unavailable
from .schemas import ID
from .web import CHANNEL, reply_json, validate

log = logging.getLogger("parlour.web")

MAX_WAIT_S = 30.0
"""The longest one read waits for a reply: under common proxies' idle timeouts (60 s)."""
PAGE = 100
"""The most replies one read returns (``limit``); ``more`` says when there are others."""


def _cursor(value: str | None) -> str | None:
    try:
        log_cursor(value)
    except StoreError:
        raise ValueError("not a mailbox cursor: give the `cursor` or `next` of an earlier read "
                         "(up to 20 digits)") from None
    return value


class MailboxRead(BaseModel):
    """The query of a mailbox read."""

    model_config = ConfigDict(extra="forbid")

    user: str = ID
    after: str | None = Field(None, description="read the replies after this cursor (default: from the oldest kept)")
    wait_s: float = Field(0.0, ge=0, le=MAX_WAIT_S, description="wait this long for a reply when there is none")
    limit: int = Field(PAGE, ge=1, le=PAGE)

    _after = field_validator("after")(_cursor)


class MailboxAck(BaseModel):
    """The query of an acknowledgement: the replies up to ``upto`` (included) are deleted."""

    model_config = ConfigDict(extra="forbid")

    user: str = ID
    upto: str = Field(min_length=1, max_length=20)

    _upto = field_validator("upto")(_cursor)


def letter(entry: LogEntry) -> dict[str, Any] | None:
    """A mailbox entry as the API gives it: the reply, its ``cursor``, ``seq`` and ``at``;
    None (logged) for an entry that cannot be read."""
    try:
        outbound = unpack_outbound(entry.data)
    except (ParlourError, KeyError, TypeError) as exc:
        log.error("mailbox: unreadable entry %s: %s", entry.id, exc)
        return None
    return {"cursor": entry.id, "seq": outbound["seq"], "at": outbound["at"], **reply_json(outbound["reply"])}


class Mailbox:
    """Reads the users' mailboxes, and holds the reads that wait on one: :meth:`wake` (called by
    :class:`~parlour.gateway.web.WebPush` for every web reply it takes from the outbox) ends
    their wait at once; a reply pushed by another node is found by the next read of the store,
    ``poll_s`` later at most. ``waiting`` counts the reads held open on this node."""

    def __init__(self, store: Store, *, poll_s: float = 1.0):
        self.store, self.poll_s = store, poll_s
        self._waiting: dict[tuple[str, str], set[asyncio.Event]] = {}
        self.waiting = 0

    def wake(self, tenant: str, user: str) -> None:
        for event in self._waiting.get((tenant, user), ()):
            event.set()

    def held(self, tenant: str, user: str) -> int:
        return len(self._waiting.get((tenant, user), ()))

    async def read(self, key: ConversationKey, after: str | None, limit: int = PAGE) -> list[LogEntry]:
        return await self.store.read_log(mailbox_log(key.id), after, limit)

    async def newest(self, key: ConversationKey) -> str | None:
        """The cursor of the newest reply in ``key``'s mailbox; None if it is empty."""
        entries = await self.store.tail_log(mailbox_log(key.id), 1)
        return entries[-1].id if entries else None

    async def wait(self, key: ConversationKey, after: str | None, wait_s: float, limit: int = PAGE) -> list[LogEntry]:
        """The replies after ``after``, waiting up to ``wait_s`` for one when there is none."""
        if wait_s <= 0:
            return await self.read(key, after, limit)
        event, waiters = asyncio.Event(), self._waiting.setdefault((key.tenant, key.user), set())
        waiters.add(event)  # before the first read: a reply committed meanwhile wakes it
        self.waiting += 1
        try:
            deadline = asyncio.get_running_loop().time() + wait_s
            while not (entries := await self.read(key, after, limit)):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, self.poll_s))
                event.clear()
            return entries
        finally:
            self.waiting -= 1
            waiters.discard(event)
            if not waiters:
                self._waiting.pop((key.tenant, key.user), None)

    async def acknowledge(self, key: ConversationKey, upto: str) -> int:
        return await self.store.trim_log(mailbox_log(key.id), upto)


class MailboxApi:
    """The HTTP side of :class:`Mailbox`: ``GET`` and ``DELETE /v1/{tenant}/web/messages``."""

    def __init__(self, gateway, mailbox: Mailbox):
        self.gateway, self.mailbox = gateway, mailbox

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/{tenant}/web/messages", self.read), web.delete("/v1/{tenant}/web/messages", self.ack)]

    def _key(self, request: web.Request, user: str) -> ConversationKey:
        tenant = request.match_info["tenant"]
        self.gateway.web._check_tenant(tenant)
        self.gateway.ingress.admit_read(tenant, user)
        return ConversationKey(tenant, CHANNEL, user)

    async def read(self, request: web.Request) -> web.Response:
        query: MailboxRead = validate(dict(request.query), MailboxRead)
        key = self._key(request, query.user)
        if query.wait_s > 0:
            self._check_room(key)
        entries = await self.mailbox.wait(key, query.after, query.wait_s, query.limit)
        letters = [found for entry in entries if (found := letter(entry)) is not None]
        return web.json_response({"replies": letters, "next": entries[-1].id if entries else query.after,
                                  "more": len(entries) == query.limit})

    def _check_room(self, key: ConversationKey) -> None:
        """Held reads are bounded like chat sockets: ``limits.ws_per_user`` per user and
        ``limits.max_websockets`` per node (a read over a bound is refused, not queued)."""
        limits = self.gateway.settings.limits
        if self.mailbox.waiting >= limits.max_websockets:
            raise unavailable(f"this node holds {self.mailbox.waiting} mailbox reads open, its most: retry shortly, "
                              "or read without wait_s", retry_after_s=5, code="too_many_waits")
        if (held := self.mailbox.held(key.tenant, key.user)) >= limits.ws_per_user:
            raise ApiError(429, "too_many_waits", f"user {key.user[:64]!r} has {held} mailbox reads waiting already",
                           headers={"Retry-After": "5"})

    async def ack(self, request: web.Request) -> web.Response:
        query: MailboxAck = validate(dict(request.query), MailboxAck)
        key = self._key(request, query.user)
        return web.json_response({"acknowledged": await self.mailbox.acknowledge(key, query.upto)})

    async def answer_extras(self, key: ConversationKey, mark: str | None, wait_s: float) -> list[dict[str, Any]]:
        """For a web message whose turn started an HTTP call: the replies the call's result
        made the flow say within ``wait_s`` (those in the mailbox after ``mark``, its newest
        before the turn), to add to the message's answer. None are waited for when this node
        holds its most reads already."""
        if self.mailbox.waiting >= self.gateway.settings.limits.max_websockets:
            return []
        try:
            entries = await self.mailbox.wait(key, mark, wait_s)
        except StoreError as exc:
            log.warning("mailbox: the answer of %s goes without the call's replies: %s", key.id, exc)
            return []
        return [found for entry in entries if (found := letter(entry)) is not None]
