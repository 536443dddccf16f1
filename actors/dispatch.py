"""The caller's side: route each inbound event to the host of its partition, in batches.

One :class:`Dispatcher` per calling process (the gateway, a test, the Python API). It caches
the router's partition table and keeps one lane per host. A lane sends one batch at a time:
while a batch is out, new events gather behind it and leave together as the next batch, so a
lane flushes at once when idle and batches under load. One batch in flight per lane is also
what keeps each conversation's events in the order :meth:`Dispatcher.send` was called: a Ray
async actor does not promise to run two calls from one caller in the order they were sent.

An event whose host answers :data:`~parlour.messages.MOVED` is routed again with a fresh
table. A host that cannot be reached (killed, restarting) makes its batch fail with a
retryable outcome: the channel's own retry sends the message again, and deduplication makes
that safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from parlour.messages import (
    FAILED,
    MOVED,
    Inbound,
    Outcome,
    PartitionTable,
    partition_of,
)
from ray.exceptions import RayError

log = logging.getLogger("parlour.dispatch")

TableFn = Callable[[], Awaitable[PartitionTable]]
DeliverFn = Callable[[str, list[Inbound]], Awaitable[list[Outcome]]]
"""Sends a batch to the host named by the first argument."""


class Dispatcher:
    def __init__(self, table: TableFn, deliver: DeliverFn, *, max_batch: int = 500, max_moves: int = 5):
        self._fetch_table = table
        self._deliver = deliver
        self.max_batch = max_batch
        self.max_moves = max_moves
        self.table: PartitionTable | None = None
        self._lanes: dict[str, _Lane] = {}
        self._unrouted: list[tuple[Inbound, asyncio.Future]] = []
        self._routing: asyncio.Task | None = None

    async def send(self, inbound: Inbound) -> Outcome:
        """Hand ``inbound`` to its conversation's host; its outcome once committed (or failed)."""
        for _ in range(self.max_moves):
            table = self.table
            outcome = await self._route(inbound)
            if outcome.status != MOVED:
                return outcome
            if table is not None and outcome.epoch is not None and outcome.epoch < table.epoch:
                await asyncio.sleep(0.05)  # the host has not caught up with the table yet
            elif self.table is table:
                self.table = None  # fetch the table again before routing anything else
        return Outcome(inbound.message_id, FAILED, error="the conversation's host kept moving", retryable=True)

    async def send_many(self, batch: list[Inbound]) -> list[Outcome]:
        """Send ``batch`` (in order per conversation); the outcomes in the same order."""
        return list(await asyncio.gather(*(self.send(inbound) for inbound in batch)))

    def _route(self, inbound: Inbound) -> asyncio.Future:
        """Put ``inbound`` in its host's lane, strictly in call order: while the table is
        being fetched, later events wait behind earlier ones instead of overtaking them."""
        future = asyncio.get_running_loop().create_future()
        if self.table is not None and not self._unrouted:
            self._lane_of(inbound).submit(inbound, future)
        else:
            self._unrouted.append((inbound, future))
            if self._routing is None or self._routing.done():
                self._routing = asyncio.ensure_future(self._route_waiting())
        return future

    async def _route_waiting(self) -> None:
        while self._unrouted:
            if self.table is None:
                try:
                    self.table = await self._fetch_table()
                except (RayError, ConnectionError, TimeoutError) as exc:
                    waiting, self._unrouted = self._unrouted, []
                    for inbound, future in waiting:
                        future.set_result(Outcome(inbound.message_id, FAILED, retryable=True,
                                                  error=f"the router is unavailable: {_short(exc)}"))
                    return
            waiting, self._unrouted = self._unrouted, []
            for inbound, future in waiting:
                self._lane_of(inbound).submit(inbound, future)

    def _lane_of(self, inbound: Inbound) -> _Lane:
        host = self.table.host_of(partition_of(inbound.key.id, self.table.partitions))
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(host, self._deliver, self.max_batch)
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
    """Events for one host: at most one batch in flight, the rest waiting in order."""

    def __init__(self, host: str, deliver: DeliverFn, max_batch: int):
        self.host = host
        self.deliver = deliver
        self.max_batch = max_batch
        self.waiting: list[tuple[Inbound, asyncio.Future]] = []
        self.in_flight: list[tuple[Inbound, asyncio.Future]] = []
        self.sender: asyncio.Task | None = None

    def submit(self, inbound: Inbound, future: asyncio.Future) -> None:
        self.waiting.append((inbound, future))
        if self.sender is None or self.sender.done():
            self.sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        await asyncio.sleep(0)  # let the sends of this loop iteration join the first batch
        while self.waiting:
            batch, self.waiting = self.waiting[:self.max_batch], self.waiting[self.max_batch:]
            self.in_flight = batch
            outcomes = await self._deliver_safely([inbound for inbound, _ in batch])
            self.in_flight = []
            for (_, future), outcome in zip(batch, outcomes):
                if not future.done():
                    future.set_result(outcome)

    async def _deliver_safely(self, batch: list[Inbound]) -> list[Outcome]:
        try:
            outcomes = await self.deliver(self.host, batch)
        except (RayError, ConnectionError, TimeoutError) as exc:
            log.warning("host %s failed a batch of %d: %s", self.host, len(batch), _short(exc))
            return [Outcome(i.message_id, FAILED, error=f"host {self.host} unavailable: {_short(exc)}",
                            retryable=True) for i in batch]
        if len(outcomes) != len(batch):
            raise RuntimeError(f"host {self.host} answered {len(outcomes)} outcomes for {len(batch)} events")
        return outcomes

    async def aclose(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
            await asyncio.gather(self.sender, return_exceptions=True)
        for _, future in [*self.in_flight, *self.waiting]:
            if not future.done():
                future.set_exception(ConnectionError("the dispatcher is closed"))
        self.waiting = self.in_flight = []


def _short(exc: Any) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300]
