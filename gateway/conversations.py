"""Conversation operations: find a tenant's conversations, export one's transcript, delete a flow.

=============================================  ==================================================
``GET    /v1/{t}/conversations``               the conversations, by ``flow``, ``status``, last
                                               turn ``since``/``before``; paged (``after``)
``GET    /v1/{t}/conversations/{c}/{u}/transcript``  its turns as JSON lines, oldest first
``DELETE /v1/{t}/flows/{flow}``                every version of a flow; 409 while conversations
                                               are pinned to it, unless ``?force=true`` (which
                                               resets them)
=============================================  ==================================================

An operator finds stuck conversations with them: ``status=waiting&before=<a day ago>`` lists
those that have waited more than a day, ``status=handoff`` those a human has. A listing reads
the store's records (the host commits each turn before it answers, so they are current), at
most :data:`EXAMINE` per request whatever the filters keep: a page may be short, and ``next``
says where to go on. Records are unpacked to be filtered, :data:`EXAMINE` of them take ~20 ms
of the gateway's loop, which the page size and the admin token bound.

The tenant's token or the operator's; an agent's token gets 403 (agents see their tickets only).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from parlour.actors.tickets import transcript_log
from parlour.codec import Record, unpack_record
from parlour.errors import ParlourError, StateError
from parlour.flow.state import ENDED, FAILED, HANDOFF, IDLE, WAITING
from parlour.messages import ConversationKey
from parlour.store import BadCursor, RecordPage

from .errors import ApiError, not_found
from .handoffs import turn_json
from .middleware import REQUEST_ID_KEY
from .web import page_limit

MAX_PAGE = 200
EXAMINE = 2000
"""Records one listing request reads at most (:meth:`parlour.store.Store.conversations`)."""
TRANSCRIPT_PAGE = 500
"""Transcript entries read from the store at a time while streaming one out."""
STATUSES = (IDLE, WAITING, HANDOFF, ENDED, FAILED)
UNREADABLE = "unreadable"
"""The status listed for a record this parlour cannot read (written by a newer one)."""
PINNED_EXAMPLES = 10
RESETS_AT_ONCE = 50
"""Conversations a forced delete resets side by side (each is a call to its host)."""
SETTLED = (IDLE, ENDED, FAILED)
"""Conversations in these are not pinned to a flow: their next message starts one afresh."""


def _time(request: web.Request, name: str) -> float | None:
    """A query time: ISO 8601 (``2026-12-04T10:00:00Z``; no zone is UTC) or seconds since the epoch."""
    text = request.query.get(name) or None
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:  # a "+01:00" sent unencoded in a query arrives as " 01:00"
        parsed = datetime.fromisoformat(text.replace(" ", "+") if "T" in text else text)
    except ValueError:
        raise ApiError(400, "invalid_request", f"`{name}` is an ISO 8601 time (2026-12-04T10:00:00Z) or "
                                               f"seconds since the epoch, not {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _read(record: bytes) -> Record | None:
    try:
        return unpack_record(record)
    except StateError:
        return None


def pinned_to(flow: str) -> Callable[[str, bytes], bool]:
    """Whether a record's conversation is in ``flow``, or will come back to it (a frame of its
    stack), and not settled: deleting the flow would strand it."""
    def keep(_key: str, data: bytes) -> bool:
        record = _read(data)
        if record is None or record.state.status in SETTLED:
            return False
        return record.state.flow == flow or any(frame.flow == flow for frame in record.state.stack)
    return keep


def summary(key: str, record: Record | None) -> dict[str, Any]:
    parsed = ConversationKey.parse(key)
    out: dict[str, Any] = {"key": key, "channel": parsed.channel, "user": parsed.user}
    if record is None:
        return {**out, "flow": None, "version": None, "node": None, "status": UNREADABLE, "ticket": None,
                "last_turn_at": None, "replies_sent": None}
    state = record.state
    return {**out, "flow": state.flow, "version": state.version, "node": state.node, "status": state.status,
            "ticket": state.ticket, "last_turn_at": record.at or None, "replies_sent": record.replies}


class Conversations:
    def __init__(self, gateway):
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/{tenant}/conversations", self.list_conversations),
                web.get("/v1/{tenant}/conversations/{channel}/{user}/transcript", self.transcript),
                web.delete("/v1/{tenant}/flows/{flow}", self.delete_flow)]

    async def _page(self, tenant: str, after: str | None, limit: int,
                    keep: Callable[[str, bytes], bool] | None, examine: int = EXAMINE) -> RecordPage:
        try:
            return await self.gateway.store.conversations(tenant, after, limit, keep, examine)
        except BadCursor:
            raise ApiError(400, "invalid_request", "`after` is not a cursor of this listing: give the `next` "
                                                   "of an earlier page") from None

    # ------------------------------------------------------------ listing

    async def list_conversations(self, request: web.Request) -> web.Response:
        tenant = self.gateway.admin.reader(request)
        flow, status = request.query.get("flow") or None, request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_request", f"`status` is one of {', '.join(STATUSES)}, not {status!r}")
        since, before, limit = _time(request, "since"), _time(request, "before"), page_limit(request, MAX_PAGE)
        filtered = flow is not None or status is not None or since is not None or before is not None

        decoded: dict[str, Record | None] = {}  # each record kept is unpacked once

        def keep(key: str, data: bytes) -> bool:
            record = decoded[key] = _read(data)
            if record is None:
                return False
            state = record.state
            return ((flow is None or state.flow == flow) and (status is None or state.status == status)
                    and (since is None or record.at >= since) and (before is None or record.at < before))

        page = await self._page(tenant, request.query.get("after") or None, limit, keep if filtered else None)
        return web.json_response({"conversations": [summary(key, decoded[key] if key in decoded else _read(data))
                                                    for key, data in page.records],
                                  "next": page.next})

    # ------------------------------------------------------------ a transcript

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        """The conversation's transcript as JSON lines (``application/x-ndjson``), one turn per
        line as the hand-off API shows them, oldest first, from after the cursor ``after``."""
        tenant = self.gateway.admin.reader(request)
        try:
            key = ConversationKey(tenant, request.match_info["channel"], request.match_info["user"])
        except ParlourError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        log, after = transcript_log(key.id), request.query.get("after") or None
        try:
            entries = await self.gateway.store.read_log(log, after, TRANSCRIPT_PAGE)
        except BadCursor:
            raise ApiError(400, "invalid_request", "`after` is not a transcript cursor (up to 20 digits)") from None
        if not entries and after is None and not (await self.gateway.store.load([key.id])):
            raise not_found(f"conversation {key.channel}/{key.user}")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8",
                                               "Content-Disposition": f'attachment; filename="{_file_name(key)}"',
                                               "X-Request-Id": request[REQUEST_ID_KEY]})
        await response.prepare(request)
        while entries:
            lines = []
            for entry in entries:
                try:
                    lines.append(json.dumps(turn_json(entry.id, entry.data), default=str))
                except StateError as exc:  # a corrupted entry is said, not skipped silently
                    lines.append(json.dumps({"cursor": entry.id, "error": str(exc)}))
            await response.write(("\n".join(lines) + "\n").encode())
            if len(entries) < TRANSCRIPT_PAGE:
                break
            entries = await self.gateway.store.read_log(log, entries[-1].id, TRANSCRIPT_PAGE)
        await response.write_eof()
        return response

    # ------------------------------------------------------------ deleting a flow

    async def delete_flow(self, request: web.Request) -> web.Response:
        """Delete every version of a flow: refused while another current flow goes to it (409
        ``flow_referenced``) or while conversations are pinned to it (409 ``flow_in_use``),
        unless ``force=true``, which resets those conversations first (their open tickets
        closed as ``reset``)."""
        tenant, flow_id = self.gateway.admin.writer(request), request.match_info["flow"]
        force = request.query.get("force", "false").lower()
        if force not in ("true", "false", "1", "0"):
            raise ApiError(400, "invalid_request", f"`force` is true or false, not {force!r}")
        records = await self.gateway.store.flows(tenant)
        if not any(r.flow == flow_id for r in records):
            raise not_found(f"flow {flow_id!r}")
        others = [(r.source, r.path) for r in records if r.current and r.flow != flow_id]
        referenced = await self.gateway.admin.compiler.removal(flow_id, others)
        if referenced:
            raise ApiError(409, "flow_referenced", "other flows go to this one: change them first\n"
                           + "\n".join(f"{p.path}:{p.line}:{p.column}: {p.message}" for p in referenced),
                           {"problems": [{"path": p.path, "line": p.line, "column": p.column, "message": p.message}
                                         for p in referenced]})
        pinned = await self._pinned(tenant, flow_id)
        if pinned and force not in ("true", "1"):
            raise ApiError(409, "flow_in_use", f"{len(pinned)} conversation(s) are in flow {flow_id!r}: "
                           "delete it with ?force=true to end them",
                           {"conversations": len(pinned), "examples": pinned[:PINNED_EXAMPLES]})
        ended = 0
        for start in range(0, len(pinned), RESETS_AT_ONCE):
            done = await asyncio.gather(*(self.gateway.runtime.reset(ConversationKey.parse(key))
                                          for key in pinned[start:start + RESETS_AT_ONCE]))
            ended += sum(1 for reset in done if reset)
        deleted = await self.gateway.store.delete_flow(tenant, flow_id)
        await self.gateway.runtime.install([])  # every host reads the registry again: the flow is gone
        return web.json_response({"flow": flow_id, "versions_deleted": deleted, "conversations_ended": ended,
                                  "at": time.time()})

    async def _pinned(self, tenant: str, flow_id: str) -> list[str]:
        """The keys of every conversation pinned to ``flow_id`` (the whole tenant, page by page)."""
        keys: list[str] = []
        after: str | None = None
        keep = pinned_to(flow_id)
        while True:
            page = await self._page(tenant, after, MAX_PAGE, keep)
            keys += [key for key, _ in page.records]
            if page.next is None:
                return keys
            after = page.next


def _file_name(key: ConversationKey) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{key.channel}-{key.user}")[:100]
    return f"transcript-{safe}.jsonl"
