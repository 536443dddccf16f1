"""The delivery supervisor, end to end: a signed webhook runs a turn and the reply reaches a
fake channel API that checks it against the channel's spec; retries, the dead-letter queue,
and the supervisor killed mid-send. Real Redis, real HTTP on loopback; the runtime in the test's
process, except where the supervisor is killed: there it is Ray's actor.

Telegram stands in for every channel here (each channel's own round trip is in
``test_channels.py``): the supervisor does not depend on the channel.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from parlour.actors.delivery import RetryPolicy
from parlour.channels.registry import Cipher
from parlour.codec import pack_outbound
from parlour.flow import Reply
from parlour.store import Commit
from tests.channels.fake_api import FakeAPI
from tests.channels.fake_telegram import for_token
from tests.gateway.conftest import start_node, stop_node
from tests.servers import serve

TOKEN, SECRET = "123456:ABC-def_ghi", "s3cret-token"
FAST = RetryPolicy(max_attempts=3, base_s=0.02, max_backoff_s=0.1, timeout_s=5, breaker_failures=50)
_prefixes = itertools.count()
_updates = itertools.count(1000)


@pytest.fixture
async def fake():
    api = FakeAPI(for_token(TOKEN))
    async with serve(api.app()) as url:
        api.url = url  # type: ignore[attr-defined]
        yield api


async def start_courier(redis_server, fake: FakeAPI, *, on_ray: bool = False):
    """A node with a bot registry, the delivery supervisor, and the bot ``acme/telegram/support``
    pointed at the fake API (acme's default flow, ``log``, answers ``<n>:<text>``)."""
    node = await start_node(f"{redis_server.url}?prefix=dl{next(_prefixes)}:", secrets_key=Cipher.new_key(),
                            delivery=FAST, on_ray=on_ray)
    async with node.http.put(f"{node.url}/v1/acme/bots/telegram/support", headers=node.auth("acme"), json={
            "api_base": fake.url, "token": TOKEN, "secret_token": SECRET}) as answer:
        assert answer.status == 201, await answer.text()
    return node


@pytest.fixture
async def courier(redis_server, fake):
    node = await start_courier(redis_server, fake)
    yield node
    await stop_node(node)


@pytest.fixture
async def ray_courier(ray_for_tests, redis_server, fake):
    """The courier with the delivery supervisor in its Ray actor, which a test may kill."""
    node = await start_courier(redis_server, fake, on_ray=True)
    yield node
    await stop_node(node)


def update(chat: int, text: str, update_id: int | None = None) -> dict:
    return {"update_id": update_id or next(_updates), "message": {
        "message_id": 7, "date": 1_700_000_000, "text": text,
        "chat": {"id": chat, "type": "private", "first_name": "Ada"},
        "from": {"id": chat, "is_bot": False, "first_name": "Ada"}}}


async def post(node, body: dict, secret: str = SECRET, bot: str = "support") -> int:
    async with node.http.post(f"{node.url}/v1/acme/channels/telegram/{bot}", data=json.dumps(body),
                              headers={"X-Telegram-Bot-Api-Secret-Token": secret,
                                       "Content-Type": "application/json"}) as answer:
        await answer.read()
        return answer.status


async def scrape(node) -> dict[tuple, float]:
    """The delivery supervisor's figures in ``/metrics``: (name, label values but its host) -> value."""
    async with node.http.get(f"{node.url}/metrics", headers=node.auth()) as answer:
        text = await answer.text()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("host", "").endswith("-delivery"):
                found[(sample.name, *(v for k, v in sample.labels.items() if k != "host"))] = sample.value
    return found


async def cli(node, *args: str) -> str:
    """``parlour dlq ...`` against the node, with tenant acme's token; its output."""
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parlour.cli", "dlq", *args, "--url", node.url, "--token", node.tokens["acme"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    return out.decode()


async def until(condition, timeout_s: float = 30.0, what: str = "the condition") -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def sent_texts(fake: FakeAPI) -> list[str]:
    return [request.json["text"] for request in fake.delivered]


async def outbox_drained(node) -> None:
    """Every sent reply has left the outbox (else a restart would send it again)."""
    async with asyncio.timeout(10):
        while [e for e in await node.store.read_outbox(None, 100) if "/telegram:" in e.key]:
            await asyncio.sleep(0.05)


async def test_a_webhook_runs_a_turn_and_its_reply_reaches_the_channel_once(courier, fake):
    assert await post(courier, update(42, "hello", update_id=1)) == 200
    assert await post(courier, update(42, "hello", update_id=1)) == 200  # Telegram's retry: a duplicate
    await until(lambda: len(fake.delivered) >= 1)
    await asyncio.sleep(0.5)  # a second reply, if one were coming, would be on its way by now
    assert sent_texts(fake) == ["1:hello"] and not fake.rejected
    assert fake.delivered[0].json["chat_id"] == 42 and fake.delivered[0].headers["Idempotency-Key"].endswith("#1.0")
    await outbox_drained(courier)


async def test_a_conversations_replies_arrive_in_order(courier, fake):
    for n in range(15):
        assert await post(courier, update(7, f"m{n}")) == 200
    await until(lambda: len(fake.delivered) >= 15)
    assert sent_texts(fake) == [f"{n + 1}:m{n}" for n in range(15)]


async def test_a_bot_added_through_the_api_gets_its_first_replies_at_once(courier, fake):
    """Issue 13: the supervisor keeps a 2 s copy of the bots, and the reply of a bot added within
    that time was buried with 0 attempts ("no telegram bot 'late' ..."). The first reply loads
    that copy; the bot is added right after, and answers right away."""
    assert await post(courier, update(1, "first")) == 200
    await until(lambda: len(fake.delivered) >= 1)  # the supervisor has just read the bots
    async with courier.http.put(f"{courier.url}/v1/acme/bots/telegram/late", headers=courier.auth("acme"), json={
            "api_base": fake.url, "token": TOKEN, "secret_token": SECRET}) as answer:
        assert answer.status == 201, await answer.text()
    for n in range(3):
        assert await post(courier, update(2, f"early{n}"), bot="late") == 200
    async with asyncio.timeout(30):
        while len(fake.delivered) < 4 and not await courier.store.dead_letters():
            await asyncio.sleep(0.05)
    assert await courier.store.dead_letters() == []
    await outbox_drained(courier)
    assert sent_texts(fake) == ["1:first", "1:early0", "2:early1", "3:early2"] and not fake.rejected


async def test_a_429_then_200_is_one_send(courier, fake):
    fake.script = [(429, {"Retry-After": "0"}, {"ok": False, "error_code": 429, "parameters": {"retry_after": 0}})]
    assert await post(courier, update(5, "hi")) == 200
    await until(lambda: len(fake.delivered) >= 1)
    assert len(fake.requests) == 2 and sent_texts(fake) == ["1:hi"]


async def test_500_until_the_last_attempt_goes_to_the_dead_letters_and_replay_delivers_it(courier, fake):
    fake.script = [(500, {}, {"ok": False, "description": "Internal Server Error"})] * FAST.max_attempts
    assert await post(courier, update(9, "lost?")) == 200
    dead = []

    async def listed() -> list:
        async with courier.http.get(f"{courier.url}/v1/acme/dead-letters", headers=courier.auth("acme")) as answer:
            return (await answer.json())["dead_letters"]

    async with asyncio.timeout(30):
        while not dead:
            dead = await listed()
            await asyncio.sleep(0.1)
    [letter] = dead
    assert letter["attempts"] == FAST.max_attempts and letter["reply"]["text"] == "1:lost?"
    assert letter["channel"] == "telegram:support" and letter["user"] == "9" and not fake.delivered
    metrics = await scrape(courier)
    assert metrics["parlour_delivery_sends_total", "telegram", "retry"] == FAST.max_attempts
    assert metrics["parlour_delivery_retries_total", "telegram"] == FAST.max_attempts - 1
    assert metrics["parlour_delivery_dead_letters_total", "telegram"] == 1 and metrics["parlour_dead_letters",] == 1
    assert metrics["parlour_delivery_breaker_state", "acme/telegram:support"] == 0  # 3 failures: under its 50
    async with courier.http.get(f"{courier.url}/v1/demo/dead-letters", headers=courier.auth("demo")) as answer:
        assert (await answer.json())["dead_letters"] == []  # another tenant's letters are not listed
    listed_by_cli = await cli(courier, "list", "acme")
    assert letter["id"] in listed_by_cli and "1 dead letter(s)" in listed_by_cli
    assert json.loads(await cli(courier, "show", "acme", letter["id"]))["reason"] == letter["reason"]
    assert "1 dead letter(s) replayed" in await cli(courier, "replay", "acme", letter["id"])
    await until(lambda: len(fake.delivered) >= 1)
    assert sent_texts(fake) == ["1:lost?"] and await listed() == []


async def test_a_bad_request_is_not_retried(courier, fake):
    fake.script = [(400, {}, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})]
    assert await post(courier, update(11, "x")) == 200
    async with asyncio.timeout(30):
        while True:
            letters = (await courier.store.dead_letters())
            if letters:
                break
            await asyncio.sleep(0.1)
    assert len(fake.requests) == 1 and letters[0].attempts == 1 and "chat not found" in letters[0].reason
    async with courier.http.post(f"{courier.url}/v1/acme/dead-letters/drop", headers=courier.auth("acme"),
                                 json={"all": True}) as answer:
        assert await answer.json() == {"dropped": 1}
    assert await courier.store.dead_letters() == []


