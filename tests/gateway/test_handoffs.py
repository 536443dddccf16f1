"""The agent inbox, end to end: a conversation handed off, its ticket listed, an agent's reply
reaching the user (on the web channel and through a messaging channel's fake API), the user's
messages reaching the agent in order (also as server-sent events), a resume that goes on with
a variable the agent set, a host killed while a ticket is open, and tokens that must not see
another tenant's or another queue's tickets. Real Redis, real HTTP on loopback; the runtime in
the test's process, except where the host is killed: there it is Ray's actor.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal

import pytest

from parlour.channels.registry import Cipher
from parlour.config import hash_token, new_token
from tests.channels.fake_api import FakeAPI
from tests.channels.fake_telegram import for_token
from tests.gateway.conftest import start_node, stop_node
from tests.gateway.test_delivery import FAST, SECRET, TOKEN, post, sent_texts, until, update
from tests.servers import serve

_prefixes = itertools.count()

DESK = """
flow: desk
triggers: [{keyword: [human]}]
vars: {case: "", agent_name: ""}
start: hand
nodes:
  hand:
    say: Passing you to a person.
    handoff: {reason: "{{ message.text }} asked for a person", queue: desk}
    next: back
  back:
    say: "Back with the bot. Your case is {{ case }}."
    end: true
  survey:
    say: "How did {{ agent_name }} do?"
    end: true
