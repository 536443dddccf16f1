r"""A store in Redis, shared by every host of a cluster: redis-py's asyncio client with hiredis.

``redis://HOST:PORT/DB?prefix=parlour:&timeout_s=5`` (also ``rediss://`` and ``unix://``):
``prefix`` starts every key, ``timeout_s`` bounds connecting and each reply. It needs Redis 6.2
or newer (exclusive ``XRANGE`` starts) and targets standalone or replicated (Sentinel) Redis,
not Redis Cluster: see the commit script. Keys, ``P`` being the prefix::

    P c:{key}                             string  a conversation's record, PEXPIREAT its expiry
    P fence                               hash    partition -> epoch
    P t:{partition}                       zset    msgpack [key, timer id], scored by due time
    P outbox                              stream  fields key, seq, data; the entry id is the cursor
    P dead                                stream  fields key, seq, data, reason, attempts, failed_at
    P r:{len(key)}:{key}{message id}     string  a turn's replies, PEXPIREAT their expiry
    P recent:{key}                        list    "{expiry ms}:{message id}" of the conversation's
                                                  50 newest replies, newest first; PEXPIREAT the
                                                  latest expiry pushed
    P flow:{tenant}\0{flow}\0{version}    hash    source, path, created_at
    P versions:{tenant}\0{flow}           set     the versions of one flow
    P flows                               set     tenant\0flow of every flow
    P current                             hash    tenant\0flow -> its current version
    P meta:{name}                         string
    P log:{name}                          zset    msgpack [n, expiry ms, data], scored by n (the
                                                  cursor); PEXPIREAT the latest expiry appended
    P logn:{name}                         string  the log's last n (INCR), expiring with it
    P tk:{tenant}                         hash    ticket id -> msgpack [key, status, queue,
                                                  updated_at, data, expires_at]
    P tki:{tenant}                        zset    ticket ids, all scored 0: in id order (BYLEX)
    P tkexp                               zset    tenant\0id, scored by expiry: the sweep's list

A tenant's conversations are listed with ``SCAN`` over ``P c:{tenant}/*``, no index kept: a
cursor is ``{scan cursor}:{last key read}`` (a page may end within one ``SCAN`` batch, whose
keys are read in key order).

A commit is one Lua script (``EVALSHA``) because Redis runs a script alone: the fence check and
every write of the commit happen with nothing in between, so a zombie host cannot slip a write
past a newer claim (which a read-check-write from Python would allow), and a refused commit has
written nothing. The whole commit travels as one msgpack blob, unpacked by Redis' ``cmsgpack``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import StreamRangeResponse

from .base import (
    LOG_KEEP,
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
    StoreError,
    StoreUnavailable,
    Ticket,
    Timer,
    log_cursor,
    take_page,
)

# The script reads and writes keys it does not declare in KEYS (they depend on the commit's
# contents). Standalone Redis and Sentinel setups allow that; Redis Cluster does not.
_COMMIT = r"""
local prefix, c = ARGV[1], cmsgpack.unpack(ARGV[2])
local fence, refused = prefix .. 'fence', {}
for _, f in ipairs(c[1]) do
  local held = redis.call('HGET', fence, f[1]) or '0'
  if held ~= f[2] then
    refused[#refused + 1] = f[1]
    refused[#refused + 1] = held
  end
end
if #refused > 0 then return refused end
local function put(key, value, at_ms)
  redis.call('SET', key, value)
  redis.call('PEXPIREAT', key, at_ms)
end
for _, r in ipairs(c[2]) do put(prefix .. 'c:' .. r[1], r[2], r[3]) end
for _, x in ipairs(c[3]) do redis.call('ZREM', prefix .. 't:' .. x[1], x[2]) end
for _, t in ipairs(c[4]) do redis.call('ZADD', prefix .. 't:' .. t[1], t[2], t[3]) end
for _, o in ipairs(c[5]) do
  redis.call('XADD', prefix .. 'outbox', '*', 'key', o[1], 'seq', o[2], 'data', o[3])
end
-- The replies, grouped by conversation. Its index lists the 50 newest, newest first: one LPUSH
-- of (at most) the last 50 of the group, trimmed only when it grew past 50. A message id written
-- again is pushed again; recent() lists it once. The index lives until the latest expiry ever
-- pushed, never less: a shorter one (a TTL cut) must not drop the replies kept longer.
local clock = #c[6] > 0 and redis.call('TIME')
local now_ms = clock and clock[1] * 1000 + math.floor(clock[2] / 1000)
for _, g in ipairs(c[6]) do
  local index, entries, latest = prefix .. 'recent:' .. g[2], {}, 0
  for i, r in ipairs(g[3]) do
    put(prefix .. 'r:' .. g[1] .. r[1], r[2], r[3])
    if i > #g[3] - 50 then entries[#entries + 1] = r[3] .. ':' .. r[1] end
    latest = math.max(latest, tonumber(r[3]))
  end
  local ttl = redis.call('PTTL', index)
  if redis.call('LPUSH', index, unpack(entries)) > 50 then redis.call('LTRIM', index, 0, 49) end
  if ttl < 0 or now_ms + ttl < latest then redis.call('PEXPIREAT', index, latest) end
end
-- Logs: each entry numbered by the log's counter (its cursor), the log beyond its newest `keep`
-- trimmed, both keys living until the latest expiry appended.
local keep = tonumber(ARGV[3])
for _, l in ipairs(c[7]) do
  local log, counter = prefix .. 'log:' .. l[1], prefix .. 'logn:' .. l[1]
  local n = redis.call('INCR', counter)
  redis.call('ZADD', log, n, cmsgpack.pack({n, l[3], l[2]}))
  if redis.call('ZCARD', log) > keep then redis.call('ZREMRANGEBYRANK', log, 0, -keep - 1) end
  local x, clock = tonumber(l[3]), redis.call('TIME')
  local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
  for _, k in ipairs({log, counter}) do
    local ttl = redis.call('PTTL', k)
    if ttl < 0 or now + ttl < x then redis.call('PEXPIREAT', k, x) end
  end
end
for _, t in ipairs(c[8]) do
  redis.call('HSET', prefix .. 'tk:' .. t[1], t[2], t[3])
  redis.call('ZADD', prefix .. 'tki:' .. t[1], 0, t[2])
  redis.call('ZADD', prefix .. 'tkexp', t[4], t[1] .. '\0' .. t[2])
end
return refused
"""

# ARGV: the index, the start of its reply keys, the limit. Returns message id, data and expiry ms
# of each reply still kept, newest first, each message id once (its newest entry).
_RECENT = r"""
local found, seen, limit = {}, {}, tonumber(ARGV[3])
for _, entry in ipairs(redis.call('LRANGE', ARGV[1], 0, -1)) do
  if #found >= 3 * limit then break end
  local colon = string.find(entry, ':', 1, true)
  local id = string.sub(entry, colon + 1)
  local data = not seen[id] and redis.call('GET', ARGV[2] .. id)
  seen[id] = true
  if data then
    local n = #found
    found[n + 1], found[n + 2], found[n + 3] = id, data, string.sub(entry, 1, colon - 1)
  end
end
return found
"""

# Moving an entry between the outbox and the dead letters is a script: the read and the two
# writes happen with nothing in between, so an entry is never in both streams, nor in neither,
# and two operators replaying the same dead letter revive it once.
_BURY = r"""
local prefix, id = ARGV[1], ARGV[2]
local found = redis.call('XRANGE', prefix .. 'outbox', id, id)
if #found == 0 then return 0 end
local f = found[1][2]
redis.call('XADD', prefix .. 'dead', '*', f[1], f[2], f[3], f[4], f[5], f[6],
           'reason', ARGV[3], 'attempts', ARGV[4], 'failed_at', ARGV[5])
redis.call('XDEL', prefix .. 'outbox', id)
return 1
"""

_REVIVE = r"""
local prefix, revived = ARGV[1], 0
for i = 2, #ARGV do
  local found = redis.call('XRANGE', prefix .. 'dead', ARGV[i], ARGV[i])
  if #found > 0 then
    local f, fields = found[1][2], {}
    for j = 1, #f, 2 do fields[f[j]] = f[j + 1] end
    redis.call('XADD', prefix .. 'outbox', '*', 'key', fields['key'], 'seq', fields['seq'], 'data', fields['data'])
    redis.call('XDEL', prefix .. 'dead', ARGV[i])
    revived = revived + 1
  end
end
return revived
"""

_CLAIM = r"""
local fence, newer = ARGV[1] .. 'fence', {}
for i = 2, #ARGV, 2 do
  local held = redis.call('HGET', fence, ARGV[i]) or '0'
  if tonumber(held) > tonumber(ARGV[i + 1]) then
    newer[#newer + 1] = ARGV[i]
    newer[#newer + 1] = held
  end
end
if #newer > 0 then return newer end
for i = 2, #ARGV, 2 do redis.call('HSET', fence, ARGV[i], ARGV[i + 1]) end
return newer
"""

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError, asyncio.TimeoutError)


@asynccontextmanager
async def _translated(action: str, timeout_s: float) -> AsyncIterator[None]:
    """Redis' errors as the store's: :class:`StoreUnavailable` when it cannot be reached, or
    when the whole operation takes longer than twice the socket timeout (a connection left in
    a bad state by a server that died mid-reply must not hang a host)."""
    try:
        async with asyncio.timeout(2 * timeout_s):
            yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"redis {action}: {exc}") from exc
    except RedisError as exc:
        raise StoreError(f"redis {action}: {exc}") from exc


# The client is made with ``decode_responses=False``, so Redis replies with bytes; redis-py's
# types say ``bytes | str`` whatever the client's setting. These narrow a reply to what it is,
# and refuse anything else (a client made with decoding on) rather than pass it along.

def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise StoreError(f"redis replied with {type(value).__name__} where bytes were expected")


def _text(value: object) -> str:
    return _bytes(value).decode()


def _maybe_bytes(value: object) -> bytes | None:
    return None if value is None else _bytes(value)


def _members(value: object) -> list[bytes]:
    """A reply that is a list of bytes (members of a set or range, a script's list)."""
    if not isinstance(value, list):
        raise StoreError(f"redis replied with {type(value).__name__} where a list was expected")
    return [_bytes(v) for v in value]


def _integer(value: object) -> int:
    if isinstance(value, int):
        return value
    raise StoreError(f"redis replied with {type(value).__name__} where an integer was expected")


def _entries(found: StreamRangeResponse | None) -> list[tuple[str, dict[bytes | str, bytes | str]]]:
    """``XRANGE``'s entries as (id, fields)."""
    return [(_text(entry_id), fields) for entry_id, fields in found or () if fields is not None]


def _split_url(url: str) -> tuple[str, str, float]:
    """``url`` without our query parameters, the key prefix and the timeout."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in ("prefix", "timeout_s")}
    rest = urlencode([(name, value) for name, value in query if name not in ours])
    try:
        timeout_s = float(ours.get("timeout_s", 5))
    except ValueError:
        raise StoreError(f"timeout_s in {url!r} is not a number of seconds") from None
    return urlunsplit(parts._replace(query=rest)), ours.get("prefix", "parlour:"), timeout_s


SCAN_COUNT = 1000
"""``SCAN``'s ``COUNT`` when listing conversations: keys of the whole keyspace looked at per call."""
SCAN_ROUNDS = 100
"""``SCAN`` calls one page of conversations makes at most: a tenant with few conversations
among many others' gets a short (or empty) page and a cursor, not a request that never ends."""


def _scan_cursor(after: str | None) -> tuple[int, str]:
    scan, colon, last = (after or "0:").partition(":")
    if not (colon and scan.isascii() and scan.isdigit() and len(scan) <= 20):
        raise BadCursor(f"{after!r} is not a cursor of this store's conversations")
    return int(scan), last


def _reply_id(key: str, message_id: str) -> str:
    """Length-prefixed, so that no key and id can spell another pair's."""
    return f"{len(key)}:{key}{message_id}"


def _replies(replies: list[tuple[str, str, bytes, float]]) -> list[list]:
    """The commit's replies as the script takes them: [reply keys' start, key, [[message id,
    data, expiry ms], ...]] for each conversation, its replies in commit order."""
    grouped: dict[str, list] = {}
    for key, message_id, data, expires_at in replies:
        grouped.setdefault(key, []).append([message_id, data, _ms(expires_at)])
    return [[_reply_id(key, ""), key, entries] for key, entries in grouped.items()]


def _ms(at: float) -> str:
    return str(int(at * 1000))


def _member(key: str, timer_id: str) -> bytes:
    return msgpack.packb([key, timer_id], use_bin_type=True)


_STREAM_ID = re.compile(r"\d{1,19}-\d{1,19}")  # both halves are 64-bit


def _stream_ids(ids: Sequence[str]) -> list[str]:
    """The ids that are Redis stream ids, in order: others are no entry of this store."""
    return [i for i in ids if isinstance(i, str) and _STREAM_ID.fullmatch(i)]


def _log_entries(members: list[bytes]) -> list[LogEntry]:
    now_ms = time.time() * 1000
    entries = (msgpack.unpackb(member, raw=True) for member in members)
    return [LogEntry(f"{n:020d}", data) for n, expires_ms, data in entries if int(expires_ms) > now_ms]


def _ticket_value(t: Ticket) -> bytes:
    return msgpack.packb([t.key, t.status, t.queue, t.updated_at, t.data, t.expires_at], use_bin_type=True)


def _ticket(tenant: str, ticket_id: bytes, value: bytes | None) -> Ticket | None:
    """A stored ticket, None if there is none or it has expired (the sweep has yet to delete it)."""
    if value is None:
        return None
    key, status, queue, updated_at, data, expires_at = msgpack.unpackb(value, raw=False)
    if expires_at <= time.time():
        return None
    return Ticket(tenant, ticket_id.decode(), key, status, queue, updated_at, data, expires_at)


def _timer(partition: int, member: bytes, due_at: float) -> Timer:
    key, timer_id = msgpack.unpackb(member, raw=False)
    return Timer(key, partition, timer_id, due_at)


def _flow_record(flow: str, version: str, fields: dict[bytes, bytes], current: bool) -> FlowRecord:
    """A version's record from its hash; ``flow`` is ``tenant\\0flow``."""
    tenant, name = flow.split("\x00", 1)
    return FlowRecord(tenant, name, version, fields[b"source"].decode(), fields[b"path"].decode(),
                      float(fields[b"created_at"]), current)


def _epochs(pairs: list[bytes]) -> dict[int, int]:
    return {int(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}


class RedisStore:
    def __init__(self, url: str):
        self.url = url
        self._url, self.prefix, self.timeout_s = _split_url(url)
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.log_keep = LOG_KEEP

    async def open(self) -> None:
        # After a restart every pooled connection is dead, and redis-py 8 skips its check of a
        # connection taken from the pool (while maintenance notifications are "auto", the
        # default), so each would fail one call: one immediate retry on a connection error
        # reconnects instead. Never on a timeout: the server may have run the command, and a
        # commit run twice would append its outbox twice. Callers retry StoreUnavailable.
        self._client = redis.asyncio.from_url(
            self._url, decode_responses=False, socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        self._scripts = {"commit": self._client.register_script(_COMMIT),
                         "claim": self._client.register_script(_CLAIM),
                         "recent": self._client.register_script(_RECENT),
                         "bury": self._client.register_script(_BURY),
                         "revive": self._client.register_script(_REVIVE)}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise StoreError("the Redis store is not open: await store.open() first")
        return self._client

    async def _run(self, script: str, *args: str | bytes) -> object:
        """What ``script`` returns: a list or an integer (narrowed by the caller)."""
        client = self._redis
        async with _translated(script, self.timeout_s):
            return await self._scripts[script](args=args, client=client)

    async def load(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        async with _translated("load", self.timeout_s):
            found = await self._redis.mget([f"{self.prefix}c:{key}" for key in keys])
        return {key: _bytes(value) for key, value in zip(keys, found, strict=True) if value is not None}

    async def commit(self, commit: Commit) -> None:
        if not commit and not commit.fences:
            return
        # Redis' cmsgpack predates msgpack's bin type: the old raw type carries bytes unchanged.
        blob = msgpack.packb([
            [[str(p), str(epoch)] for p, epoch in commit.fences.items()],
            [[key, record, _ms(expires_at)] for key, _p, record, expires_at in commit.records],
            [[str(p), _member(key, timer_id)] for key, p, timer_id in commit.cancels],
            [[str(t.partition), repr(t.due_at), _member(t.key, t.timer_id)] for t in commit.timers],
            [[key, str(seq), data] for key, seq, data in commit.outbox],
            _replies(commit.replies),
            [[log, data, _ms(expires_at)] for log, data, expires_at in commit.logs],
            [[t.tenant, t.id, _ticket_value(t), repr(t.expires_at)] for t in commit.tickets],
        ], use_bin_type=False)
        refused = _members(await self._run("commit", self.prefix, blob, str(self.log_keep)))
        if refused:
            raise Fenced(_epochs(refused))

    async def claim(self, epochs: dict[int, int]) -> None:
        if not epochs:
            return
        args = [str(n) for pair in epochs.items() for n in pair]
        newer = _members(await self._run("claim", self.prefix, *args))
        if newer:
            raise Fenced(_epochs(newer))

    async def fences(self, partitions: Sequence[int]) -> dict[int, int]:
        if not partitions:
            return {}
        async with _translated("fences", self.timeout_s):
            held = await self._redis.hmget(f"{self.prefix}fence", [str(p) for p in partitions])
        return {p: int(epoch or 0) for p, epoch in zip(partitions, held, strict=True)}

    async def due_timers(self, partitions: Sequence[int], until: float, limit: int) -> list[Timer]:
        wanted = list(dict.fromkeys(partitions))
        if limit <= 0 or not wanted:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for p in wanted:
            pipe.zrangebyscore(f"{self.prefix}t:{p}", "-inf", until, start=0, num=limit, withscores=True)
        async with _translated("due_timers", self.timeout_s):
            found = await pipe.execute()
        timers = [_timer(p, member, due_at) for p, pairs in zip(wanted, found, strict=True) for member, due_at in pairs]
        return sorted(timers, key=lambda t: (t.due_at, t.key, t.timer_id))[:limit]

    async def reply(self, key: str, message_id: str) -> bytes | None:
        async with _translated("reply", self.timeout_s):
            return _maybe_bytes(await self._redis.get(f"{self.prefix}r:{_reply_id(key, message_id)}"))

    async def replied(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for key, message_id in pairs:
            pipe.exists(f"{self.prefix}r:{_reply_id(key, message_id)}")
        async with _translated("replied", self.timeout_s):
            found = await pipe.execute()
        return {pair for pair, exists in zip(pairs, found, strict=True) if exists}

    async def recent(self, key: str, limit: int = 10) -> list[tuple[str, bytes, float]]:
        """At most the 50 newest: the index keeps no more. Kept until to the millisecond."""
        if limit <= 0:
            return []
        found = _members(await self._run("recent", f"{self.prefix}recent:{key}",
                                         f"{self.prefix}r:{_reply_id(key, '')}", str(limit)))
        return [(found[i].decode(), found[i + 1], int(found[i + 2]) / 1000)
                for i in range(0, len(found), 3)]

    async def conversations(self, tenant: str, after: str | None = None, limit: int = 100,
                            keep: RecordFilter | None = None, examine: int = MAX_EXAMINE) -> RecordPage:
        scan, last = _scan_cursor(after)
        start = f"{self.prefix}c:{tenant}/"
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"

        async def records() -> AsyncGenerator[tuple[str, str, bytes], None]:
            nonlocal scan, last
            for _ in range(SCAN_ROUNDS):
                async with _translated("conversations", self.timeout_s):
                    following, names = await self._redis.scan(scan, match=pattern, count=SCAN_COUNT)
                    keys = sorted({k for k in (_text(n)[len(self.prefix) + 2:] for n in names) if k > last})  # P c:
                    values = await self._redis.mget([f"{self.prefix}c:{k}" for k in keys]) if keys else []
                for key, value in zip(keys, values, strict=True):
                    if value is not None:
                        yield f"{scan}:{key}", key, _bytes(value)
                if following == 0:
                    return
                scan, last = following, ""
            yield f"{scan}:", "", b""  # the rounds are spent: the page ends here, to go on from this cursor
        return await take_page(records(), limit, keep, examine)

    async def sweep(self, now: float) -> int:
        """Tickets expired at ``now``: every record, reply, index of replies and log is written
        with ``PEXPIREAT``, so Redis deletes those by its own clock (a log's entries expired
        before the log are skipped when read, and its size is kept as it is appended)."""
        async with _translated("sweep", self.timeout_s):
            gone = _members(await self._redis.zrangebyscore(f"{self.prefix}tkexp", "-inf", now, start=0, num=1000))
            if not gone:
                return 0
            pipe = self._redis.pipeline(transaction=True)
            for member in gone:
                tenant, ticket_id = member.split(b"\x00", 1)
                pipe.hdel(f"{self.prefix}tk:".encode() + tenant, ticket_id)
                pipe.zrem(f"{self.prefix}tki:".encode() + tenant, ticket_id)
            pipe.zrem(f"{self.prefix}tkexp", *gone)
            await pipe.execute()
        return len(gone)

    async def read_log(self, log: str, after: str | None = None, limit: int = 100) -> list[LogEntry]:
        start = log_cursor(after)
        if limit <= 0:
            return []
        async with _translated("read_log", self.timeout_s):
            members = await self._redis.zrangebyscore(f"{self.prefix}log:{log}", f"({start}", "+inf",
                                                      start=0, num=limit)
        return _log_entries(_members(members))

    async def tail_log(self, log: str, limit: int) -> list[LogEntry]:
        if limit <= 0:
            return []
        async with _translated("tail_log", self.timeout_s):
            members = await self._redis.zrange(f"{self.prefix}log:{log}", -limit, -1)
        return _log_entries(_members(members))

    async def trim_log(self, log: str, upto: str) -> int:
        end = log_cursor(upto)
        async with _translated("trim_log", self.timeout_s):
            return int(await self._redis.zremrangebyscore(f"{self.prefix}log:{log}", "-inf", end))

    async def tickets(self, tenant: str, status: str | None = None, queue: str | None = None,
                      after: str | None = None, limit: int = 50) -> list[Ticket]:
        found: list[Ticket] = []
        start: str | bytes = f"({after}" if after else "-"
        while len(found) < limit:
            async with _translated("tickets", self.timeout_s):
                ids = _members(await self._redis.zrangebylex(f"{self.prefix}tki:{tenant}", start, "+",
                                                             start=0, num=200))
                values = await self._redis.hmget(f"{self.prefix}tk:{tenant}", ids) if ids else []
            tickets = (_ticket(tenant, ticket_id, _maybe_bytes(value))
                       for ticket_id, value in zip(ids, values, strict=True))
            found += [t for t in tickets if t is not None and (status is None or t.status == status)
                      and (queue is None or t.queue == queue)]
            if len(ids) < 200:
                break
            start = b"(" + ids[-1]
        return found[:max(limit, 0)]

    async def ticket(self, tenant: str, ticket_id: str) -> Ticket | None:
        async with _translated("ticket", self.timeout_s):
            value = await self._redis.hget(f"{self.prefix}tk:{tenant}", ticket_id)
        return _ticket(tenant, ticket_id.encode(), _maybe_bytes(value))

    async def read_outbox(self, after: str | None, limit: int) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        async with _translated("read_outbox", self.timeout_s):
            entries = await self._redis.xrange(
                f"{self.prefix}outbox", min=f"({after}" if after else "-", max="+", count=limit)
        return [OutboxEntry(entry_id, _text(fields[b"key"]), int(fields[b"seq"]), _bytes(fields[b"data"]))
                for entry_id, fields in _entries(entries)]

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        if ids:
            async with _translated("ack_outbox", self.timeout_s):
                await self._redis.xdel(f"{self.prefix}outbox", *ids)

    async def bury(self, entry: OutboxEntry, reason: str, attempts: int, at: float) -> None:
        await self._run("bury", self.prefix, entry.id, reason, str(attempts), repr(at))

    async def dead_letters(self, after: str | None = None, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        async with _translated("dead_letters", self.timeout_s):
            entries = await self._redis.xrange(
                f"{self.prefix}dead", min=f"({after}" if after else "-", max="+", count=limit)
        return [DeadLetter(entry_id, _text(f[b"key"]), int(f[b"seq"]), _bytes(f[b"data"]),
                           _bytes(f[b"reason"]).decode(errors="replace"), int(f[b"attempts"]), float(f[b"failed_at"]))
                for entry_id, f in _entries(entries)]

    async def revive(self, ids: Sequence[str]) -> int:
        ids = _stream_ids(ids)
        return _integer(await self._run("revive", self.prefix, *ids)) if ids else 0

    async def drop_dead(self, ids: Sequence[str]) -> int:
        ids = _stream_ids(ids)
        if not ids:
            return 0
        async with _translated("drop_dead", self.timeout_s):
            return int(await self._redis.xdel(f"{self.prefix}dead", *ids))

    async def put_flow(self, record: FlowRecord) -> None:
        # MULTI/EXEC without WATCH: HSETNX keeps a stored version's fields as they were, and the
        # current pointer is only ever set, so no read has to precede the writes.
        flow = f"{record.tenant}\x00{record.flow}"
        version = f"{self.prefix}flow:{flow}\x00{record.version}"
        pipe = self._redis.pipeline(transaction=True)
        fields = {"source": record.source, "path": record.path, "created_at": repr(record.created_at)}
        for name, value in fields.items():
            pipe.hsetnx(version, name, value)
        pipe.sadd(f"{self.prefix}versions:{flow}", record.version)
        pipe.sadd(f"{self.prefix}flows", flow)
        if record.current:
            pipe.hset(f"{self.prefix}current", flow, record.version)
        async with _translated("put_flow", self.timeout_s):
            await pipe.execute()

    async def flows(self, tenant: str | None = None) -> list[FlowRecord]:
        async with _translated("flows", self.timeout_s):
            names = [_text(n) for n in await self._redis.smembers(f"{self.prefix}flows")]
            wanted = sorted(n for n in names if tenant is None or n.split("\x00", 1)[0] == tenant)
            if not wanted:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for flow in wanted:
                pipe.smembers(f"{self.prefix}versions:{flow}")
            versions = [(flow, _text(v)) for flow, vs in zip(wanted, await pipe.execute(), strict=True) for v in vs]
            pipe = self._redis.pipeline(transaction=True)
            pipe.hmget(f"{self.prefix}current", wanted)
            for flow, version in versions:
                pipe.hgetall(f"{self.prefix}flow:{flow}\x00{version}")
            current, *fields = await pipe.execute()
        pointers = {flow: (v or b"").decode() for flow, v in zip(wanted, current, strict=True)}
        found = [_flow_record(flow, version, f, pointers[flow] == version)
                 for (flow, version), f in zip(versions, fields, strict=True)]
        return sorted(found, key=lambda r: (r.tenant, r.flow, r.created_at, r.version))

    async def delete_flow(self, tenant: str, flow: str) -> int:
        name = f"{tenant}\x00{flow}"
        async with _translated("delete_flow", self.timeout_s):
            versions = await self._redis.smembers(f"{self.prefix}versions:{name}")
            pipe = self._redis.pipeline(transaction=True)
            for version in versions:
                pipe.delete(f"{self.prefix}flow:{name}\x00{_text(version)}")
            pipe.delete(f"{self.prefix}versions:{name}")
            pipe.srem(f"{self.prefix}flows", name)
            pipe.hdel(f"{self.prefix}current", name)
            await pipe.execute()
        return len(versions)

    async def get_meta(self, name: str) -> bytes | None:
        async with _translated("get_meta", self.timeout_s):
            return _maybe_bytes(await self._redis.get(f"{self.prefix}meta:{name}"))

    async def put_meta(self, name: str, value: bytes) -> None:
        async with _translated("put_meta", self.timeout_s):
            await self._redis.set(f"{self.prefix}meta:{name}", value)

    async def add_meta(self, name: str, value: bytes) -> bytes:
        async with _translated("add_meta", self.timeout_s):  # SET NX, then the winner's value
            if await self._redis.set(f"{self.prefix}meta:{name}", value, nx=True):
                return value
            return _maybe_bytes(await self._redis.get(f"{self.prefix}meta:{name}")) or value
