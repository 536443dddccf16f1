"""A store in the process's memory: for unit tests and benchmarks of one host. Nothing
survives the process, and two processes never share one; use SQLite or Redis for that."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace

from .base import (
    LOG_KEEP,
    MAX_EXAMINE,
    Commit,
    DeadLetter,
    Fenced,
    FlowRecord,
    LogEntry,
    OutboxEntry,
    RecordFilter,
    RecordPage,
    Ticket,
    Timer,
    entry_numbers,
    log_cursor,
    take_page,
)


class MemoryStore:
    def __init__(self, url: str = "memory://", clock: Callable[[], float] = time.time):
        self.url = url
        self.clock = clock
        self._records: dict[str, tuple[bytes, float]] = {}
        self._fence: dict[int, int] = {}
        self._timers: dict[tuple[str, str], Timer] = {}
        self._outbox: dict[int, tuple[str, int, bytes]] = {}
        self._outbox_ids = itertools.count(1)
        self._dead: dict[int, DeadLetter] = {}
        self._dead_ids = itertools.count(1)
        self._replies: dict[tuple[str, str], tuple[bytes, float]] = {}  # in the order written
        self._flows: dict[tuple[str, str, str], FlowRecord] = {}
        self._meta: dict[str, bytes] = {}
        self._logs: dict[str, dict[int, tuple[bytes, float]]] = {}  # each in id order
        self._log_ids = itertools.count(1)
        self._tickets: dict[tuple[str, str], Ticket] = {}
        self.log_keep = LOG_KEEP

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def load(self, keys: Sequence[str]) -> dict[str, bytes]:
        out, now = {}, self.clock()
        for key in keys:
            found = self._records.get(key)
            if found is not None and found[1] > now:
                out[key] = found[0]
        return out

    async def conversations(self, tenant: str, after: str | None = None, limit: int = 100,
                            keep: RecordFilter | None = None, examine: int = MAX_EXAMINE) -> RecordPage:
        prefix, now = f"{tenant}/", self.clock()
        start = max(after or "", prefix)
        keys = sorted(k for k in self._records if k.startswith(prefix) and k > start)

        async def records() -> AsyncGenerator[tuple[str, str, bytes], None]:
            for key in keys:
                found = self._records.get(key)
                if found is not None and found[1] > now:
                    yield key, key, found[0]
        return await take_page(records(), limit, keep, examine)

    def _check(self, epochs: dict[int, int], *, exact: bool) -> None:
        stale = {}
        for partition, epoch in epochs.items():
            held = self._fence.get(partition, 0)
            if held > epoch or (exact and held != epoch):
                stale[partition] = held
        if stale:
            raise Fenced(stale)

    async def commit(self, commit: Commit) -> None:
        self._check(commit.fences, exact=True)
        for key, _partition, record, expires_at in commit.records:
            self._records[key] = (record, expires_at)
        for key, _partition, timer_id in commit.cancels:
            self._timers.pop((key, timer_id), None)
        for timer in commit.timers:
            self._timers[(timer.key, timer.timer_id)] = timer
        ids = self._outbox_ids
        self._outbox.update((next(ids), entry) for entry in commit.outbox)
        for key, message_id, data, expires_at in commit.replies:
            self._replies.pop((key, message_id), None)  # written again: it moves to the end
            self._replies[(key, message_id)] = (data, expires_at)
        for log, data, expires_at in commit.logs:
            self._logs.setdefault(log, {})[next(self._log_ids)] = (data, expires_at)
        for ticket in commit.tickets:
            self._tickets[(ticket.tenant, ticket.id)] = ticket

    async def claim(self, epochs: dict[int, int]) -> None:
        self._check(epochs, exact=False)
        self._fence.update(epochs)

    async def fences(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self._fence.get(p, 0) for p in partitions}

    async def due_timers(self, partitions: Sequence[int], until: float, limit: int) -> list[Timer]:
        wanted = set(partitions)
        due = (t for t in self._timers.values() if t.due_at <= until and t.partition in wanted)
        return heapq.nsmallest(limit, due, key=lambda t: (t.due_at, t.key, t.timer_id))

    async def reply(self, key: str, message_id: str) -> bytes | None:
        found = self._replies.get((key, message_id))
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    async def replied(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        now = self.clock()
        return {pair for pair in pairs if (found := self._replies.get(pair)) is not None and found[1] > now}

    async def recent(self, key: str, limit: int = 10) -> list[tuple[str, bytes, float]]:
        """Scans the kept replies: the memory store is for tests, not for big stores."""
        now = self.clock()
        kept = ((message_id, data, expires_at) for (k, message_id), (data, expires_at)
                in reversed(self._replies.items()) if k == key and expires_at > now)
        return list(itertools.islice(kept, max(limit, 0)))

    async def sweep(self, now: float) -> int:
        gone = [k for k, (_, expires_at) in self._records.items() if expires_at <= now]
        for key in gone:
            del self._records[key]
        old = [k for k, (_, expires_at) in self._replies.items() if expires_at <= now]
        for pair in old:
            del self._replies[pair]
        return len(gone) + len(old) + self._sweep_logs(now) + self._sweep_tickets(now)

    def _sweep_logs(self, now: float) -> int:
        dropped = 0
        for log, entries in list(self._logs.items()):
            ids = list(entries)
            stale = ids[:max(len(ids) - self.log_keep, 0)] + [i for i in ids[-self.log_keep:] if entries[i][1] <= now]
            for entry_id in stale:
                del entries[entry_id]
            dropped += len(stale)
            if not entries:
                del self._logs[log]
        return dropped

    def _sweep_tickets(self, now: float) -> int:
        gone = [k for k, t in self._tickets.items() if t.expires_at <= now]
        for key in gone:
            del self._tickets[key]
        return len(gone)

    async def read_log(self, log: str, after: str | None = None, limit: int = 100) -> list[LogEntry]:
        start, now = log_cursor(after), self.clock()
        entries = self._logs.get(log, {})
        found = (LogEntry(f"{i:020d}", data) for i, (data, expires_at) in entries.items()
                 if i > start and expires_at > now)
        return list(itertools.islice(found, max(limit, 0)))

    async def tail_log(self, log: str, limit: int) -> list[LogEntry]:
        now = self.clock()
        entries = self._logs.get(log, {})
        found = [LogEntry(f"{i:020d}", data) for i, (data, expires_at) in entries.items() if expires_at > now]
        return found[-limit:] if limit > 0 else []

    async def trim_log(self, log: str, upto: str) -> int:
        end = log_cursor(upto)
        entries = self._logs.get(log, {})
        done = [i for i in entries if i <= end]
        for entry_id in done:
            del entries[entry_id]
        return len(done)

    async def tickets(self, tenant: str, status: str | None = None, queue: str | None = None,
                      after: str | None = None, limit: int = 50) -> list[Ticket]:
        now = self.clock()
        found = sorted((t for (owner, ticket_id), t in self._tickets.items()
                        if owner == tenant and (after is None or ticket_id > after) and t.expires_at > now
                        and (status is None or t.status == status) and (queue is None or t.queue == queue)),
                       key=lambda t: t.id)
        return found[:max(limit, 0)]

    async def ticket(self, tenant: str, ticket_id: str) -> Ticket | None:
        found = self._tickets.get((tenant, ticket_id))
        return found if found is not None and found.expires_at > self.clock() else None

    async def read_outbox(self, after: str | None, limit: int) -> list[OutboxEntry]:
        start = int(after) if after else 0
        ids = sorted(i for i in self._outbox if i > start)[:limit]
        return [OutboxEntry(f"{i:020d}", *self._outbox[i]) for i in ids]

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            self._outbox.pop(int(entry_id), None)

    async def bury(self, entry: OutboxEntry, reason: str, attempts: int, at: float) -> None:
        if self._outbox.pop(int(entry.id), None) is not None:
            n = next(self._dead_ids)
            self._dead[n] = DeadLetter(f"{n:020d}", entry.key, entry.seq, entry.data, reason, attempts, at)

    async def dead_letters(self, after: str | None = None, limit: int = 100) -> list[DeadLetter]:
        start = int(after) if after else 0
        return [self._dead[i] for i in sorted(i for i in self._dead if i > start)[:max(limit, 0)]]

    async def revive(self, ids: Sequence[str]) -> int:
        revived = [self._dead.pop(n) for n in entry_numbers(ids) if n in self._dead]
        self._outbox.update((next(self._outbox_ids), (d.key, d.seq, d.data)) for d in revived)
        return len(revived)

    async def drop_dead(self, ids: Sequence[str]) -> int:
        return sum(self._dead.pop(n, None) is not None for n in entry_numbers(ids))

    async def put_flow(self, record: FlowRecord) -> None:
        key = (record.tenant, record.flow, record.version)
        if record.current:
            for other_key, other in self._flows.items():
                if other_key[:2] == key[:2] and other.current:
                    self._flows[other_key] = replace(other, current=False)
        old = self._flows.get(key)
        if old is not None:
            record = replace(old, current=record.current or old.current)
        self._flows[key] = record

    async def flows(self, tenant: str | None = None) -> list[FlowRecord]:
        found = [r for r in self._flows.values() if tenant is None or r.tenant == tenant]
        return sorted(found, key=lambda r: (r.tenant, r.flow, r.created_at, r.version))

    async def delete_flow(self, tenant: str, flow: str) -> int:
        gone = [k for k in self._flows if k[:2] == (tenant, flow)]
        for k in gone:
            del self._flows[k]
        return len(gone)

    async def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    async def put_meta(self, name: str, value: bytes) -> None:
        self._meta[name] = value

    async def add_meta(self, name: str, value: bytes) -> bytes:
        return self._meta.setdefault(name, value)
