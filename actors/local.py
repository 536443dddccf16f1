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
from typing import TYPE_CHECKING

from parlour.channels.handoff import HookLookup
from parlour.channels.registry import Bots, Cipher
from parlour.codec import Record
from parlour.egress import Egress
from parlour.http import HttpCaller
from parlour.messages import ConversationKey, Inbound, Outcome
from parlour.store import FlowRecord, Store, open_store
from parlour.vault import Vault

from .delivery import Delivery, RetryPolicy
from .host import ClaimFn, Host
from .watchdog import TurnWatch

if TYPE_CHECKING:
    from .remote import HostSettings

ReloadFn = Callable[[], Awaitable[int]]


def build_host(name: str, settings: HostSettings, claim: ClaimFn, *,
               watch: TurnWatch | None = None) -> tuple[Host, Vault, HttpCaller]:
    """A host on its own store connection, with the vault of its tenants' secrets and the HTTP
    caller its flows' calls go through (enter it before the host starts), as a host's process
    builds them (:class:`parlour.actors.remote.HostProcess`); Ray is not needed."""
    store = open_store(settings.store_url)
    cipher = Cipher.from_keys(settings.secrets_key) if settings.secrets_key else None
    vault = Vault(store, cipher, settings.secrets)
    http = HttpCaller(vault, egress=Egress.from_allows(settings.egress))
    return Host(name, store, settings.config, claim, http=http, watch=watch), vault, http


def build_delivery(settings: HostSettings, secrets_key: str,
                   policy: RetryPolicy) -> tuple[Store, Vault, Delivery]:
    """The delivery supervisor on its own store connection, with the vault that opens the bots'
    credentials and signs hand-off webhooks, as its process builds it
    (:class:`parlour.actors.remote.DeliveryProcess`); Ray is not needed."""
    store = open_store(settings.store_url)
    cipher = Cipher.from_keys(secrets_key)
    vault = Vault(store, cipher, settings.secrets)
    lookup = HookLookup(settings.webhooks, vault.secrets_of, Bots(store, cipher).get)
    return store, vault, Delivery(store, lookup, policy=policy, egress=Egress.from_allows(settings.egress))


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
