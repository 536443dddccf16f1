"""The host's work in the background: due timers, HTTP calls and their results, passivating
idle conversations and expiring old records. Timers and HTTP results run through the same
batches as a caller's events (:meth:`Host.process`), one batch at a time.

A timer is a row in the store, read when due for the host's partitions, and deleted by the
commit of the turn it fires: it fires once, also across restarts. Each HTTP call is guarded
by a timer of its own (:data:`HTTP_GUARD`), which answers the flow with an error if the host
dies during the call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from parlour.flow import Event, HttpRequest, HttpResult, TimerFired
from parlour.messages import FAILED, Outcome
from parlour.store import StoreError, Timer

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger("parlour.host")

HTTP_GUARD = "http:"
"""Timer ids of this prefix guard an HTTP call: if the host dies during the call, the timer
answers the flow with an error instead of leaving it waiting forever."""


@dataclass(slots=True)
class Work:
    """One event for one conversation: from a caller (``index`` into its batch), or internal
    (a timer that fired, an HTTP result)."""

    index: int | None
    key: str
    partition: int
    message_id: str | None
    event: Event
    timer: str | None = None  # the timer row this work consumes
    trace: str | None = None  # the request id the event came with, for the logs
    sent_at: float | None = None  # the channel's time for the message (Inbound.sent_at)


class Background:
    """The background work of one :class:`~parlour.actors.host.Host`: its HTTP calls in flight,
    its due timers, and the results of both, which it runs through the host's batches
    (:meth:`Host.process <parlour.actors.host.Host.process>`); and the host's upkeep."""

    def __init__(self, host: Host):
        self.host = host
        self.calls: dict[str, asyncio.Task] = {}
        """The HTTP calls in flight, by request id."""
        self._internal: asyncio.Queue[Work] = asyncio.Queue()
        self._firing: set[tuple[str, str]] = set()

    def start(self) -> list[asyncio.Task]:
        """Start the loops; the host cancels the tasks returned when it stops."""
        return [asyncio.create_task(loop()) for loop in (self._run_internal, self._poll_timers, self._upkeep)]

    def call(self, key: str, partition: int, request: HttpRequest) -> None:
        """Start an HTTP call that a committed turn asked for; its result comes back as an event."""
        self.calls[request.request_id] = asyncio.create_task(self._call(key, partition, request))

    async def _call(self, key: str, partition: int, request: HttpRequest) -> None:
        http = self.host.http
        try:
            tenant = key.split("/", 1)[0]
            result = await http(request, tenant) if http else HttpResult(request.request_id, error="no HTTP client")
        finally:
            self.calls.pop(request.request_id, None)
        self._internal.put_nowait(Work(None, key, partition, None, result))

    async def _run_internal(self) -> None:
        """Timers that fired and HTTP results, run in batches like a caller's."""
        host = self.host
        while True:
            works = [await self._internal.get()]
            while not self._internal.empty() and len(works) < host.config.max_batch:
                works.append(self._internal.get_nowait())
            works = [w for w in works if w.partition in host.owned]
            try:
                outcomes = await host.process(works)
            except Exception:  # noqa: BLE001 - a defect must not stop every timer and HTTP result of the host
                log.exception("%s failed a batch of %d internal events", host.name, len(works))
                host.counts["internal_errors"] += 1
                outcomes = [Outcome("", FAILED, retryable=True)] * len(works)
            for work, outcome in zip(works, outcomes, strict=True):
                if isinstance(outcome, asyncio.Future):  # a dedicated lane's: the loop goes on meanwhile
                    outcome.add_done_callback(partial(self._lane_done, work))
                else:
                    self._internal_done(work, outcome)

    def _lane_done(self, work: Work, done: asyncio.Future) -> None:
        self._internal_done(work, done.result())

    def _internal_done(self, work: Work, outcome: Outcome) -> None:
        if work.timer is not None:
            self._firing.discard((work.key, work.timer))  # polled again if still due
        elif outcome.status == FAILED and outcome.retryable:  # an HTTP result not committed
            asyncio.get_running_loop().call_later(self.host.config.timer_poll_s, self._internal.put_nowait, work)

    async def _poll_timers(self) -> None:
        host = self.host
        while True:
            try:
                due = await host.store.due_timers(list(host.owned), host.clock(), host.config.max_batch)
            except Exception as exc:  # noqa: BLE001 - the loop goes on; the store comes back
                log.warning("%s cannot read due timers: %r", host.name, exc)
                due = []
            for timer in due:
                mark = (timer.key, timer.timer_id)
                if mark in self._firing or _guarded_call(timer) in self.calls:
                    continue
                self._firing.add(mark)
                self._internal.put_nowait(Work(None, timer.key, timer.partition, None, _fired(timer), timer.timer_id))
            await asyncio.sleep(host.config.timer_poll_s)

    async def _upkeep(self) -> None:
        """Passivate idle conversations; expire old records from the store."""
        host, last_sweep = self.host, 0.0
        while True:
            await asyncio.sleep(min(host.config.idle_s / 4, 30.0))
            now = host.clock()
            await host.passivate_idle(now)
            if now - last_sweep >= host.config.sweep_s:
                try:
                    host.counts["expired"] += await host.store.sweep(now)
                    last_sweep = now
                except StoreError as exc:
                    log.warning("%s cannot sweep the store: %s", host.name, exc)


def guard_s(request: HttpRequest) -> float:
    """Longer than the call can take with its retries and backoff."""
    return request.timeout_s * (request.retries + 1) + 2.0 ** request.retries + 30.0


def _guarded_call(timer: Timer) -> str | None:
    return timer.timer_id[len(HTTP_GUARD):] if timer.timer_id.startswith(HTTP_GUARD) else None


def _fired(timer: Timer) -> Event:
    if timer.timer_id.startswith(HTTP_GUARD):
        return HttpResult(timer.timer_id[len(HTTP_GUARD):], error="the call was interrupted (its host restarted)")
    return TimerFired(timer.timer_id)
