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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.actor import ActorHandle, ActorProxy
from ray.exceptions import RayError, RayTaskError

from parlour.channels.handoff import HookTarget
from parlour.codec import Record
from parlour.errors import ParlourError, Unavailable
from parlour.logs import setup_logging
from parlour.messages import ConversationKey, Inbound, Outcome, PartitionTable
from parlour.store import Fenced, FlowRecord, open_store, store_identity
from parlour.wire import decode_batch, encode_outcomes, send_batch

from .conversation import Arrival, Step, run_turns
from .dedicated import DedicatedPool
from .delivery import RetryPolicy
from .flows import Flows
from .host import HostConfig
from .local import build_delivery, build_host
from .router import Router
from .watchdog import TurnWatch

log = logging.getLogger("parlour.actors")
T = TypeVar("T")

NAMESPACE = "parlour"
SUPERVISED: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, "lifetime": "detached",
                              "namespace": NAMESPACE}
"""The options of parlour's named actors (given at creation, in :mod:`parlour.cluster.ray_cluster`):
detached, restarted by Ray without limit, in parlour's namespace, taking no CPU from the scheduler."""


@dataclass(frozen=True, slots=True)
class Names:
    """The actor names of one runtime; ``prefix`` lets several runtimes share a Ray cluster."""

    prefix: str = "parlour"
    hosts: int = 1
    role: str = "host"
    """``host`` (conversations only) or ``server`` (node servers: a host with the gateway in its process)."""

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    def host(self, index: int) -> str:
        return f"{self.prefix}-{self.role}-{index}"

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


class RouterProcess:
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


RouterActor = ray.remote(RouterProcess)


def handle(actor: ActorProxy[T]) -> ActorHandle:
    """The handle ``ActorClass.remote()`` returns (Ray types it ``ActorHandle[T] | type[T]``, so
    that a checker sees the class's methods)."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"not a Ray actor handle: {actor!r}")
    return actor


class DeliveryProcess:
    """The delivery supervisor in a process of its own. Started (and restarted by Ray) with the
    store (in its settings) and the secrets key that opens the bots' credentials and the tenants' secrets
    (a hand-off webhook is signed with one); it resumes from the outbox at once."""

    def __init__(self, secrets_key: str, policy: RetryPolicy, settings: HostSettings):
        setup_logging(settings.log_level, settings.log_format)
        self.store, self.vault, self.delivery = build_delivery(settings, secrets_key, policy)
        self.stopping = asyncio.Event()
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


DeliveryActor = ray.remote(DeliveryProcess)


class HostProcess:
    """A conversation host in a process of its own (Ray makes it an actor: :data:`HostActor`,
    and :class:`parlour.cluster.node_server.NodeServer` adds the gateway to it)."""

    def __init__(self, name: str, settings: HostSettings):
        setup_logging(settings.log_level, settings.log_format)
        # Hundreds of thousands of long-lived conversations: collect the young generation
        # less often, so that each batch does not pay for scanning them.
        gc.set_threshold(50_000, 20, 20)
        self.settings = settings
        router = ray.get_actor(settings.names.router, namespace=NAMESPACE)

        async def claim(host: str) -> tuple[int, list[int]]:
            return await router.claim.remote(host)

        self.host, self.vault, self.http = build_host(name, settings, claim, watch=_watch(name, settings))
        caps = settings.config.dedicated.share(settings.names.all_hosts.index(name), settings.names.hosts)
        self.dedicated = DedicatedPool(_Spawner(settings, self.host.flows), caps, self.host.clock)
        self.host.isolate(self.dedicated)
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
            self.host.counts["deliver_us"] += round((time.perf_counter() - started) * 1e6)
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
        await asyncio.gather(*(r.install(self.host.flows.records) for r in self._runners()),
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
        return list(await asyncio.gather(*(r.actor.rss.remote() for r in self._runners())))

    def _runners(self) -> list[_RayRunner]:
        return [r for r in self.dedicated.runners() if isinstance(r, _RayRunner)]

    async def stop(self) -> None:
        await self.started
        await self.host.stop()
        await self.http.aclose()

    def pid(self) -> int:
        return os.getpid()


HostActor = ray.remote(HostProcess)


class DedicatedProcess:
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


DedicatedActor = ray.remote(DedicatedProcess)


class _Spawner:
    """Starts a conversation's :class:`DedicatedActor` (named after its key, so that a host
    restarted while it lives finds it again), with its tenant's flows and env and no other's."""

    def __init__(self, settings: HostSettings, flows: Flows):
        self.settings = settings
        self.flows = flows

    def __call__(self, key: str) -> _RayRunner:
        tenant = key.split("/", 1)[0]
        name = f"{self.settings.names.prefix}-conv-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}"
        actor = DedicatedActor.options(num_cpus=0, name=name, namespace=NAMESPACE, get_if_exists=True).remote(
            _of(tenant, self.flows.records), {tenant: self.settings.config.env.get(tenant, {})})
        return _RayRunner(handle(actor), tenant, self.settings.config.window)


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
    """The host's watch files, kept per store (:func:`~parlour.store.store_identity`) and host
    name, so that a restart finds them and no other node's deaths count against its messages."""
    config = settings.config
    if config.watchdog_s <= 0:
        return None
    store = hashlib.blake2b(store_identity(settings.store_url).encode(), digest_size=6).hexdigest()
    folder = Path(config.watch_dir) if config.watch_dir else Path(tempfile.gettempdir()) / "parlour-watch"
    return TurnWatch(folder / f"{store}-{name}", tries=config.poison_tries)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- the callers' side


