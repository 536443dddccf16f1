"""A store in one SQLite file: the embedded default, durable on one machine.

The schema (``PRAGMA user_version`` is :data:`SCHEMA_VERSION`)::

    conversations  key PK, partition, record BLOB, expires_at    index on expires_at (sweep)
    fences         partition PK, epoch
    timers         (key, timer_id) PK, partition, due_at         index on (partition, due_at)
    outbox         id PK AUTOINCREMENT, key, seq, data BLOB       ids never reused: a safe cursor
    dead           id PK AUTOINCREMENT, key, seq, data BLOB, reason, attempts, failed_at
    replies        (key, message_id) PK, data BLOB, expires_at   index on expires_at (sweep),
                                                                  on key (recent, by rowid)
    flows          (tenant, flow, version) PK, source, path, created_at, current
    meta           name PK, value BLOB
    logs           id PK AUTOINCREMENT, log, data BLOB, expires_at   index on (log, id), expires_at
    tickets        (tenant, id) PK, key, status, queue, updated_at, data BLOB, expires_at
                                                                  index on expires_at (sweep)

Why it looks like this:

- **One thread.** ``sqlite3`` blocks, so every call runs in a single-thread executor owned by the
  store, which creates, uses and closes the one connection: the event loop never waits on disk,
  and calls are applied in the order they were made.
- **One transaction per call.** Each store method is one hop to that thread and one transaction:
  writes ``BEGIN IMMEDIATE`` (the file's write lock is taken up front, so the fence is checked
  under the same lock as the writes it guards, even against other processes), reads a deferred
  one (a consistent snapshot). Any error rolls the whole of it back.
- **WAL.** Readers (here or in another process) do not block the writer, nor it them.
- **synchronous=FULL**, see :data:`_PRAGMAS`.
- **New indexes keep the schema version.** ``CREATE INDEX IF NOT EXISTS`` adds one to an existing
  file when it opens (``replies_recent`` came after version 1), and older code works with it, so
  the version moves only for changes older code cannot read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
    StoreError,
    StoreUnavailable,
    Ticket,
    Timer,
    entry_numbers,
    log_cursor,
    take_page,
)

SCHEMA_VERSION = 1

_T = TypeVar("_T")

_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",  # first, so the pragmas below wait for other processes' locks
    "PRAGMA journal_mode = WAL",
    # FULL fsyncs the WAL at every commit, so an acknowledged commit survives even an OS crash or
    # power loss. (In WAL mode NORMAL would already survive a killed process; FULL is the safe
    # choice, and its one fsync per commit is shared by the batch of turns a commit carries.)
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = OFF",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (key TEXT PRIMARY KEY, partition INTEGER NOT NULL,
        record BLOB NOT NULL, expires_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at)",
    "CREATE TABLE IF NOT EXISTS fences (partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS timers (key TEXT NOT NULL, timer_id TEXT NOT NULL,
        partition INTEGER NOT NULL, due_at REAL NOT NULL, PRIMARY KEY (key, timer_id))""",
    "CREATE INDEX IF NOT EXISTS timers_due ON timers (partition, due_at)",
    """CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
        seq INTEGER NOT NULL, data BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
        seq INTEGER NOT NULL, data BLOB NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
        failed_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS replies (key TEXT NOT NULL, message_id TEXT NOT NULL,
        data BLOB NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (key, message_id))""",
    "CREATE INDEX IF NOT EXISTS replies_expiry ON replies (expires_at)",
    # An index ends with the rowid, so this one serves recent()'s ORDER BY rowid as well.
    "CREATE INDEX IF NOT EXISTS replies_recent ON replies (key)",
    """CREATE TABLE IF NOT EXISTS flows (tenant TEXT NOT NULL, flow TEXT NOT NULL,
        version TEXT NOT NULL, source TEXT NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL,
        current INTEGER NOT NULL, PRIMARY KEY (tenant, flow, version))""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    # Logs and tickets came after version 1: new tables, which older code never reads.
    """CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY AUTOINCREMENT, log TEXT NOT NULL,
        data BLOB NOT NULL, expires_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS logs_read ON logs (log, id)",
    "CREATE INDEX IF NOT EXISTS logs_expiry ON logs (expires_at)",
    """CREATE TABLE IF NOT EXISTS tickets (tenant TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
        status TEXT NOT NULL, queue TEXT NOT NULL, updated_at REAL NOT NULL, data BLOB NOT NULL,
        expires_at REAL NOT NULL, PRIMARY KEY (tenant, id))""",
    "CREATE INDEX IF NOT EXISTS tickets_expiry ON tickets (expires_at)",
)

