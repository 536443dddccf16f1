"""The Ray actors: thin wrappers that give the router, the hosts and dedicated conversations
a process of their own. Every ``ray.`` call of the actors lives here (and in
:mod:`parlour.cluster`); the classes they wrap know nothing of Ray.

- :class:`RouterActor`: named, detached, restarted by Ray without limit; its state is in the store.
- :class:`HostActor`: named, detached, restarted by Ray without limit; on (re)start it claims its
  partitions from the router under a new epoch.
- :class:`DeliveryActor`: named, detached, restarted by Ray without limit; the delivery
  supervisor, whose state is the store's outbox and dead letters.
- :class:`DedicatedActor`: one conversation of an ``isolation: dedicated`` flow, created by its
  host on first use and killed when idle; it runs the same :func:`run_turns` as a host.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field

import ray
from parlour.codec import Record
from parlour.gateway.channels.registry import Bots, Cipher
from parlour.gateway.vault import Vault
from parlour.flow import Event
from parlour.http import HttpCaller
from parlour.logs import setup_logging
from parlour.messages import ConversationKey, PartitionTable
from parlour.store import FlowRecord, open_store
from parlour.wire import decode_batch, encode_outcomes
from ray.exceptions import RayError

from .conversation import Step, run_turns
from .delivery import Delivery, RetryPolicy
from .flows import Flows
from .host import Host, HostConfig
from .router import Router

log = logging.getLogger("parlour.actors")

NAMESPACE = "parlour"
RESTART = {"max_restarts": -1, "max_task_retries": 0, "lifetime": "detached", "namespace": NAMESPACE}


@dataclass(frozen=True, slots=True)
class Names:
    """The actor names of one runtime; ``prefix`` lets several runtimes share a Ray cluster."""

    prefix: str = "parlour"
    hosts: int = 1

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    def host(self, index: int) -> str:
        return f"{self.prefix}-host-{index}"

    @property
    def delivery(self) -> str:
        return f"{self.prefix}-delivery"

    @property
    def all_hosts(self) -> list[str]:
        return [self.host(i) for i in range(self.hosts)]


@dataclass(frozen=True, slots=True)
class HostSettings:
    """What a host actor needs to rebuild itself after a restart. ``secrets`` are the config
    file's, by tenant (tenant -> name -> value); ``secrets_key`` opens those set through the API."""

    store_url: str
    names: Names
    config: HostConfig = field(default_factory=HostConfig)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets_key: str | None = None
    dedicated_idle_s: float = 600.0
    log_level: str = "WARNING"
    log_format: str = "text"


