"""The caller's side: route each inbound event to the host of its partition, in batches.

One :class:`Dispatcher` per calling process (the gateway, a test, the Python API). It caches
the router's partition table and keeps one lane per host. A lane flushes at once when idle
and batches under load: while its batches are out (two at most), new events gather and leave
together as the next batch. A conversation is in one batch in flight at most, which is what
keeps its events in the order :meth:`Dispatcher.send` was called: a Ray async actor does not
promise to run two calls from one caller in the order they were sent (the order test of
tests/actors fails when two batches may carry one conversation).

An event whose host answers :data:`~parlour.messages.MOVED` is routed again with a fresh
table. A host that cannot be reached (killed, restarting) makes its batch fail with a
retryable outcome: the channel's own retry sends the message again, and deduplication makes
that safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parlour.messages import (
    FAILED,
    MOVED,
    Inbound,
    Outcome,
    PartitionTable,
    partition_of,
)

log = logging.getLogger("parlour.dispatch")

TableFn = Callable[[], Awaitable[PartitionTable]]
DeliverFn = Callable[[str, list[Inbound]], Awaitable[list[Outcome]]]
"""Sends a batch to the host named by the first argument."""


class Dispatcher:
    def __init__(self, table: TableFn, deliver: DeliverFn, *, max_batch: int = 500, max_moves: int = 5,
                 timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self._fetch_table = table
        self._deliver = deliver
        self.max_batch = max_batch
        self.max_moves = max_moves
        self.table: PartitionTable | None = None
        self._lanes: dict[str, _Lane] = {}
        self._unrouted: list[tuple[Inbound, asyncio.Future]] = []
        self._routing: asyncio.Task | None = None

    async def send(self, inbound: Inbound) -> Outcome:
        """Hand ``inbound`` to its conversation's host; its outcome once committed (or failed).
        The same as ``send_many([inbound])``, without its bookkeeping: this is the gateway's
        path, once per message."""
        for attempt in range(self.max_moves):
            table = self.table
            future = self._route(inbound)
            try:
                async with asyncio.timeout(self.timeout_s):
                    outcome = await future
            except TimeoutError:
                log.error("an event got no outcome within %g s", self.timeout_s)
                return Outcome(inbound.message_id, FAILED, retryable=True,
                               error=f"no outcome within {self.timeout_s:g} s")
            if outcome.status != MOVED:
                return outcome
            if self.table is table:
                self.table = None
            await asyncio.sleep(0.05 * attempt)
        return Outcome(inbound.message_id, FAILED, retryable=True, error="the conversation's host kept moving")

    async def send_many(self, batch: list[Inbound]) -> list[Outcome]:
        """Send ``batch`` (in order per conversation); the outcomes in the same order. Events
        whose host answers ``moved`` are routed again with a fresh table."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        for attempt in range(self.max_moves):
            table = self.table
            results = await self._outcomes([self._route(batch[i]) for i in pending])
            moved = []
            for index, outcome in zip(pending, results, strict=True):
                if outcome is None:  # never leave a caller hanging, whatever went wrong below
                    outcome = Outcome(batch[index].message_id, FAILED, retryable=True,
                                      error=f"no outcome within {self.timeout_s:g} s")
                if outcome.status == MOVED:
                    moved.append(index)
                else:
                    outcomes[index] = outcome
            if not moved:
                return _filled(outcomes)
            if self.table is table:
                self.table = None  # fetch the table again before routing anything else
            pending = moved
            await asyncio.sleep(0.05 * attempt)  # a restarted host may not have claimed yet
        for index in pending:
            outcomes[index] = Outcome(batch[index].message_id, FAILED, retryable=True,
                                      error="the conversation's host kept moving")
        return _filled(outcomes)

    async def _outcomes(self, futures: list[asyncio.Future]) -> list[Outcome | None]:
        """The futures' outcomes; None for any still unresolved after ``timeout_s``."""
        if not futures:
            return []
        done, _ = await asyncio.wait(futures, timeout=self.timeout_s)
        if len(done) < len(futures):
            log.error("%d events got no outcome within %g s", len(futures) - len(done), self.timeout_s)
        return [f.result() if f.done() and not f.cancelled() else None for f in futures]

    def _route(self, inbound: Inbound) -> asyncio.Future:
        """Put ``inbound`` in its host's lane, strictly in call order: while the table is
        being fetched, later events wait behind earlier ones instead of overtaking them."""
        future = asyncio.get_running_loop().create_future()
        if self.table is not None and not self._unrouted:
            self._lane_of(self.table, inbound).submit(inbound, future)
        else:
            self._unrouted.append((inbound, future))
            if self._routing is None or self._routing.done():
                self._routing = asyncio.ensure_future(self._route_waiting())
        return future

    async def _route_waiting(self) -> None:
        while self._unrouted:
            if self.table is None:
                try:
                    self.table = await asyncio.wait_for(self._fetch_table(), self.timeout_s / 2)
                except (ConnectionError, TimeoutError) as exc:  # Unavailable is a ConnectionError
                    waiting, self._unrouted = self._unrouted, []
                    for inbound, future in waiting:
                        future.set_result(Outcome(inbound.message_id, FAILED, retryable=True,
                                                  error=f"the router is unavailable: {_short(exc)}"))
                    return
            waiting, self._unrouted = self._unrouted, []
            for inbound, future in waiting:
                self._lane_of(self.table, inbound).submit(inbound, future)

    def _lane_of(self, table: PartitionTable, inbound: Inbound) -> _Lane:
        host = table.host_of(partition_of(inbound.key.id, table.partitions))
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(host, self._deliver, self.max_batch, call_timeout_s=self.timeout_s / 2)
        return lane

    async def aclose(self) -> None:
        if self._routing is not None:
            self._routing.cancel()
        for _, future in self._unrouted:
            if not future.done():
                future.set_exception(ConnectionError("the dispatcher is closed"))
        for lane in self._lanes.values():
            await lane.aclose()