"""


async def call(node, method: str, path: str, token: str | None = None, **kwargs) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else node.auth("demo")
    async with node.http.request(method, f"{node.url}{path}", headers=headers, **kwargs) as answer:
        return answer.status, await answer.json()


async def only_ticket(node, tenant: str = "demo", **query) -> dict:
    status, body = await call(node, "GET", f"/v1/{tenant}/handoffs", node.tokens[tenant], params=query)
    assert status == 200, body
    assert len(body["tickets"]) == 1, body
    return body["tickets"][0]


def said(turns: list[dict]) -> list[str]:
    return [t["in"]["text"] for t in turns if t["in"]["kind"] == "message"]


@pytest.fixture
async def node(redis_server):
    started = await start_node(f"{redis_server.url}?prefix=ho{next(_prefixes)}:")
    yield started
    await stop_node(started)


@pytest.fixture
async def ray_node(ray_for_tests, redis_server):
    """The node with its host in a Ray actor, which a test may kill (Ray starts it again)."""
    started = await start_node(f"{redis_server.url}?prefix=ho{next(_prefixes)}:", on_ray=True)
    yield started
    await stop_node(started)


async def test_a_web_user_handed_off_is_served_by_an_agent_and_given_back(node):
    ws = await node.http.ws_connect(f"{node.url.replace('http', 'ws')}/v1/demo/web/ws?user=ann")
    assert (await node.say("ann", "help"))[0] == 200
    status, body = await node.say("ann", "agent")
    assert "passing you to a colleague" in body["replies"][0]["text"]
    ticket = await only_ticket(node, status="open")
    assert (ticket["queue"], ticket["reason"], ticket["status"], ticket["flow"]) == (
        "support", "Customer asked for a person", "open", "support")
    assert ticket["key"] == "demo/web/ann" and ticket["user"]["id"] == "ann"

    # the agent's live view: the user's messages as they are taken, in order
    events = await node.http.get(f"{node.url}/v1/demo/handoffs/{ticket['id']}/events", headers=node.auth("demo"))
    assert events.headers["Content-Type"].startswith("text/event-stream")
    for text in ("my card is blocked", "it says error 7"):
        assert (await node.say("ann", text)) == (200, {"replies": [], "duplicate": False})
    streamed = await read_events(events, want=2)
    assert [e["in"]["text"] for e in streamed] == ["my card is blocked", "it says error 7"]
    events.close()

    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/assign", json={"agent": "kim"})
    assert status == 200 and (body["ticket"]["status"], body["ticket"]["agent"]) == ("assigned", "kim"), body
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/messages",
                              json={"text": "Hi Ann, Kim here. Blocked since when?", "id": "k1"})
    assert status == 200 and body["duplicate"] is False, body
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/messages",
                              json={"text": "Hi Ann, Kim here. Blocked since when?", "id": "k1"})
    assert status == 200 and body["duplicate"] is True, body  # a retried request: said once
    assert await pushed(ws) == ["Hi Ann, Kim here. Blocked since when?"]

    status, body = await call(node, "GET", f"/v1/demo/handoffs/{ticket['id']}")
    ticket_turns = [t for t in body["transcript"] if t["ticket"] == ticket["id"]]
    assert said(ticket_turns) == ["agent", "my card is blocked", "it says error 7"]
    agent_turns = [t for t in ticket_turns if t["in"]["kind"] == "agent"]
    assert [(t["in"]["action"], t["in"]["text"]) for t in agent_turns] == [
        ("assign", None), ("message", "Hi Ann, Kim here. Blocked since when?")]
    assert said(body["transcript"])[:1] == ["help"]  # the turns before the hand-off, for context

    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/resume",
                              json={"vars": {"order_id": "A-1"}})
    assert status == 200 and body["ticket"]["status"] == "closed" and body["ticket"]["resolution"] == "resumed", body
    assert body["replies"][0]["text"] == "You're back with the Acme bot."
    assert (await pushed(ws))[0] == "You're back with the Acme bot."
    status, body = await call(node, "GET", "/v1/demo/conversations/web/ann")
    assert body["vars"]["order_id"] == "A-1" and body["status"] == "waiting"
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/messages", json={"text": "late"})
    assert (status, body["error"]["code"]) == (409, "ticket_closed")
    await ws.close()


async def test_a_resume_goes_on_at_the_node_the_agent_names_with_its_variables(node):
    await upload(node, "demo", DESK)
    await node.say("bo", "human")
    ticket = await only_ticket(node, queue="desk")
    assert ticket["reason"] == "human asked for a person"
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/resume",
                              json={"node": "nowhere"})
    assert (status, body["error"]["code"]) == (409, "not_in_handoff"), body
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/resume",
                              json={"node": "survey", "vars": {"agent_name": "Kim"}})
    assert status == 200 and [r["text"] for r in body["replies"]] == ["How did Kim do?"], body


async def test_other_tenants_and_other_queues_see_no_ticket(node):
    await upload(node, "demo", DESK)
    await node.say("cy", "human")
    ticket = await only_ticket(node)
    for path in ("/v1/demo/handoffs", f"/v1/demo/handoffs/{ticket['id']}", f"/v1/demo/handoffs/{ticket['id']}/events"):
        status, body = await call(node, "GET", path, node.tokens["acme"])
        assert (status, body["error"]["code"]) == (404, "not_found"), path
    status, body = await call(node, "POST", f"/v1/acme/handoffs/{ticket['id']}/messages", node.tokens["acme"],
                              json={"text": "hello from another tenant"})
    assert status == 404
    status, body = await call(node, "GET", "/v1/acme/handoffs", node.tokens["acme"])
    assert body == {"tickets": [], "next": None}

    # agents: one of the desk queue, one of billing only; neither reaches other routes
    desk, billing = new_token(), new_token()
    node.gateway.auth.set_agents("demo", {"dee": (hash_token(desk), ["desk"]),
                                          "bill": (hash_token(billing), ["billing"])})
    assert [t["id"] for t in (await call(node, "GET", "/v1/demo/handoffs", desk))[1]["tickets"]] == [ticket["id"]]
    assert (await call(node, "GET", "/v1/demo/handoffs", billing))[1] == {"tickets": [], "next": None}
    assert (await call(node, "GET", f"/v1/demo/handoffs/{ticket['id']}", billing))[0] == 404
    assert (await call(node, "GET", "/v1/demo/handoffs?queue=desk", billing))[0] == 404
    assert (await call(node, "GET", "/v1/demo/flows", desk))[0] == 403
    assert (await call(node, "GET", "/v1/demo/secrets", desk))[0] == 403
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/assign", desk, json={"agent": "someone"})
    assert body["ticket"]["agent"] == "dee"  # an agent's token acts as its agent, whatever it claims


async def test_a_host_killed_while_a_ticket_is_open_loses_nothing(ray_node):
    node = ray_node
    await upload(node, "demo", DESK)
    await node.say("di", "human")
    ticket = await only_ticket(node)
    await node.say("di", "before the crash")
    runtime = node.runtime
    os.kill((await runtime.pids())[runtime.settings.names.host(0)], signal.SIGKILL)
    status, body = await retried(lambda: node.say("di", "after the crash", id="crash-1"))
    assert status == 200, body
    assert await node.say("di", "after the crash", id="crash-1") == (200, {"replies": [], "duplicate": True})
    status, body = await retried(lambda: call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/messages",
                                              json={"text": "Still here.", "id": "s1"}))
    assert status == 200, body
    status, body = await call(node, "GET", f"/v1/demo/handoffs/{ticket['id']}")
    turns = [t for t in body["transcript"] if t["ticket"] == ticket["id"]]
    assert said(turns) == ["human", "before the crash", "after the crash"]
    assert body["ticket"]["status"] == "open" and body["ticket"]["messages"] == 2
    status, body = await call(node, "POST", f"/v1/demo/handoffs/{ticket['id']}/resume", json={"vars": {"case": "C-9"}})
    assert body["replies"][0]["text"] == "Back with the bot. Your case is C-9."


async def test_bad_requests_get_clear_errors(node):
    await upload(node, "demo", DESK)
    await node.say("ed", "human")
    ticket = await only_ticket(node)
    base = f"/v1/demo/handoffs/{ticket['id']}"
    for method, path, body, code in [
            ("GET", "/v1/demo/handoffs?status=lost", None, "invalid_request"),
            ("GET", "/v1/demo/handoffs?limit=many", None, "invalid_request"),
            ("GET", "/v1/demo/handoffs/nope", None, "not_found"),
            ("GET", f"{base}/events?after=garbage", None, "invalid_request"),
            ("POST", f"{base}/messages", {"text": ""}, "invalid_request"),
            ("POST", f"{base}/messages", {"text": "x" * 5000}, "invalid_request"),
            ("POST", f"{base}/messages", {"text": "hi", "extra": 1}, "invalid_request"),
            ("POST", f"{base}/assign", {}, "invalid_request"),
            ("POST", f"{base}/resume", {"vars": [1]}, "invalid_request")]:
        if body is None:
            status, answer = await call(node, method, path)
        else:
            status, answer = await call(node, method, path, json=body)
        assert answer["error"]["code"] == code, (path, body, answer)
        assert status in (400, 404)
    async with node.http.post(f"{node.url}{base}/close", headers=node.auth("demo"), data=b"{not json") as answer:
        assert answer.status == 400


# ---------------------------------------------------------------- a messaging channel


@pytest.fixture
async def fake():
    api = FakeAPI(for_token(TOKEN))
    async with serve(api.app()) as url:
        api.url = url  # type: ignore[attr-defined]
        yield api


async def test_a_telegram_user_reaches_an_agent_and_back_in_order(redis_server, fake):
    node = await start_node(f"{redis_server.url}?prefix=hot{next(_prefixes)}:", secrets_key=Cipher.new_key(),
                            delivery=FAST)
    try:
        async with node.http.put(f"{node.url}/v1/acme/bots/telegram/support", headers=node.auth("acme"), json={
                "api_base": fake.url, "token": TOKEN, "secret_token": SECRET}) as answer:
            assert answer.status == 201
        await upload(node, "acme", DESK)
        assert await post(node, update(77, "human")) == 200
        await until(lambda: sent_texts(fake) == ["Passing you to a person."])
        ticket = await only_ticket(node, "acme")
        assert ticket["channel"] == "telegram:support"
        assert await post(node, update(77, "are you there?")) == 200
        for text in ("Yes, Kim here.", "Let me check."):
            status, body = await call(node, "POST", f"/v1/acme/handoffs/{ticket['id']}/messages", node.tokens["acme"],
                                      json={"text": text})
            assert status == 200, body
        status, body = await call(node, "POST", f"/v1/acme/handoffs/{ticket['id']}/resume", node.tokens["acme"],
                                  json={"vars": {"case": "C-7"}})
        assert status == 200, body
        await until(lambda: len(sent_texts(fake)) == 4)
        assert sent_texts(fake) == ["Passing you to a person.", "Yes, Kim here.", "Let me check.",
                                    "Back with the bot. Your case is C-7."]
        status, body = await call(node, "GET", f"/v1/acme/handoffs/{ticket['id']}", node.tokens["acme"])
        assert said([t for t in body["transcript"] if t["ticket"] == ticket["id"]]) == ["human", "are you there?"]
    finally:
        await stop_node(node)


# ---------------------------------------------------------------- helpers


async def retried(send, timeout_s: float = 60.0) -> tuple[int, dict]:
    """What a client does with 503 (the host restarting): the same request again, shortly."""
    async with asyncio.timeout(timeout_s):
        while (answer := await send())[0] == 503:
            await asyncio.sleep(0.2)
    return answer


async def upload(node, tenant: str, source: str) -> None:
    async with node.http.put(f"{node.url}/v1/{tenant}/flows/desk", headers=node.auth(tenant), data=source) as answer:
        assert answer.status in (200, 201), await answer.text()


async def read_events(response, want: int, timeout_s: float = 20.0) -> list[dict]:
    """The first ``want`` turn events of a server-sent events stream."""
    turns, event = [], None
    async with asyncio.timeout(timeout_s):
        while len(turns) < want:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "turn":
                turns.append(json.loads(line[6:]))
    return turns


async def pushed(ws, timeout_s: float = 20.0) -> list[str]:
    """The texts of the next push on a chat socket."""
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await ws.receive_json()
            if frame.get("type") == "push":
                return [r["text"] for r in frame["replies"]]
