"""The admin API of channel bots and of the dead-letter queue.

Bots: ``GET /v1/{tenant}/bots``, and ``PUT``, ``GET``, ``DELETE /v1/{tenant}/bots/{channel}/{bot}``.
A bot's body is its channel's settings (credentials included); an answer shows every credential
as ``"set"``, never its value, and names the webhook URL to register at the channel.

Dead letters: ``GET /v1/{tenant}/dead-letters`` (the tenant's replies given up on, oldest
first), ``POST /v1/{tenant}/dead-letters/replay`` and ``.../drop`` with ``{"ids": [...]}``
(or ``{"all": true}``). A replayed letter goes back to the end of the outbox with its
idempotency key, so a channel that can tell drops it if it had arrived after all.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from parlour.channels.registry import BotError, UnknownChannel, public
from parlour.codec import unpack_outbound
from parlour.egress import EgressDenied, EgressPolicy, check_url
from parlour.errors import ParlourError
from parlour.messages import ConversationKey
from parlour.store import DeadLetter

from .errors import ApiError, not_found, unavailable
from .web import load_json, reply_json

PAGE = 1000


class BotsApi:
    def __init__(self, gateway):
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        bot = "/v1/{tenant}/bots/{channel}/{bot}"
        return [web.get("/v1/{tenant}/bots", self.list_bots), web.put(bot, self.put_bot), web.get(bot, self.get_bot),
                web.delete(bot, self.delete_bot), web.get("/v1/{tenant}/dead-letters", self.list_dead),
                web.post("/v1/{tenant}/dead-letters/replay", self.replay),
                web.post("/v1/{tenant}/dead-letters/drop", self.drop)]

    def _tenant(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        self.gateway.auth.tenant(request, tenant, known=tenant in self.gateway.tenants)
        if self.gateway.bots is None:
            raise unavailable("this gateway has no bot registry (no secrets key)", retry_after_s=60)
        return tenant

    def _webhook_url(self, request: web.Request, tenant: str, channel: str, bot: str) -> str:
        base = self.gateway.settings.public_url or f"{request.scheme}://{request.host}"
        return f"{base.rstrip('/')}/v1/{tenant}/channels/{channel}/{bot}"

    def _bot(self, request: web.Request, tenant: str, channel: str, bot: str, settings) -> dict[str, Any]:
        return {"channel": channel, "bot": bot, "settings": public(settings),
                "webhook_url": self._webhook_url(request, tenant, channel, bot)}

    async def list_bots(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        bots = await self.gateway.bots.list(tenant)
        return web.json_response({"bots": [self._bot(request, tenant, c, b, s) for c, b, s in bots]})

    async def put_bot(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        channel, bot = request.match_info["channel"], request.match_info["bot"]
        values = load_json(await request.read())
        if not isinstance(values, dict):
            raise ApiError(400, "invalid_request", "a bot is a JSON object of its channel's settings")
        await self._check_egress(tenant, values.get("api_base"))
        try:
            settings, new = await self.gateway.bots.put(tenant, channel, bot, values)
        except UnknownChannel as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except BotError as exc:
            raise ApiError(422, "invalid_bot", str(exc), {"problems": exc.problems}) from None
        return web.json_response(self._bot(request, tenant, channel, bot, settings), status=201 if new else 200)

    async def _check_egress(self, tenant: str, api_base: Any) -> None:
        """Refuse an ``api_base`` the tenant's egress policy denies (the delivery supervisor
        checks every connection again, whatever the name resolves to by then)."""
        if not isinstance(api_base, str):
            return
        entry = self.gateway.tenants.get(tenant)
        policy = EgressPolicy.allowing(entry[0].egress.allow) if entry else EgressPolicy()
        try:
            await check_url(api_base, policy)
        except EgressDenied as exc:
            where = f"tenants.{tenant}.egress.allow"
            raise ApiError(422, "egress_denied", f"api_base: egress denied: {exc} (to allow it: {where})",
                           {"problems": [f"api_base: egress denied: {exc}"]}) from None

    async def get_bot(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        channel, bot = request.match_info["channel"], request.match_info["bot"]
        settings = await self.gateway.bots.get(tenant, channel, bot)
        if settings is None:
            raise not_found(f"{channel} bot {bot!r}")
        return web.json_response(self._bot(request, tenant, channel, bot, settings))

    async def delete_bot(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        channel, bot = request.match_info["channel"], request.match_info["bot"]
        if not await self.gateway.bots.delete(tenant, channel, bot):
            raise not_found(f"{channel} bot {bot!r}")
        return web.Response(status=204)

    # ------------------------------------------------------------ dead letters

    async def _dead(self, tenant: str) -> list[DeadLetter]:
        """The tenant's dead letters, oldest first (the queue is shared by every tenant)."""
        found, after = [], None
        while True:
            page = await self.gateway.store.dead_letters(after, PAGE)
            found += [d for d in page if ConversationKey.parse(d.key).tenant == tenant]
            if len(page) < PAGE:
                return found
            after = page[-1].id

    async def list_dead(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return web.json_response({"dead_letters": [dead_json(d) for d in await self._dead(tenant)]})

    async def _chosen(self, request: web.Request, tenant: str) -> list[str]:
        body = load_json(await request.read())
        mine = {d.id for d in await self._dead(tenant)}
        if isinstance(body, dict) and body.get("all") is True and set(body) == {"all"}:
            return sorted(mine)
        if not (isinstance(body, dict) and set(body) == {"ids"} and isinstance(body["ids"], list)
                and all(isinstance(i, str) for i in body["ids"])):
            raise ApiError(400, "invalid_request", 'the body is {"ids": ["<dead letter id>", ...]} or {"all": true}')
        return [i for i in body["ids"] if i in mine]  # another tenant's ids are not this token's to touch

    async def replay(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return web.json_response({"replayed": await self.gateway.store.revive(await self._chosen(request, tenant))})

    async def drop(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return web.json_response({"dropped": await self.gateway.store.drop_dead(await self._chosen(request, tenant))})


def dead_json(dead: DeadLetter) -> dict[str, Any]:
    key = ConversationKey.parse(dead.key)
    try:
        reply = reply_json(unpack_outbound(dead.data)["reply"])
    except ParlourError as exc:
        reply = {"unreadable": str(exc)}
    return {"id": dead.id, "channel": key.channel, "user": key.user, "seq": dead.seq, "reason": dead.reason,
            "attempts": dead.attempts, "failed_at": dead.failed_at, "reply": reply}
