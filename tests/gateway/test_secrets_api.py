"""A tenant's secrets through a real node (issue 12, finding 1): set, shown as "set" and never
by value, reachable by its own tenant only, sealed in the store, refused in another tenant's
flow with line:column, used by the tenant's http node and masked where an API echoes it, set
with ``parlour secrets set`` from stdin."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys

import pytest
from aiohttp import web

from parlour.channels.registry import Cipher
from parlour.vault import SECRETS_META
from tests.servers import serve

from .conftest import start_node, stop_node, wait_for

SECRET = "acme-s3cret-VALUE"
_prefixes = itertools.count()

ECHO = """\
flow: echo
triggers: [{keyword: [echo]}]
start: call
nodes:
  call:
    http: {url: "{{ env.API }}/echo", headers: {X-Key: {secret: ACME_KEY}}, save: echoed, on_error: failed}
    next: again
  again:
    http: {url: "{{ env.API }}/echo?status=400", headers: {X-Key: {secret: ACME_KEY}}, on_error: failed}
    next: failed
  failed: {say: "echoed {{ echoed.you_sent }}, then {{ error.json.you_sent }}", end: true}
"""

STEAL = ECHO.replace("flow: echo", "flow: steal").replace("keyword: [echo]", "keyword: [steal]")


def echo_app() -> web.Application:
    async def echo(request):
        status = int(request.query.get("status", 200))
        return web.json_response({"you_sent": request.headers.get("X-Key")}, status=status)

    app = web.Application()
    app.router.add_get("/echo", echo)
    return app


@pytest.fixture
async def sealed_node(redis_server):
    """A node whose host holds the secrets key (as `parlour serve`'s do), acme's API at ``node.api``."""
    async with serve(echo_app()) as api:
        node = await start_node(f"{redis_server.url}?prefix=sec{next(_prefixes)}:", secrets_key=Cipher.new_key(),
                                env={"acme": {"API": api}, "demo": {"API": api}})
        node.api = api  # type: ignore[attr-defined]
        yield node
        await stop_node(node)


async def call(node, method: str, path: str, tenant: str | None = "acme", **kwargs) -> tuple[int, dict | None]:
    async with node.http.request(method, f"{node.url}{path}", headers=node.auth(tenant), **kwargs) as answer:
        return answer.status, (await answer.json() if answer.status != 204 else None)


async def test_a_secret_round_trip_reaches_its_tenant_only_and_is_masked_where_echoed(sealed_node):
    node = sealed_node
    status, body = await call(node, "PUT", "/v1/acme/secrets/ACME_KEY", json={"value": SECRET})
    assert status == 201 and body["value"] == "set" and body["source"] == "api" and body["set_at"] > 0
    assert SECRET.encode() not in await node.store.get_meta(SECRETS_META)
    status, body = await call(node, "GET", "/v1/acme/secrets/ACME_KEY")
    assert status == 200 and (body["name"], body["value"]) == ("ACME_KEY", "set")
    status, listed = await call(node, "GET", "/v1/acme/secrets", tenant=None)  # the operator's token
    assert status == 200 and [s["name"] for s in listed["secrets"]] == ["ACME_KEY"] and SECRET not in json.dumps(listed)

    # Another tenant's token neither reads nor sets it; nor can another tenant's flow name it.
    for method, kwargs in (("GET", {}), ("PUT", {"json": {"value": "stolen"}}), ("DELETE", {})):
        status, body = await call(node, method, "/v1/acme/secrets/ACME_KEY", tenant="demo", **kwargs)
        assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await call(node, "PUT", "/v1/demo/flows/steal", tenant="demo", data=STEAL)
    assert status == 422 and body["error"]["code"] == "invalid_flow"
    problems = body["error"]["details"]["problems"]
    assert [(p["line"], p["column"]) for p in problems] == [(6, 56), (9, 67)]  # each {secret: ACME_KEY}
    assert all("secret 'ACME_KEY' is not set for tenant 'demo'" in p["message"] for p in problems)
    status, body = await call(node, "PUT", "/v1/acme/secrets/bad-name", json={"value": "x"})
    assert status == 400 and body["error"]["code"] == "invalid_request"

    # acme's own flow uses it; its echo comes back as *** in vars, error.json and the API's answer.
    assert (await call(node, "PUT", "/v1/acme/flows/echo", data=ECHO))[0] == 201
    status, _ = await node.say("ann", "echo", tenant="acme")
    assert status == 200

    async def ended():
        status, body = await call(node, "GET", "/v1/acme/conversations/web/ann")
        return body if status == 200 and body["status"] == "ended" else None

    conversation = await wait_for(ended)
    assert conversation, "the conversation did not end"
    assert conversation["vars"]["echoed"] == {"you_sent": "***"}
    assert conversation["vars"]["error"]["json"] == {"you_sent": "***"} and SECRET not in json.dumps(conversation)

    assert (await call(node, "DELETE", "/v1/acme/secrets/ACME_KEY"))[0] == 204
    status, body = await call(node, "GET", "/v1/acme/secrets/ACME_KEY")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_parlour_secrets_set_reads_the_value_from_stdin(sealed_node):
    node = sealed_node
    base = [sys.executable, "-m", "parlour.cli", "secrets"]
    where = ["--url", node.url, "--token", node.operator]
    process = await asyncio.create_subprocess_exec(*base, "set", "acme", "FROM_STDIN", *where,
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(b"piped-s3cret\n")
    assert process.returncode == 0, err.decode()
    assert b"piped-s3cret" not in out + err
    status, body = await call(node, "GET", "/v1/acme/secrets/FROM_STDIN")
    assert status == 200 and body["value"] == "set"
    # The value is the line without its newline: the host holds exactly what was piped.
    assert node.runtime.vault.secrets_of("acme") == {"FROM_STDIN": "piped-s3cret"}
    listing = await asyncio.create_subprocess_exec(*base, "list", "acme", *where, stdout=asyncio.subprocess.PIPE)
    listed, _ = await listing.communicate()
    assert b"FROM_STDIN  set (api, set " in listed and b"1 secret(s)" in listed
