"""The admin API: flows (upload a version, list, read, roll back), conversations (inspect,
reset) and tenants. Every route needs a bearer token (:mod:`parlour.gateway.auth`).

An uploaded flow is checked as ``parlour flows validate`` would check it, together with the
tenant's other current flows (a ``goto`` into a flow that does not exist is an error) and
against the tenant's secrets (a ``{secret: NAME}`` it does not have is an error), and refused
with 422 and every problem's line and column; the running version is untouched. A valid one
becomes current for new conversations; conversations in progress stay on the version they
started on.

An upload costs CPU (a compile, and a check with the tenant's other flows), so it never runs on
the event loop that answers every tenant's messages: it is checked in a process of its own
(the gateway's one compiler process), and every compiled flow is kept by its source
(:mod:`parlour.flow.cache`), so the tenant's other flows are not compiled again. A tenant's
writes (uploads, rollbacks, resets) are limited by its ``admin_rate_limit`` (429 with
``Retry-After``); the operator's are not.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import limits
from aiohttp import web
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from parlour.codec import unpack_replies
from parlour.config import hash_token, new_token
from parlour.errors import FlowError, ParlourError, Problem
from parlour.messages import ConversationKey
from parlour.publish import Draft, publish
from parlour.store import FlowRecord

from .compiler import CompilerProcess
from .errors import ApiError, not_found
from .schemas import Rollback
from .web import parse_body, reply_json

MAX_RECENT = 10


def _problems(problems: list[Problem]) -> ApiError:
    listed = sorted(problems, key=lambda p: (p.line, p.column))
    return ApiError(422, "invalid_flow", "\n".join(f"{p.line}:{p.column}: {p.message}" for p in listed),
                    {"problems": [{"line": p.line, "column": p.column, "message": p.message, "path": p.path,
                                   "severity": p.severity} for p in listed]})


def _version(record: FlowRecord) -> dict[str, Any]:
    return {"flow": record.flow, "version": record.version, "created_at": record.created_at, "current": record.current}


class Admin:
    def __init__(self, gateway):
        self.gateway = gateway
        self.compiler = CompilerProcess()
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limits: dict[str, list[limits.RateLimitItem]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/tenants", self.list_tenants),
            web.put("/v1/tenants/{tenant}", self.put_tenant),
            web.get("/v1/{tenant}/flows", self.list_flows),
            web.put("/v1/{tenant}/flows/{flow}", self.put_flow),
            web.get("/v1/{tenant}/flows/{flow}", self.get_flow),
            web.post("/v1/{tenant}/flows/{flow}/rollback", self.rollback),
            web.get("/v1/{tenant}/conversations/{channel}/{user}", self.get_conversation),
            web.delete("/v1/{tenant}/conversations/{channel}/{user}", self.reset_conversation),
        ]

    def close(self) -> None:
        self.compiler.close()

    def reader(self, request: web.Request) -> str:
        """The tenant of a read, if the caller may see it (no rate limit)."""
        tenant = request.match_info["tenant"]
        self.gateway.auth.tenant(request, tenant, known=tenant in self.gateway.tenants)
        return tenant

    def writer(self, request: web.Request) -> str:
        """The tenant of a write, once within its ``admin_rate_limit`` (429 with
        ``Retry-After`` beyond it); the operator's writes are not counted."""
        tenant = request.match_info["tenant"]
        principal = self.gateway.auth.tenant(request, tenant, known=tenant in self.gateway.tenants)
        if principal.operator:
            return tenant
        expression = self.gateway.tenants[tenant][0].admin_rate_limit or ""
        items = self._limits.get(expression)
        if items is None:
            items = self._limits[expression] = limits.parse_many(expression) if expression else []
        for item in items:
            if not self._limiter.hit(item, "admin", tenant):
                reset_at = self._limiter.get_window_stats(item, "admin", tenant).reset_time
                raise ApiError(429, "rate_limited", f"tenant {tenant!r} is over its admin rate limit ({item})",
                               headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))})
        return tenant

    # ------------------------------------------------------------ flows

    async def _records(self, tenant: str, flow: str | None = None) -> list[FlowRecord]:
        records = await self.gateway.store.flows(tenant)
        return [r for r in records if flow is None or r.flow == flow]

    async def list_flows(self, request: web.Request) -> web.Response:
        tenant = self.reader(request)
        by_flow: dict[str, list[FlowRecord]] = {}
        for record in await self._records(tenant):
            by_flow.setdefault(record.flow, []).append(record)
        return web.json_response({"flows": [self._flow(records) for _, records in sorted(by_flow.items())]})

    @staticmethod
    def _flow(records: list[FlowRecord], source: str | None = None) -> dict[str, Any]:
        current = next((r.version for r in records if r.current), None)
        return {"flow": records[0].flow, "current": current, "versions": [_version(r) for r in records],
                "source": source}

    async def get_flow(self, request: web.Request) -> web.Response:
        tenant, flow = self.reader(request), request.match_info["flow"]
        records = await self._records(tenant, flow)
        if not records:
            raise not_found(f"flow {flow!r}")
        wanted = request.query.get("version")
        chosen = next((r for r in records if (r.version == wanted if wanted else r.current)), None)
        if wanted and chosen is None:
            raise not_found(f"version {wanted!r} of flow {flow!r}")
        return web.json_response(self._flow(records, chosen.source if chosen else None))

    async def put_flow(self, request: web.Request) -> web.Response:
        tenant, flow_id = self.writer(request), request.match_info["flow"]
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_request", f"a flow is UTF-8 text: {exc}") from None
        path = f"{flow_id}.yaml"
        others = [(r.source, r.path) for r in await self._records(tenant) if r.current and r.flow != flow_id]
        await self.gateway.vault.reload()  # a secret set through another gateway counts too
        checked = await self.compiler.check(text, path, flow_id, others, tenant,
                                            tuple(self.gateway.vault.names(tenant)))
        drafts = [Draft(tenant, flow_id, checked.version, text, path)] if checked.version is not None else []
        no_flow = Problem(path, 1, 1, "no flow found")
        try:
            [published] = await publish(drafts, self.gateway.runtime.install, now=time.time(),
                                        problems=checked.errors or ([] if drafts else [no_flow]),
                                        held=await self._records(tenant, flow_id))
        except FlowError as exc:
            raise _problems(exc.problems) from None
        body = {**_version(published.record), "warnings": [str(p) for p in checked.warnings]}
        return web.json_response(body, status=200 if published.change == "unchanged" else 201)

    async def rollback(self, request: web.Request) -> web.Response:
        tenant, flow_id = self.writer(request), request.match_info["flow"]
        wanted: Rollback = parse_body(await request.read(), Rollback)
        records = await self._records(tenant, flow_id)
        chosen = next((r for r in records if r.version == wanted.version), None)
        if chosen is None:
            raise not_found(f"version {wanted.version!r} of flow {flow_id!r}")
        await self.gateway.runtime.install([FlowRecord(tenant, chosen.flow, chosen.version, chosen.source,
                                                       chosen.path, chosen.created_at, True)])
        return web.json_response(self._flow(await self._records(tenant, flow_id)))

    # ------------------------------------------------------------ conversations

    def _key(self, request: web.Request, write: bool = False) -> ConversationKey:
        tenant = self.writer(request) if write else self.reader(request)
        try:
            return ConversationKey(tenant, request.match_info["channel"], request.match_info["user"])
        except ParlourError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None

    async def get_conversation(self, request: web.Request) -> web.Response:
        key = self._key(request)
        record = await self.gateway.runtime.conversation(key)
        if record is None:
            raise not_found(f"conversation {key.channel}/{key.user}")
        turns = await self.gateway.store.recent(key.id, MAX_RECENT)
        state = record.state
        return web.json_response({
            "tenant": key.tenant, "channel": key.channel, "user": key.user, "flow": state.flow,
            "version": state.version, "node": state.node, "status": state.status, "waiting_for": state.wait_for,
            "vars": state.vars, "replies_sent": record.replies,
            "recent_turns": [{"message_id": message_id, "replies": [reply_json(r) for r in unpack_replies(data)],
                              "kept_until": kept_until} for message_id, data, kept_until in turns]},
            dumps=_dumps)

    async def reset_conversation(self, request: web.Request) -> web.Response:
        key = self._key(request, write=True)
        if not await self.gateway.runtime.reset(key):
            raise not_found(f"conversation {key.channel}/{key.user}")
        return web.Response(status=204)

    # ------------------------------------------------------------ tenants

    async def list_tenants(self, request: web.Request) -> web.Response:
        self.gateway.auth.operator(request)
        return web.json_response({"tenants": [
            {"tenant": name, "channels": sorted(t.channels), "rate_limit": t.rate_limit, "declared_in": source}
            for name, (t, source) in sorted(self.gateway.tenants.items())]})

    async def put_tenant(self, request: web.Request) -> web.Response:
        """Create a tenant (or give it a new token, the old one stops working): 201 with the
        token, shown this once."""
        self.gateway.auth.operator(request)
        tenant = request.match_info["tenant"]
        if self.gateway.tenants.get(tenant, (None, None))[1] == "config":
            raise ApiError(409, "conflict", f"tenant {tenant!r} is declared in the config file: change it there")
        token = new_token()
        try:
            await self.gateway.save_tenant(tenant, [hash_token(token)])
        except ParlourError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        return web.json_response({"tenant": tenant, "token": token}, status=201)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)  # a flow variable may hold a date
