"""The web channel: a JSON endpoint, a WebSocket for chat widgets, and the chat page.

``POST /v1/{tenant}/web/messages`` with ``{"user": "u1", "id": "m-1", "text": "hi"}`` answers
``200 {"replies": [...], "duplicate": false}`` once the turn is committed. The same ``id`` sent
again is a retry: the flow does not move, and the answer carries the replies of the first time.

A reply with buttons or a list carries ``"prompt"``, the id of the question they answer; a
press sends it back (``{"button": "quit", "prompt": "p1"}``), and a press on an older message's
button is refused by the flow instead of being taken as the answer to the newer question.

``GET /v1/{tenant}/web/ws?user=u1`` is a WebSocket. The client sends ``{"id": ..., "text": ...}``
(or ``"button"`` with its ``"prompt"``); the server answers each with ``{"type": "replies", "id": ..., "replies": [...],
"duplicate": ...}`` or ``{"type": "error", "id": ..., "error": {...}}``, in order, and pushes
``{"type": "push", "replies": [{..., "seq": 7}]}`` when a timer or an API call's result makes the
flow speak later (:class:`WebPush`, which tails the store's outbox). What is pushed is in the
user's mailbox too, for a client that was not listening (:mod:`parlour.gateway.mailbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict, deque
from importlib.resources import files
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from parlour.codec import unpack_outbound
from parlour.errors import ParlourError
from parlour.flow.events import Reply, UserMessage
from parlour.messages import DUPLICATE, ConversationKey, Inbound, Outcome
from parlour.metrics import GatewayMetrics
from parlour.store import Store, StoreError

from .errors import ApiError, error_body, not_found, unavailable
from .middleware import REQUEST_ID_KEY
from .schemas import SocketMessage, WebMessage

log = logging.getLogger("parlour.web")

CHANNEL = "web"
STATIC = files("parlour.gateway") / "static"


def reply_json(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"text": reply.text, "buttons": [_button(b) for b in reply.buttons]}
    if reply.prompt:
        out["prompt"] = reply.prompt
    if reply.list:
        out["list"] = {"button": reply.list_button, "items": [_button(b) for b in reply.list]}
    if reply.media_url:
        out["media"] = {"url": reply.media_url, "kind": reply.media_kind, "filename": reply.media_filename}
    return out


def _button(button) -> dict[str, Any]:
    out = {"id": button.id, "title": button.title}
    if button.description:
        out["description"] = button.description
    return out


def parse_body(raw: str | bytes, model: type[BaseModel]) -> Any:
    """``raw`` as ``model``: 400 ``invalid_json`` or ``invalid_request`` (each field's error)."""
    return validate(load_json(raw), model)


def page_limit(request: web.Request, maximum: int = 200, default: int = 50) -> int:
    """A listing's ``limit``: a whole number from 1 to ``maximum`` (400 otherwise)."""
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise ApiError(400, "invalid_request", f"`limit` is a whole number from 1 to {maximum}")
    return limit


def load_json(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply to read") from None


def validate(data: Any, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"field": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]} for e in exc.errors()]
        raise ApiError(400, "invalid_request", "; ".join(f"{d['field']}: {d['message']}" for d in details),
                       details) from None


def outcome_error(outcome: Outcome) -> ApiError:
    if outcome.retryable:
        return unavailable(f"the message was not handled: {outcome.error or outcome.status}; send it again")
    return ApiError(500, "turn_failed", f"the message could not be handled: {outcome.error}")


def answer_body(outcome: Outcome) -> dict[str, Any]:
    return {"replies": [reply_json(r) for r in outcome.replies], "duplicate": outcome.status == DUPLICATE}


async def _binary() -> dict[str, Any]:
    return {"type": "error", "id": None, **error_body("invalid_request", "send messages as JSON text frames")}


SOCKET_WINDOW = 64


