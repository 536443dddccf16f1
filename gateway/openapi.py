"""``GET /openapi.json``: the whole HTTP API as OpenAPI 3.1, its bodies generated from the
pydantic models in :mod:`parlour.gateway.schemas` (the same models that validate requests)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from parlour import __version__
from parlour.flow.model import FlowSpec

from . import schemas as s

MODELS: list[type[BaseModel]] = [
          FlowSpec, s.WebMessage, s.SocketMessage, s.WebReplies, s.ErrorOut, s.FlowsOut, s.FlowOut, s.FlowVersionOut,
          s.FlowCreated, s.Rollback, s.ConversationOut, s.TenantsOut, s.TenantCreated, s.Health, s.Ready,
          s.BotOut, s.BotsOut, s.SecretIn, s.SecretOut, s.SecretsOut, s.DeadLettersOut, s.DeadLetterChoice,
          s.Replayed, s.Dropped, s.MailReplyOut, s.MailboxOut, s.Acknowledged, s.TicketOut, s.TicketsOut,
          s.HandoffOut, s.HandoffActed, s.AgentMessageIn, s.AssignIn, s.ResumeIn, s.CloseIn,
          s.ConversationsOut, s.FlowDeleted]
REF = "#/components/schemas/{model}"


def _ref(model) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _headers(*names: str) -> dict[str, Any]:
    """Every answer carries ``X-Request-Id`` (the middleware's); ``names`` are the others it must carry."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-Id", *names)}


def _answer(description: str, content: dict[str, Any] | None = None, *headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "headers": _headers(*headers)}
    if content is not None:
        answer["content"] = content
    return answer


def _json(model, description: str, *headers: str) -> dict[str, Any]:
    return _answer(description, {"application/json": {"schema": _ref(model)}}, *headers)


def _file(*media_types: str) -> dict[str, Any]:
    """A static file (``web.FileResponse``): 200, or 304 to a conditional request, as a browser
    revalidating a ``Cache-Control: no-cache`` page sends."""
    return {"200": _answer("the file", {media: {"schema": {"type": "string"}} for media in media_types}),
            "304": _answer("not modified since the copy the client has")}


REASONS = {400: "the request is malformed (bad JSON, a field that does not validate)",
           401: "no token, or not a valid one", 403: "the token may not do this",
           404: "no such resource (or not one this token can see)",
           409: "conflicts with the resource's state: declared in the config file; a hand-off that is closed "
                "(`ticket_closed`) or that the conversation left (`not_in_handoff`); a flow in use "
                "(`flow_in_use`) or that another goes to (`flow_referenced`)",
           413: "the body is larger than the limit", 422: "the flow is invalid: every problem with its line and column",
           429: "over the tenant's or the user's rate limit (a socket: over the user's open sockets; a mailbox read "
                "that waits: over the user's waiting reads); see Retry-After",
           500: "the turn failed", 503: "overloaded, not ready, the store failing, or (a socket, a mailbox read that "
                                    "waits) the node's all taken; see Retry-After",
           405: "this channel has no GET handshake"}
ERROR_HEADERS = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(code): _json(s.ErrorOut, REASONS[code], *ERROR_HEADERS.get(code, ())) for code in statuses}


HEADERS = {
    "X-Request-Id": {"description": "this request's id, as the logs know it: the client's own `X-Request-Id` if "
                                    "it sent one of this form, else one made here", "required": True,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}},
    "Retry-After": {"description": "seconds to wait before trying again", "required": True,
                    "schema": {"type": "integer", "minimum": 1}},
    "WWW-Authenticate": {"description": "`Bearer realm=\"parlour\"`, with `error=\"invalid_token\"` for a token "
                                        "that is not one", "required": True, "schema": {"type": "string"}},
}


