"""Conversation operations over real HTTP and Redis: an operator finds conversations by
flow, status and last turn (paged), exports one's transcript as JSON lines, resets a handed-off
one (its ticket closes), and deletes a flow, refused while conversations are pinned to it or
another flow goes to it, and forced. Another tenant's token sees nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import pytest

from tests.gateway.conftest import start_node, stop_node

_prefixes = itertools.count()

PROMO = """
flow: promo
triggers: [{keyword: [promo]}]
start: offer
nodes:
  offer:
    ask: Want the deal?
    save: answer
    next: done
  done: {say: "Noted: {{ answer }}", end: true}
"""

TO_PROMO = """
flow: teaser
triggers: [{keyword: [tease]}]
start: go
nodes:
  go: {goto: {flow: promo}}
"""


@pytest.fixture
async def node(redis_server):
    started = await start_node(f"{redis_server.url}?prefix=co{next(_prefixes)}:")
    yield started
    await stop_node(started)


async def call(node, method: str, path: str, tenant: str | None = "demo", **kwargs):
    headers = node.auth(tenant)
    async with node.http.request(method, f"{node.url}{path}", headers=headers, **kwargs) as answer:
        body = await answer.read()
        return answer.status, answer.headers, body


async def listed(node, **query) -> list[dict]:
    """Every conversation the listing gives with ``query``, page by page (2 per page)."""
    found, after = [], None
    for _ in range(20):
        params = {"limit": "2", **query, **({"after": after} if after else {})}
        status, _, body = await call(node, "GET", "/v1/demo/conversations", params=params)
        assert status == 200, body
        page = json.loads(body)
        assert len(page["conversations"]) <= 2
        found += page["conversations"]
        if page["next"] is None:
            return found
        after = page["next"]
    raise AssertionError("the listing never ended")


async def parlour(node, *args: str) -> tuple[int, str, str]:
    """``parlour conversations ...`` run as a process against the node."""
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parlour.cli", "conversations", *args, "--url", node.url, "--token", node.tokens["demo"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(run.communicate(), 60)
    return run.returncode or 0, out.decode(), err.decode()


def users(conversations: list[dict]) -> list[str]:
    return sorted(c["user"] for c in conversations)


async def test_an_operator_finds_conversations_reads_a_transcript_and_a_reset_closes_the_ticket(node):
    before = time.time() - 1
    for user, texts in {"ann": ["hi"], "bob": ["help"], "cid": ["help", "agent"], "dee": ["hi", "stop"]}.items():
        for text in texts:
            assert (await node.say(user, text))[0] == 200
    assert (await node.say("eve", "hello", tenant="acme"))[0] == 200  # another tenant's

    everyone = await listed(node)
    assert users(everyone) == ["ann", "bob", "cid", "dee"]
    cid = next(c for c in everyone if c["user"] == "cid")
    assert (cid["flow"], cid["status"], cid["channel"], cid["key"]) == ("support", "handoff", "web", "demo/web/cid")
    assert cid["ticket"] and cid["replies_sent"] >= 2 and cid["last_turn_at"] >= int(before)
    assert users(await listed(node, flow="support")) == ["bob", "cid"]
    assert users(await listed(node, status="handoff")) == ["cid"]
    assert users(await listed(node, status="ended")) == ["dee"]
    assert users(await listed(node, status="waiting", before=str(time.time() + 5))) == ["ann", "bob"]
    assert await listed(node, since="2999-01-01T00:00:00Z") == []
    assert users(await listed(node, since=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before)))) == [
        "ann", "bob", "cid", "dee"]

    for query, wrong in [({"status": "stuck"}, "`status` is one of"), ({"since": "yesterday"}, "ISO 8601"),
                         ({"limit": "0"}, "`limit`"), ({"after": "garbage"}, "not a cursor")]:
        status, _, body = await call(node, "GET", "/v1/demo/conversations", params=query)
        assert status == 400 and wrong in json.loads(body)["error"]["message"], body
    status, _, body = await call(node, "GET", "/v1/demo/conversations", tenant="acme")
    assert status == 404, body  # acme's token does not see demo
    status, _, body = await call(node, "GET", "/v1/acme/conversations", tenant="acme")
    assert [c["user"] for c in json.loads(body)["conversations"]] == ["eve"]

    status, headers, body = await call(node, "GET", "/v1/demo/conversations/web/cid/transcript")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    turns = [json.loads(line) for line in body.decode().splitlines()]
    assert [t["in"]["text"] for t in turns] == ["help", "agent"]
    assert turns[-1]["status"] == "handoff" and turns[-1]["ticket"] == cid["ticket"]
    status, _, body = await call(node, "GET", "/v1/demo/conversations/web/cid/transcript",
                                 params={"after": turns[0]["cursor"]})
    assert [json.loads(line)["in"]["text"] for line in body.decode().splitlines()] == ["agent"]
    for path, code in [("/v1/demo/conversations/web/nobody/transcript", 404),
                       ("/v1/demo/conversations/web/cid/transcript?after=x1", 400)]:
        assert (await call(node, "GET", path))[0] == code
    assert (await call(node, "GET", "/v1/demo/conversations/web/cid/transcript", tenant="acme"))[0] == 404

    code, out, err = await parlour(node, "list", "demo", "--status", "waiting", "--limit", "1", "--all")
    keys = sorted(line.split()[0] for line in out.splitlines())  # sorted: SCAN order is no order
    assert code == 0 and keys == ["demo/web/ann", "demo/web/bob"], err
    assert "registration at main_menu" in out and err.splitlines()[-1] == "2 conversation(s)"
    code, out, err = await parlour(node, "transcript", "demo", "web", "cid")
    assert code == 0 and "user: help" in out and "user: agent" in out and "2 turn(s)" in err, err
    code, out, _ = await parlour(node, "transcript", "demo", "web", "cid", "--json")
    assert [json.loads(line)["in"]["text"] for line in out.splitlines()] == ["help", "agent"]
    code, _, err = await parlour(node, "transcript", "demo", "web", "nobody")
    assert code == 1 and "conversation web/nobody not found (404 not_found)" in err, err

    assert (await parlour(node, "reset", "demo", "web", "cid"))[0] == 0
    status, _, body = await call(node, "GET", f"/v1/demo/handoffs/{cid['ticket']}")
    ticket = json.loads(body)["ticket"]
    assert (ticket["status"], ticket["resolution"]) == ("closed", "reset")
    status, _, body = await call(node, "GET", "/v1/demo/conversations/web/cid/transcript")
    assert json.loads(body.decode().splitlines()[-1])["in"] == {"kind": "reset"}
    assert users(await listed(node, status="handoff")) == []


async def test_a_flow_in_use_is_deleted_only_by_force_and_one_another_flow_goes_to_never(node):
    assert (await call(node, "PUT", "/v1/demo/flows/promo", data=PROMO))[0] == 201
    for user in ("fay", "gus"):
        assert (await node.say(user, "promo"))[1]["replies"][0]["text"] == "Want the deal?"
    assert (await node.say("hal", "hi"))[0] == 200  # in another flow: not pinned

    status, _, body = await call(node, "DELETE", "/v1/demo/flows/promo")
    error = json.loads(body)["error"]
    assert status == 409 and error["code"] == "flow_in_use", body
    assert error["details"]["conversations"] == 2 and sorted(error["details"]["examples"]) == [
        "demo/web/fay", "demo/web/gus"]
    assert (await node.say("fay", "yes"))[1]["replies"][0]["text"] == "Noted: yes"  # untouched, and now ended

    assert (await call(node, "PUT", "/v1/demo/flows/teaser", data=TO_PROMO))[0] == 201
    status, _, body = await call(node, "DELETE", "/v1/demo/flows/promo?force=true")
    error = json.loads(body)["error"]
    assert status == 409 and error["code"] == "flow_referenced" and "teaser" in error["message"], body
    assert (await call(node, "DELETE", "/v1/demo/flows/teaser"))[0] == 200

    status, _, body = await call(node, "DELETE", "/v1/demo/flows/promo?force=true")
    assert status == 200, body
    assert json.loads(body) | {"at": 0} == {"flow": "promo", "versions_deleted": 1, "conversations_ended": 1, "at": 0}
    assert (await call(node, "GET", "/v1/demo/flows/promo"))[0] == 404
    assert (await call(node, "DELETE", "/v1/demo/flows/promo"))[0] == 404
    assert [c["status"] for c in await listed(node) if c["user"] == "gus"] == ["idle"]
    status, body = await node.say("gus", "promo")  # the keyword is nobody's now: the default flow answers
    assert status == 200 and "Welcome" in body["replies"][0]["text"], body
    assert (await call(node, "DELETE", "/v1/demo/flows/registration", tenant="acme"))[0] == 404
    assert (await call(node, "DELETE", "/v1/demo/flows/registration?force=maybe"))[0] == 400
