"""A runtime in the test's own process, without Ray: what most gateway tests put behind the
gateway instead of :class:`parlour.runtime.Runtime`.

It is :class:`parlour.actors.local.LocalBackend` (the node server's in-process path) with what
a node holds besides its host: a router owning the partition table, the host's vault and HTTP
caller, and, given a secrets key, the delivery supervisor. Each part is built by the function its Ray
actor builds it with (:func:`parlour.actors.local.build_host`, :func:`~parlour.actors.local.build_delivery`),
on its own connection to the store; flows are
published as ``parlour serve`` publishes them (:func:`parlour.serve.deploy_new`).

>>> runtime = await LocalRuntime.start("redis://127.0.0.1:6379?prefix=t:", env={"demo": {...}})
>>> await runtime.deploy("demo", [bundled_flows()])
>>> gateway = Gateway(settings, runtime, store, operator_hash=...)
>>> await runtime.stop()

What it leaves out is Ray's: no process to kill, no restart, no dedicated conversation in a
process of its own (a dedicated flow runs in the host), no watchdog (which would end the
test's process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from parlour.actors.delivery import Delivery, RetryPolicy
from parlour.actors.host import Host, HostConfig
from parlour.actors.local import LocalBackend, build_delivery, build_host
from parlour.actors.remote import HostSettings, Names
from parlour.actors.router import Router
from parlour.actors.tickets import TicketPolicy
from parlour.channels.handoff import HookTarget
from parlour.http import HttpCaller
from parlour.messages import DEFAULT_PARTITIONS
from parlour.serve import check_flows, deploy_new
from parlour.store import Store, open_store
from parlour.vault import Vault


@dataclass
class Supervisor:
    """The delivery supervisor as :class:`parlour.actors.remote.DeliveryActor` runs it: its own
    store connection and vault, sending until ``stopping`` is set."""

    store: Store
    vault: Vault
    delivery: Delivery
    stopping: asyncio.Event
    running: asyncio.Task | None = None

    @classmethod
    def of(cls, settings: HostSettings, secrets_key: str, policy: RetryPolicy) -> Supervisor:
        return cls(*build_delivery(settings, secrets_key, policy), asyncio.Event())

    async def start(self) -> None:
        await self.store.open()
        await self.vault.reload()
        self.running = asyncio.create_task(self.delivery.run(self.stopping))

    async def stop(self) -> None:
        """Stop sending; what made the supervisor fail, if it did, is raised here."""
        self.stopping.set()
        try:
            if self.running is not None:
                await self.running
        finally:
            await self.store.aclose()


class LocalRuntime(LocalBackend):
    """A router, one host owning every partition, and (with a secrets key) the delivery
    supervisor, all in this process: the gateway's backend, with what the tests ask of a
    runtime (``deploy``, ``send``, ``conversation``, ``stats``, ``stop``)."""

    def __init__(self, names: Names, host: Host, router: Router, http: HttpCaller, vault: Vault,
                 supervisor: Supervisor | None):
        super().__init__(host, self._reload_all)
        self.names, self.router, self.http, self.vault, self.supervisor = names, router, http, vault, supervisor

    @classmethod
    async def start(cls, store_url: str, *, name: str = "local", env: dict[str, dict[str, str]] | None = None,
                    secrets: dict[str, dict[str, str]] | None = None, secrets_key: str | None = None,
                    delivery: RetryPolicy | None = None, egress: Mapping[str, Sequence[str]] | None = None,
                    webhooks: Mapping[str, tuple[str, str]] | None = None) -> LocalRuntime:
        """What :meth:`parlour.runtime.Runtime.start` takes, for a runtime of one host with the
        default :class:`HostConfig`; its parts are named as the actors of a runtime ``name`` are."""
        targets = {tenant: HookTarget(url, secret) for tenant, (url, secret) in (webhooks or {}).items()}
        config = HostConfig(partitions=DEFAULT_PARTITIONS, env=env or {},
                            tickets=replace(TicketPolicy(), hooks=frozenset(targets)))
        names = Names(name, hosts=1)
        settings = HostSettings(store_url, names, config, secrets or {}, secrets_key=secrets_key,
                                egress={tenant: tuple(entries) for tenant, entries in (egress or {}).items()},
                                webhooks=targets)
        router = Router(open_store(store_url), config.partitions, names.all_hosts)
        host, vault, http = build_host(names.host(0), settings, router.claim)
        supervisor = Supervisor.of(settings, secrets_key, delivery or RetryPolicy()) if secrets_key else None
        runtime = cls(names, host, router, http, vault, supervisor)
        await runtime._start()
        return runtime

    async def _start(self) -> None:
        await self.http.__aenter__()
        await self.host.start()
        await self.vault.reload()
        if self.supervisor is not None:
            await self.supervisor.start()

    async def deploy(self, tenant: str, paths: Iterable[str | Path]) -> None:
        """Check the flows under ``paths`` against ``tenant``'s secrets and env and publish them
        as ``parlour serve`` does at its start (a version the registry holds is left as it is);
        the host serves them at once."""
        loaded = check_flows({tenant: [Path(p) for p in paths]}, {tenant: set(self.vault.secrets_of(tenant))},
                             self.host.config.env)
        await deploy_new(self.host.store, loaded)
        await self.host.reload_flows()

    async def _reload_all(self) -> int:
        """The host's vault and the supervisor's read the sealed secrets again."""
        if self.supervisor is not None:
            await self.supervisor.vault.reload()
        return await self.vault.reload()

    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]:
        """The host's figures and, if it runs, the delivery supervisor's (as a Ray runtime's)."""
        figures = await super().metrics(timeout_s)
        if self.supervisor is not None:
            figures[self.names.delivery] = self.supervisor.delivery.export()
        return figures

    async def stats(self) -> list[dict]:
        return [self.host.stats()]

    async def stop(self) -> None:
        """The supervisor, then the host (it finishes the batch in hand), its HTTP caller, the
        router's store."""
        try:
            if self.supervisor is not None:
                await self.supervisor.stop()
        finally:
            await self.host.stop()
            await self.http.aclose()
            await self.router.store.aclose()
