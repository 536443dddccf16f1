"""The Ray actors: thin wrappers that give the router, the hosts and dedicated conversations
a process of their own. Every ``ray.`` call of the actors lives here (and in
:mod:`parlour.cluster`); the classes they wrap know nothing of Ray.

- :class:`RouterActor`: named, detached, restarted by Ray without limit; its state is in the store.
- :class:`HostActor`: named, detached, restarted by Ray without limit; on (re)start it claims its
  partitions from the router under a new epoch.
- :class:`DeliveryActor`: named, detached, restarted by Ray without limit; the delivery
  supervisor, whose state is the store's outbox and dead letters.
- :class:`DedicatedActor`: one conversation of an ``isolation: dedicated`` flow, created by its
  host on first use, within the caps of :mod:`parlour.actors.dedicated`, and killed when idle;
  it runs the same :func:`run_turns` as a host.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from parlour.codec import Record
from parlour.egress import Egress
from parlour.gateway.channels.handoff import HookLookup, HookTarget
from parlour.gateway.channels.registry import Bots, Cipher
from parlour.gateway.vault import Vault
from parlour.http import HttpCaller
from parlour.logs import setup_logging
from parlour.messages import ConversationKey, PartitionTable
from parlour.store import FlowRecord, open_store
from parlour.wire import decode_batch, encode_outcomes

from .conversation import Arrival, Step, run_turns
from .dedicated import DedicatedPool
from .delivery import Delivery, RetryPolicy
from .flows import Flows
from .host import Host, HostConfig
from .router import Router
from .watchdog import TurnWatch

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
    """Each tenant's secrets from the config file (those set through the API are in the store, sealed)."""
    secrets_key: str | None = None
    egress: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each tenant's ``egress.allow`` entries (a tenant not named: public addresses only)."""
    webhooks: dict[str, HookTarget] = field(default_factory=dict)
    """Each tenant's hand-off webhook (``config.tickets.hooks`` names the same tenants)."""
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
    store's URL and the secrets key that opens the bots' credentials and the tenants' secrets
    (a hand-off webhook is signed with one); it resumes from the outbox at once."""

    def __init__(self, store_url: str, secrets_key: str, policy: RetryPolicy, settings: HostSettings):
        setup_logging(settings.log_level, settings.log_format)
        store = open_store(store_url)
        cipher = Cipher.from_keys(secrets_key)
        bots = Bots(store, cipher)
        self.vault = Vault(store, cipher, settings.secrets)
        self.store, self.stopping = store, asyncio.Event()
        lookup = HookLookup(settings.webhooks, self.vault.secrets_of, bots.get)
        self.delivery = Delivery(store, lookup, policy=policy, egress=Egress.from_allows(settings.egress))
        self.running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        opened = False
        while not self.stopping.is_set():
            try:
                if not opened:  # once: a store opened again would leak its connections
                    await self.store.open()
                    opened = True
                    await self.vault.reload()
                await self.delivery.run(self.stopping)
            except Exception as exc:  # noqa: BLE001 - the store is not up yet, or it failed: go on
                log.warning("the delivery supervisor stopped, starting again: %r", exc)
                await asyncio.sleep(1.0)

    async def metrics(self) -> list:
        return self.delivery.export()

    async def reload_secrets(self) -> int:
        """Read the tenants' sealed secrets again (a webhook's signing secret may have changed)."""
        return await self.vault.reload()

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
        self.http = HttpCaller(self.vault, egress=Egress.from_allows(settings.egress))
        router = ray.get_actor(settings.names.router, namespace=NAMESPACE)

        async def claim(host: str) -> tuple[int, list[int]]:
            return await router.claim.remote(host)

        self.host = Host(name, store, settings.config, claim, http=self.http,
                         watch=_watch(name, settings))
        caps = settings.config.dedicated.share(settings.names.all_hosts.index(name), settings.names.hosts)
        self.dedicated = DedicatedPool(_Spawner(settings, self.host.flows), caps, self.host.clock)
        self.host.isolated = self.dedicated
        self.started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        await self.http.__aenter__()
        if self.host.watch is not None:
            self.host.watch.start_watchdog(os.getpid(), self.settings.config.watchdog_s,
                                           self.settings.config.watchdog_period_s)
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
        await asyncio.gather(*(r.install(self.host.flows.records) for r in self.dedicated.runners()),
                             return_exceptions=True)
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
        return {**self.host.stats(), "pid": os.getpid(), "rss_bytes": _rss()}

    async def passivate(self) -> int:
        await self.started
        return await self.host.passivate()

    async def dedicated_rss(self) -> list[int]:
        """The resident memory of each dedicated conversation's process."""
        return list(await asyncio.gather(*(r.actor.rss.remote() for r in self.dedicated.runners())))

    async def stop(self) -> None:
        await self.started
        await self.host.stop()
        await self.http.aclose()

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

    def run(self, tenant: str, key: str, record: bytes | None, events: list[Arrival],
            now: float, window: int) -> tuple[bytes | None, list[Step]]:
        return run_turns(self.flows.catalog(tenant), key, record, events, now, window)

    def rss(self) -> int:
        return _rss()


class _Spawner:
    """Starts a conversation's :class:`DedicatedActor` (named after its key, so that a host
    restarted while it lives finds it again), with its tenant's flows and env and no other's."""

    def __init__(self, settings: HostSettings, flows: Flows):
        self.settings = settings
        self.flows = flows

    def __call__(self, key: str) -> _RayRunner:
        tenant = key.split("/", 1)[0]
        name = f"{self.settings.names.prefix}-conv-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}"
        actor = DedicatedActor.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(
            _of(tenant, self.flows.records), {tenant: self.settings.config.env.get(tenant, {})})
        return _RayRunner(actor, tenant, self.settings.config.window)


class _RayRunner:
    """A :class:`~parlour.actors.dedicated.Runner` in a Ray actor."""

    def __init__(self, actor: ray.actor.ActorHandle, tenant: str, window: int):
        self.actor = actor
        self.tenant = tenant
        self.window = window

    async def run(self, tenant: str, key: str, record: bytes | None, events: list, now: float):
        return await self.actor.run.remote(tenant, key, record, events, now, self.window)

    async def install(self, records: list[FlowRecord]) -> None:
        await self.actor.install.remote(_of(self.tenant, records))

    def kill(self) -> None:
        ray.kill(self.actor)


def _of(tenant: str, records: list[FlowRecord]) -> list[FlowRecord]:
    return [record for record in records if record.tenant == tenant]


def _watch(name: str, settings: HostSettings) -> TurnWatch | None:
    """The host's watch files, kept per store and host name, so that a restart finds them."""
    config = settings.config
    if config.watchdog_s <= 0:
        return None
    store = hashlib.blake2b(settings.store_url.encode(), digest_size=6).hexdigest()
    folder = Path(config.watch_dir) if config.watch_dir else Path(tempfile.gettempdir()) / "parlour-watch"
    return TurnWatch(folder / f"{store}-{name}", tries=config.poison_tries)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
