"""The channels' webhooks: ``POST /v1/{tenant}/channels/{channel}/{bot}``, and ``GET`` on the
same URL for a channel's handshake (WhatsApp's ``hub.challenge``).

A webhook is checked against its bot's credentials over the exact bytes received (401
``bad_signature`` otherwise, counted by reason), parsed by its channel's adapter (400
``invalid_payload``), and each user message in it runs its turn, in order, under the channel's
own message id, so that a channel's retry is a duplicate that moves nothing, in the
conversation of the person who sent it (:mod:`.identities`, for WhatsApp's two ids). The webhook is
answered 200 only once every one of its turns is committed: a crash before that makes the
channel send it again. The replies are in the outbox by then, and the delivery supervisor
sends them. Statuses and other events are counted, never turns. The 200's body is the
adapter's :class:`~.channels.base.Answer` when the channel reads one (Slack's challenge,
Telegram's ``answerCallbackQuery``, Twilio's empty TwiML); refusals are the JSON error body.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from aiohttp import web

from parlour.channels.base import Adapter, BotSettings, PayloadError, SignatureError, Webhook
from parlour.channels.registry import BotError, adapter
from parlour.errors import ParlourError
from parlour.messages import ConversationKey, Inbound

from .errors import ApiError, not_found
from .identities import Identities
from .middleware import REQUEST_ID_KEY
from .web import outcome_error

log = logging.getLogger("parlour.gateway.webhooks")

PATH = "/v1/{tenant}/channels/{channel}/{bot}"


def conversation_channel(channel: str, bot: str) -> str:
    """The channel part of a conversation key: one conversation per user per bot."""
    return f"{channel}:{bot}"


class Webhooks:
    def __init__(self, gateway):
        self.gateway = gateway
        self.identities = Identities(gateway.store)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.receive), web.get(PATH, self.handshake)]

    async def _bot(self, request: web.Request) -> tuple[str, str, str, Adapter, BotSettings]:
        tenant, channel, bot = (request.match_info[k] for k in ("tenant", "channel", "bot"))
        what = f"{channel} bot {bot!r} of tenant {tenant!r}"
        if tenant not in self.gateway.tenants or self.gateway.bots is None:
            raise not_found(what)
        try:
            channel_adapter = adapter(channel)
        except BotError:
            raise not_found(what) from None
        settings = await self.gateway.bots.get(tenant, channel, bot)
        if settings is None:
            raise not_found(what)
        return tenant, channel, bot, channel_adapter, settings

    def _webhook(self, request: web.Request, body: bytes) -> Webhook:
        # What a channel signs is the URL it called. Behind a proxy that is not the URL aiohttp
        # saw: the node's public_url stands in for it (and a Twilio bot may name its own).
        public = self.gateway.settings.public_url
        url = f"{public.rstrip('/')}{request.path_qs}" if public else str(request.url)
        return Webhook(request.method, url, request.headers, body, dict(request.query), time.time())

    def _refuse(self, channel: str, exc: SignatureError) -> ApiError:
        self.gateway.metrics.webhooks_refused.labels(channel, exc.reason).inc()
        log.warning("refused a %s webhook: %s", channel, exc.reason)  # the reason only: never a secret
        return ApiError(401, "bad_signature", str(exc), details={"reason": exc.reason})

    async def handshake(self, request: web.Request) -> web.Response:
        _tenant, channel, _bot, channel_adapter, settings = await self._bot(request)
        try:
            answer = channel_adapter.handshake(settings, self._webhook(request, b""))
        except SignatureError as exc:
            raise self._refuse(channel, exc) from None
        if answer is None:
            raise ApiError(405, "method_not_allowed", f"{channel} webhooks are POSTed; it has no GET handshake")
        return web.Response(text=answer, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.Response:
        tenant, channel, bot, channel_adapter, settings = await self._bot(request)
        webhook = self._webhook(request, await request.read())
        try:
            channel_adapter.verify(settings, webhook)
            parsed = channel_adapter.parse(settings, webhook)
        except SignatureError as exc:
            raise self._refuse(channel, exc) from None
        except PayloadError as exc:
            raise ApiError(400, "invalid_payload", f"not a {channel} webhook: {exc}") from None
        for event in parsed.events:
            self.gateway.metrics.channel_events.labels(channel, event.kind, event.status or "").inc()
        for received in parsed.messages:  # in the channel's order, each committed before the next
            self.gateway.ingress.admit(tenant)
            try:  # the user as received is checked before it may be bound to a scoped id
                key = ConversationKey(tenant, conversation_channel(channel, bot), received.user)
                inbound = Inbound(key, received.message_id, received.message, trace=request[REQUEST_ID_KEY],
                                  sent_at=received.sent_at)
            except (ParlourError, ValueError) as exc:
                raise ApiError(400, "invalid_payload", f"not a {channel} webhook: {exc}") from None
            user = await self.identities.user(tenant, key.channel, received)
            if user != key.user:  # another id of the same person's, checked when it was bound
                inbound = replace(inbound, key=ConversationKey(tenant, key.channel, user))
            outcome = await self.gateway.ingress.send(inbound, channel)
            if not outcome.ok:
                raise outcome_error(outcome)
        if parsed.answer is not None:  # what the channel reads in the answer (TwiML for Twilio)
            return web.Response(text=parsed.answer.text, content_type=parsed.answer.content_type)
        return web.Response(status=200)