class _Lane:
    """Events for one host, in order. Up to ``max_in_flight`` batches are out at once, but a
    conversation is in at most one of them: its later events wait for the batch that holds
    its earlier ones, so no reordering by Ray can reorder a conversation."""

    def __init__(self, host: str, deliver: DeliverFn, max_batch: int, max_in_flight: int = 4,
                 call_timeout_s: float = 30.0):
        self.call_timeout_s = call_timeout_s
        self.host = host
        self.deliver = deliver
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.waiting: list[tuple[Inbound, asyncio.Future]] = []
        self.busy: dict[str, int] = {}  # conversation key -> its events in flight
        self.senders: set[asyncio.Task] = set()
        self.scheduled = False
        self.closed = False

    def submit(self, inbound: Inbound, future: asyncio.Future) -> None:
        self.waiting.append((inbound, future))
        if not self.scheduled:
            self.scheduled = True
            # the sends of this loop iteration leave together
            asyncio.get_running_loop().call_soon(self._launch)

    def _launch(self) -> None:
        self.scheduled = False
        while not self.closed and self.waiting and len(self.senders) < self.max_in_flight:
            batch = self._take()
            if not batch:
                return
            sender = asyncio.ensure_future(self._send(batch))
            self.senders.add(sender)
            sender.add_done_callback(self.senders.discard)

    def _take(self) -> list[tuple[Inbound, asyncio.Future]]:
        """The next batch: waiting events, in order, of conversations not in flight. Once a
        conversation's event stays behind, so do its later ones."""
        batch: list[tuple[Inbound, asyncio.Future]] = []
        kept, held = [], set()
        for at, item in enumerate(self.waiting):
            if len(batch) == self.max_batch:
                kept += self.waiting[at:]
                break
            key = item[0].key.id
            if key not in self.busy and key not in held:
                batch.append(item)
            else:
                held.add(key)
                kept.append(item)
        for inbound, _ in batch:
            self.busy[inbound.key.id] = self.busy.get(inbound.key.id, 0) + 1
        self.waiting = kept
        return batch

    async def _send(self, batch: list[tuple[Inbound, asyncio.Future]]) -> None:
        outcomes: Sequence[Outcome | BaseException]
        try:
            outcomes = await self._deliver_safely([inbound for inbound, _ in batch])
        except asyncio.CancelledError:
            if self.closed:
                outcomes = [ConnectionError("the dispatcher is closed")] * len(batch)
            else:  # cancelled from outside while the lane is open: the batch failed, retryably
                outcomes = [Outcome(i.message_id, FAILED, error=f"host {self.host}: the call was cancelled",
                                    retryable=True) for i, _ in batch]
        except Exception as exc:  # noqa: BLE001 - every waiting sender must hear of it
            outcomes = [exc] * len(batch)
        for inbound, _ in batch:
            key = inbound.key.id
            if self.busy[key] == 1:
                del self.busy[key]
            else:
                self.busy[key] -= 1
        failed = _answer(batch, outcomes)
        if failed:
            self._fail_followers(failed)
        self.senders.discard(asyncio.current_task())  # before its done-callback, or no one launches
        self._launch()

    def _fail_followers(self, keys: set[str]) -> None:
        """Events sent after one that failed must not overtake its resend: they fail too."""
        kept = []
        for inbound, future in self.waiting:
            if inbound.key.id not in keys:
                kept.append((inbound, future))
            elif not future.done():
                future.set_result(Outcome(inbound.message_id, FAILED, retryable=True,
                                          error="an earlier message of this conversation failed; send both again"))
        self.waiting = kept

    async def _deliver_safely(self, batch: list[Inbound]) -> list[Outcome]:
        try:
            outcomes = await asyncio.wait_for(self.deliver(self.host, batch), self.call_timeout_s)
        except (ConnectionError, TimeoutError) as exc:  # Unavailable is a ConnectionError
            log.warning("host %s failed a batch of %d: %s", self.host, len(batch), _short(exc))
            return [Outcome(i.message_id, FAILED, error=f"host {self.host} unavailable: {_short(exc)}",
                            retryable=True) for i in batch]
        if len(outcomes) != len(batch):
            raise RuntimeError(f"host {self.host} answered {len(outcomes)} outcomes for {len(batch)} events")
        return outcomes

    async def aclose(self) -> None:
        self.closed = True
        for sender in list(self.senders):
            sender.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        for _, future in self.waiting:
            if not future.done():
                future.set_exception(ConnectionError("the dispatcher is closed"))
        self.waiting = []


def _short(exc: Any) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300]


def _answer(batch: list[tuple[Inbound, asyncio.Future]], outcomes: Sequence[Outcome | BaseException]) -> set[str]:
    """Settle each sender's future; the conversations whose event failed retryably."""
    failed = set()
    for (inbound, future), outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Outcome) and outcome.status == FAILED and outcome.retryable:
            failed.add(inbound.key.id)
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    return failed


def _filled(outcomes: list[Outcome | None]) -> list[Outcome]:
    """``outcomes`` once each has been set (a slot left empty would be a defect: it fails, retryably)."""
    return [o if o is not None else Outcome("", FAILED, retryable=True, error="no outcome") for o in outcomes]
