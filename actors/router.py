"""The router: the partition -> host table, with an epoch, persisted in the store.

Partitions are split among the hosts in contiguous ranges. Every grant bumps the epoch: a host
that (re)starts claims its partitions and gets a new epoch, fences them with it in the store,
and from then on a commit under the older epoch (a zombie of the same host, or another host
that held them) is refused. The router keeps nothing that is not in the store, so Ray may
restart it anywhere.

>>> router = Router(store, partitions=1024, hosts=["host-0", "host-1"])
>>> await router.start()
>>> epoch, partitions = await router.claim("host-1")
"""

from __future__ import annotations

import asyncio

import msgpack

from parlour.errors import ParlourError
from parlour.messages import PartitionTable
from parlour.store import Store

META = "router"


class UnknownHost(ParlourError):
    """A claim from a host the table does not name."""


class Router:
    def __init__(self, store: Store, partitions: int, hosts: list[str]):
        if not hosts or partitions < len(hosts):
            raise ValueError(f"{partitions} partitions cannot be shared by {len(hosts)} hosts")
        self.store = store
        self.partitions = partitions
        self.hosts = tuple(hosts)
        self.table_: PartitionTable | None = None
        self._lock = asyncio.Lock()
        self._opened = False

    async def start(self) -> PartitionTable:
        """Read the table from the store; make (and store) a new one if there is none, or if
        the hosts or partition count changed."""
        if not self._opened:
            await self.store.open()
            self._opened = True
        async with self._lock:
            stored = await self.store.get_meta(META)
            table = _decode(stored) if stored else None
            if table is None or table.hosts != self.hosts or table.partitions != self.partitions:
                epoch = table.epoch + 1 if table else 1
                table = PartitionTable(epoch, self.hosts, _ranges(self.partitions, len(self.hosts)))
                await self.store.put_meta(META, _encode(table))
            self.table_ = table
            return table

    async def table(self) -> PartitionTable:
        if self.table_ is None:
            return await self.start()
        return self.table_

    async def claim(self, host: str) -> tuple[int, list[int]]:
        """``host`` takes up its partitions: a new epoch, stored before it is granted."""
        table = await self.table()
        if host not in table.hosts:
            raise UnknownHost(f"{host!r} is not in the partition table ({', '.join(table.hosts)})")
        async with self._lock:
            current = self.table_ or table  # another claim may have moved it on meanwhile
            table = PartitionTable(current.epoch + 1, current.hosts, current.owners)
            await self.store.put_meta(META, _encode(table))
            self.table_ = table
        return table.epoch, table.partitions_of(host)


def _ranges(partitions: int, hosts: int) -> tuple[int, ...]:
    return tuple(p * hosts // partitions for p in range(partitions))


def _encode(table: PartitionTable) -> bytes:
    return msgpack.packb({"schema": 1, "epoch": table.epoch, "hosts": list(table.hosts),
                          "owners": bytes(table.owners) if len(table.hosts) < 256 else list(table.owners)})


def _decode(data: bytes) -> PartitionTable:
    value = msgpack.unpackb(data, raw=False)
    return PartitionTable(value["epoch"], tuple(value["hosts"]), tuple(value["owners"]))