TENANT = {"name": "tenant", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
NEW_TENANT = {**TENANT, "description": "1 to 64 ASCII letters, digits, `-` or `_`, and not `tenants` (400)"}
FLOW = {"name": "flow", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
CHANNEL = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
USER = {"name": "user", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
BOT_CHANNEL = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
               "description": "whatsapp, telegram, slack, twilio or signal (another answers 404)"}
SECRET = {"name": "name", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
          "description": "as a flow names it in `{secret: NAME}` (another name answers 400)"}
BOT = {"name": "bot", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "the process is alive", "operationId": "healthz",
                             "responses": {"200": _json(s.Health, "alive")}}},
        "/readyz": {"get": {"summary": "Ray, the store and every host answer", "operationId": "readyz",
                            "responses": {"200": _json(s.Ready, "ready"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "the node's metrics, hosts included (the operator's token, unless "
                                        "`metrics_public`)", "operationId": "metrics", "security": BEARER,
                             "responses": {"200": _answer("Prometheus text format",
                                                          {"text/plain": {"schema": {"type": "string"}}}),
                                           **_errors(401, 403)}}},
        "/openapi.json": {"get": {"summary": "this document", "operationId": "openapi",
                                  "responses": {"200": _answer("OpenAPI 3.1",
                                                               {"application/json": {"schema": {"type": "object"}}})}}},
        "/chat/{tenant}": {"get": {"summary": "the chat page", "operationId": "chatPage", "parameters": [TENANT],
                                   "responses": {**_file("text/html"), **_errors(404)}}},
        "/static/chat.js": {"get": {"summary": "the chat page's script", "operationId": "chatScript",
                                    "responses": _file("text/javascript", "application/javascript")}},
        "/static/mailbox.js": {"get": {"summary": "the chat page's mailbox reader", "operationId": "chatMailboxScript",
                                       "responses": _file("text/javascript", "application/javascript")}},
        "/static/chat.css": {"get": {"summary": "the chat page's style", "operationId": "chatStyle",
                                     "responses": _file("text/css")}},
        "/agent/{tenant}": {"get": {"summary": "the agent console: hand-offs, answered by a person (it reads the "
                                               "hand-off API with the token typed in)", "operationId": "agentPage",
                                    "parameters": [TENANT], "responses": {**_file("text/html"), **_errors(404)}}},
        "/static/agent.js": {"get": {"summary": "the agent console's script", "operationId": "agentScript",
                                     "responses": _file("text/javascript", "application/javascript")}},
        "/static/agent.css": {"get": {"summary": "the agent console's style", "operationId": "agentStyle",
                                      "responses": _file("text/css")}},
        "/v1/{tenant}/web/messages": {
            "post": {"summary": "send a web chat message; the replies come back once its turn is committed",
                     "operationId": "postWebMessage", "parameters": [TENANT],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.WebMessage)}}},
                     "responses": {"200": _json(s.WebReplies, "the turn's replies"),
                                   **_errors(400, 404, 413, 429, 500, 503)}},
            **_mailbox_operations()},
        "/v1/{tenant}/web/ws": {"get": {
            "summary": "a WebSocket for a chat widget (send SocketMessage frames; receive replies and pushes)",
            "operationId": "webSocket",
            "parameters": [TENANT, {"name": "user", "in": "query", "required": True,
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 256}}],
            "responses": {"101": {"description": "switching to the WebSocket protocol"},
                          **_errors(400, 404, 429, 503)}}},
        "/v1/tenants": {"get": {"summary": "every tenant (operator)", "operationId": "listTenants", "security": BEARER,
                                "responses": {"200": _json(s.TenantsOut, "the tenants"), **_errors(401, 403)}}},
        "/v1/tenants/{tenant}": {"put": {
            "summary": "create a tenant, or give it a new token (operator)", "operationId": "putTenant",
            "security": BEARER, "parameters": [NEW_TENANT],
            "responses": {"201": _json(s.TenantCreated, "its token, shown once"), **_errors(400, 401, 403, 409)}}},
        "/v1/{tenant}/flows": {"get": {"summary": "the tenant's flows and their versions", "operationId": "listFlows",
                                       "security": BEARER, "parameters": [TENANT],
                                       "responses": {"200": _json(s.FlowsOut, "flows"), **_errors(401, 404)}}},
        "/v1/{tenant}/flows/{flow}": {
            "get": {"summary": "a flow's versions and the source of one", "operationId": "getFlow", "security": BEARER,
                    "parameters": [TENANT, FLOW, {"name": "version", "in": "query", "required": False,
                                                  "schema": {"type": "string"}}],
                    "responses": {"200": _json(s.FlowOut, "the flow"), **_errors(401, 404)}},
            "put": {"summary": "upload a new version (YAML or JSON); it becomes current for new conversations",
                    "operationId": "putFlow", "security": BEARER, "parameters": [TENANT, FLOW],
                    "requestBody": {"required": True, "description": "a flow file, as `parlour flows schema` describes "
                                    "it; what the schema cannot say (a `next` to a node that exists...) is checked too",
                                    "content": {"application/yaml": {"schema": _ref(FlowSpec)},
                                                "application/json": {"schema": _ref(FlowSpec)}}},
                    "responses": {"200": _json(s.FlowCreated, "this version was current already"),
                                  "201": _json(s.FlowCreated, "stored and current"),
                                  **_errors(400, 401, 404, 413, 422, 429, 503)}},
            "delete": {"summary": "delete every version of the flow: refused while another current flow goes to it "
                                  "(409 `flow_referenced`) or conversations are in it (409 `flow_in_use`, with their "
                                  "count and some keys), unless `force=true`, which resets them first",
                       "operationId": "deleteFlow", "security": BEARER,
                       "parameters": [TENANT, FLOW, {"name": "force", "in": "query", "required": False,
                                                     "schema": {"type": "boolean", "default": False}}],
                       "responses": {"200": _json(s.FlowDeleted, "deleted"),
                                     **_errors(400, 401, 404, 409, 429, 503)}}},
        "/v1/{tenant}/flows/{flow}/rollback": {"post": {
            "summary": "make an earlier version current again", "operationId": "rollbackFlow", "security": BEARER,
            "parameters": [TENANT, FLOW],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.Rollback)}}},
            "responses": {"200": _json(s.FlowOut, "the flow, now on that version"),
                          **_errors(400, 401, 404, 413, 429)}}},
        "/v1/{tenant}/conversations/{channel}/{user}": {
            "get": {"summary": "a conversation: state, flow, version, recent turns", "operationId": "getConversation",
                    "security": BEARER, "parameters": [TENANT, CHANNEL, USER],
                    "responses": {"200": _json(s.ConversationOut, "the conversation"), **_errors(400, 401, 404)}},
            "delete": {"summary": "reset a conversation: its next message starts afresh",
                       "operationId": "resetConversation", "security": BEARER, "parameters": [TENANT, CHANNEL, USER],
                       "responses": {"204": _answer("reset"), **_errors(400, 401, 404, 429)}}},
        "/v1/{tenant}/conversations": {"get": {
            "summary": "the tenant's conversations, by flow, status and last turn (`status=waiting&before=...` finds "
                       "the stuck ones)", "operationId": "listConversations", "security": BEARER,
            "parameters": [TENANT, {"name": "flow", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "status", "in": "query", "required": False, "schema": {
                               "type": "string", "enum": ["idle", "waiting", "handoff", "ended", "failed"]}},
                           {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "last turn at or after: ISO 8601 (no zone is UTC) or epoch seconds"},
                           {"name": "before", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "last turn before: ISO 8601 or epoch seconds"},
                           {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "the `next` of the page before"},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}],
            "responses": {"200": _json(s.ConversationsOut, "a page of conversations"),
                          **_errors(400, 401, 403, 404, 503)}}},
        "/v1/{tenant}/conversations/{channel}/{user}/transcript": {"get": {
            "summary": "the conversation's transcript as JSON lines (TranscriptTurnOut each), oldest first; kept "
                       "`limits.transcript_ttl_s` (7 days), at most 10,000 turns",
            "operationId": "conversationTranscript", "security": BEARER,
            "parameters": [TENANT, CHANNEL, USER,
                           {"name": "after", "in": "query", "required": False, "schema": CURSOR}],
            "responses": {"200": _answer("one turn per line", {"application/x-ndjson": {"schema": {"type": "string"}}}),
                          **_errors(400, 401, 403, 404, 503)}}},
        **_channel_paths(),
        **_handoff_paths(),
    }


