"""The web channel over real HTTP: a whole conversation, retries, order, bad input, limits.
The runtime runs in the test's process; a whole conversation, and one user's messages on a
socket and concurrent, run through a Ray runtime too (its dispatcher's lanes to a host actor)."""

from __future__ import annotations

import asyncio
import json

from parlour.messages import ConversationKey
from tests.gateway.conftest import start_node, stop_node, texts, wait_for

REGISTRATION = [  # (what the user sends, a text the last reply must contain)
    ({"text": "hi"}, "What would you like to do?"),
    ({"button": "register"}, "full name"),
    ({"text": "R2D2!"}, "Letters only"),
    ({"text": "Ada Lovelace"}, "email"),
    ({"text": "ada@example"}, "doesn't look like an email"),
    ({"text": "ada@example.org"}, "How old are you?"),
    ({"text": "36"}, "Register Ada Lovelace <ada@example.org>, 36?"),
]


async def test_a_whole_registration_through_the_web_channel(each_node, members):
    node = each_node
    for number, (sent, expected) in enumerate(REGISTRATION):
        status, body = await node.say("ada", id=f"m-{number}", **sent)
        assert status == 200, body
        assert expected in body["replies"][-1]["text"], (sent, body)
        assert body["duplicate"] is False
    status, body = await node.say("ada", button="yes", id="m-yes")
    assert status == 200
    # The members API is called after the turn commits; its answer is a later turn.
    record = await wait_for(lambda: _ended(node, "ada"))
    assert record.state.vars["member"] == {"id": 1}
    assert [r["path"] for r in members.requests] == ["/members"]
    assert json.loads(members.requests[0]["body"])["email"] == "ada@example.org"


async def _ended(node, user):
    record = await node.runtime.conversation(ConversationKey("demo", "web", user))
    return record if record is not None and record.state.status == "ended" else None


async def test_buttons_come_with_their_ids_and_titles(node):
    status, body = await node.say("bo", "hi")
    assert status == 200
    assert body["replies"][-1]["buttons"] == [
        {"id": "register", "title": "Register"}, {"id": "about", "title": "About us"}, {"id": "quit", "title": "Quit"}]


async def _press(node, user: str, button: str, prompt: str) -> tuple[int, dict]:
    async with node.http.post(f"{node.url}/v1/demo/web/messages",
                              json={"user": user, "id": f"{user}-{button}-{prompt}", "button": button,
                                    "prompt": prompt}) as response:
        return response.status, await response.json()


async def test_an_old_buttons_press_is_refused_and_the_conversation_stays_where_it_was(node):
    _, hello = await node.say("stale", "hi")
    menu = hello["replies"][-1]
    assert (menu["prompt"], "prompt" in hello["replies"][0]) == ("p1", False)
    status, body = await _press(node, "stale", "register", menu["prompt"])
    assert (status, texts(body), "prompt" in body["replies"][0]) == (200, ["What's your full name?"], False)
    status, body = await _press(node, "stale", "quit", menu["prompt"])  # the old menu's Quit
    assert (status, texts(body)) == (200, ["Letters only, please."])
    record = await node.runtime.conversation(ConversationKey("demo", "web", "stale"))
    assert (record.state.node, record.state.status, record.state.vars.get("name")) == ("ask_name", "waiting", None)
    async with node.http.ws_connect(f"{node.url}/v1/demo/web/ws?user=stale") as ws:
        await ws.send_json({"id": "s-1", "button": "quit", "prompt": "p1"})
        assert texts(await ws.receive_json(timeout=30)) == ["Letters only, please."]
        await ws.send_json({"id": "s-2", "text": "menu"})
        assert (await ws.receive_json(timeout=30))["replies"][0]["prompt"] == "p2"
        await ws.send_json({"id": "s-3", "button": "quit", "prompt": "p2"})
        assert texts(await ws.receive_json(timeout=30)) == ["Bye for now. Type hi to start again."]


