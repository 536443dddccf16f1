"""The host's work in the background: due timers, HTTP calls and their results, passivating
idle conversations and expiring old records. Timers and HTTP results run through the same
batches as a caller's events (:meth:`Host._process`), one batch at a time.

A timer is a row in the store, read when due for the host's partitions, and deleted by the
commit of the turn it fires: it fires once, also across restarts. Each HTTP call is guarded
by a timer of its own (:data:`HTTP_GUARD`), which answers the flow with an error if the host
dies during the call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from parlour.flow import Event, HttpRequest, HttpResult, TimerFired
from parlour.messages import FAILED, Outcome
from parlour.store import StoreError, Timer

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
    """Mixed into :class:`~parlour.actors.host.Host`, whose state it uses."""

    async def _call(self, key: str, partition: int, request: HttpRequest) -> None:
        try:
            tenant = key.split("/", 1)[0]
            result = (await self.http(request, tenant) if self.http
                      else HttpResult(request.request_id, error="no HTTP client"))
        finally:
            self._calls.pop(request.request_id, None)
        self._internal.put_nowait(Work(None, key, partition, None, result))

    async def _run_internal(self) -> None:
        """Timers that fired and HTTP results, run in batches like a caller's."""
        while True:
            works = [await self._internal.get()]
            while not self._internal.empty() and len(works) < self.config.max_batch:
                works.append(self._internal.get_nowait())
            works = [w for w in works if w.partition in self.owned]
            try:
                outcomes = await self._process(works)
            except Exception:  # a defect must not stop every timer and HTTP result of the host
                log.exception("%s failed a batch of %d internal events", self.name, len(works))
                self.counts["internal_errors"] += 1
                outcomes = [Outcome("", FAILED, retryable=True)] * len(works)
            for work, outcome in zip(works, outcomes):
                if isinstance(outcome, asyncio.Future):  # a dedicated lane's: the loop goes on meanwhile
                    outcome.add_done_callback(lambda done, work=work: self._internal_done(work, done.result()))
                else:
                    self._internal_done(work, outcome)

    def _internal_done(self, work: Work, outcome: Outcome) -> None:
        if work.timer is not None:
            self._firing.discard((work.key, work.timer))  # polled again if still due
        elif outcome.status == FAILED and outcome.retryable:  # an HTTP result not committed
            asyncio.get_running_loop().call_later(self.config.timer_poll_s, self._internal.put_nowait, work)

    async def _poll_timers(self) -> None:
        while True:
            try:
                due = await self.store.due_timers(list(self.owned), self.clock(), self.config.max_batch)
            except Exception as exc:  # noqa: BLE001 - the loop goes on; the store comes back
                log.warning("%s cannot read due timers: %r", self.name, exc)
                due = []
            for timer in due:
                mark = (timer.key, timer.timer_id)
                if mark in self._firing or _guarded_call(timer) in self._calls:
                    continue
                self._firing.add(mark)
                self._internal.put_nowait(Work(None, timer.key, timer.partition, None, _fired(timer), timer.timer_id))
            await asyncio.sleep(self.config.timer_poll_s)

    async def _upkeep(self) -> None:
        """Passivate idle conversations; expire old records from the store."""
        last_sweep = 0.0
        while True:
            await asyncio.sleep(min(self.config.idle_s / 4, 30.0))
            now = self.clock()
            async with self._lock:
                idle = [k for k, c in self.resident.items() if now - c.used_at > self.config.idle_s]
                for key in idle:
                    del self.resident[key]
            self.counts["passivated_idle"] += len(idle)
            if now - last_sweep >= self.config.sweep_s:
                try:
                    self.counts["expired"] += await self.store.sweep(now)
                    last_sweep = now
                except StoreError as exc:
                    log.warning("%s cannot sweep the store: %s", self.name, exc)


def guard_s(request: HttpRequest) -> float:
    """Longer than the call can take with its retries and backoff."""
    return request.timeout_s * (request.retries + 1) + 2.0 ** request.retries + 30.0


def _guarded_call(timer: Timer) -> str | None:
    return timer.timer_id[len(HTTP_GUARD):] if timer.timer_id.startswith(HTTP_GUARD) else None


def _fired(timer: Timer) -> Event:
    if timer.timer_id.startswith(HTTP_GUARD):
        return HttpResult(timer.timer_id[len(HTTP_GUARD):], error="the call was interrupted (its host restarted)")
    return TimerFired(timer.timer_id)