class WebChannel:
    def __init__(self, gateway):
        self.gateway = gateway
        self.sockets: dict[tuple[str, str], list[web.WebSocketResponse]] = defaultdict(list)
        self.open_sockets = 0  # on this node, all tenants: at most limits.max_websockets

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/{tenant}/web/messages", self.post_message),
                web.get("/v1/{tenant}/web/ws", self.socket),
                web.get("/chat/{tenant}", self.chat_page),
                web.get("/static/chat.js", self.static), web.get("/static/mailbox.js", self.static),
                web.get("/static/chat.css", self.static)]

    def _check_tenant(self, tenant: str) -> None:
        if CHANNEL not in self.gateway.channels_of(tenant):
            raise not_found(f"web channel of tenant {tenant!r}")

    async def _send(self, request: web.Request, tenant: str, user: str, message: SocketMessage,
                    name: str | None = None) -> dict[str, Any]:
        """Run one message's turn; the answer body, or :class:`ApiError`."""
        return answer_body(await self._turn(request, tenant, user, message, name))

    async def _turn(self, request: web.Request, tenant: str, user: str, message: SocketMessage,
                    name: str | None = None) -> Outcome:
        """Run one message's turn; its committed outcome, or :class:`ApiError`."""
        self.gateway.ingress.admit(tenant, user)
        try:
            key = ConversationKey(tenant, CHANNEL, user)
            event = (UserMessage("", button=message.button, kind="button", user_id=user, user_name=name,
                                 channel=CHANNEL, prompt=message.prompt)
                     if message.button is not None else
                     UserMessage(message.text or "", user_id=user, user_name=name, channel=CHANNEL))
            inbound = Inbound(key, message.id, event, trace=request[REQUEST_ID_KEY])
        except ParlourError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        outcome = await self.gateway.ingress.send(inbound, CHANNEL)
        if not outcome.ok:
            raise outcome_error(outcome)
        return outcome

    async def post_message(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        self._check_tenant(tenant)
        message: WebMessage = parse_body(await request.read(), WebMessage)
        wait_s = self.gateway.tenants[tenant][0].web_answer_wait_s
        if not wait_s:
            return web.json_response(await self._send(request, tenant, message.user, message, message.name))
        # The tenant lets answers wait for an HTTP call's replies: they are those that reach
        # the mailbox after its newest entry now.
        key = ConversationKey(tenant, CHANNEL, message.user)
        mark = await self.gateway.mailbox.newest(key)
        outcome = await self._turn(request, tenant, message.user, message, message.name)
        body = answer_body(outcome)
        if outcome.calling and (extras := await self.gateway.mailbox_api.answer_extras(key, mark, wait_s)):
            body["replies"] += extras
            body["next"] = extras[-1]["cursor"]
        return web.json_response(body)

    async def socket(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        self._check_tenant(tenant)
        user = request.query.get("user", "")
        if not 0 < len(user) <= 256 or not user.isprintable():
            raise ApiError(400, "invalid_request", "`user` (1 to 256 printable characters) is required in the query")
        limits = self.gateway.settings.limits
        if self.open_sockets >= limits.max_websockets:
            raise unavailable(f"this node has {self.open_sockets} chat sockets open, its most: retry shortly",
                              retry_after_s=5, code="too_many_sockets")
        held = len(self.sockets.get((tenant, user), ()))  # .get: a refused user leaves no entry behind
        if held >= limits.ws_per_user:
            raise ApiError(429, "too_many_sockets", f"user {user!r} has {held} sockets open already",
                           headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=limits.max_body_bytes)
        self.open_sockets += 1  # counted before the handshake's await: two at once cannot both take the last place
        try:
            await ws.prepare(request)
        except BaseException:
            self.open_sockets -= 1
            raise
        peers = self.sockets[(tenant, user)]
        peers.append(ws)
        self.gateway.metrics.websockets.inc()
        # Frames are handed to the ingress in the order they came, without waiting for the
        # turns before them (which keeps a conversation's order and lets a fast typist's
        # messages share a batch); answers go back in the same order. At most SOCKET_WINDOW
        # are in flight: beyond that the socket is not read, and TCP holds the sender back.
        answers: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()  # bounded by `window`
        window = asyncio.Semaphore(SOCKET_WINDOW)
        writer = asyncio.create_task(self._answer(ws, answers, window))
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await window.acquire()
                    answers.put_nowait(asyncio.create_task(self._socket_turn(request, tenant, user, frame.data)))
                elif frame.type == WSMsgType.BINARY:
                    await window.acquire()
                    answers.put_nowait(asyncio.create_task(_binary()))
        finally:
            # The turns in flight go on (their commits stand; a client that comes back and
            # sends again gets them as duplicates); the writer ends after their answers.
            answers.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
            peers.remove(ws)
            if not peers:
                self.sockets.pop((tenant, user), None)
            self.open_sockets -= 1
            self.gateway.metrics.websockets.dec()
        return ws

    @staticmethod
    async def _answer(ws: web.WebSocketResponse, answers: asyncio.Queue, window: asyncio.Semaphore) -> None:
        """Send each frame's answer in the order the frames came. Never stops early: a failed
        turn or a socket that went away must not leave the reader waiting on ``window``."""
        while (task := await answers.get()) is not None:
            try:
                body = await task
            except Exception:  # noqa: BLE001 - answered, logged, and the socket goes on
                log.exception("a socket turn failed")
                body = {"type": "error", "id": None, **error_body("internal", "an internal error")}
            window.release()
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_json(body)

    async def _socket_turn(self, request: web.Request, tenant: str, user: str, data: str) -> dict[str, Any]:
        message_id = None
        try:
            readable = load_json(data)
            if isinstance(readable, dict) and isinstance(readable.get("id"), str):
                message_id = readable["id"]  # echoed even if the rest does not validate
            message: SocketMessage = validate(readable, SocketMessage)
            return {"type": "replies", "id": message_id, **await self._send(request, tenant, user, message)}
        except ApiError as exc:
            self.gateway.metrics.errors.labels(exc.code).inc()
            return {"type": "error", "id": message_id, **error_body(exc.code, exc.message, exc.details)}

    async def chat_page(self, request: web.Request) -> web.StreamResponse:
        self._check_tenant(request.match_info["tenant"])
        return web.FileResponse(str(STATIC / "chat.html"), headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[1]
        return web.FileResponse(str(STATIC / name), headers={"Cache-Control": "no-cache"})

    async def push(self, tenant: str, user: str, replies: list[dict[str, Any]]) -> bool:
        """Send ``replies`` (:func:`reply_json` and their ``seq``) to every socket ``user`` has
        open here; False if none is."""
        peers = list(self.sockets.get((tenant, user), ()))
        body = {"type": "push", "replies": replies}
        sent = await asyncio.gather(*(ws.send_json(body) for ws in peers if not ws.closed), return_exceptions=True)
        return any(result is None for result in sent)


class WebPush:
    """Tails the store's outbox for the web channel's entries: what a timer or an API result
    made a flow say is pushed to the user's open sockets, with its ``seq``, and wakes the reads
    waiting on the user's mailbox (``mailbox``); the rest (replies to messages, which their
    answer carried) is only acknowledged. Entries of other channels are left for their
    delivery. A pushed reply is in the user's mailbox too (the host wrote both in one commit):
    a user with no socket open here (``parlour_web_pushed_total{result="no_socket"}``) reads
    it from there (:mod:`parlour.gateway.mailbox`)."""

    def __init__(self, store: Store, channel: WebChannel, metrics: GatewayMetrics, *, mailbox=None,
                 poll_s: float = 0.1, page: int = 500, shared: bool = False, keep_s: float = 30.0,
                 clock=time.monotonic):
        self.store, self.channel, self.metrics, self.mailbox = store, channel, metrics, mailbox
        self.poll_s, self.page = poll_s, page
        self.cursor: str | None = None
        self.shared, self.keep_s, self.clock = shared, keep_s, clock
        self._read: deque[tuple[float, list[str]]] = deque()  # shared: (read at, web entry ids) to acknowledge

    async def run(self) -> None:
        """Tail the outbox for ever. A node server's push (``shared``) is one of several, one
        per server, each pushing to its own sockets: it starts at the outbox's end (what came
        before is in the mailboxes) and leaves each web entry in the outbox ``keep_s`` for the
        others to read, then acknowledges it (each server may: deleting twice is harmless)."""
        if self.shared:
            await self._skip_to_end()
        while True:
            try:
                entries = await self.store.read_outbox(self.cursor, self.page)
                if entries:
                    await self._handle(entries)
                    self.cursor = entries[-1].id
                if self.shared:
                    await self._ack_kept()
            except StoreError as exc:
                log.warning("web push: the store failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if len(entries) < self.page:
                await asyncio.sleep(self.poll_s)

    async def _handle(self, entries) -> None:
        done = []
        for entry in entries:
            try:
                key = ConversationKey.parse(entry.key)
            except (ParlourError, ValueError):
                continue
            if key.channel != CHANNEL:
                continue
            done.append(entry.id)
            try:
                outbound = unpack_outbound(entry.data)
            except ParlourError as exc:
                log.error("web push: unreadable outbox entry %s: %s", entry.id, exc)
                continue
            # the host puts a web reply in the outbox only when no answer carried it: a timer's,
            # an API result's, an agent's
            reply = {**reply_json(outbound["reply"]), "seq": outbound["seq"]}
            pushed = await self.channel.push(key.tenant, key.user, [reply])
            # shared: "no_socket" means none on this server (another may hold the user's)
            self.metrics.pushed.labels("delivered" if pushed else "no_socket").inc()
            if self.mailbox is not None:
                self.mailbox.wake(key.tenant, key.user)
        if done and self.shared:
            self._read.append((self.clock(), done))
        elif done:
            await self.store.ack_outbox(done)

    async def _skip_to_end(self) -> None:
        while True:
            try:
                entries = await self.store.read_outbox(self.cursor, self.page)
            except StoreError as exc:
                log.warning("web push: the store failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if entries:
                self.cursor = entries[-1].id
            if len(entries) < self.page:
                return

    async def _ack_kept(self) -> None:
        due = self.clock() - self.keep_s
        ids = []
        while self._read and self._read[0][0] <= due:
            ids += self._read.popleft()[1]
        if ids:
            await self.store.ack_outbox(ids)
