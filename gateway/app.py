"""The gateway: one aiohttp application with the web channel, the admin API and the
operators' routes, in front of a parlour runtime.

>>> gateway = Gateway(settings, runtime, store, operator_hash=hash_token(token))
>>> runner = gateway.runner(shutdown_timeout=30)   # serve it with this runner, not web.AppRunner

It takes what it needs as handles (the runtime that sends messages, an open store for the
registry and the outbox): :mod:`parlour.serve` puts it together.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from aiohttp import web

from parlour.channels.registry import Bots
from parlour.codec import Record
from parlour.config import Settings, TenantConfig, check_tenant_name
from parlour.errors import ParlourError
from parlour.messages import ConversationKey, Inbound, Outcome
from parlour.metrics import GatewayMetrics
from parlour.store import FlowRecord, Store
from parlour.vault import Vault

from .admin import Admin
from .auth import Auth
from .bots_api import BotsApi
from .console import Console
from .conversations import Conversations
from .handoffs import Handoffs
from .ingress import Ingress
from .mailbox import Mailbox, MailboxApi
from .middleware import FROM_PATH, AccessLogger, middlewares
from .openapi import openapi_route
from .ops import Ops
from .secrets_api import SecretsApi
from .server import GatewayRunner
from .web import CHANNEL as WEB_CHANNEL
from .web import WebChannel, WebPush
from .webhooks import Webhooks

log = logging.getLogger("parlour.gateway")

TENANTS_META = "tenants"


class Backend(Protocol):
    """What the gateway needs of a runtime: :class:`parlour.runtime.Runtime` (a gateway in front
    of host actors, for embedding and tests) and the node server's
    :class:`~parlour.cluster.node_server.NodeBackend` (one of several gateways of a node:
    ``whole_node``) are two."""

    whole_node: bool
    """Several gateways serve this runtime, each in a node server: ``/metrics`` gets each one's
    figures from the backend, and the web push does not consume what it reads."""

    async def send(self, inbound: Inbound) -> Outcome: ...
    async def conversation(self, key: ConversationKey) -> Record | None: ...
    async def reset(self, key: ConversationKey) -> bool: ...
    async def install(self, records: list[FlowRecord]) -> None: ...
    async def reload_secrets(self) -> int: ...
    async def reload_tenants(self) -> int: ...
    async def ready(self, timeout_s: float = 60.0) -> list[dict]: ...
    async def metrics(self, timeout_s: float = 5.0) -> dict[str, list]: ...


class Gateway:
    def __init__(self, settings: Settings, runtime: Backend, store: Store, *, operator_hash: str,
                 bots: Bots | None = None, vault: Vault | None = None):
        """``vault`` holds the tenants' secrets (without one, only the config file's, and none can be set)."""
        self.settings, self.runtime, self.store, self.bots = settings, runtime, store, bots
        self.vault = vault or Vault(store, None, {n: {k: v.get_secret_value() for k, v in t.secrets.items()}
                                                  for n, t in settings.tenants.items()}, unseal=False)
        self.metrics = GatewayMetrics(whole_node=runtime.whole_node)
        self.tenants: dict[str, tuple[TenantConfig, str]] = {n: (t, "config") for n, t in settings.tenants.items()}
        self.auth = Auth(operator_hash, {n: t.tokens for n, t in settings.tenants.items()},
                         failures=settings.limits.auth_failures)
        for name, tenant in settings.tenants.items():
            self.auth.set_agents(name, {agent: (a.token, a.queues) for agent, a in tenant.agents.items()})
        self.ingress = Ingress(runtime.send, self.metrics, max_pending=settings.limits.max_pending,
                               timeout_s=settings.limits.request_timeout_s)
        for name, tenant in settings.tenants.items():
            self.ingress.set_rate_limit(name, tenant.rate_limit, tenant.user_rate_limit)
        self.web = WebChannel(self)
        self.webhooks = Webhooks(self)
        self.admin = Admin(self)
        self.bots_api = BotsApi(self)
        self.secrets_api = SecretsApi(self)
        self.handoffs = Handoffs(self)
        self.conversations = Conversations(self)
        self.ops = Ops(self)
        self.console = Console(self)
        self.mailbox = Mailbox(store)
        self.mailbox_api = MailboxApi(self, self.mailbox)
        self.push = WebPush(store, self.web, self.metrics, mailbox=self.mailbox, shared=runtime.whole_node)
        self.stopping = False
        self._push_task: asyncio.Task | None = None

    def channels_of(self, tenant: str) -> dict:
        entry = self.tenants.get(tenant)
        return entry[0].channels if entry else {}

    # ------------------------------------------------------------ tenants made with the API

    async def load_tenants(self) -> None:
        """The tenants made with the admin API, as the store has them (a token rotated on
        another node server included); the config file's stand as they are."""
        raw = await self.store.get_meta(TENANTS_META)
        for name, fields in (json.loads(raw) if raw else {}).items():
            if name not in self.tenants or self.tenants[name][1] == "api":
                self._add_api_tenant(name, fields["tokens"])

    async def save_tenant(self, name: str, token_hashes: list[str]) -> None:
        try:
            check_tenant_name(name)
        except ValueError as exc:
            raise ParlourError(str(exc)) from None
        raw = await self.store.get_meta(TENANTS_META)
        saved = json.loads(raw) if raw else {}
        saved[name] = {"tokens": token_hashes}
        await self.store.put_meta(TENANTS_META, json.dumps(saved).encode())
        self._add_api_tenant(name, token_hashes)
        await self.runtime.reload_tenants()  # the other gateways of the node know it too

    def _add_api_tenant(self, name: str, token_hashes: list[str]) -> None:
        tenant = TenantConfig(tokens=token_hashes)
        self.tenants[name] = (tenant, "api")
        self.auth.set_tenant(name, token_hashes)
        self.ingress.set_rate_limit(name, tenant.rate_limit, tenant.user_rate_limit)

    # ------------------------------------------------------------ the application

    def app(self) -> web.Application:
        web_routes, webhook_routes = [*self.web.routes(), *self.mailbox_api.routes()], self.webhooks.routes()
        owners = {**{r.path: WEB_CHANNEL for r in web_routes}, **{r.path: FROM_PATH for r in webhook_routes}}
        app = web.Application(client_max_size=self.settings.limits.max_body_bytes,
                              middlewares=middlewares(self.metrics, owners))
        app.add_routes([*self.ops.routes(), openapi_route(), *web_routes, *webhook_routes,
                        *self.admin.routes(), *self.bots_api.routes(), *self.secrets_api.routes(),
                        *self.handoffs.routes(), *self.conversations.routes(), *self.console.routes()])
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def runner(self, **options) -> GatewayRunner:
        """A runner for :meth:`app` whose server answers requests aiohttp cannot parse in the
        JSON error shape and never logs their bytes (:mod:`parlour.gateway.server`)."""
        return GatewayRunner(self.app(), access_log_class=AccessLogger, **options)

    async def _on_startup(self, app: web.Application) -> None:
        await self.load_tenants()
        self._push_task = asyncio.create_task(self.push.run())

    async def _on_shutdown(self, app: web.Application) -> None:
        """Stop taking work: readiness fails, chat sockets close (their clients reconnect)."""
        self.stopping = True
        sockets = [ws for peers in self.web.sockets.values() for ws in peers]
        await asyncio.gather(*(ws.close(code=1001, message=b"server shutting down") for ws in sockets),
                             return_exceptions=True)

    async def _on_cleanup(self, app: web.Application) -> None:
        self.admin.close()
        if self._push_task is not None:
            self._push_task.cancel()
            done, _ = await asyncio.wait([self._push_task], timeout=5.0)
            if not done:  # a stop must end: say where the push loop is stuck instead of waiting on it
                log.error("the web push did not stop within 5 s of its cancellation: %r",
                          self._push_task.get_stack(limit=5))
