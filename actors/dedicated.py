"""The dedicated conversations of one host: a process each, capped, retired when idle.

A flow with ``isolation: dedicated`` runs each of its conversations in a process of its own
(a Ray actor, made by :mod:`parlour.actors.remote`). A process costs ~90 MB and ~1 s to start,
and anyone on the internet can open a conversation, so the host holds at most
``max_actors`` of them (:class:`DedicatedCaps`, its share of the node's), and at most
``max_per_tenant`` (or the tenant's own figure in ``per_tenant``) for one tenant. A
conversation over a cap is refused:
:meth:`DedicatedPool.admit` says why, the host answers its message as a retryable failure
(the web channel's 503 with ``Retry-After``; a messaging channel retries on its own), and the
conversation's state does not move. A process unused for ``idle_s`` is retired by
the pool's own loop (:meth:`DedicatedPool.run_reaper`), which frees its slot; its state is in
the store, so the conversation's next message starts a new one.

This module knows nothing of Ray: ``spawn`` makes a :class:`Runner` for a conversation key.

>>> pool = DedicatedPool(spawn, DedicatedCaps(max_actors=4, max_per_tenant=2), clock=time.time)
>>> pool.admit("acme", "acme/web/u1")            # None: admitted; else the reason it is not
>>> record, steps = await pool.run("acme", "acme/web/u1", record, events, now)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from parlour.errors import ParlourError

from .conversation import Arrival, Step

log = logging.getLogger("parlour.dedicated")


class Runner(Protocol):
    """One dedicated conversation's process."""

    async def run(self, tenant: str, key: str, record: bytes | None, events: list[Arrival],
                  now: float) -> tuple[bytes | None, list[Step]]: ...

    def kill(self) -> None: ...


Spawn = Callable[[str], Runner]
"""Starts the process of the conversation ``key`` (without waiting for it to be up)."""


class DedicatedRefused(ParlourError):
    """A dedicated conversation cannot have a process now: a cap is reached (``reason``)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class DedicatedCaps:
    """How many dedicated processes a host runs: ``max_actors`` in all, ``max_per_tenant`` for
    one tenant unless ``per_tenant`` names its own figure; one unused for ``idle_s`` retires,
    and one whose turns run past ``turn_timeout_s`` is ended (its events fail)."""

    max_actors: int = 4
    max_per_tenant: int = 2
    per_tenant: Mapping[str, int] | None = None
    idle_s: float = 120.0
    turn_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_actors < 0 or self.max_per_tenant < 0 or any(v < 0 for v in (self.per_tenant or {}).values()):
            raise ParlourError("dedicated caps are counts of processes, 0 or more")
        if self.idle_s <= 0 or self.turn_timeout_s <= 0:
            raise ParlourError(f"dedicated idle_s and turn_timeout_s must be positive, got {self.idle_s}, "
                               f"{self.turn_timeout_s}")

    def of(self, tenant: str) -> int:
        return (self.per_tenant or {}).get(tenant, self.max_per_tenant)

    def share(self, index: int, hosts: int) -> DedicatedCaps:
        """Host ``index`` of ``hosts``' part of these caps: together the hosts never exceed
        them (the first ``cap % hosts`` hosts take one more). A conversation runs on the host
        of its partition, so with more hosts a tenant may meet its cap on one host earlier."""

        def part(cap: int) -> int:
            return cap // hosts + (index < cap % hosts)

        return DedicatedCaps(part(self.max_actors), part(self.max_per_tenant),
                             {t: part(c) for t, c in (self.per_tenant or {}).items()}, self.idle_s, self.turn_timeout_s)


class _Slot:
    __slots__ = ("busy", "runner", "tenant", "used_at")

    def __init__(self, tenant: str, used_at: float):
        self.tenant, self.used_at, self.busy = tenant, used_at, 0
        self.runner: Runner | None = None


class DedicatedPool:
    def __init__(self, spawn: Spawn, caps: DedicatedCaps, clock: Callable[[], float] = time.time):
        self.spawn = spawn
        self.caps = caps
        self.clock = clock
        self.slots: dict[str, _Slot] = {}
        self.tenants: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def admit(self, tenant: str, key: str) -> str | None:
        """Hold a slot for ``key`` (kept if it has one); None, or why it cannot have one."""
        if key in self.slots:
            return None
        if self.tenants[tenant] >= self.caps.of(tenant):
            self.counts["dedicated_refused"] += 1
            return (f"tenant {tenant!r} runs its maximum of {self.caps.of(tenant)} dedicated conversations; "
                    "try again later")
        if len(self.slots) >= self.caps.max_actors:
            self.counts["dedicated_refused"] += 1
            return f"this node runs its maximum of {self.caps.max_actors} dedicated conversations; try again later"
        self.slots[key] = _Slot(tenant, self.clock())
        self.tenants[tenant] += 1
        return None

    async def run(self, tenant: str, key: str, record: bytes | None, events: list[Arrival],
                  now: float) -> tuple[bytes | None, list[Step]]:
        """Run ``events`` in ``key``'s process (started now if it has none); ``key`` must have
        been admitted. A process that fails is dropped, and its slot with it."""
        if (reason := self.admit(tenant, key)) is not None:  # retired since it was admitted
            raise DedicatedRefused(reason)
        slot = self.slots[key]
        if slot.runner is None:
            slot.runner = self.spawn(key)
            self.counts["dedicated_started"] += 1
        slot.busy += 1
        try:
            return await asyncio.wait_for(slot.runner.run(tenant, key, record, events, now), self.caps.turn_timeout_s)
        except TimeoutError:  # a runaway turn: its process goes, so that its lane (and slot) do not stay taken
            self._drop(key)
            self.counts["dedicated_timeouts"] += 1
            raise ParlourError(f"the dedicated turn ran past {self.caps.turn_timeout_s:g} s; "
                               "its process was ended") from None
        except Exception:
            self._drop(key)
            raise
        finally:
            slot.busy -= 1
            slot.used_at = self.clock()

    def retire_idle(self) -> int:
        """Retire the processes unused for ``idle_s`` (none in the middle of a turn); how many."""
        cutoff = self.clock() - self.caps.idle_s
        idle = [k for k, s in self.slots.items() if not s.busy and s.used_at <= cutoff]
        for key in idle:
            self._drop(key)
        self.counts["dedicated_retired"] += len(idle)
        return len(idle)

    async def run_reaper(self, every_s: float) -> None:
        """Retire idle processes every ``every_s``, on its own: no new message is needed."""
        while True:
            await asyncio.sleep(every_s)
            try:
                self.retire_idle()
            except Exception:  # noqa: BLE001 - a process that will not die must not stop the loop
                log.exception("retiring idle dedicated conversations failed")

    def runners(self) -> list[Runner]:
        return [s.runner for s in self.slots.values() if s.runner is not None]

    def stop(self) -> None:
        for key in list(self.slots):
            self._drop(key)

    def _drop(self, key: str) -> None:
        slot = self.slots.pop(key, None)
        if slot is None:
            return
        self.tenants[slot.tenant] -= 1
        if not self.tenants[slot.tenant]:
            del self.tenants[slot.tenant]
        if slot.runner is not None:
            slot.runner.kill()
