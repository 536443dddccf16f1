"""The hand-off webhook, end to end: the support flow hands a web user to a person, and every
ticket event reaches a helpdesk on loopback, signed, in order, retried and dead-lettered like a
channel's replies. Real Redis, real HTTP; the helpdesk checks each signature with
the recipe of docs/gateway.md, not with parlour's code."""

from __future__ import annotations

import itertools
import json

import pytest

from parlour.actors.delivery import RetryPolicy
from parlour.channels.registry import Cipher
from parlour.flow import AgentAction, Resume
from parlour.messages import ConversationKey, Inbound
from tests.gateway.conftest import start_node, stop_node, texts, wait_for
from tests.servers import Recorder, helpdesk_app, serve

KEY = "whsec-0123456789abcdef"
FAST = RetryPolicy(max_attempts=3, base_s=0.02, max_backoff_s=0.1, timeout_s=5, breaker_failures=50)
_prefixes = itertools.count()
_actions = itertools.count()


@pytest.fixture
async def helpdesk():
    recorder = Recorder()
    async with serve(helpdesk_app(recorder, KEY.encode())) as url:
        recorder.url = url  # type: ignore[attr-defined]
        yield recorder


async def handed_off(node, user: str) -> None:
    """The user asks the support flow for a person."""
    await node.say(user, "help")
    status, body = await node.say(user, "agent")
    assert status == 200 and "passing you to a colleague" in " ".join(texts(body))


async def agent(node, user: str, event) -> None:
    outcome = await node.runtime.send(Inbound(ConversationKey("demo", "web", user), f"agent-{next(_actions)}", event))
    assert outcome.ok, outcome


async def received(helpdesk: Recorder, count: int) -> list[dict]:
    assert await wait_for(lambda: _at_least(helpdesk, count)), f"{len(helpdesk.requests)} of {count} requests arrived"
    return helpdesk.requests


async def _at_least(helpdesk: Recorder, count: int) -> bool:
    return len(helpdesk.requests) >= count


def event(request: dict) -> dict:
    return json.loads(request["body"])


async def test_every_ticket_event_reaches_the_helpdesk_signed_and_in_order(redis_server, helpdesk):
    node = await start_node(f"{redis_server.url}?prefix=hw{next(_prefixes)}:", secrets_key=Cipher.new_key(),
                            delivery=FAST, secrets={"demo": {"HELPDESK_KEY": KEY}},
                            webhooks={"demo": (f"{helpdesk.url}/hooks/parlour?from=test", "HELPDESK_KEY")})
    try:
        await handed_off(node, "ann")
        [opened] = await received(helpdesk, 1)
        ticket = event(opened)["ticket"]["id"]
        await node.say("ann", "my card is blocked")
        await agent(node, "ann", AgentAction(ticket, "assign", agent="kim"))
        await agent(node, "ann", AgentAction(ticket, "message", agent="kim", text="Hello, I'm Kim."))
        await agent(node, "ann", Resume(vars={"order_id": "123456"}, ticket=ticket, agent="kim"))
        requests = await received(helpdesk, 5)
    finally:
        await stop_node(node)
    assert [r["verified"] for r in requests] == [True] * 5
    assert {r["path"] for r in requests} == {"/hooks/parlour?from=test"}
    assert [r["headers"]["Idempotency-Key"] for r in requests] == [f"demo/handoff/{ticket}#{n}.0" for n in range(1, 6)]
    events = [event(r) for r in requests]
    assert [e["event"] for e in events] == [r["headers"]["X-Parlour-Event"] for r in requests] == [
        "opened", "message", "assigned", "reply", "resumed"]
    assert {e["schema"] for e in events} == {1} and all(e["ticket"]["id"] == ticket for e in events)
    first = events[0]["ticket"]
    assert (first["key"], first["queue"], first["status"], first["flow"]) == (
        "demo/web/ann", "support", "open", "support")
    assert first["reason"] == "Customer asked for a person"
    assert events[1]["message"]["text"] == "my card is blocked"
    assert (events[2]["ticket"]["status"], events[2]["ticket"]["agent"]) == ("assigned", "kim")
    assert events[3]["reply"] == {"text": "Hello, I'm Kim.", "agent": "kim"}
    assert (events[4]["ticket"]["status"], events[4]["ticket"]["resolution"]) == ("closed", "resumed")


async def test_a_failing_helpdesk_is_retried_then_dead_lettered_and_a_new_secret_signs_at_once(redis_server, helpdesk):
    """The signing secret is set through the API here (not in the config), so each change of it
    reaches the delivery supervisor: a wrong one is refused by the helpdesk (401, not retried)."""
    node = await start_node(f"{redis_server.url}?prefix=hw{next(_prefixes)}:", secrets_key=Cipher.new_key(),
                            delivery=FAST, webhooks={"demo": (f"{helpdesk.url}/in", "HELPDESK_KEY")})

    async def put_secret(value: str) -> None:
        async with node.http.put(f"{node.url}/v1/demo/secrets/HELPDESK_KEY", headers=node.auth("demo"),
                                 json={"value": value}) as answer:
            assert answer.status in (200, 201), await answer.text()

    try:
        await put_secret(KEY)
        helpdesk.script = [(500, {}), (503, {})]  # the first event is retried twice, then taken
        await handed_off(node, "bob")
        requests = await received(helpdesk, 3)
        ticket = event(requests[0])["ticket"]["id"]
        assert len({r["headers"]["Idempotency-Key"] for r in requests}) == 1
        helpdesk.script = [(500, {"error": "down"})] * 3  # every attempt at the second fails
        await node.say("bob", "is anyone there?")
        await received(helpdesk, 6)
        await put_secret("not-the-helpdesk-key")
        await agent(node, "bob", AgentAction(ticket, "assign", agent="kim"))
        await received(helpdesk, 7)
        await put_secret(KEY)
        await agent(node, "bob", AgentAction(ticket, "close", agent="kim"))
        requests = await received(helpdesk, 8)
        dead = await wait_for(lambda: _dead(node, 2))
    finally:
        await stop_node(node)
    assert [event(r)["event"] for r in requests] == ["opened"] * 3 + ["message"] * 3 + ["assigned", "closed"]
    assert [r["verified"] for r in requests] == [True] * 6 + [False, True]
    assert [(d.key, d.seq, d.attempts) for d in dead] == [(f"demo/handoff/{ticket}", 2, 3),
                                                           (f"demo/handoff/{ticket}", 3, 1)]
    assert dead[0].reason.startswith("HTTP 500") and dead[1].reason.startswith("HTTP 401")


async def _dead(node, count: int):
    dead = await node.store.dead_letters(None, 10)
    return dead if len(dead) >= count else None
