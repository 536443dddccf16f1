"""Dedicated conversations' turns, outside the host's batches.

A turn of an ``isolation: dedicated`` conversation runs in a process of its own, which may
take a second to start: run inside a batch, it would hold every other conversation of the
host (the batch lock) for that second. So a batch only decides that a conversation is
dedicated, and after its commit hands the conversation's events to a *lane*: a task of that
conversation alone, which runs them in its process (:class:`~parlour.actors.dedicated.DedicatedPool`),
commits what they did with a commit of its own, and settles their outcomes. The guarantees
hold as in a batch:

- one turn at a time, in order: while a conversation has a lane, every later event of it goes
  to the back of that lane (decided before the batch awaits anything), never to a batch; the
  lane ends only once it has nothing queued, and gives the record it committed back to the
  host's resident conversations;
- committed before acknowledged, exactly once: an outcome is settled after the lane's commit,
  which carries the record (and its dedup window), the outbox, the timers and the replies,
  fenced by the partition's epoch like a batch's.

A conversation over a cap of the pool is not handed out: its events fail, retryably, with the
reason, and its state does not move.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, TypeGuard

from parlour.messages import FAILED, MOVED, Outcome
from parlour.store import Fenced, StoreError

from .background import Work
from .conversation import Conversation, Step
from .dedicated import DedicatedPool, DedicatedRefused
from .tickets import settle
from .writes import Written

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger("parlour.host")

Queued = tuple[Work, asyncio.Future]


def _all_settled(outcomes: list[Outcome | asyncio.Future]) -> TypeGuard[list[Outcome]]:
    return not any(isinstance(o, asyncio.Future) for o in outcomes)


async def settled(outcomes: list[Outcome | asyncio.Future]) -> list[Outcome]:
    """``outcomes`` with each future (a lane's) awaited."""
    if _all_settled(outcomes):
        return outcomes
    return [await o if isinstance(o, asyncio.Future) else o for o in outcomes]


class Lanes:
    """The lanes of one :class:`~parlour.actors.host.Host`'s dedicated conversations, run in
    ``pool``'s processes."""

    def __init__(self, host: Host, pool: DedicatedPool):
        self.host = host
        self.pool = pool
        self._lanes: dict[str, tuple[deque[Queued], asyncio.Task]] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    def tasks(self) -> list[asyncio.Task]:
        return [task for _, task in self._lanes.values()]

    async def finished(self, key: str) -> None:
        """Once ``key``'s lane, if it has one, has run everything queued to it."""
        if key in self._lanes:
            await asyncio.shield(self._lanes[key][1])

    async def run_beside(self, works: list[Work]) -> list[Outcome | asyncio.Future]:
        """Events of conversations that have a lane join it; the others run as a batch."""
        queued = self._to_lanes(works)  # before any await: a lane ends only when it has nothing queued
        if not queued:
            return await self.host.run_locked(works)
        rest = [w for w in works if id(w) not in queued]
        done = dict(zip(map(id, rest), await self.host.run_locked(rest) if rest else [], strict=True))
        return [queued[id(w)] if id(w) in queued else done[id(w)] for w in works]

    def _to_lanes(self, works: list[Work]) -> dict[int, asyncio.Future]:
        queued = {}
        for work in works:
            lane = self._lanes.get(work.key)
            if lane is not None:
                queued[id(work)] = future = asyncio.get_running_loop().create_future()
                lane[0].append((work, future))
        return queued

    def hand_out(self, handed: dict[str, tuple[list[Work], bytes | None]]) -> dict[int, Outcome | asyncio.Future]:
        """Give each dedicated conversation of a committed batch a lane, if a cap allows."""
        outcomes: dict[int, Outcome | asyncio.Future] = {}
        for key, (group, record) in handed.items():
            reason = self.pool.admit(key.split("/", 1)[0], key)
            if reason is not None:
                log.warning("dedicated conversation %s refused: %s", key, reason)
                for work in group:
                    outcomes[id(work)] = Outcome(work.message_id or "", FAILED, error=reason, retryable=True)
                continue
            queue: deque[Queued] = deque()
            for work in group:
                outcomes[id(work)] = future = asyncio.get_running_loop().create_future()
                queue.append((work, future))
            self.host.resident.pop(key, None)  # the lane holds it now
            self._lanes[key] = (queue, asyncio.create_task(self._lane(key, record)))
        return outcomes

    async def _lane(self, key: str, record: bytes | None) -> None:
        host = self.host
        queue, known = self._lanes[key][0], True
        taken: list[Queued] = []
        try:
            while queue:
                taken = list(queue)
                queue.clear()
                record, known = await self._lane_turns(key, record if known else await self._reload(key), taken)
        except Exception:  # noqa: BLE001 - a defect fails this conversation's events, retryably
            log.exception("the lane of %s failed", key)
            known = False
        finally:
            del self._lanes[key]
            for work, future in [*taken, *queue]:
                if not future.done():
                    future.set_result(Outcome(work.message_id or "", FAILED, retryable=True,
                                              error="the dedicated conversation's lane stopped"))
            partition = taken[0][0].partition if taken else None
            if known and record is not None and partition is not None and partition in host.owned:
                host.resident[key] = Conversation(key, partition, record, host.clock())

    async def _reload(self, key: str) -> bytes | None:
        record = (await self.host.store.load([key])).get(key)
        return self.host.open(key, record).source

    async def _lane_turns(self, key: str, record: bytes | None, taken: list[Queued]) -> tuple[bytes | None, bool]:
        """Run ``taken`` in ``key``'s process and commit; the record now held, and whether it
        is known to be the store's."""
        host = self.host
        owned = self._owned(taken)
        if not owned:
            return record, True
        group, now = [w for w, _ in owned], host.clock()
        try:
            replayed = await host.replayed({key: group}, {key: record})
        except StoreError as exc:
            return self._settle(owned, (record, True), error=f"store: {exc}", retryable=True)
        try:
            new, steps = await self._run(key, record, group, replayed, now)
            written = self._written(key, group, steps, new, now)
        except DedicatedRefused as exc:
            return self._settle(owned, (record, True), error=exc.reason, retryable=True)
        except Fenced:
            return self._settle(owned, (None, False), moved=True)
        except Exception as exc:  # noqa: BLE001 - as a batch: this conversation's turns failed
            log.exception("dedicated turns of %s failed (requests %s)", key, ", ".join(str(w.trace) for w in group))
            host.counts["turn_errors"] += 1
            return self._settle(owned, (record, True), error=f"the turn failed: {type(exc).__name__}: {exc}")
        host.counts["dedicated_turns"] += len(group)
        return await self._commit(owned, steps, written, new if new is not None else record, now)

    def _owned(self, taken: list[Queued]) -> list[Queued]:
        """The events of ``taken`` whose partition this host still owns; the others are moved."""
        owned = []
        for work, future in taken:
            if work.partition in self.host.owned:
                owned.append((work, future))
            else:
                future.set_result(Outcome(work.message_id or "", MOVED, epoch=self.host.epoch))
        return owned

    def _written(self, key: str, group: list[Work], steps: list[Step], new: bytes | None, now: float) -> Written:
        if (epoch := self.host.owned.get(group[0].partition)) is None:
            raise Fenced({group[0].partition: self.host.epoch})
        written = Written()
        written.pending = self.host.writes.turns(written.commit, written.calls, key, group, steps, new, now, epoch)
        return written

    async def _commit(self, owned: list[Queued], steps: list[Step], written: Written, record: bytes | None,
                      now: float) -> tuple[bytes | None, bool]:
        """Commit the lane's turns, then settle their outcomes and start their calls."""
        host = self.host
        try:
            if written.pending:
                await settle(host.store, written.commit, written.pending, host.config.tickets, now)
            if written.commit:
                await host.store.commit(written.commit)
        except Fenced as exc:
            host.lose(exc.epochs)
            return self._settle(owned, (None, False), moved=True)
        except StoreError as exc:  # it may have landed: read the store again before going on
            return self._settle(owned, (None, False), error=f"store: {exc}", retryable=True)
        for (work, future), step in zip(owned, steps, strict=True):
            future.set_result(host.outcome(work, step))
        for call_key, partition, request in written.calls:
            host.background.call(call_key, partition, request)
        return record, True

    async def _run(self, key: str, record: bytes | None, group: list[Work], replayed: set[tuple[str, str]],
                   now: float) -> tuple[bytes | None, list[Step]]:
        """``group``'s turns in ``key``'s process; a replayed message runs nothing there."""
        new, ran = await self.pool.run(key.split("/", 1)[0], key, record,
                                       [(w.message_id, w.event, w.sent_at) for w in group
                                        if (key, w.message_id) not in replayed], now)
        steps = iter(ran)
        return new, [Step(w.message_id, duplicate=True) if (key, w.message_id) in replayed else next(steps)
                     for w in group]

    def _settle(self, owned: list[Queued], held: tuple[bytes | None, bool], *, error: str | None = None,
                retryable: bool = False, moved: bool = False) -> tuple[bytes | None, bool]:
        """Fail (or move) ``owned``'s events; ``held`` is what :meth:`_lane_turns` returns."""
        for work, future in owned:
            future.set_result(Outcome(work.message_id or "", MOVED, epoch=self.host.epoch) if moved else
                              Outcome(work.message_id or "", FAILED, error=error, retryable=retryable))
        return held
