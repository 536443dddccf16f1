"""The delivery supervisor: it drains the outbox and sends each reply to its channel's API.

- **Order.** A conversation's replies go out one after another, in outbox order (its *lane*);
  lanes of different conversations run side by side.
- **Idempotency.** Every call carries ``Idempotency-Key: {conversation}#{seq}.{part}``. A
  reply whose send was in flight when the supervisor died is sent again under the same key,
  which a channel (or a fake) that honours it drops.
- **Retries.** A timeout, a cut connection, 429 or 5xx is retried after an exponential backoff
  with full jitter, and never sooner than the channel asked (``Retry-After``, Telegram's
  ``retry_after``). Another 4xx is not retried. After the last attempt the reply goes to the
  dead letters, and the lane goes on with the conversation's next reply.
- **A bot not known yet is waited for.** The bots are a cached copy; a reply for a bot not in
  it (added a moment ago) reads the registry again, and a bot still missing is retried like a
  5xx, attempts spent, buried only after the last (a deleted bot's replies).
- **A circuit breaker per bot** (its endpoint and credentials). After ``breaker_failures``
  retryable failures in a row it opens: that bot's sends wait ``breaker_open_s``, without
  spending their attempts, then one probe decides whether it closes. Other bots, of the same
  channel too, go on.
- **The bot's tenant's egress policy** (:mod:`parlour.egress`) applies to its ``api_base``, on
  every connection: a send it denies is buried at once (``egress denied: ...``), never retried.
- **No redirect is followed**: a call carries credentials (a bot's token, a webhook's
  signature) that must not travel to a host the operator did not name; a 3xx fails for good.
- **A reply is sent once per outbox entry.** An entry that is in the outbox twice (a store
  client's retry of a commit that had run) is recognised by its conversation and number and
  acknowledged without a second send.
- **State is in the store.** An entry leaves the outbox only when it is sent (``ack``) or
  buried, so a restarted supervisor reads the outbox from its start and resumes.

Entries of the web channel are not its business: :class:`parlour.gateway.web.WebPush` takes them.
Entries of the ``handoff`` channel are a tenant's hand-off webhook events
(:mod:`parlour.channels.handoff`): sent the same way, one lane per ticket, each
attempt signed anew.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import aiohttp

from parlour.channels import handoff
from parlour.channels.base import Adapter, BotSettings, Call, Verdict
from parlour.channels.registry import adapter
from parlour.codec import unpack_outbound
from parlour.egress import Egress, EgressDenied, EgressSessions
from parlour.errors import ParlourError
from parlour.messages import ConversationKey
from parlour.metrics import BREAKER_STATES, DeliveryMetrics, Exported
from parlour.store import OutboxEntry, Store, StoreError

from .tickets import unpack_hook

log = logging.getLogger("parlour.delivery")


class BotLookup(Protocol):
    """A bot's settings, or None for a bot that is not there (:meth:`Bots.get
    <parlour.channels.registry.Bots.get>`). ``fresh`` reads the registry again rather
    than trusting a cached copy."""

    def __call__(self, tenant: str, channel: str, bot: str, *,
                 fresh: bool = False) -> Awaitable[BotSettings | None]: ...


DEAD_COUNT_S = 10.0  # how often the dead letters are counted for their gauge
DEAD_COUNT_MAX = 100_000
SENT_PER_CONVERSATION, SENT_CONVERSATIONS = 32, 100_000  # what is remembered as sent, to drop a duplicate


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 0.5
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0
    breaker_failures: int = 5
    breaker_open_s: float = 30.0

    def backoff(self, attempt: int, asked_s: float | None, rng: random.Random) -> float:
        """Full jitter (a random wait up to the exponential bound), at least what was asked."""
        return max(asked_s or 0.0, rng.uniform(0.0, min(self.max_backoff_s, self.base_s * 2 ** attempt)))


@dataclass
class Breaker:
    """One endpoint's circuit: ``closed`` (sends go), ``open`` (sends wait), ``half_open``
    (one probe is out; the others wait for its answer)."""

    failures_to_open: int
    open_s: float
    clock: Callable[[], float]
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def admit(self) -> None:
        async with self.changed:
            while True:
                if self.state == "closed":
                    return
                if self.state == "open" and self.clock() - self.opened_at >= self.open_s:
                    self.state = "half_open"
                    return  # this send is the probe
                wait = self.open_s - (self.clock() - self.opened_at) if self.state == "open" else None
                try:
                    await asyncio.wait_for(self.changed.wait(), wait)
                except TimeoutError:
                    pass

    async def record(self, ok: bool) -> None:
        async with self.changed:
            if ok:
                self.state, self.failures = "closed", 0
            else:
                self.failures += 1
                if self.state == "half_open" or self.failures >= self.failures_to_open:
                    self.state, self.opened_at = "open", self.clock()
            self.changed.notify_all()


class Delivery:
    def __init__(self, store: Store, bots: BotLookup, *, policy: RetryPolicy = RetryPolicy(),
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 poll_s: float = 0.2, max_queued: int = 10_000, egress: Egress | None = None,
                 wall: Callable[[], float] = time.time):
        self.store, self.bots, self.policy, self.clock, self.wall = store, bots, policy, clock, wall
        self.egress = egress or Egress()
        self.rng = rng or random.Random()
        self.poll_s, self.max_queued = poll_s, max_queued
        self.metrics = DeliveryMetrics()
        self.breakers: dict[str, Breaker] = {}
        self._lanes: dict[str, deque[OutboxEntry]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._http: EgressSessions | None = None
        self._sent: OrderedDict[str, deque[int]] = OrderedDict()

    @property
    def queued(self) -> int:
        return sum(map(len, self._lanes.values()))

    async def run(self, stop: asyncio.Event) -> None:
        """Read the outbox from its start and deliver until ``stop`` is set."""
        self._http = EgressSessions()
        cursor, counted_at = None, -float("inf")
        try:
            while not stop.is_set():
                if self.clock() - counted_at >= DEAD_COUNT_S:
                    counted_at = self.clock()
                    await self._count_dead()
                entries = await self._read(cursor) if self.queued < self.max_queued else []
                for entry in entries:
                    cursor = entry.id
                    if ConversationKey.parse(entry.key).channel != "web":
                        self._enqueue(entry)
                if not entries:
                    try:
                        await asyncio.wait_for(stop.wait(), self.poll_s)
                    except TimeoutError:
                        pass
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self._http.aclose()

    def export(self) -> Exported:
        self.metrics.queued.set(self.queued)
        for base, breaker in self.breakers.items():
            self.metrics.breaker.labels(base).set(BREAKER_STATES[breaker.state])
        return self.metrics.export()

    async def _count_dead(self) -> None:
        """The dead letters' number, for the gauge (at most :data:`DEAD_COUNT_MAX` counted)."""
        count, after = 0, None
        try:
            while count < DEAD_COUNT_MAX:
                page = await self.store.dead_letters(after, 1000)
                count += len(page)
                if len(page) < 1000:
                    break
                after = page[-1].id
        except StoreError:
            return
        self.metrics.dead_depth.set(count)

    async def _read(self, cursor: str | None) -> list[OutboxEntry]:
        try:
            return await self.store.read_outbox(cursor, 500)
        except StoreError as exc:
            log.warning("cannot read the outbox: %s", exc)
            return []

    def _enqueue(self, entry: OutboxEntry) -> None:
        self._lanes.setdefault(entry.key, deque()).append(entry)
        if entry.key not in self._tasks:
            self._tasks[entry.key] = asyncio.create_task(self._lane(entry.key))

    async def _lane(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                await self._deliver(lane[0])
                lane.popleft()
        finally:
            self._lanes.pop(key, None)
            self._tasks.pop(key, None)

    async def _deliver(self, entry: OutboxEntry) -> None:
        conversation = ConversationKey.parse(entry.key)
        channel, _, bot = conversation.channel.partition(":")
        if entry.seq in self._sent.get(entry.key, ()):
            # The same reply twice in the outbox (a store client's retry of a commit that had
            # run): it went out already.
            return await self._store("ack", self.store.ack_outbox, [entry.id])
        settings, attempts = await self._bot(entry, conversation.tenant, channel, bot)
        if settings is None:
            return
        try:
            calls = _render(channel, settings, conversation.user, entry.data)
        except ParlourError as exc:
            return await self._bury(entry, f"cannot be sent: {exc}", attempts)
        name = f"{conversation.tenant}/{conversation.channel}"  # one bot's endpoint: its failures pause it alone
        for part, call in enumerate(calls):
            breaker = self.breakers.setdefault(name, Breaker(
                self.policy.breaker_failures, self.policy.breaker_open_s, self.clock))
            while True:
                await breaker.admit()
                signed = (handoff.ADAPTER.sign(settings, call, self.wall())
                          if isinstance(settings, handoff.HookSettings) else call)
                verdict = await self._send(settings.api_base, signed, f"{entry.key}#{entry.seq}.{part}", channel,
                                           conversation.tenant)
                attempts += 1
                await breaker.record(verdict.outcome != "retry")
                self.metrics.sends.labels(channel, verdict.outcome).inc()
                if verdict.outcome == "sent":
                    break
                if verdict.outcome == "failed" or attempts >= self.policy.max_attempts:
                    return await self._bury(entry, verdict.reason, attempts)
                self.metrics.retries.labels(channel).inc()
                await asyncio.sleep(self.policy.backoff(attempts, verdict.after_s, self.rng))
        self._remember(entry)
        await self._store("ack", self.store.ack_outbox, [entry.id])

    async def _bot(self, entry: OutboxEntry, tenant: str, channel: str, bot: str) -> tuple[BotSettings | None, int]:
        """The reply's bot, and the attempts spent waiting for it. A bot the cached registry
        does not know may have been added a moment ago: the registry is read again, and a bot
        still missing is waited for like a retryable failure (backoff, attempts spent), the
        reply buried (None) only after the last attempt. A store that does not answer is
        waited for without spending attempts."""
        settings = await self._store("read the bots", self.bots, tenant, channel, bot)
        attempts = 0
        while settings is None:
            settings = await self._store("read the bots", partial(self.bots, fresh=True), tenant, channel, bot)
            if settings is not None:
                break
            attempts += 1
            if attempts >= self.policy.max_attempts:
                await self._bury(entry, _unknown(channel, bot, tenant), attempts)
                return None, attempts
            self.metrics.retries.labels(channel).inc()
            await asyncio.sleep(self.policy.backoff(attempts, None, self.rng))
        return settings, attempts

    def _remember(self, entry: OutboxEntry) -> None:
        """Keep the latest sent replies' numbers of recent conversations (bounded)."""
        sent = self._sent.setdefault(entry.key, deque(maxlen=SENT_PER_CONVERSATION))
        sent.append(entry.seq)
        self._sent.move_to_end(entry.key)
        if len(self._sent) > SENT_CONVERSATIONS:
            self._sent.popitem(last=False)

    async def _send(self, base: str, call: Call, idempotency_key: str, channel: str, tenant: str) -> Verdict:
        headers = {**call.headers, "Idempotency-Key": idempotency_key}
        if self._http is None:
            raise RuntimeError("the delivery supervisor sends only once started")
        http = self._http.get(self.egress.policy(tenant), timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s))
        try:
            async with http.request(call.method, base.rstrip("/") + call.path, headers=headers,
                                    json=call.json, data=call.form if call.form is not None else call.content,
                                    allow_redirects=False) as answer:
                body = await answer.read()
                return _adapter(channel).judge(answer.status, answer.headers, body)
        except EgressDenied as exc:  # the same answer however often it is asked
            return Verdict("failed", None, self.egress.message(tenant, exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            # An error's text may hold the URL, and a path may hold a credential (Telegram's).
            return Verdict("retry", None, f"{type(exc).__name__}: {exc}".replace(call.path, "/...")[:300])

    async def _bury(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        log.warning("gave up on reply %s#%s after %d attempt(s): %s", entry.key, entry.seq, attempts, reason)
        self.metrics.dead.labels(ConversationKey.parse(entry.key).channel.partition(":")[0]).inc()
        self.metrics.dead_depth.inc()
        await self._store("bury", self.store.bury, entry, reason, attempts, time.time())

    async def _store(self, what: str, action, *args):
        """A store call the supervisor cannot go on without: retried until the store answers."""
        delay = 0.1
        while True:
            try:
                return await action(*args)
            except StoreError as exc:
                log.warning("store %s failed, retrying: %s", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _adapter(channel: str) -> Adapter:
    return handoff.ADAPTER if channel == handoff.CHANNEL else adapter(channel)  # type: ignore[return-value]


def _render(channel: str, settings: BotSettings, user: str, data: bytes) -> list[Call]:
    """The calls of one outbox entry: a reply to a user, or a hand-off webhook event."""
    if channel == handoff.CHANNEL:
        return handoff.ADAPTER.render(settings, user, unpack_hook(data))  # type: ignore[arg-type]
    return adapter(channel).render(settings, user, unpack_outbound(data)["reply"])


def _unknown(channel: str, bot: str, tenant: str) -> str:
    if channel == handoff.CHANNEL:
        return f"tenant {tenant!r} has no handoff_webhook (tenants.{tenant}.handoff_webhook) any more"
    return f"no {channel} bot {bot!r} for tenant {tenant!r}"