async def test_a_retried_message_id_moves_the_flow_once_and_gets_the_same_replies(node):
    hello = await node.say("cy", "hi", id="c-1")
    first = await node.say("cy", button="register", id="c-2")
    again = await node.say("cy", button="register", id="c-2")
    assert first[0] == again[0] == 200
    assert again[1]["duplicate"] is True and first[1]["duplicate"] is False
    assert again[1]["replies"] == first[1]["replies"]
    status, body = await node.say("cy", "Ada Lovelace", id="c-3")
    assert "email" in body["replies"][-1]["text"]  # one step on from the name, not two
    record = await node.runtime.conversation(ConversationKey("demo", "web", "cy"))
    assert record.state.vars.get("name") == "Ada Lovelace"
    assert record.replies == sum(len(b["replies"]) for _, b in (hello, first, (status, body)))


async def test_messages_on_one_socket_run_in_the_order_sent_without_waiting(each_node):
    node = each_node
    async with node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=fast") as ws:
        for n in range(120):
            await ws.send_json({"id": f"f-{n}", "text": str(n)})
        answers = [await ws.receive_json(timeout=60) for _ in range(120)]
    assert [a["id"] for a in answers] == [f"f-{n}" for n in range(120)]
    assert [a["replies"][0]["text"] for a in answers][-1] == "120:119"
    record = await node.runtime.conversation(ConversationKey("acme", "web", "fast"))
    assert record.state.vars["log"] == [str(n) for n in range(120)]


async def test_concurrent_posts_of_one_user_each_apply_once_with_their_own_replies(each_node):
    node = each_node
    results = await asyncio.gather(*(node.say("many", str(n), id=f"p-{n}", tenant="acme") for n in range(60)))
    assert all(status == 200 for status, _ in results)
    record = await node.runtime.conversation(ConversationKey("acme", "web", "many"))
    log = record.state.vars["log"]
    assert sorted(log, key=int) == [str(n) for n in range(60)]
    for n, (_, body) in enumerate(results):  # each answer is about its own message
        count, _, text = body["replies"][0]["text"].partition(":")
        assert text == str(n) and log[int(count) - 1] == str(n)


async def test_a_timer_reply_is_pushed_to_the_users_socket(node):
    async with node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=tim") as ws:
        await ws.send_json({"id": "t-1", "text": "timer"})
        answer = await ws.receive_json(timeout=30)
        assert texts(answer) == ["waiting"]
        pushed = await ws.receive_json(timeout=30)
    # seq: de-duplicates against the mailbox
    assert pushed == {"type": "push", "replies": [{"text": "fired", "buttons": [], "seq": 2}]}


async def test_a_socket_cut_with_many_turns_unanswered_ends_cleanly_and_its_turns_stand(node):
    ws = await node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=cut")
    for n in range(200):  # far more than the socket's window of 64, and no answer read
        await ws.send_json({"id": f"c-{n}", "text": str(n)})
    ws._response.connection.transport.abort()  # the TCP connection dies: no close handshake
    assert await wait_for(lambda: _no_sockets(node), timeout_s=60), "the socket's handler never ended"
    # what was committed stands, in order and without gaps; the rest is sent again
    record = await node.runtime.conversation(ConversationKey("acme", "web", "cut"))
    done = len(record.state.vars["log"]) if record else 0
    assert record is None or record.state.vars["log"] == [str(n) for n in range(done)]
    async with node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=cut") as again:
        for n in range(done, 200):
            await again.send_json({"id": f"c-{n}", "text": str(n)})
        answers = [await again.receive_json(timeout=60) for _ in range(done, 200)]
    assert all(a["type"] == "replies" for a in answers)
    record = await node.runtime.conversation(ConversationKey("acme", "web", "cut"))
    assert record.state.vars["log"] == [str(n) for n in range(200)]


async def _no_sockets(node) -> bool:
    return not node.gateway.web.sockets


async def test_socket_errors_are_answered_in_place_and_the_socket_lives_on(node):
    async with node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=err") as ws:
        await ws.send_str("{not json")
        await ws.send_json({"id": "e-1"})
        await ws.send_bytes(b"\x00\x01")
        await ws.send_str("[" * 20_000 + "]" * 20_000)
        await ws.send_json({"id": "e-2", "text": "still here"})
        answers = [await ws.receive_json(timeout=30) for _ in range(5)]
    assert [a["type"] for a in answers] == ["error"] * 4 + ["replies"]
    assert [a["error"]["code"] for a in answers[:4]] == [
        "invalid_json", "invalid_request", "invalid_request", "invalid_json"]
    assert [a["id"] for a in answers] == [None, "e-1", None, None, "e-2"]  # an id that could be read is echoed
    assert answers[4]["replies"][0]["text"] == "1:still here"


