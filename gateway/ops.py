"""For operators: liveness, readiness and the node's metrics.

``/metrics`` names tenants, bots and hosts, so it needs the operator's token by default (a
Prometheus job sends it with ``authorization: {credentials_file: ...}``); ``metrics_public: true``
serves it to anyone who can reach the port. ``/healthz`` and ``/readyz`` say nothing of tenants
and stay open for probes.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import ApiError


class Ops:
    def __init__(self, gateway, *, ready_timeout_s: float = 5.0):
        self.gateway = gateway
        self.ready_timeout_s = ready_timeout_s

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/healthz", self.healthz), web.get("/readyz", self.readyz), web.get("/metrics", self.metrics)]

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is alive and its event loop answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ray, the store and every host answer: 200, else 503 naming what did not."""
        checks = {"store": self._store(), "hosts": self.gateway.runtime.ready(self.ready_timeout_s)}
        results = await asyncio.gather(*(asyncio.wait_for(c, self.ready_timeout_s) for c in checks.values()),
                                       return_exceptions=True)
        failed = {name: f"{type(r).__name__}: {r}" for name, r in zip(checks, results, strict=True)
                  if isinstance(r, BaseException)}
        if self.gateway.stopping:
            failed["gateway"] = "shutting down"
        if failed:
            raise ApiError(503, "not_ready", "not ready: " + ", ".join(failed), failed, headers={"Retry-After": "1"})
        hosts = results[1]
        if not isinstance(hosts, list):
            raise TypeError(f"the hosts' readiness is a list, not {hosts!r}")
        servers = [{key: h[key] for key in ("name", "epoch", "partitions") if key in h} for h in hosts]
        return web.json_response({"status": "ready", "hosts": len(hosts), "servers": servers})

    async def _store(self) -> None:
        await self.gateway.store.get_meta("router")

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.gateway.settings.metrics_public:
            self.gateway.auth.operator(request)
        self.gateway.metrics.hosts.latest = await self.gateway.runtime.metrics()
        body = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
