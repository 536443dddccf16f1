"""Stores: where conversations, timers, the outbox and the flow registry live.

=================  ===================================================================
``memory://``      in this process only; unit tests and one-host benchmarks
``sqlite:///PATH``  one file in WAL mode; the embedded default, durable on one machine
``redis://HOST``    a cluster's shared store (redis-py asyncio with hiredis)
=================  ===================================================================

>>> store = open_store("sqlite:///.parlour/parlour.db")
>>> await store.open()
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    MAX_EXAMINE,
    BadCursor,
    Commit,
    DeadLetter,
    Fenced,
    FlowRecord,
    LogEntry,
    OutboxEntry,
    RecordFilter,
    RecordPage,
    Store,
    StoreError,
    StoreUnavailable,
    Ticket,
    Timer,
    log_cursor,
)


def store_identity(url: str) -> str:
    """Which store ``url`` opens from this process: the URL itself, except that a relative
    SQLite path is made absolute (two nodes started in two folders with the default
    ``sqlite:///.parlour/parlour.db`` have two stores, and must not share what is kept per store)."""
    scheme, sep, path = url.partition(":///")
    if scheme.lower() == "sqlite" and sep and not path.startswith("/"):
        return f"sqlite:///{Path(path).resolve()}"
    return url


def open_store(url: str) -> Store:
    """The store at ``url`` (not yet opened); :class:`StoreError` for a URL no backend takes."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryStore
        return MemoryStore(url)
    if scheme == "sqlite":
        from .sqlite import SqliteStore
        return SqliteStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore
        return RedisStore(url)
    raise StoreError(f"no store for {url!r}: use memory://, sqlite:///path or redis://host:port/db")


__all__ = [
    "BadCursor", "Commit", "DeadLetter", "Fenced", "FlowRecord", "LogEntry", "MAX_EXAMINE", "OutboxEntry",
    "RecordFilter", "RecordPage", "Store", "StoreError", "StoreUnavailable", "Ticket", "Timer", "log_cursor",
    "open_store", "store_identity",
]