async def test_killing_the_delivery_actor_mid_send_loses_nothing_and_sends_nothing_twice(ray_courier, fake):
    courier = ray_courier
    fake.gate = asyncio.Event()  # the API holds every answer: sends are in flight when the kill lands
    users = [100 + n for n in range(6)]
    for user in users:
        assert await post(courier, update(user, "before")) == 200
    await until(lambda: len(fake.requests) >= len(users), what="the sends to be in flight")
    victim = (await courier.runtime.pids())["delivery"]
    os.kill(victim, signal.SIGKILL)
    for user in users:
        assert await post(courier, update(user, "after")) == 200  # written to the outbox while it is down
    fake.gate.set()
    await until(lambda: len(fake.delivered) >= 2 * len(users), timeout_s=60)
    await asyncio.sleep(1.0)  # late resends, if any, land now
    assert (await courier.runtime.pids())["delivery"] != victim
    by_user = {user: [r.json["text"] for r in fake.delivered if r.json["chat_id"] == user] for user in users}
    assert all(texts == ["1:before", "2:after"] for texts in by_user.values()), by_user
    keys = [r.headers["Idempotency-Key"] for r in fake.delivered]
    assert len(keys) == len(set(keys)) == 2 * len(users)
    assert len(fake.requests) > len(fake.delivered)  # the sends cut by the kill were sent again, and dropped
    await outbox_drained(courier)


