"""The agent inbox: a tenant's hand-off tickets, and what its humans do with them.

=========================================  ======================================================
``GET  /v1/{t}/handoffs``                  tickets, by ``status``, ``queue``; paged (``after``)
``GET  /v1/{t}/handoffs/{id}``             one ticket and its transcript (the turns before it,
                                           the user's messages and the agents' replies during it)
``GET  /v1/{t}/handoffs/{id}/events``      server-sent events: each new turn of the ticket, and
                                           the ticket when it changes (``Last-Event-ID`` resumes)
``POST /v1/{t}/handoffs/{id}/assign``      ``{"agent": "kim"}`` (an agent's token: itself)
``POST /v1/{t}/handoffs/{id}/messages``    ``{"text": "...", "id": "..."}``: said to the user
``POST /v1/{t}/handoffs/{id}/resume``      ``{"node": "...", "vars": {...}}``: back to the flow
``POST /v1/{t}/handoffs/{id}/close``       the hand-off ends, and the conversation with it
=========================================  ======================================================

Who may: the tenant's token, the operator's, or an **agent** token of the tenant
(``tenants.<t>.agents``), which reaches these routes only, and only the tickets of its queues:
another queue's ticket answers 404, as another tenant's does.

An action is an event of the conversation (:class:`~parlour.flow.AgentAction`,
:class:`~parlour.flow.Resume`), sent through the ingress to the conversation's host like a
user's message: in order with everything else the conversation does, committed before the
answer, and deduplicated by its ``id`` (a retried request with the same ``id`` is not said
twice). What the agent says goes to the user through the conversation's channel, via the
outbox. A ticket's user messages are read from the conversation's transcript, written in the
same commit as each turn, so the agent sees them as soon as they are taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from aiohttp import web

from parlour.actors.tickets import ASSIGNED, CLOSED, STATUSES, public, read_turn, ticket_data, transcript_log
from parlour.codec import reply_of
from parlour.errors import ParlourError
from parlour.flow import AgentAction, Resume
from parlour.messages import DUPLICATE, ConversationKey, Inbound, Outcome
from parlour.store import StoreError, Ticket

from .auth import Principal
from .errors import ApiError, not_found, unavailable
from .middleware import REQUEST_ID_KEY
from .schemas import AgentMessageIn, AssignIn, CloseIn, ResumeIn
from .web import outcome_error, page_limit, parse_body, reply_json

CHANNEL = "handoff"  # the ingress's label for agents' actions
MAX_PAGE = 200
CONTEXT_TURNS = 20  # turns before the hand-off shown with a ticket
TRANSCRIPT_SCAN = 1000  # turns of a conversation read to find a ticket's
STREAM_POLL_S = 0.25
STREAM_HEARTBEAT_S = 15.0
STREAM_MAX_S = 3600.0  # a client reconnects with Last-Event-ID after this


def turn_json(cursor: str, data: bytes) -> dict[str, Any]:
    turn = read_turn(data)
    return {"cursor": cursor, "at": turn.get("at"), "in": turn.get("in"),
            "out": [reply_json(reply_of(r)) for r in turn.get("out") or []], "ticket": turn.get("ticket"),
            "status": turn.get("status"), "flow": turn.get("flow"), "node": turn.get("node")}


class Handoffs:
    def __init__(self, gateway):
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        one = "/v1/{tenant}/handoffs/{ticket}"
        return [web.get("/v1/{tenant}/handoffs", self.list_tickets), web.get(one, self.get_ticket),
                web.get(one + "/events", self.events), web.post(one + "/assign", self.assign),
                web.post(one + "/messages", self.message), web.post(one + "/resume", self.resume),
                web.post(one + "/close", self.close)]

    # ------------------------------------------------------------ who, and which ticket

    def _principal(self, request: web.Request) -> tuple[str, Principal]:
        tenant = request.match_info["tenant"]
        return tenant, self.gateway.auth.tenant(request, tenant, known=tenant in self.gateway.tenants, agents=True)

    async def _ticket(self, request: web.Request) -> tuple[Principal, Ticket, dict[str, Any]]:
        tenant, principal = self._principal(request)
        ticket_id = request.match_info["ticket"]
        try:
            found = await self.gateway.store.ticket(tenant, ticket_id)
        except StoreError as exc:
            raise unavailable(f"the store: {exc}") from None
        if found is None or not principal.sees(found.queue):
            raise not_found(f"hand-off {ticket_id!r}")
        return principal, found, ticket_data(found)

    # ------------------------------------------------------------ reading

    async def list_tickets(self, request: web.Request) -> web.Response:
        tenant, principal = self._principal(request)
        status, queue = request.query.get("status") or None, request.query.get("queue")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_request", f"`status` is one of {', '.join(STATUSES)}, not {status!r}")
        limit = page_limit(request, MAX_PAGE)
        queues: list[str | None]
        if queue is not None:
            queues = [queue]
        elif principal.agent and principal.queues is not None:
            queues = [*sorted(principal.queues)]
        else:
            queues = [None]
        if not all(principal.sees(q) for q in queues):
            raise not_found(f"queue {queue!r}")
        after = request.query.get("after") or None
        found: list[Ticket] = []
        try:
            for one in queues:
                found += await self.gateway.store.tickets(tenant, status, one, after, limit)
        except StoreError as exc:
            raise unavailable(f"the store: {exc}") from None
        page = sorted(found, key=lambda t: t.id)[:limit]
        return web.json_response({"tickets": [public(ticket_data(t)) for t in page],
                                  "next": page[-1].id if len(page) == limit else None})

    async def _transcript(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The ticket's turns and the :data:`CONTEXT_TURNS` before its first."""
        entries = await self.gateway.store.tail_log(transcript_log(data["key"]), TRANSCRIPT_SCAN)
        turns = [turn_json(e.id, e.data) for e in entries]
        first = next((i for i, t in enumerate(turns) if t["ticket"] == data["id"]), len(turns))
        return turns[max(first - CONTEXT_TURNS, 0):first] + [t for t in turns[first:] if t["ticket"] == data["id"]]

    async def get_ticket(self, request: web.Request) -> web.Response:
        _, _, data = await self._ticket(request)
        try:
            transcript = await self._transcript(data)
        except StoreError as exc:
            raise unavailable(f"the store: {exc}") from None
        return web.json_response({"ticket": public(data), "transcript": transcript}, dumps=_dumps)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the ticket's new turns (``event: turn``, ``id:`` their cursor) and
        the ticket when it changes (``event: ticket``). Counted with the chat sockets against
        ``limits.max_websockets``; ends after ``max_s`` (at most :data:`STREAM_MAX_S`; the client
        reconnects with ``Last-Event-ID``) or when the gateway stops."""
        principal, ticket, data = await self._ticket(request)
        try:
            max_s = float(request.query.get("max_s", STREAM_MAX_S))
        except ValueError:
            max_s = -1.0
        if not 0 < max_s <= STREAM_MAX_S:
            raise ApiError(400, "invalid_request",
                           f"`max_s` is a number of seconds, above 0 and at most {STREAM_MAX_S:g}")
        cursor = request.headers.get("Last-Event-ID") or request.query.get("after")
        if cursor is None:
            tail = await self.gateway.store.tail_log(transcript_log(data["key"]), 1)
            cursor = tail[-1].id if tail else None
        web_channel = self.gateway.web
        if web_channel.open_sockets >= self.gateway.settings.limits.max_websockets:
            raise unavailable("this node has as many streams open as it may: retry shortly", retry_after_s=5,
                              code="too_many_sockets")
        try:
            await self.gateway.store.read_log(transcript_log(data["key"]), cursor, 1)  # a bad cursor: 400 now
        except StoreError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        # prepared here, before the middleware could add its header to a finished answer
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no", "X-Request-Id": request[REQUEST_ID_KEY]})
        web_channel.open_sockets += 1
        try:
            await response.prepare(request)
            await self._stream(response, ticket, data, cursor, max_s)
        finally:
            web_channel.open_sockets -= 1
        return response

    async def _stream(self, response: web.StreamResponse, ticket: Ticket, data: dict[str, Any], cursor: str | None,
                      max_s: float) -> None:
        store, log = self.gateway.store, transcript_log(data["key"])
        loop = asyncio.get_running_loop()
        started = beat = loop.time()
        seen = ticket.updated_at
        await _send(response, "ticket", public(data))
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not self.gateway.stopping and loop.time() - started < max_s:
                try:
                    entries = await store.read_log(log, cursor, 100)
                    now_ticket = await store.ticket(ticket.tenant, ticket.id)
                except StoreError:
                    entries, now_ticket = [], None
                for entry in entries:
                    cursor = entry.id
                    turn = turn_json(entry.id, entry.data)
                    if turn["ticket"] == ticket.id:
                        await _send(response, "turn", turn, entry.id)
                if now_ticket is not None and now_ticket.updated_at != seen:
                    seen = now_ticket.updated_at
                    await _send(response, "ticket", public(ticket_data(now_ticket)))
                if loop.time() - beat >= STREAM_HEARTBEAT_S:
                    beat = loop.time()
                    await response.write(b": keep-alive\n\n")
                if len(entries) < 100:
                    await asyncio.sleep(STREAM_POLL_S)

    # ------------------------------------------------------------ acting

    async def _act(self, request: web.Request, principal: Principal, data: dict[str, Any], event,
                   action_id: str) -> Outcome:
        if data["status"] == CLOSED:
            raise ApiError(409, "ticket_closed", f"hand-off {data['id']!r} is closed ({data['resolution']})")
        key = ConversationKey.parse(data["key"])
        try:
            inbound = Inbound(key, f"agent:{data['id']}:{action_id}", event, trace=request[REQUEST_ID_KEY])
        except ParlourError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        outcome = await self.gateway.ingress.send(inbound, CHANNEL)
        if not outcome.ok:
            raise outcome_error(outcome)
        return outcome

    async def _answer(self, request: web.Request, expected: str | None, what: str, outcome: Outcome | None = None,
                      **extra: Any) -> web.Response:
        """The ticket as it is now; 409 if the action did not move it to ``expected`` (its
        hand-off ended meanwhile, or a resume named a node the flow does not have)."""
        _, _, data = await self._ticket(request)
        if expected is not None and data["status"] != expected:
            raise ApiError(409, "not_in_handoff", f"the conversation did not take the {what}: the ticket is "
                           f"{data['status']}", {"ticket": public(data)})
        body = {"ticket": public(data), **extra}
        if outcome is not None:
            body["replies"] = [reply_json(r) for r in outcome.replies]
        return web.json_response(body, dumps=_dumps)

    @staticmethod
    def _who(principal: Principal, named: str | None) -> str | None:
        return principal.agent or named

    async def assign(self, request: web.Request) -> web.Response:
        principal, _, data = await self._ticket(request)
        body: AssignIn = parse_body(await request.read() or b"{}", AssignIn)
        agent = self._who(principal, body.agent)
        if agent is None:
            raise ApiError(400, "invalid_request", "`agent` names who takes the ticket")
        await self._act(request, principal, data, AgentAction(data["id"], "assign", agent), secrets.token_hex(8))
        return await self._answer(request, ASSIGNED, "assignment")

    async def message(self, request: web.Request) -> web.Response:
        principal, _, data = await self._ticket(request)
        body: AgentMessageIn = parse_body(await request.read(), AgentMessageIn)
        event = AgentAction(data["id"], "message", self._who(principal, body.agent), body.text)
        outcome = await self._act(request, principal, data, event, f"m:{body.id or secrets.token_hex(8)}")
        if not outcome.replies:
            raise ApiError(409, "not_in_handoff", "the conversation is no longer in this hand-off: nothing was said")
        return await self._answer(request, None, "message", duplicate=outcome.status == DUPLICATE)

    async def resume(self, request: web.Request) -> web.Response:
        principal, _, data = await self._ticket(request)
        body: ResumeIn = parse_body(await request.read() or b"{}", ResumeIn)
        event = Resume(body.vars or None, data["id"], body.node, self._who(principal, body.agent))
        outcome = await self._act(request, principal, data, event, secrets.token_hex(8))
        what = f"resume at node {body.node!r} (is it in the flow?)" if body.node else "resume"
        return await self._answer(request, CLOSED, what, outcome)

    async def close(self, request: web.Request) -> web.Response:
        principal, _, data = await self._ticket(request)
        body: CloseIn = parse_body(await request.read() or b"{}", CloseIn)
        event = AgentAction(data["id"], "close", self._who(principal, body.agent))
        await self._act(request, principal, data, event, secrets.token_hex(8))
        return await self._answer(request, CLOSED, "close")


async def _send(response: web.StreamResponse, event: str, data: Any, event_id: str | None = None) -> None:
    lines = [f"event: {event}"] + ([f"id: {event_id}"] if event_id else []) + [f"data: {_dumps(data)}", "", ""]
    await response.write("\n".join(lines).encode())


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