async def _answer(process: str, call: ray.ObjectRef):
    """What ``call`` returns; every failure of Ray's own as :class:`Unavailable`, and an error
    the actor raised on purpose (a :class:`ParlourError`, e.g. ``Fenced``) as itself."""
    try:
        return await call
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, ParlourError):
            raise cause from None
        raise RuntimeError(f"{process} failed: {cause!r}") from None
    except RayError as exc:
        raise Unavailable(process, _short(exc)) from None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class Handles:
    """One runtime's actors behind typed methods: the router, the hosts (or node servers) by
    name, and the delivery supervisor if it runs. Every ``.remote()`` call the rest of parlour
    makes goes through here, and Ray's errors come out as :class:`~parlour.errors.Unavailable`,
    so that no other module imports Ray.

    ``hosts`` may be filled lazily (:meth:`lookup`): a node server finds its peers by name."""

    def __init__(self, names: Names, router: ray.actor.ActorHandle, hosts: dict[str, ray.actor.ActorHandle],
                 delivery: ray.actor.ActorHandle | None = None):
        self.names, self.router, self.hosts, self.delivery = names, router, hosts, delivery

    @classmethod
    async def lookup(cls, names: Names, *, with_delivery: bool, timeout_s: float = 60.0) -> Handles:
        """The handles of a runtime that is starting or runs: each actor found by its name
        (waiting up to ``timeout_s`` for those not created yet)."""
        wanted = [names.router, *names.all_hosts, *([names.delivery] if with_delivery else [])]
        found: dict[str, ray.actor.ActorHandle] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for name in wanted:
                if name not in found:
                    try:
                        found[name] = ray.get_actor(name, namespace=NAMESPACE)
                    except ValueError:
                        pass
            missing = [name for name in wanted if name not in found]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise Unavailable(", ".join(missing), f"not found within {timeout_s:g} s")
            await asyncio.sleep(0.1)
        return cls(names, found[names.router], {name: found[name] for name in names.all_hosts},
                   found.get(names.delivery))

    # -------------------------------------------------------- messages

    async def table(self) -> PartitionTable:
        return await _answer("the router", self.router.table.remote())

    async def deliver(self, host: str, batch: list[Inbound]) -> list[Outcome]:
        """Run ``batch`` on ``host``; its outcomes (an event msgpack cannot carry fails alone)."""
        return await send_batch(partial(self.deliver_packed, host), batch)

    async def deliver_packed(self, host: str, data: bytes) -> bytes:
        """A batch packed already (:func:`parlour.wire.encode_batch`) run on ``host``; its outcomes, packed."""
        return await _answer(host, self.hosts[host].deliver.remote(data))

    async def inspect(self, key: ConversationKey) -> Record | None:
        """``key``'s record, from the host that owns its partition."""
        table = await self.table()
        host = table.host_of(key.partition(table.partitions))
        return await _answer(host, self.hosts[host].inspect.remote(key))

    async def reset(self, key: ConversationKey) -> bool:
        """Start ``key``'s conversation afresh on the host that owns it (asked again, with the
        table read again, if the partition moved meanwhile); False if it has none."""
        for _ in range(3):
            table = await self.table()
            host = table.host_of(key.partition(table.partitions))
            try:
                return await _answer(host, self.hosts[host].reset.remote(key))
            except Fenced:
                continue
        raise ParlourError(f"conversation {key.id} kept moving between hosts")

    # -------------------------------------------------------- every host at once

    async def install(self, records: list[FlowRecord]) -> None:
        """Every host stores ``records`` (idempotent) and serves the registry as it now is."""
        await asyncio.gather(*(_answer(n, h.install_flows.remote(records)) for n, h in self.hosts.items()))

    async def reload_secrets(self, timeout_s: float = 10.0) -> int:
        """Every host and the delivery supervisor read the sealed secrets again; how many hosts did."""
        actors = {**self.hosts, **({self.names.delivery: self.delivery} if self.delivery else {})}
        answers = await self._each(actors, "reload_secrets", timeout_s)
        return sum(1 for name in self.hosts if name in answers)

    async def reload_tenants(self, timeout_s: float = 10.0) -> int:
        """Every node server reads the tenants made with the admin API again; how many did."""
        return len(await self._each(self.hosts, "reload_tenants", timeout_s))

    async def ready(self, timeout_s: float = 60.0) -> list[dict]:
        """What each host reports once it has claimed its partitions (and, for a node server,
        once it listens); :class:`Unavailable` naming every one that did not, in time."""
        answers = await asyncio.gather(*(asyncio.wait_for(_answer(n, h.ready.remote()), timeout_s)
                                         for n, h in self.hosts.items()), return_exceptions=True)
        failed = {name: answer for name, answer in zip(self.hosts, answers, strict=True)
                  if isinstance(answer, BaseException)}
        if failed:
            reasons = (f"{name}: {exc.reason if isinstance(exc, Unavailable) else _short(exc)}"
                       for name, exc in failed.items())
            raise Unavailable(", ".join(failed), "; ".join(reasons))
        return [answer for answer in answers if not isinstance(answer, BaseException)]

    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]:
        """Each host's figures and the delivery supervisor's; one that does not answer in time
        is left out."""
        actors = {**self.hosts, **({self.names.delivery: self.delivery} if self.delivery else {})}
        return await self._each(actors, "metrics", timeout_s)

    async def passivate(self) -> int:
        """Every host forgets its resident conversations (each is in the store); how many in all."""
        return sum(await asyncio.gather(*(_answer(n, h.passivate.remote()) for n, h in self.hosts.items())))

    async def dedicated_rss(self) -> list[int]:
        """The resident memory of each dedicated conversation's process, on every host."""
        each = await asyncio.gather(*(_answer(n, h.dedicated_rss.remote()) for n, h in self.hosts.items()))
        return [rss for host in each for rss in host]

    async def stats(self) -> list[dict]:
        return list(await asyncio.gather(*(_answer(n, h.stats.remote()) for n, h in self.hosts.items())))

    async def pids(self) -> dict[str, int]:
        """The worker process of each host, of ``router`` and of ``delivery``, e.g. to kill one in a test."""
        actors = {**self.hosts, "router": self.router, **({"delivery": self.delivery} if self.delivery else {})}
        pids = await asyncio.gather(*(_answer(n, a.pid.remote()) for n, a in actors.items()))
        return dict(zip(actors, pids, strict=True))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Each host (a node server: its gateway first) and the delivery supervisor finish what
        they hold; one that does not answer within ``timeout_s`` is not waited for."""
        actors = {**self.hosts, **({self.names.delivery: self.delivery} if self.delivery else {})}
        await self._each(actors, "stop", timeout_s)

    def kill(self) -> None:
        """End every actor for good (no restart by Ray)."""
        for actor in [self.router, *self.hosts.values(), *([self.delivery] if self.delivery else [])]:
            ray.kill(actor, no_restart=True)

    async def _each(self, actors: dict[str, ray.actor.ActorHandle], method: str, timeout_s: float) -> dict:
        """``method`` called on every actor at once; the answers of those that gave one in time."""
        names = list(actors)
        calls = (asyncio.wait_for(_answer(name, getattr(actors[name], method).remote()), timeout_s) for name in names)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        return {name: answer for name, answer in zip(names, answers, strict=True)
                if not isinstance(answer, BaseException)}
