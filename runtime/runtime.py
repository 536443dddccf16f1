"""The Python API: a parlour runtime on Ray, for embedding and for tests.

>>> async with await Runtime.start(store="sqlite:///.parlour/parlour.db", hosts=2) as runtime:
...     await runtime.deploy("demo", ["flows/"])
...     outcome = await runtime.send(Inbound(ConversationKey("demo", "web", "u1"), "m-1", UserMessage("hi")))
...     [reply.text for reply in outcome.replies]

:meth:`Runtime.start` starts a local Ray with this machine's cores (or joins the cluster at
``address``), then finds or creates the router and the conversation hosts. :meth:`send` hands
an event to its conversation's host and returns its :class:`~parlour.messages.Outcome` once
the turn is committed: acknowledge the channel only when ``outcome.ok``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Self

from .actors.delivery import RetryPolicy
from .actors.dispatch import Dispatcher
from .actors.host import HostConfig
from .actors.remote import Handles, HostSettings, Names
from .channels.handoff import HookTarget
from .cluster import ray_cluster
from .codec import Record
from .egress import Egress
from .errors import ParlourError
from .messages import DEFAULT_PARTITIONS, ConversationKey, Inbound, Outcome
from .publish import Draft, check_files, publish
from .store import FlowRecord, open_store

if TYPE_CHECKING:
    from .cluster.node_server import Serving

DEFAULT_STORE = "sqlite:///.parlour/parlour.db"


def _by_tenant(values: dict | None, what: str) -> dict[str, dict[str, str]]:
    """``values`` as tenant -> name -> value; ParlourError for a flat mapping, which would make
    one tenant's values every tenant's."""
    values = values or {}
    flat = [name for name, inner in values.items() if not isinstance(inner, dict)]
    if flat:
        raise ParlourError(f"{what} are given by tenant ({{tenant: {{NAME: value}}}}), not node-wide: "
                           f"{', '.join(map(repr, flat[:5]))} is not a tenant's mapping")
    return {tenant: dict(inner) for tenant, inner in values.items()}


log = logging.getLogger("parlour.runtime")

class Runtime:
    whole_node = False
    """A gateway given a runtime is the only one in front of its hosts (:class:`~parlour.gateway.app.Backend`)."""

    def __init__(self, settings: HostSettings, started_ray: bool, actors: Handles):
        self.settings = settings
        self._started_ray = started_ray
        self.actors = actors
        self.dispatcher = Dispatcher(actors.table, actors.deliver)

    @classmethod
    async def start(cls, *, store: str = DEFAULT_STORE, hosts: int = 1, partitions: int = DEFAULT_PARTITIONS,
                    address: str | None = None, num_cpus: int | None = None, name: str = "parlour",
                    env: dict[str, dict[str, str]] | None = None, secrets: dict[str, dict[str, str]] | None = None,
                    config: HostConfig | None = None, ready_timeout_s: float = 60.0,
                    log_level: str = "WARNING", log_format: str = "text", secrets_key: str | None = None,
                    delivery: RetryPolicy | None = None,
                    egress: Mapping[str, Sequence[str]] | None = None,
                    webhooks: Mapping[str, tuple[str, str]] | None = None,
                    serving: Serving | None = None) -> Runtime:
        """Start (or join) Ray and the runtime named ``name``; return once every host is ready.
        ``env`` and ``secrets`` are each tenant's (tenant -> name -> value): a flow sees its own
        tenant's only. With ``secrets_key`` (what opens the bots' credentials and the secrets set
        through the API) it also runs the delivery supervisor, which sends the replies of the
        messaging channels. ``egress`` is each tenant's ``egress.allow`` (:mod:`parlour.egress`);
        a tenant it does not name reaches public addresses only, with its http nodes and its bots
        alike. ``webhooks`` is each tenant's hand-off webhook, (url, name of the secret that signs):
        its hosts put every ticket event in the outbox, and the delivery supervisor posts it.
        With ``serving`` (``parlour serve``), each host is a node server: the gateway runs in
        its process, on the port ``serving`` names (:mod:`parlour.cluster.node_server`)."""
        if hosts < 1:
            raise ParlourError(f"a runtime needs at least one host, got {hosts}")
        if not hosts <= partitions <= 65_536:
            raise ParlourError(f"{partitions} partitions cannot be shared by {hosts} hosts "
                               f"(between {hosts} and 65,536)")
        open_store(store)  # refuses a URL no backend takes, before Ray starts
        if store.startswith("memory:") and hosts != 1:
            raise ParlourError("memory:// lives in one process: it serves exactly one host (use sqlite or redis)")
        if store.startswith("sqlite:") and address:
            raise ParlourError("sqlite is one machine's store: a Ray cluster needs redis://")
        config = config or HostConfig()
        merged = _by_tenant(config.env, "env")
        for tenant, values in _by_tenant(env, "env").items():
            merged[tenant] = {**merged.get(tenant, {}), **values}
        targets = {tenant: HookTarget(url, secret) for tenant, (url, secret) in (webhooks or {}).items()}
        config = replace(config, partitions=partitions, env=merged,
                         tickets=replace(config.tickets, hooks=config.tickets.hooks | frozenset(targets)))
        allows = {tenant: tuple(entries) for tenant, entries in (egress or {}).items()}
        try:
            Egress.from_allows(allows)  # a bad entry is refused here, not in every host
        except ValueError as exc:
            raise ParlourError(f"egress: {exc}") from None
        names = Names(name, hosts, "server" if serving is not None else "host")
        settings = HostSettings(store, names, config, _by_tenant(secrets, "secrets"), secrets_key=secrets_key,
                                egress=allows, webhooks=targets, log_level=log_level.upper(), log_format=log_format)
        started = await asyncio.to_thread(ray_cluster.connect, address, num_cpus)
        router = ray_cluster.place_router(settings, partitions)
        actors = Handles(settings.names, router, {})
        table = await asyncio.wait_for(actors.table(), ready_timeout_s)
        if list(table.hosts) != settings.names.all_hosts or table.partitions != partitions:
            raise ParlourError(
                f"runtime {name!r} already runs with {len(table.hosts)} hosts and {table.partitions} partitions: "
                "stop it before starting it with other numbers (moving partitions comes with scaling)")
        actors.delivery = (ray_cluster.place_delivery(settings, secrets_key, delivery or RetryPolicy())
                           if secrets_key else None)
        actors.hosts = (ray_cluster.place_servers(settings, serving) if serving is not None
                        else ray_cluster.place_hosts(settings))
        runtime = cls(settings, started, actors)
        try:
            await runtime.ready(ready_timeout_s)
        except BaseException:
            await runtime.stop(timeout_s=5.0)
            raise
        return runtime

    async def ready(self, timeout_s: float = 60.0) -> list[dict]:
        """Wait until every host has claimed its partitions (a node server: and listens);
        what each reports. :class:`~parlour.errors.Unavailable` names those that did not."""
        return await self.actors.ready(timeout_s)

    async def deploy(self, tenant: str, paths: Iterable[str | Path]) -> list[FlowRecord]:
        """Validate the flows under ``paths`` together and make them current for ``tenant``
        (:func:`parlour.publish.publish`); :class:`~parlour.errors.FlowError` (nothing deployed) if any has an
        error. Conversations in progress stay on the version they started on. An ``env.NAME``
        a flow reads that the tenant's env lacks is logged as a warning: the template that
        reads it would fail when it runs."""
        checked = check_files(tenant, paths, self.settings.config.env.get(tenant, {}))
        for warning in checked.warnings if not checked.errors else ():  # a refused deploy shows its errors alone
            log.warning("%s", warning)
        published = await publish([Draft.of(tenant, f) for f in checked.flows], self.install,
                                  now=time.time(), problems=checked.errors)
        return [p.record for p in published]

    async def install(self, records: list[FlowRecord]) -> None:
        """Put flow versions (validated already) in the registry; every host serves them."""
        await self.actors.install(records)

    async def reload_secrets(self, timeout_s: float = 10.0) -> int:
        """Every host, and the delivery supervisor, read the tenants' sealed secrets again (one
        was set or deleted); how many hosts did. One that does not answer (dead, restarting)
        reads them when it starts again."""
        return await self.actors.reload_secrets(timeout_s)

    async def reload_tenants(self) -> int:
        """Nothing to tell: a gateway in front of this runtime is its only one, and knows the
        tenants it made (node servers tell each other: :mod:`parlour.cluster.node_server`)."""
        return 0

    async def send(self, inbound: Inbound) -> Outcome:
        return await self.dispatcher.send(inbound)

    async def send_many(self, batch: list[Inbound]) -> list[Outcome]:
        return await self.dispatcher.send_many(batch)

    async def conversation(self, key: ConversationKey) -> Record | None:
        """The conversation's record as committed: its state, pinned flow version, dedup window."""
        return await self.actors.inspect(key)

    async def reset(self, key: ConversationKey) -> bool:
        """Start ``key``'s conversation afresh; False if it has none."""
        return await self.actors.reset(key)

    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]:
        """Each host's figures for ``/metrics``, and the delivery supervisor's; one that does not
        answer in time is left out."""
        return await self.actors.metrics(timeout_s)

    async def stats(self) -> list[dict]:
        return await self.actors.stats()

    async def pids(self) -> dict[str, int]:
        """The worker process of each host (and ``router``), e.g. to kill one in a test."""
        return await self.actors.pids()

    async def stop(self, *, shutdown_ray: bool | None = None, timeout_s: float = 30.0) -> None:
        """Let each host finish and commit the batch in hand (a node server: drain its gateway
        first), then end the actors (and Ray, if this runtime started it)."""
        await self.dispatcher.aclose()
        await self.actors.stop(timeout_s)
        self.actors.kill()
        if shutdown_ray if shutdown_ray is not None else self._started_ray:
            await asyncio.to_thread(ray_cluster.disconnect)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()