async def test_a_webhook_with_a_bad_secret_is_refused_and_counted(courier, fake):
    assert await post(courier, update(1, "hi"), secret="wrong") == 401
    async with courier.http.post(f"{courier.url}/v1/acme/channels/telegram/support", data=b"{}") as answer:
        body = await answer.json()
        assert answer.status == 401 and body["error"]["code"] == "bad_signature"
        assert body["error"]["details"] == {"reason": "missing"}
    async with courier.http.get(f"{courier.url}/metrics", headers=courier.auth()) as answer:
        metrics = await answer.text()
    assert 'parlour_webhooks_refused_total{channel="telegram",reason="mismatch"} 1.0' in metrics
    assert 'parlour_webhooks_refused_total{channel="telegram",reason="missing"} 1.0' in metrics
    await asyncio.sleep(0.3)
    assert fake.requests == []  # nothing refused ran a turn


async def test_a_reply_in_the_outbox_twice_is_sent_once(courier, fake):
    # What a Redis client's retry of a commit that had run leaves behind: the same reply twice.
    key = "acme/telegram:support/77"
    data = pack_outbound(key, 1, "m-1", Reply(text="once"), time.time())
    await courier.store.commit(Commit(fences={}, outbox=[(key, 1, data), (key, 1, data)]))
    await until(lambda: len(fake.delivered) >= 1)
    await outbox_drained(courier)
    await asyncio.sleep(0.3)
    assert sent_texts(fake) == ["once"] and len(fake.requests) == 1
