"""The web mailbox over real HTTP and real Redis: an HTTP-only client gets what a flow
says after an API call or a timer by reading its mailbox; reads wait, acknowledge and refuse bad
cursors; an answer may wait for the call's replies when the tenant allows it."""

from __future__ import annotations

import asyncio

from tests.gateway.conftest import wait_for
from tests.gateway.test_web import REGISTRATION

AFTER_THE_CALL = ["You're in, member #1.", "Bye for now. Type hi to start again."]


async def read(node, user: str, tenant: str = "demo", **query) -> tuple[int, dict]:
    async with node.http.get(f"{node.url}/v1/{tenant}/web/messages", params={"user": user, **query}) as response:
        return response.status, await response.json()


async def ack(node, user: str, upto: str, tenant: str = "demo") -> tuple[int, dict]:
    async with node.http.delete(f"{node.url}/v1/{tenant}/web/messages",
                                params={"user": user, "upto": upto}) as response:
        return response.status, await response.json()


async def read_all(node, user: str, count: int, tenant: str = "demo", after: str | None = None) -> tuple[list, str]:
    """Waiting reads after ``after`` until ``count`` replies came: the replies and the last ``next``."""
    got: list[dict] = []
    while len(got) < count:
        status, body = await read(node, user, tenant, wait_s="10", **({"after": after} if after else {}))
        assert status == 200, body
        assert body["replies"], f"no reply within the wait; had {got}"
        got += body["replies"]
        after = body["next"]
    return got, after


def _pushed_to_no_socket(node, count: int):
    async def check() -> bool:
        return node.gateway.metrics.pushed.labels("no_socket")._value.get() >= count
    return check


async def register(node, user: str) -> dict:
    """A registration up to the confirmation; the answer to its "Yes", which starts the API call."""
    for number, (sent, expected) in enumerate(REGISTRATION):
        status, body = await node.say(user, id=f"{user}-{number}", **sent)
        assert status == 200 and expected in body["replies"][-1]["text"], body
    status, body = await node.say(user, button="yes", id=f"{user}-yes")
    assert status == 200, body
    return body


async def test_an_http_only_client_gets_every_reply_by_reading_its_mailbox(node, members):
    assert (await register(node, "ada"))["replies"] == []  # the call runs after the turn
    got, cursor = await read_all(node, "ada", 2)
    # only what no answer carried: the API result's replies, in order, numbered after the answers'
    assert [r["text"] for r in got] == AFTER_THE_CALL
    assert got[0]["seq"] + 1 == got[1]["seq"] and all(r["cursor"] for r in got)
    assert cursor == got[-1]["cursor"]
    # no socket: the mailbox has them. The push loop counts them on its own time (it tails the
    # outbox every 0.1 s); a read may find the mailbox first.
    assert await wait_for(_pushed_to_no_socket(node, 2), timeout_s=10)

    # a timer's reply, on another tenant, reaches the same kind of client
    status, body = await node.say("tim", "timer", tenant="acme")
    assert [r["text"] for r in body["replies"]] == ["waiting"]
    timed, timer_cursor = await read_all(node, "tim", 1, tenant="acme")
    assert [r["text"] for r in timed] == ["fired"]

    # reading again from the start gives the same; acknowledged, they are gone
    assert [r["cursor"] for r in (await read(node, "ada"))[1]["replies"]] == [r["cursor"] for r in got]
    assert await ack(node, "ada", got[0]["cursor"]) == (200, {"acknowledged": 1})
    status, body = await read(node, "ada")
    assert [r["text"] for r in body["replies"]] == AFTER_THE_CALL[1:]
    assert await ack(node, "ada", cursor) == (200, {"acknowledged": 1})
    assert await read(node, "ada") == (200, {"replies": [], "next": None, "more": False})
    assert await read(node, "ada", after=cursor) == (200, {"replies": [], "next": cursor, "more": False})
    # another user's mailbox, and another tenant's, are their own
    assert (await read(node, "tim", tenant="acme"))[1]["replies"] == timed
    assert (await read(node, "tim"))[1]["replies"] == []


async def test_a_waiting_read_returns_when_the_reply_is_committed_and_waits_are_bounded(node, members):
    node.gateway.mailbox.poll_s = 60.0  # past the wait: only the push of this node can end it early
    members.gate = asyncio.Event()  # the members API holds its answer until the test opens it
    await register(node, "bea")
    waiting = asyncio.create_task(read(node, "bea", wait_s="30"))
    while node.gateway.mailbox.held("demo", "bea") == 0:
        assert not waiting.done(), waiting.result()
        await asyncio.sleep(0.01)
    node.gateway.settings.limits.ws_per_user = 1
    status, body = await read(node, "bea", wait_s="5")  # a second held read of one user: over its bound
    assert status == 429 and body["error"]["code"] == "too_many_waits", body
    assert (await read(node, "bea"))[1]["replies"] == []  # a read that does not wait is always taken
    assert not waiting.done()

    members.gate.set()
    status, body = await asyncio.wait_for(waiting, 20)  # well before its 30 s
    assert status == 200 and body["replies"][0]["text"] == AFTER_THE_CALL[0]


async def test_bad_reads_and_acknowledgements_are_refused_in_the_json_error_shape(node):
    cases = [  # (method, query, the field named)
        ("get", {"user": "u", "after": "abc"}, "after"),
        ("get", {"user": "u", "after": "-1"}, "after"),
        ("get", {"user": "u", "after": "1" * 21}, "after"),
        ("get", {"user": "u", "after": "9" * 20}, "after"),  # beyond 2**63
        ("get", {"user": "u", "after": "１２"}, "after"),  # digits, but not ASCII ones
        ("get", {"user": "u", "wait_s": "31"}, "wait_s"),
        ("get", {"user": "u", "wait_s": "nan"}, "wait_s"),
        ("get", {"user": "u", "limit": "0"}, "limit"),
        ("get", {"after": "1"}, "user"),
        ("get", {"user": "a\x00b"}, "user"),
        ("get", {"user": "u", "cursor": "1"}, "cursor"),
        ("delete", {"user": "u"}, "upto"),
        ("delete", {"user": "u", "upto": "1; DROP"}, "upto"),
    ]
    for method, query, field in cases:
        async with node.http.request(method, f"{node.url}/v1/demo/web/messages", params=query) as response:
            body = await response.json()
        assert response.status == 400, (query, body)
        assert body["error"]["code"] == "invalid_request" and body["error"]["details"][0]["field"] == field, body
    async with node.http.get(f"{node.url}/v1/nobody/web/messages", params={"user": "u"}) as response:
        assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"


async def test_an_answer_waits_for_the_calls_replies_when_the_tenant_allows_it(node, members):
    node.gateway.tenants["demo"][0].web_answer_wait_s = 10.0
    body = await register(node, "cy")
    assert [r["text"] for r in body["replies"]] == AFTER_THE_CALL
    assert body["next"] == body["replies"][-1]["cursor"] and body["duplicate"] is False
    # a client that also reads its mailbox skips them with the answer's cursor
    assert (await read(node, "cy", after=body["next"]))[1]["replies"] == []
    assert [r["seq"] for r in (await read(node, "cy"))[1]["replies"]] == [r["seq"] for r in body["replies"]]
    # a turn that starts no call is answered at once, without a cursor
    status, body = await node.say("cy", "hi", id="cy-again")
    assert status == 200 and "next" not in body
