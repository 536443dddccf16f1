"""A gateway's way to the conversations of a host in its own process: no Ray, no other process.

:class:`LocalBackend` is what a node server's gateway uses for the partitions its host owns
(:class:`parlour.cluster.node_server.NodeBackend` adds the way to the other servers), and, on
its own, a whole runtime in one process: an embedding application that wants no Ray, the
gateway's tests, and the benchmark of the in-process path.

>>> host = Host("solo", store, HostConfig(), claim=lambda name: ...)  # every partition
>>> await host.start()
>>> gateway = Gateway(settings, LocalBackend(host, vault.reload), store, operator_hash=...)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from parlour.codec import Record
from parlour.messages import ConversationKey, Inbound, Outcome
from parlour.store import FlowRecord

from .host import Host

ReloadFn = Callable[[], Awaitable[int]]


class LocalBackend:
    """The gateway's :class:`~parlour.gateway.app.Backend` for one in-process host that owns
    every partition. ``reload_secrets`` is what reads the tenants' sealed secrets again for
    that host (its vault's ``reload``), if it has any."""

    whole_node = False

    def __init__(self, host: Host, reload_secrets: ReloadFn | None = None):
        self.host = host
        self._reload_secrets = reload_secrets

    async def send(self, inbound: Inbound) -> Outcome:
        return (await self.host.deliver([inbound]))[0]

    async def conversation(self, key: ConversationKey) -> Record | None:
        return await self.host.inspect(key)

    async def reset(self, key: ConversationKey) -> bool:
        return await self.host.reset(key)

    async def install(self, records: list[FlowRecord]) -> None:
        for record in records:
            await self.host.store.put_flow(record)
        await self.host.reload_flows()

    async def reload_secrets(self) -> int:
        return await self._reload_secrets() if self._reload_secrets is not None else 0

    async def reload_tenants(self) -> int:
        """Nothing to tell: this gateway is the only one, and knows the tenants it made."""
        return 0

    async def ready(self, timeout_s: float = 60.0) -> list[dict]:
        return [await self.host.ready()]

    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]:
        return {self.host.name: self.host.export_metrics()}