@ray.remote(num_cpus=0, **RESTART)
class RouterActor:
    def __init__(self, store_url: str, partitions: int, hosts: list[str]):
        self.router = Router(open_store(store_url), partitions, hosts)
        self.started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        while True:
            try:
                await self.router.start()
                return
            except Exception as exc:  # noqa: BLE001 - the store is not up yet: keep trying
                log.warning("the router cannot start yet: %r", exc)
                await asyncio.sleep(1.0)

    async def table(self) -> PartitionTable:
        await self.started
        return await self.router.table()

    async def claim(self, host: str) -> tuple[int, list[int]]:
        await self.started
        return await self.router.claim(host)

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0, **RESTART)
class DeliveryActor:
    """The delivery supervisor in a process of its own. Started (and restarted by Ray) with the
    store's URL and the secrets key that opens the bots' credentials; it resumes from the
    outbox at once."""

    def __init__(self, store_url: str, secrets_key: str, policy: RetryPolicy, log_level: str = "WARNING",
                 log_format: str = "text"):
        setup_logging(log_level, log_format)
        store = open_store(store_url)
        bots = Bots(store, Cipher.from_keys(secrets_key))
        self.store, self.stopping = store, asyncio.Event()
        self.delivery = Delivery(store, bots.get, policy=policy)
        self.running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        opened = False
        while not self.stopping.is_set():
            try:
                if not opened:  # once: a store opened again would leak its connections
                    await self.store.open()
                    opened = True
                await self.delivery.run(self.stopping)
            except Exception as exc:  # noqa: BLE001 - the store is not up yet, or it failed: go on
                log.warning("the delivery supervisor stopped, starting again: %r", exc)
                await asyncio.sleep(1.0)

    async def metrics(self) -> list:
        return self.delivery.export()

    async def stop(self) -> None:
        self.stopping.set()
        await self.running

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0, **RESTART)
class HostActor:
    def __init__(self, name: str, settings: HostSettings):
        setup_logging(settings.log_level, settings.log_format)
        # Hundreds of thousands of long-lived conversations: collect the young generation
        # less often, so that each batch does not pay for scanning them.
        gc.set_threshold(50_000, 20, 20)
        self.settings = settings
        store = open_store(settings.store_url)
        cipher = Cipher.from_keys(settings.secrets_key) if settings.secrets_key else None
        self.vault = Vault(store, cipher, settings.secrets)
        self.http = HttpCaller(self.vault)
        router = ray.get_actor(settings.names.router, namespace=NAMESPACE)

        async def claim(host: str) -> tuple[int, list[int]]:
            return await router.claim.remote(host)

        self.host = Host(name, store, settings.config, claim, http=self.http)
        self.dedicated = _Dedicated(settings, self.host.flows)
        self.host.isolated = self.dedicated.run
        self.started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        await self.http.__aenter__()
        while True:
            try:
                await self.host.start()
                await self.vault.reload()
                return
            except Exception as exc:  # noqa: BLE001 - the store or the router is not up yet: keep trying
                log.warning("host %s cannot start yet: %r", self.host.name, exc)
                await asyncio.sleep(1.0)

    async def deliver(self, batch: bytes) -> bytes:
        """A batch in :mod:`parlour.wire` format; its outcomes likewise."""
        started = time.perf_counter()
        try:
            return encode_outcomes(await self.host.deliver(decode_batch(batch)))
        finally:
            self.host.counts["deliver_ms"] += (time.perf_counter() - started) * 1000
            self.host.counts["delivers"] += 1

    async def ready(self) -> dict:
        await self.started
        return await self.host.ready()

    async def install_flows(self, records: list[FlowRecord]) -> int:
        """Store ``records`` (idempotent) and serve the registry as it now is."""
        await self.started
        for record in records:
            await self.host.store.put_flow(record)
        count = await self.host.reload_flows()
        await self.dedicated.install()
        return count

    async def reload_secrets(self) -> int:
        """Read the tenants' sealed secrets again (one was set or deleted); how many opened."""
        await self.started
        return await self.vault.reload()

    async def inspect(self, key: ConversationKey) -> Record | None:
        await self.started
        return await self.host.inspect(key)

    async def reset(self, key: ConversationKey) -> bool:
        await self.started
        return await self.host.reset(key)

    async def metrics(self) -> list:
        return self.host.export_metrics()

    async def stats(self) -> dict:
        return {**self.host.stats(), "pid": os.getpid(), "rss_bytes": _rss(), "dedicated": len(self.dedicated.actors)}

    async def passivate(self) -> int:
        await self.started
        return await self.host.passivate()

    async def dedicated_rss(self) -> list[int]:
        """The resident memory of each dedicated conversation's process."""
        return list(await asyncio.gather(*(a.rss.remote() for a, _ in self.dedicated.actors.values())))

    async def stop(self) -> None:
        await self.started
        await self.host.stop()
        await self.http.aclose()
        self.dedicated.stop()

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
class DedicatedActor:
    """One conversation in a process of its own."""

    def __init__(self, records: list[FlowRecord], env: dict[str, dict[str, str]]):
        self.flows = Flows(None, env)
        self.flows.install(records)

    def install(self, records: list[FlowRecord]) -> None:
        self.flows.install(records)

    def run(self, tenant: str, key: str, record: bytes | None, events: list[tuple[str | None, Event]],
            now: float, window: int) -> tuple[bytes | None, list[Step]]:
        return run_turns(self.flows.catalog(tenant), key, record, events, now, window)

    def rss(self) -> int:
        return _rss()


class _Dedicated:
    """The dedicated conversation actors of one host, by conversation key."""

    def __init__(self, settings: HostSettings, flows: Flows):
        self.settings = settings
        self.flows = flows
        self.actors: dict[str, tuple[ray.actor.ActorHandle, float]] = {}

    async def run(self, tenant: str, key: str, record: bytes | None, events: list, now: float):
        self._reap()
        found = self.actors.get(key)
        actor = found[0] if found else DedicatedActor.options(
            name=f"{self.settings.names.prefix}-conv-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}",
            namespace=NAMESPACE, get_if_exists=True,
        ).remote(self.flows.records, {tenant: self.settings.config.env.get(tenant, {})})  # its tenant's env only
        self.actors[key] = (actor, time.monotonic())
        try:
            return await actor.run.remote(tenant, key, record, events, now, self.settings.config.window)
        except RayError:
            self.actors.pop(key, None)
            raise

    async def install(self) -> None:
        await asyncio.gather(*(a.install.remote(self.flows.records) for a, _ in self.actors.values()),
                             return_exceptions=True)

    def _reap(self) -> None:
        cutoff = time.monotonic() - self.settings.dedicated_idle_s
        for key in [k for k, (_, used) in self.actors.items() if used < cutoff]:
            ray.kill(self.actors.pop(key)[0])

    def stop(self) -> None:
        for actor, _ in self.actors.values():
            ray.kill(actor)
        self.actors.clear()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
