"""The admin API over real HTTP: tokens and tenants, flow versions, conversations."""

from __future__ import annotations

import asyncio
import itertools
import time

from parlour.flows_dir import bundled_flows
from tests.gateway.conftest import texts

REGISTRATION = (bundled_flows() / "registration.yaml").read_text()
RENAMED = REGISTRATION.replace("Welcome to the club.", "Welcome to the new club.")
BROKEN = """\
flow: registration
start: welcome
nodes:
  welcome:
    say: hello
    next: nowhere
  other:
    ask: Who?
"""


async def call(node, method: str, path: str, *, token: str | None = None, **kwargs) -> tuple[int, dict | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with node.http.request(method, node.url + path, headers=headers, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_tokens_reach_only_their_tenant(node):
    assert (await call(node, "GET", "/v1/demo/flows"))[0] == 401
    status, body = await call(node, "GET", "/v1/demo/flows", token="plr_not-a-token")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert (await call(node, "GET", "/v1/demo/flows", token=node.tokens["demo"]))[0] == 200
    assert (await call(node, "GET", "/v1/demo/flows", token=node.operator))[0] == 200
    # another tenant's resources do not exist for this token, whatever they are
    for path in ("/v1/acme/flows", "/v1/acme/flows/log", "/v1/acme/conversations/web/u1", "/v1/nobody/flows"):
        status, body = await call(node, "GET", path, token=node.tokens["demo"])
        assert (status, body["error"]["code"]) == (404, "not_found"), path
    status, _ = await call(node, "PUT", "/v1/acme/flows/log", token=node.tokens["demo"], data=REGISTRATION)
    assert status == 404
    assert (await call(node, "GET", "/v1/tenants", token=node.tokens["demo"]))[0] == 403


async def test_the_operator_makes_a_tenant_whose_token_works_at_once(node):
    status, body = await call(node, "PUT", "/v1/tenants/newco", token=node.operator)
    assert status == 201 and body["token"].startswith("plr_")
    token = body["token"]
    status, listed = await call(node, "GET", "/v1/tenants", token=node.operator)
    newco = {"tenant": "newco", "channels": ["web"], "rate_limit": "200/second", "declared_in": "api"}
    assert newco in listed["tenants"]
    assert (await call(node, "PUT", "/v1/newco/flows/registration", token=token, data=REGISTRATION))[0] == 201
    status, answer = await call(node, "POST", "/v1/newco/web/messages", json={"user": "n", "id": "1", "text": "hi"})
    assert status == 200 and "Welcome to the club" in texts(answer)[0]
    assert (await call(node, "GET", "/v1/demo/flows", token=token))[0] == 404
    # a new token replaces the old one; a tenant of the config file is not the API's to change
    status, again = await call(node, "PUT", "/v1/tenants/newco", token=node.operator)
    assert (await call(node, "GET", "/v1/newco/flows", token=token))[0] == 401
    assert (await call(node, "GET", "/v1/newco/flows", token=again["token"]))[0] == 200
    assert (await call(node, "PUT", "/v1/tenants/demo", token=node.operator))[0] == 409
    status, body = await call(node, "PUT", "/v1/tenants/bad%20name", token=node.operator)
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_a_broken_flow_is_refused_with_every_position_and_the_running_one_keeps_serving(node):
    status, body = await call(node, "PUT", "/v1/demo/flows/registration", token=node.tokens["demo"], data=BROKEN)
    assert status == 422 and body["error"]["code"] == "invalid_flow"
    problems = {(p["line"], p["column"]) for p in body["error"]["details"]["problems"]}
    assert {(6, 11), (7, 3)} <= problems, body  # `nowhere`, and an ask that leads nowhere
    assert body["error"]["message"].splitlines()[0].startswith("6:11: ")
    status, body = await call(node, "PUT", "/v1/demo/flows/registration", token=node.tokens["demo"],
                              data="flow: [unclosed\n")
    assert status == 422 and body["error"]["message"].startswith("1:16: YAML syntax"), body
    status, body = await call(node, "PUT", "/v1/demo/flows/other-name", token=node.tokens["demo"], data=REGISTRATION)
    assert status == 422 and "uploaded as 'other-name'" in body["error"]["message"]
    status, flows = await call(node, "GET", "/v1/demo/flows/registration", token=node.tokens["demo"])
    assert len(flows["versions"]) == 1 and flows["source"] == REGISTRATION
    assert "Welcome to the club" in texts((await node.say("still", "hi"))[1])[0]


async def test_a_goto_into_a_flow_the_tenant_lacks_is_refused(node):
    flow = "flow: jumper\nstart: a\nnodes:\n  a: {goto: {flow: nowhere}}\n"
    status, body = await call(node, "PUT", "/v1/demo/flows/jumper", token=node.tokens["demo"], data=flow)
    assert status == 422 and "nowhere" in body["error"]["message"], body


async def test_a_new_version_leaves_conversations_in_progress_on_theirs_and_rollback_returns(node):
    token = node.tokens["demo"]
    await node.say("old", "hi")
    await node.say("old", button="register")  # now asked for a name, on the first version
    first = (await call(node, "GET", "/v1/demo/flows/registration", token=token))[1]["current"]
    status, created = await call(node, "PUT", "/v1/demo/flows/registration", token=token, data=RENAMED)
    assert status == 201 and created["current"] and created["version"] != first
    assert (await call(node, "PUT", "/v1/demo/flows/registration", token=token, data=RENAMED))[0] == 200
    assert texts((await node.say("new", "hi"))[1])[0] == "Hi there! Welcome to the new club."
    status, answer = await node.say("old", "Ada Lovelace")
    assert texts(answer) == ["Thanks Ada Lovelace. What's your email?"]
    status, conversation = await call(node, "GET", "/v1/demo/conversations/web/old", token=token)
    assert conversation["version"] == first and conversation["node"] == "ask_email"
    status, flow = await call(node, "POST", "/v1/demo/flows/registration/rollback", token=token,
                              json={"version": first})
    assert status == 200 and flow["current"] == first and len(flow["versions"]) == 2
    assert texts((await node.say("newer", "hi"))[1])[0] == "Hi there! Welcome to the club."
    status, body = await call(node, "POST", "/v1/demo/flows/registration/rollback", token=token,
                              json={"version": "nope"})
    assert status == 404
    status, source = await call(node, "GET", f"/v1/demo/flows/registration?version={created['version']}", token=token)
    assert source["source"] == RENAMED


async def test_a_conversation_shows_its_state_and_recent_turns_and_can_be_reset(node):
    token = node.tokens["demo"]
    await node.say("ins", "hi", id="i-1")
    await node.say("ins", button="register", id="i-2")
    await node.say("ins", "Ada Lovelace", id="i-3")
    status, body = await call(node, "GET", "/v1/demo/conversations/web/ins", token=token)
    assert status == 200
    assert (body["flow"], body["node"], body["status"], body["vars"]["name"]) == (
        "registration", "ask_email", "waiting", "Ada Lovelace")
    assert [t["message_id"] for t in body["recent_turns"]] == ["i-3", "i-2", "i-1"]
    assert body["recent_turns"][0]["replies"][0]["text"] == "Thanks Ada Lovelace. What's your email?"
    assert (await call(node, "DELETE", "/v1/demo/conversations/web/ins", token=token))[0] == 204
    status, body = await call(node, "GET", "/v1/demo/conversations/web/ins", token=token)
    assert (body["status"], body["flow"], body["vars"]) == ("idle", None, {})
    # the reset conversation starts again, and an old message replayed is still known
    assert (await node.say("ins", "Ada Lovelace", id="i-3"))[1]["duplicate"] is True
    assert "Welcome" in texts((await node.say("ins", "hi", id="i-4"))[1])[0]
    assert (await call(node, "GET", "/v1/demo/conversations/web/nobody", token=token))[0] == 404
    assert (await call(node, "DELETE", "/v1/demo/conversations/web/nobody", token=token))[0] == 404


def tiny(n: int) -> str:
    """A new version of a 4-line flow (the finding's)."""
    return f"flow: tiny\nstart: a\nnodes:\n  a: {{say: 'version {n}', end: true}}\n"


async def test_a_tenant_uploading_flows_neither_stalls_another_tenant_nor_goes_past_its_admin_limit(node):
    """Issue 12, finding 5: ten uploads of a 4-line flow held another tenant at 0.7 msg/s for 15 s."""
    await node.runtime.deploy("acme", [bundled_flows()])  # acme's other flows, which each upload is checked with
    # the first upload compiles them, once (before: at every upload, on the event loop)
    assert (await call(node, "PUT", "/v1/acme/flows/tiny", token=node.tokens["acme"], data=tiny(0)))[0] == 201
    users = itertools.count()

    async def demo_rate_while(work) -> float:
        """Messages of tenant demo answered per second while ``work`` runs, by two users at a time."""
        answered, done = 0, asyncio.Event()

        async def talk():
            nonlocal answered
            while not done.is_set():
                status, _ = await node.say(f"b{next(users)}", "hi")
                answered += status == 200

        started = time.monotonic()
        talkers = [asyncio.ensure_future(talk()) for _ in range(2)]
        await work()
        done.set()
        await asyncio.gather(*talkers)
        return answered / (time.monotonic() - started)

    statuses = []

    async def upload():
        for n in range(1, 11):
            status, _ = await call(node, "PUT", "/v1/acme/flows/tiny", token=node.tokens["acme"], data=tiny(n))
            statuses.append(status)

    during = await demo_rate_while(upload)
    baseline = await demo_rate_while(lambda: asyncio.sleep(1.0))
    assert during >= 0.3 * baseline, (during, baseline)
    assert statuses == [201] * 9 + [429]  # the 11th inside the minute
    status, body = await call(node, "PUT", "/v1/acme/flows/tiny", token=node.tokens["acme"], data=tiny(11))
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert (await call(node, "GET", "/v1/acme/flows/tiny", token=node.tokens["acme"]))[0] == 200  # reads go on
    assert (await call(node, "PUT", "/v1/acme/flows/tiny", token=node.operator, data=tiny(12)))[0] == 201