# Partitions (up to 1024 of them) are bound as one JSON array. Keys are not: SQLite's JSON
# functions cut a string at an escaped NUL, and keys may hold one.
CHUNK = 500
"""Rows read in one go when listing conversations."""
_IN_PARTITIONS = "partition IN (SELECT value FROM json_each(?))"
_TICKET = "tenant, id, key, status, queue, updated_at, data, expires_at"


class SqliteStore:
    def __init__(self, url: str, clock: Callable[[], float] = time.time):
        scheme, sep, path = url.partition(":///")
        if scheme.lower() != "sqlite" or not sep or not path:
            raise StoreError(f"not a SQLite store URL: {url!r}; use sqlite:///relative/path.db "
                             "or sqlite:////absolute/path.db")
        self.url = url
        self.clock = clock
        self._path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # created, used and closed in the executor
        self.log_keep = LOG_KEEP

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parlour-sqlite")
        try:
            await self._run(self._connect)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, self._close)
            finally:
                executor.shutdown(wait=False)  # idle by now: the close was its last job

    async def load(self, keys: Sequence[str]) -> dict[str, bytes]:
        return await self._read(_load, list(keys), self.clock())

    async def commit(self, commit: Commit) -> None:
        await self._write(_commit, commit)

    async def claim(self, epochs: dict[int, int]) -> None:
        await self._write(_claim, dict(epochs))

    async def fences(self, partitions: Sequence[int]) -> dict[int, int]:
        held = await self._read(_held, partitions)
        return {p: held.get(p, 0) for p in partitions}

    async def due_timers(self, partitions: Sequence[int], until: float, limit: int) -> list[Timer]:
        rows = await self._read(
            _execute, f"SELECT key, partition, timer_id, due_at FROM timers WHERE {_IN_PARTITIONS}"
            " AND due_at <= ? ORDER BY due_at, key, timer_id LIMIT ?",
            (_json_ints(partitions), until, max(limit, 0)))  # LIMIT -1 would mean no limit
        return [Timer(*row) for row in rows]

    async def reply(self, key: str, message_id: str) -> bytes | None:
        rows = await self._read(
            _execute, "SELECT data FROM replies WHERE key = ? AND message_id = ? AND expires_at > ?",
            (key, message_id, self.clock()))
        return rows[0][0] if rows else None

    async def replied(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not pairs:
            return set()
        found = await self._read(
            _execute, "SELECT key, message_id FROM replies WHERE (key, message_id) IN"
            " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)) AND expires_at > ?",
            (json.dumps([list(p) for p in pairs]), self.clock()))
        return {(key, message_id) for key, message_id in found}

    async def recent(self, key: str, limit: int = 10) -> list[tuple[str, bytes, float]]:
        # The rowid counts writes: a new row gets one above the largest in the table (so does a
        # reply written again: INSERT OR REPLACE inserts a new row).
        return await self._read(
            _execute, "SELECT message_id, data, expires_at FROM replies WHERE key = ? AND expires_at > ?"
            " ORDER BY rowid DESC LIMIT ?", (key, self.clock(), max(limit, 0)))

    async def sweep(self, now: float) -> int:
        return await self._write(_sweep, now, self.log_keep)

    async def read_log(self, log: str, after: str | None = None, limit: int = 100) -> list[LogEntry]:
        rows = await self._read(
            _execute, "SELECT id, data FROM logs WHERE log = ? AND id > ? AND expires_at > ? ORDER BY id LIMIT ?",
            (log, log_cursor(after), self.clock(), max(limit, 0)))
        return [LogEntry(f"{entry_id:020d}", data) for entry_id, data in rows]

    async def tail_log(self, log: str, limit: int) -> list[LogEntry]:
        rows = await self._read(
            _execute, "SELECT id, data FROM logs WHERE log = ? AND expires_at > ? ORDER BY id DESC LIMIT ?",
            (log, self.clock(), max(limit, 0)))
        return [LogEntry(f"{entry_id:020d}", data) for entry_id, data in reversed(rows)]

    async def trim_log(self, log: str, upto: str) -> int:
        return await self._write(_rowcount, "DELETE FROM logs WHERE log = ? AND id <= ?", (log, log_cursor(upto)))

    async def tickets(self, tenant: str, status: str | None = None, queue: str | None = None,
                      after: str | None = None, limit: int = 50) -> list[Ticket]:
        rows = await self._read(
            _execute, f"SELECT {_TICKET} FROM tickets WHERE tenant = ? AND id > ? AND expires_at > ?"
            " AND status = coalesce(?, status) AND queue = coalesce(?, queue) ORDER BY id LIMIT ?",
            (tenant, after or "", self.clock(), status, queue, max(limit, 0)))
        return [Ticket(*row) for row in rows]

    async def ticket(self, tenant: str, ticket_id: str) -> Ticket | None:
        rows = await self._read(
            _execute, f"SELECT {_TICKET} FROM tickets WHERE tenant = ? AND id = ? AND expires_at > ?",
            (tenant, ticket_id, self.clock()))
        return Ticket(*rows[0]) if rows else None

    async def read_outbox(self, after: str | None, limit: int) -> list[OutboxEntry]:
        rows = await self._read(
            _execute, "SELECT id, key, seq, data FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (int(after) if after else 0, max(limit, 0)))
        return [OutboxEntry(f"{entry_id:020d}", key, seq, data) for entry_id, key, seq, data in rows]

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        await self._write(_execute_many, "DELETE FROM outbox WHERE id = ?", [(int(i),) for i in ids])

    async def bury(self, entry: OutboxEntry, reason: str, attempts: int, at: float) -> None:
        await self._write(_bury, entry, reason, attempts, at)

    async def dead_letters(self, after: str | None = None, limit: int = 100) -> list[DeadLetter]:
        rows = await self._read(
            _execute,
            "SELECT id, key, seq, data, reason, attempts, failed_at FROM dead WHERE id > ? ORDER BY id LIMIT ?",
            (int(after) if after else 0, max(limit, 0)))
        return [DeadLetter(f"{row[0]:020d}", *row[1:]) for row in rows]

    async def revive(self, ids: Sequence[str]) -> int:
        return await self._write(_revive, entry_numbers(ids))

    async def drop_dead(self, ids: Sequence[str]) -> int:
        return await self._write(_drop_dead, entry_numbers(ids))

    async def put_flow(self, record: FlowRecord) -> None:
        await self._write(_put_flow, record)

    async def flows(self, tenant: str | None = None) -> list[FlowRecord]:
        rows = await self._read(
            _execute, "SELECT tenant, flow, version, source, path, created_at, current FROM flows"
            " WHERE tenant = coalesce(?, tenant) ORDER BY tenant, flow, created_at, version",
            (tenant,))
        return [_flow_record(row) for row in rows]

    async def conversations(self, tenant: str, after: str | None = None, limit: int = 100,
                            keep: RecordFilter | None = None, examine: int = MAX_EXAMINE) -> RecordPage:
        async def records() -> AsyncGenerator[tuple[str, str, bytes], None]:
            cursor, end = max(after or "", f"{tenant}/"), f"{tenant}0"  # "0" follows "/"
            while True:
                chunk = await self._read(
                    _execute, "SELECT key, record FROM conversations WHERE key > ? AND key < ? AND expires_at > ?"
                    " ORDER BY key LIMIT ?", (cursor, end, self.clock(), CHUNK))
                for row in chunk:
                    yield row[0], row[0], row[1]
                if len(chunk) < CHUNK:
                    return
                cursor = chunk[-1][0]
        return await take_page(records(), limit, keep, examine)

    async def delete_flow(self, tenant: str, flow: str) -> int:
        return await self._write(_rowcount, "DELETE FROM flows WHERE tenant = ? AND flow = ?", (tenant, flow))

    async def get_meta(self, name: str) -> bytes | None:
        rows = await self._read(_execute, "SELECT value FROM meta WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    async def put_meta(self, name: str, value: bytes) -> None:
        await self._write(_execute, "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                          (name, value))

    async def add_meta(self, name: str, value: bytes) -> bytes:
        return await self._write(_add_meta, name, value)

    # ------------------------------------------------------------ the thread

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await self._run(self._transaction, "BEGIN", fn, *args)

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await self._run(self._transaction, "BEGIN IMMEDIATE", fn, *args)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreError(f"the store {self.url} is not open: await store.open() first")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.OperationalError, OSError) as exc:  # locked, busy, disk I/O, cannot open
            raise StoreUnavailable(f"{self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    def _transaction(self, begin: str, fn: Callable[..., _T], *args: Any) -> _T:
        conn = self._conn
        if conn is None:  # closed while this call waited for the thread
            raise StoreError(f"the store {self.url} is closed")
        conn.execute(begin)
        try:
            result = fn(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()  # a no-op when a failed COMMIT has already rolled back
            raise
        return result

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Only its owner may read a database of conversations: SQLite creates the file with the
        # umask's mode (0644) and gives its -wal and -shm files the database's own, so the
        # file is made 0600 here first.
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
        self._conn = sqlite3.connect(self._path, isolation_level=None)  # we issue BEGIN/COMMIT
        for pragma in _PRAGMAS:
            self._conn.execute(pragma)
        self._transaction("BEGIN IMMEDIATE", _create_schema)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---------------------------------------------------------------- run in the thread, in a transaction


def _create_schema(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database has schema version {version}, newer than this parlour's "
                         f"({SCHEMA_VERSION}): upgrade parlour to open it")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def _rowcount(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


def _add_meta(conn: sqlite3.Connection, name: str, value: bytes) -> bytes:
    conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (name, value))
    return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]


def _execute_many(conn: sqlite3.Connection, sql: str, rows: list[tuple]) -> None:
    conn.executemany(sql, rows)


def _json_ints(values: Sequence[int]) -> str:
    return json.dumps([int(v) for v in values])


def _load(conn: sqlite3.Connection, keys: list[str], now: float) -> dict[str, bytes]:
    found = {}
    for key in keys:
        row = conn.execute("SELECT record FROM conversations WHERE key = ? AND expires_at > ?",
                           (key, now)).fetchone()
        if row is not None:
            found[key] = row[0]
    return found


def _held(conn: sqlite3.Connection, partitions: Sequence[int]) -> dict[int, int]:
    rows = conn.execute(f"SELECT partition, epoch FROM fences WHERE {_IN_PARTITIONS}",
                        (_json_ints(partitions),))
    return dict(rows.fetchall())


def _check_fences(conn: sqlite3.Connection, epochs: dict[int, int], *, exact: bool) -> None:
    """:class:`Fenced` listing every partition held at another epoch (``exact``) or a newer one."""
    held = _held(conn, list(epochs))
    refused = {}
    for partition, epoch in epochs.items():
        at = held.get(partition, 0)
        if at != epoch if exact else at > epoch:
            refused[partition] = at
    if refused:
        raise Fenced(refused)


def _commit(conn: sqlite3.Connection, commit: Commit) -> None:
    _check_fences(conn, commit.fences, exact=True)
    conn.executemany("INSERT OR REPLACE INTO conversations (key, partition, record, expires_at)"
                     " VALUES (?, ?, ?, ?)", commit.records)
    conn.executemany("DELETE FROM timers WHERE key = ? AND timer_id = ?",
                     [(key, timer_id) for key, _partition, timer_id in commit.cancels])
    conn.executemany("INSERT OR REPLACE INTO timers (key, timer_id, partition, due_at) VALUES (?, ?, ?, ?)",
                     [(t.key, t.timer_id, t.partition, t.due_at) for t in commit.timers])
    conn.executemany("INSERT INTO outbox (key, seq, data) VALUES (?, ?, ?)", commit.outbox)
    conn.executemany("INSERT OR REPLACE INTO replies (key, message_id, data, expires_at)"
                     " VALUES (?, ?, ?, ?)", commit.replies)
    conn.executemany("INSERT INTO logs (log, data, expires_at) VALUES (?, ?, ?)", commit.logs)
    conn.executemany(f"INSERT OR REPLACE INTO tickets ({_TICKET}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(t.tenant, t.id, t.key, t.status, t.queue, t.updated_at, t.data, t.expires_at)
                      for t in commit.tickets])


def _claim(conn: sqlite3.Connection, epochs: dict[int, int]) -> None:
    _check_fences(conn, epochs, exact=False)
    conn.executemany("INSERT OR REPLACE INTO fences (partition, epoch) VALUES (?, ?)", epochs.items())


def _sweep(conn: sqlite3.Connection, now: float, log_keep: int) -> int:
    deleted = 0
    for table in ("conversations", "replies", "logs", "tickets"):
        deleted += conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,)).rowcount
    # Each log's newest log_keep: one pass over the table, once a sweep (a minute by default).
    return deleted + conn.execute(
        "DELETE FROM logs WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER"
        " (PARTITION BY log ORDER BY id DESC) AS n FROM logs) WHERE n > ?)", (log_keep,)).rowcount


def _bury(conn: sqlite3.Connection, entry: OutboxEntry, reason: str, attempts: int, at: float) -> None:
    if conn.execute("DELETE FROM outbox WHERE id = ?", (int(entry.id),)).rowcount:
        conn.execute("INSERT INTO dead (key, seq, data, reason, attempts, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (entry.key, entry.seq, entry.data, reason, attempts, at))


def _revive(conn: sqlite3.Connection, ids: list[int]) -> int:
    revived = 0
    for dead_id in ids:  # in the order asked: that is their order in the outbox
        moved = conn.execute("INSERT INTO outbox (key, seq, data) SELECT key, seq, data FROM dead WHERE id = ?",
                             (dead_id,)).rowcount
        conn.execute("DELETE FROM dead WHERE id = ?", (dead_id,))
        revived += moved
    return revived


def _drop_dead(conn: sqlite3.Connection, ids: list[int]) -> int:
    return sum(conn.execute("DELETE FROM dead WHERE id = ?", (dead_id,)).rowcount for dead_id in ids)


def _flow_record(row: tuple) -> FlowRecord:
    tenant, flow, version, source, path, created_at, current = row
    return FlowRecord(tenant, flow, version, source, path, created_at, bool(current))


def _put_flow(conn: sqlite3.Connection, r: FlowRecord) -> None:
    if r.current:
        conn.execute("UPDATE flows SET current = 0 WHERE tenant = ? AND flow = ?", (r.tenant, r.flow))
    # A version stored again keeps its source and created_at; it stays current if it was.
    conn.execute(
        "INSERT INTO flows (tenant, flow, version, source, path, created_at, current)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, flow, version)"
        " DO UPDATE SET current = current OR excluded.current",
        (r.tenant, r.flow, r.version, r.source, r.path, r.created_at, int(r.current)))
