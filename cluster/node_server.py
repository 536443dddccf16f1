"""Node servers: the HTTP gateway and a conversation host in one process, one per core.

A node server is a Ray actor (``{prefix}-server-{i}``: named, detached, restarted by Ray without
limit) that is at once

- a conversation host (:class:`~parlour.actors.remote.HostProcess`): it claims its partitions
  from the router under a new epoch each time it starts, and runs their conversations;
- the gateway (:class:`~parlour.gateway.app.Gateway`: the web channel and its socket, the
  channels' webhooks, the admin API, ``/metrics``, health) on the node's port, which every
  server of the node binds with ``SO_REUSEPORT``: the kernel spreads connections over them,
  and one that dies leaves the others accepting.

A message whose partition this process owns runs here (:class:`NodeBackend`): HTTP in, turn,
group commit, HTTP out, with no Ray call and no encoding. A message of another server's
partition goes to its owner in micro-batches (:class:`~parlour.actors.dispatch.Dispatcher`) over
a Unix socket (:mod:`parlour.actors.links`: a Ray call between two processes of one machine
costs as much as the turn), and keeps every guarantee: the owner's host orders it,
deduplicates it and commits it.

This module is the composition root of a node server's process: with the driver's
(:mod:`parlour.serve`), the only one that puts the gateway and the actors together.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import ray
from aiohttp import web

from parlour.actors.dispatch import Dispatcher
from parlour.actors.host import Host
from parlour.actors.links import Link, LinkServer, link_folder
from parlour.actors.local import LocalBackend
from parlour.actors.remote import Handles, HostProcess, HostSettings
from parlour.channels.registry import Bots, Cipher
from parlour.codec import Record
from parlour.config import Settings
from parlour.gateway.app import Gateway
from parlour.messages import MOVED, ConversationKey, Inbound, Outcome, partition_of
from parlour.metrics import export_registry
from parlour.store import Fenced, FlowRecord, Store, open_store
from parlour.vault import Vault

log = logging.getLogger("parlour.node")


@dataclass(frozen=True)
class Serving:
    """What a node server needs, besides its host's settings, to serve HTTP: the node's
    settings, the operator token's hash, the key that seals what the gateway stores, and the
    port the driver reserved (bound with ``SO_REUSEPORT``, not listening)."""

    settings: Settings
    operator_hash: str
    secrets_key: str
    port: int


class NodeBackend(LocalBackend):
    """The gateway's :class:`~parlour.gateway.app.Backend` in a node server: the partitions of
    this process's host are served in-process (:class:`~parlour.actors.local.LocalBackend`),
    the others through their owners; what concerns every server (flows, secrets, tenants,
    readiness, metrics) goes to all of them."""

    whole_node = True
    """``/metrics`` shows every server's figures, this one's own included, labelled by server."""

    def __init__(self, host: Host, actors: Handles, links: dict[str, Link] | None = None):
        """``links`` reach the other servers of this machine (:mod:`parlour.actors.links`);
        a server without one is reached through Ray."""
        super().__init__(host)
        self.actors = actors
        self.links = links or {}
        self.dispatcher = Dispatcher(actors.table, self._forward)

    def _local(self, key: ConversationKey) -> bool:
        return partition_of(key.id, self.host.config.partitions) in self.host.owned

    async def send(self, inbound: Inbound) -> Outcome:
        if self._local(inbound.key):
            outcome = (await self.host.deliver([inbound]))[0]
            if outcome.status != MOVED:
                return outcome
        return await self.dispatcher.send(inbound)

    async def _forward(self, server: str, batch: list[Inbound]) -> list[Outcome]:
        link = self.links.get(server)
        return await (link.deliver(batch) if link is not None else self.actors.deliver(server, batch))

    async def conversation(self, key: ConversationKey) -> Record | None:
        return await (self.host.inspect(key) if self._local(key) else self.actors.inspect(key))

    async def reset(self, key: ConversationKey) -> bool:
        if self._local(key):
            try:
                return await self.host.reset(key)
            except Fenced:  # lost meanwhile: its new owner is asked
                pass
        return await self.actors.reset(key)

    async def install(self, records: list[FlowRecord]) -> None:
        await self.actors.install(records)

    async def reload_secrets(self) -> int:
        return await self.actors.reload_secrets()

    async def reload_tenants(self) -> int:
        return await self.actors.reload_tenants()

    async def ready(self, timeout_s: float = 60.0) -> list[dict]:
        return await self.actors.ready(timeout_s)

    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]:
        return await self.actors.metrics(timeout_s)

    async def aclose(self) -> None:
        await self.dispatcher.aclose()
        await asyncio.gather(*(link.aclose() for link in self.links.values()))


class NodeServer(HostProcess):
    """A host with the gateway in its process (Ray makes it an actor: :data:`NodeServerActor`)."""

    def __init__(self, name: str, settings: HostSettings, serving: Serving):
        super().__init__(name, settings)
        self.serving = serving
        self.gateway: Gateway | None = None
        self.backend: NodeBackend | None = None
        self.runner: web.BaseRunner | None = None
        self.link_server: LinkServer | None = None
        self._store: Store | None = None
        self.listening = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        await self.started
        node = self.serving.settings
        folder = link_folder(f"{self.settings.store_url} {self.settings.names.prefix}")
        self.link_server = LinkServer(folder / f"{self.host.name}.sock", self.host.deliver)
        await self.link_server.start()
        actors = await Handles.lookup(self.settings.names, with_delivery=True)
        links = {name: Link(folder / f"{name}.sock", name) for name in self.settings.names.all_hosts
                 if name != self.host.name}
        self.backend = NodeBackend(self.host, actors, links)
        self._store = store = open_store(self.settings.store_url)
        await store.open()
        cipher = Cipher.from_keys(self.serving.secrets_key)
        vault = Vault(store, cipher, self.settings.secrets, max_secrets=node.limits.max_secrets,
                      max_secret_bytes=node.limits.max_secret_bytes, unseal=False)
        self.gateway = Gateway(node, self.backend, store, operator_hash=self.serving.operator_hash,
                               bots=Bots(store, cipher), vault=vault)
        self.runner = self.gateway.runner(handle_signals=False, shutdown_timeout=node.shutdown_timeout_s)
        await self.runner.setup()
        await web.TCPSite(self.runner, node.host, self.serving.port, reuse_port=True).start()
        log.info("%s listens on %s:%d", self.host.name, node.host, self.serving.port)

    async def ready(self) -> dict:
        report = await super().ready()
        await asyncio.shield(self.listening)
        return {**report, "listening": True}

    async def reload_tenants(self) -> int:
        """Read the tenants made with the admin API again (one was made on another server)."""
        await asyncio.shield(self.listening)
        assert self.gateway is not None
        await self.gateway.load_tenants()
        return len(self.gateway.tenants)

    async def metrics(self) -> list:
        """This host's figures and this server's gateway's."""
        families = await super().metrics()
        if self.gateway is not None:
            families += export_registry(self.gateway.metrics.own)
        return families

    async def stop(self) -> None:
        """Drain: stop accepting, let the requests in flight finish (their turns commit and are
        answered) for up to ``shutdown_timeout_s``, close the chat sockets; then the host
        finishes the batch in hand and closes its store."""
        if not self.listening.done():
            self.listening.cancel()
        await asyncio.gather(self.listening, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.link_server is not None:  # the batches peers forwarded commit and are answered
            await self.link_server.close()
        if self.backend is not None:
            await self.backend.aclose()
        if self._store is not None:
            await self._store.aclose()
        await super().stop()


NodeServerActor = ray.remote(NodeServer)