SSE_EVENT = {"type": "object", "description": "one event of the stream: `data` is a TicketOut (`ticket`) or a "
                                            "TranscriptTurnOut (`turn`) as JSON",
             "properties": {"event": {"type": "string", "enum": ["ticket", "turn"]}, "data": {"type": "string"},
                            "id": {"type": "string", "pattern": "^[0-9]{1,20}$"}},
             "required": ["event", "data"]}
TICKET = {"name": "ticket", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _handoff_paths() -> dict[str, Any]:
    """The agent inbox (:mod:`parlour.gateway.handoffs`): a tenant's token, the operator's, or an
    agent's (its queues' tickets only)."""
    one = "/v1/{tenant}/handoffs/{ticket}"

    def act(summary: str, operation_id: str, model) -> dict[str, Any]:
        return {"post": {"summary": summary, "operationId": operation_id, "security": BEARER,
                         "parameters": [TENANT, TICKET],
                         "requestBody": {"required": operation_id == "agentMessage",
                                         "content": {"application/json": {"schema": _ref(model)}}},
                         "responses": {"200": _json(s.HandoffActed, "done: the ticket as it is now"),
                                       **_errors(400, 401, 403, 404, 409, 413, 429, 500, 503)}}}

    return {
        "/v1/{tenant}/handoffs": {"get": {
            "summary": "the tenant's hand-off tickets, oldest first", "operationId": "listHandoffs",
            "security": BEARER,
            "parameters": [TENANT,
                           {"name": "status", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["open", "assigned", "closed"]}},
                           {"name": "queue", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "the `next` of the page before"},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}],
            "responses": {"200": _json(s.TicketsOut, "tickets"), **_errors(400, 401, 404, 503)}}},
        one: {"get": {"summary": "a ticket and its transcript", "operationId": "getHandoff", "security": BEARER,
                      "parameters": [TENANT, TICKET],
                      "responses": {"200": _json(s.HandoffOut, "the ticket"), **_errors(401, 404, 503)}}},
        one + "/events": {"get": {
            "summary": "server-sent events: `turn` for each new turn of the ticket (its `id` the cursor; "
                       "Last-Event-ID resumes), `ticket` when the ticket changes", "operationId": "handoffEvents",
            "security": BEARER,
            "parameters": [TENANT, TICKET, {"name": "after", "in": "query", "required": False, "schema": CURSOR},
                           {"name": "max_s", "in": "query", "required": False,
                            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 3600},
                            "description": "the stream ends after this; reconnect with Last-Event-ID"}],
            "responses": {"200": _answer("the stream", {"text/event-stream": {"schema": SSE_EVENT}}),
                          **_errors(400, 401, 404, 503)}}},
        one + "/assign": act("take the ticket (an agent's token: as itself)", "assignHandoff", s.AssignIn),
        one + "/messages": act("say something to the user, through the conversation's channel, in order with "
                               "the rest; an `id` sent again is said once", "agentMessage", s.AgentMessageIn),
        one + "/close": act("end the hand-off and the conversation", "closeHandoff", s.CloseIn),
        one + "/resume": act("give the conversation back to its flow, at `node` or the handoff's `next`, "
                             "with `vars` set", "resumeHandoff", s.ResumeIn),
    }


