"""``GET /openapi.json``: the whole HTTP API as OpenAPI 3.1, its bodies generated from the
pydantic models in :mod:`parlour.gateway.schemas` (the same models that validate requests)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from parlour import __version__

from . import schemas as s

MODELS = [s.WebMessage, s.SocketMessage, s.WebReplies, s.ErrorOut, s.FlowsOut, s.FlowOut, s.FlowVersionOut,
          s.FlowCreated, s.Rollback, s.ConversationOut, s.TenantsOut, s.TenantCreated, s.Health, s.Ready]
REF = "#/components/schemas/{model}"


def _ref(model) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "the request is malformed (bad JSON, a field that does not validate)",
               401: "no token, or not a valid one", 403: "the token may not do this",
               404: "no such resource (or not one this token can see)", 409: "conflicts with the config file",
               413: "the body is larger than the limit", 422: "the flow is invalid: every problem with its line and column",
               429: "over the tenant's rate limit; see Retry-After", 500: "the turn failed",
               503: "overloaded or not ready; see Retry-After"}
    return {str(code): _json(s.ErrorOut, reasons[code]) for code in statuses}


TENANT = {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
FLOW = {"name": "flow", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
CHANNEL = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
USER = {"name": "user", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
BEARER = [{"bearer": []}]


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "the process is alive", "operationId": "healthz",
                             "responses": {"200": _json(s.Health, "alive")}}},
        "/readyz": {"get": {"summary": "Ray, the store and every host answer", "operationId": "readyz",
                            "responses": {"200": _json(s.Ready, "ready"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "the node's metrics, hosts included", "operationId": "metrics",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "operationId": "openapi",
                                  "responses": {"200": {"description": "OpenAPI 3.1",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/chat/{tenant}": {"get": {"summary": "the chat page", "operationId": "chatPage", "parameters": [TENANT],
                                   "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                                                 **_errors(404)}}},
        "/v1/{tenant}/web/messages": {"post": {
            "summary": "send a web chat message; the replies come back once its turn is committed",
            "operationId": "postWebMessage", "parameters": [TENANT],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.WebMessage)}}},
            "responses": {"200": _json(s.WebReplies, "the turn's replies"), **_errors(400, 404, 413, 429, 500, 503)}}},
        "/v1/{tenant}/web/ws": {"get": {
            "summary": "a WebSocket for a chat widget (send SocketMessage frames; receive replies and pushes)",
            "operationId": "webSocket", "parameters": [TENANT, {"name": "user", "in": "query", "required": True,
                                                                "schema": {"type": "string", "minLength": 1, "maxLength": 256}}],
            "responses": {"101": {"description": "switching to the WebSocket protocol"}, **_errors(400, 404, 429)}}},
        "/v1/tenants": {"get": {"summary": "every tenant (operator)", "operationId": "listTenants", "security": BEARER,
                                "responses": {"200": _json(s.TenantsOut, "the tenants"), **_errors(401, 403)}}},
        "/v1/tenants/{tenant}": {"put": {
            "summary": "create a tenant, or give it a new token (operator)", "operationId": "putTenant",
            "security": BEARER, "parameters": [TENANT],
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
                    "requestBody": {"required": True, "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": _json(s.FlowCreated, "this version was current already"),
                                  "201": _json(s.FlowCreated, "stored and current"),
                                  **_errors(400, 401, 404, 413, 422)}}},
        "/v1/{tenant}/flows/{flow}/rollback": {"post": {
            "summary": "make an earlier version current again", "operationId": "rollbackFlow", "security": BEARER,
            "parameters": [TENANT, FLOW],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(s.Rollback)}}},
            "responses": {"200": _json(s.FlowOut, "the flow, now on that version"), **_errors(400, 401, 404)}}},
        "/v1/{tenant}/conversations/{channel}/{user}": {
            "get": {"summary": "a conversation: state, flow, version, recent turns", "operationId": "getConversation",
                    "security": BEARER, "parameters": [TENANT, CHANNEL, USER],
                    "responses": {"200": _json(s.ConversationOut, "the conversation"), **_errors(400, 401, 404)}},
            "delete": {"summary": "reset a conversation: its next message starts afresh",
                       "operationId": "resetConversation", "security": BEARER, "parameters": [TENANT, CHANNEL, USER],
                       "responses": {"204": {"description": "reset"}, **_errors(400, 401, 404)}}},
    }


@cache
def openapi() -> dict[str, Any]:
    _, definitions = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "parlour", "version": __version__,
                 "description": "The gateway of a parlour node: the web channel, the admin API, operations. "
                                "Every error has the shape of ErrorOut."},
        "paths": _paths(),
        "components": {"schemas": definitions.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def openapi_route() -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(openapi())

    return web.get("/openapi.json", handler)