async def _post(node, body: bytes | str, tenant: str = "demo") -> tuple[int, dict, dict]:
    async with node.http.post(f"{node.url}/v1/{tenant}/web/messages", data=body) as response:
        return response.status, await response.json(), response.headers.copy()


async def test_bad_input_is_refused_with_one_error_shape(node):
    cases = [
        (b"{\"user\": ", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1"}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "text": "a", "button": "b"}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "", "id": "1", "text": "a"}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "text": "a", "extra": 1}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "text": "a", "prompt": "p1"}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "button": "a", "prompt": "p" * 65}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "button": "a", "prompt": "p\n1"}).encode(), 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "button": "a", "prompt": 1}).encode(), 400, "invalid_request"),
        (b'{"user": "\\ud800", "id": "1", "text": "a"}', 400, "invalid_request"),
        (json.dumps({"user": "u", "id": "1", "text": "x" * 100_000}).encode(), 413, "payload_too_large"),
    ]
    for body, status, code in cases:
        got, answer, headers = await _post(node, body)
        assert (got, answer["error"]["code"]) == (status, code), (body[:40], answer)
        assert set(answer["error"]) == {"code", "message", "details"} and answer["error"]["message"]
        assert headers["X-Content-Type-Options"] == "nosniff" and "X-Request-Id" in headers
    got, answer, _ = await _post(node, json.dumps({"user": "u", "id": "1", "text": "hi"}), tenant="nobody")
    assert (got, answer["error"]["code"]) == (404, "not_found")
    # JSON can spell a lone surrogate, which no text may hold: refused, naming the field
    got, answer, _ = await _post(node, b'{"user": "s", "id": "1", "text": "\\ud800 hi"}', tenant="acme")
    assert got == 400 and answer["error"]["details"][0]["field"] == "text"


async def test_the_request_id_is_echoed_and_follows_the_message(node, caplog):
    caplog.set_level("INFO", logger="aiohttp.access")
    async with node.http.post(f"{node.url}/v1/demo/web/messages", json={"user": "r", "id": "1", "text": "hi"},
                              headers={"X-Request-Id": "req-42"}) as response:
        assert response.headers["X-Request-Id"] == "req-42"
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
    assert records and records[0].status == 200 and records[0].path == "/v1/demo/web/messages"


async def test_a_tenant_over_its_rate_gets_429_with_retry_after(redis_server, members):
    node = await start_node(f"{redis_server.url}?prefix=rate:", rate_limit="3/minute")
    try:
        statuses = [await _post(node, json.dumps({"user": "q", "id": str(n), "text": "x"}), tenant="acme")
                    for n in range(5)]
    finally:
        await stop_node(node)
    assert [s for s, _, _ in statuses] == [200, 200, 200, 429, 429]
    _, answer, headers = statuses[3]
    assert answer["error"]["code"] == "rate_limited" and 0 < int(headers["Retry-After"]) <= 60


async def test_a_full_gateway_answers_503_and_loses_nothing_it_accepted(redis_server, members):
    node = await start_node(f"{redis_server.url}?prefix=full:", limits={"max_pending": 2})
    try:
        sent = [(f"u{n % 10}", f"x-{n}") for n in range(200)]
        results = await asyncio.gather(*(node.say(user, user + id, id=id, tenant="acme") for user, id in sent))
        refused = [(user, id) for (user, id), (status, body) in zip(sent, results, strict=True) if status == 503]
        assert refused and all(status in (200, 503) for status, _ in results)
        assert all(body["error"]["code"] == "overloaded" for status, body in results if status == 503)
        for user, id in refused:  # the channel's retry, one at a time
            assert (await node.say(user, user + id, id=id, tenant="acme"))[0] == 200
        for user in {u for u, _ in sent}:
            record = await node.runtime.conversation(ConversationKey("acme", "web", user))
            assert sorted(record.state.vars["log"]) == sorted(user + id for u, id in sent if u == user)
    finally:
        await stop_node(node)