WEB_USER = {"name": "user", "in": "query", "required": True, "description": "the web user, as in the messages",
            "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]+$"}}
CURSOR = {"type": "string", "pattern": "^[0-9]{1,20}$", "description": "a `cursor` or `next` of an earlier read "
                                                                      "(another value answers 400)"}


def _mailbox_operations() -> dict[str, Any]:
    """``GET`` and ``DELETE /v1/{tenant}/web/messages`` (:mod:`parlour.gateway.mailbox`)."""
    return {
        "get": {"summary": "read the user's mailbox: what timers and API results made the flow say, outside the "
                           "answers; waits up to `wait_s` for a reply when there is none",
                "operationId": "readWebMailbox",
                "parameters": [TENANT, WEB_USER,
                               {"name": "after", "in": "query", "required": False, "schema": CURSOR},
                               {"name": "wait_s", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": 0, "maximum": 30, "default": 0}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100}}],
                "responses": {"200": _json(s.MailboxOut, "the replies after `after`"), **_errors(400, 404, 429, 503)}},
        "delete": {"summary": "acknowledge the user's mailbox up to a cursor: those replies are deleted",
                   "operationId": "ackWebMailbox",
                   "parameters": [TENANT, WEB_USER,
                                  {"name": "upto", "in": "query", "required": True, "schema": CURSOR}],
                   "responses": {"200": _json(s.Acknowledged, "deleted"), **_errors(400, 404, 429, 503)}}}


def _channel_paths() -> dict[str, Any]:
    anything: dict[str, Any] = {"schema": {}}
    unsigned = {"401": _json(s.ErrorOut, "not signed by the channel with the bot's secret: `details.reason` is "
                                         "missing, mismatch, stale or malformed")}
    return {
        "/v1/{tenant}/channels/{channel}/{bot}": {
            "post": {"summary": "a channel's webhook: checked against the bot's credentials, each message a turn; "
                                "answered once every turn is committed", "operationId": "channelWebhook",
                     "parameters": [TENANT, BOT_CHANNEL, BOT],
                     "requestBody": {"required": True, "description": "the channel's own payload, as it signed it",
                                     "content": {"application/json": anything,
                                                 "application/x-www-form-urlencoded": anything}},
                     "responses": {"200": _answer("taken (a body only where the channel wants one)",
                                                  {"application/json": {"schema": {"type": "object"}}}),
                                   **_errors(400, 404, 413, 429, 500, 503), **unsigned}},
            "get": {"summary": "a channel's handshake (WhatsApp's hub.challenge)", "operationId": "channelHandshake",
                    "parameters": [TENANT, BOT_CHANNEL, BOT],
                    "responses": {"200": _answer("the challenge", {"text/plain": {"schema": {"type": "string"}}}),
                                  **_errors(404, 405), **unsigned}}},
        "/v1/{tenant}/bots": {"get": {"summary": "the tenant's bots", "operationId": "listBots", "security": BEARER,
                                      "parameters": [TENANT],
                                      "responses": {"200": _json(s.BotsOut, "bots"), **_errors(401, 404, 503)}}},
        "/v1/{tenant}/bots/{channel}/{bot}": {
            "put": {"summary": "add or change a bot; credentials left out keep their saved values",
                    "operationId": "putBot", "security": BEARER, "parameters": [TENANT, BOT_CHANNEL, BOT],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": _json(s.BotOut, "changed"), "201": _json(s.BotOut, "added"),
                                  **_errors(400, 401, 404, 413, 422, 503)}},
            "get": {"summary": "a bot (credentials show as `set`)", "operationId": "getBot", "security": BEARER,
                    "parameters": [TENANT, BOT_CHANNEL, BOT],
                    "responses": {"200": _json(s.BotOut, "the bot"), **_errors(401, 404, 503)}},
            "delete": {"summary": "remove a bot", "operationId": "deleteBot", "security": BEARER,
                       "parameters": [TENANT, BOT_CHANNEL, BOT],
                       "responses": {"204": _answer("removed"), **_errors(401, 404, 503)}}},
        "/v1/{tenant}/secrets": {"get": {
            "summary": "the tenant's secrets, by name (never their values)", "operationId": "listSecrets",
            "security": BEARER, "parameters": [TENANT],
            "responses": {"200": _json(s.SecretsOut, "secrets"), **_errors(401, 404)}}},
        "/v1/{tenant}/secrets/{name}": {
            "put": {"summary": "set a secret of the tenant's http nodes (sealed at rest; never shown again)",
                    "operationId": "putSecret", "security": BEARER, "parameters": [TENANT, SECRET],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.SecretIn)}}},
                    "responses": {"200": _json(s.SecretOut, "changed"), "201": _json(s.SecretOut, "added"),
                                  **_errors(400, 401, 404, 409, 413, 503)}},
            "get": {"summary": "whether a secret is set, and when (never its value)", "operationId": "getSecret",
                    "security": BEARER, "parameters": [TENANT, SECRET],
                    "responses": {"200": _json(s.SecretOut, "the secret"), **_errors(400, 401, 404)}},
            "delete": {"summary": "remove a secret (flows naming it fail their call until it is set again)",
                       "operationId": "deleteSecret", "security": BEARER, "parameters": [TENANT, SECRET],
                       "responses": {"204": _answer("removed"), **_errors(400, 401, 404, 409, 503)}}},
        "/v1/{tenant}/dead-letters": {"get": {
            "summary": "the tenant's replies given up on after their last attempt, oldest first",
            "operationId": "listDeadLetters", "security": BEARER, "parameters": [TENANT],
            "responses": {"200": _json(s.DeadLettersOut, "dead letters"), **_errors(401, 404, 503)}}},
        "/v1/{tenant}/dead-letters/replay": {"post": {
            "summary": "send dead letters again (to the end of the outbox, same idempotency keys)",
            "operationId": "replayDeadLetters", "security": BEARER, "parameters": [TENANT],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.DeadLetterChoice)}}},
            "responses": {"200": _json(s.Replayed, "how many were replayed"), **_errors(400, 401, 404, 413, 503)}}},
        "/v1/{tenant}/dead-letters/drop": {"post": {
            "summary": "delete dead letters", "operationId": "dropDeadLetters", "security": BEARER,
            "parameters": [TENANT],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.DeadLetterChoice)}}},
            "responses": {"200": _json(s.Dropped, "how many were dropped"), **_errors(400, 401, 404, 413, 503)}}},
    }


@cache
def openapi() -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in MODELS]
    _, definitions = models_json_schema(modes, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "parlour", "version": __version__,
                 "description": "The gateway of a parlour node: the web channel, the admin API, operations. "
                                "Every error has the shape of ErrorOut."},
        "paths": _throttled(_paths()),
        "components": {"schemas": definitions.get("$defs", {}),
                       "headers": HEADERS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _throttled(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a token may answer 429 to an address that sent too many wrong
    ones (:class:`parlour.gateway.auth.FailureThrottle`)."""
    for operations in paths.values():
        for operation in operations.values():
            if "security" in operation:
                operation["responses"].setdefault("429", _json(s.ErrorOut, "too many wrong tokens from this address "
                                                               "(`too_many_failures`); see Retry-After", "Retry-After"))
    return paths


def openapi_route() -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(openapi())

    return web.get("/openapi.json", handler)
