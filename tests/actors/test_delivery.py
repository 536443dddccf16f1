"""The delivery supervisor's policies on their own: backoff with jitter, and the breaker."""

from __future__ import annotations

import asyncio
import random
import time

import msgpack
import pytest

from parlour.actors.delivery import Breaker, Delivery, RetryPolicy
from parlour.channels.telegram import TelegramBot
from parlour.codec import pack_outbound
from parlour.egress import Egress
from parlour.flow.events import Reply
from parlour.messages import ConversationKey
from parlour.store import Commit
from parlour.store.memory import MemoryStore
from tests.channels.fake_api import FakeAPI
from tests.channels.fake_telegram import for_token
from tests.servers import LOOPBACK, Recorder, loopback_egress, members_app, serve


def test_backoff_is_full_jitter_under_an_exponential_bound_and_never_under_what_was_asked():
    policy, rng = RetryPolicy(base_s=0.5, max_backoff_s=8.0), random.Random(7)
    for attempt in range(1, 10):
        waits = [policy.backoff(attempt, None, rng) for _ in range(200)]
        bound = min(8.0, 0.5 * 2 ** attempt)
        assert all(0 <= w <= bound for w in waits) and max(waits) > 0.8 * bound  # spread over the whole range
    assert all(policy.backoff(1, 30.0, rng) == 30.0 for _ in range(20))  # Retry-After: 30 wins over a 1 s bound
    assert policy.backoff(9, 0.0, rng) <= 8.0


async def test_the_breaker_opens_after_failures_in_a_row_and_one_probe_closes_it():
    breaker = Breaker(failures_to_open=3, open_s=0.2, clock=time.monotonic)
    for ok in (False, False, True, False, False):  # a success in between starts the count again
        await breaker.admit()
        await breaker.record(ok)
    assert breaker.state == "closed"
    await breaker.record(False)
    assert breaker.state == "open"
    opened = time.monotonic()
    await asyncio.wait_for(breaker.admit(), 2)  # waits out open_s, then goes as the probe
    assert time.monotonic() - opened >= 0.19 and breaker.state == "half_open"
    waiting = asyncio.create_task(breaker.admit())  # others wait for the probe's answer
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await breaker.record(True)
    await asyncio.wait_for(waiting, 1)
    assert breaker.state == "closed"


async def test_a_failed_probe_opens_the_breaker_again():
    breaker = Breaker(failures_to_open=1, open_s=0.1, clock=time.monotonic)
    await breaker.record(False)
    await asyncio.wait_for(breaker.admit(), 1)
    assert breaker.state == "half_open"
    await breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(breaker.admit(), 0.05)  # open again: a send waits


@pytest.mark.parametrize(("allow", "sent"), [((), False), (LOOPBACK, True)], ids=["denied", "allowed"])
async def test_a_send_the_bots_tenant_may_not_make_is_buried_at_once_and_never_reaches_the_address(allow, sent):
    """A bot's ``api_base`` on loopback, for a tenant whose egress policy does not allow it
    (issue 12, finding 3); with the allow, the same reply is sent."""
    recorder = Recorder()
    async with serve(members_app(recorder)) as api:
        store = MemoryStore()
        key = ConversationKey("beta", "telegram:support", "42").id
        await store.commit(Commit(outbox=[(key, 1, pack_outbound(key, 1, "m1", Reply(text="hi"), 0.0))]))

        async def bots(tenant, channel, bot, *, fresh=False):
            return TelegramBot(api_base=api, token="1:x", secret_token="s")
        delivery = Delivery(store, bots, policy=RetryPolicy(max_attempts=5, base_s=3600.0), poll_s=0.01,
                            egress=Egress.from_allows({"beta": allow}))
        stop = asyncio.Event()
        running = asyncio.create_task(delivery.run(stop))
        deadline = time.monotonic() + 10  # a retry would wait an hour: only a first answer settles it
        while await store.read_outbox(None, 10):
            assert time.monotonic() < deadline, "the reply was neither sent nor buried"
            await asyncio.sleep(0.01)
        stop.set()
        await running
    dead = await store.dead_letters(None, 10)
    if sent:
        assert len(recorder.requests) == 1 and dead == []
    else:
        assert recorder.requests == [] and [d.attempts for d in dead] == [1]
        assert dead[0].reason == ("egress denied: 127.0.0.1 is a loopback address "
                                  "(to allow it: tenants.beta.egress.allow)")


class Registry:
    """A bot lookup whose bot is known to a fresh read only from its ``known_from``-th one on
    (None: never), counting the reads of each kind."""

    def __init__(self, bot: TelegramBot, known_from: int | None):
        self.bot, self.known_from = bot, known_from
        self.cached = self.fresh = 0

    async def __call__(self, tenant, channel, name, *, fresh=False):
        if not fresh:
            self.cached += 1
            return None  # the cached copy predates the bot
        self.fresh += 1
        return self.bot if self.known_from is not None and self.fresh >= self.known_from else None


async def deliver_one(registry_for, policy: RetryPolicy) -> tuple[FakeAPI, Registry, list]:
    """One reply for ``acme/telegram:late/42`` through a supervisor whose bots are
    ``registry_for(api_base)``, until it is sent or buried; (the fake API, the registry, the dead letters)."""
    api = FakeAPI(for_token("1:x"))
    async with serve(api.app()) as base:
        store = MemoryStore()
        key = ConversationKey("acme", "telegram:late", "42").id
        await store.commit(Commit(outbox=[(key, 1, pack_outbound(key, 1, "m1", Reply(text="hi"), 0.0))]))
        registry = registry_for(base)
        delivery = Delivery(store, registry, policy=policy, poll_s=0.01, egress=loopback_egress("acme"))
        stop = asyncio.Event()
        running = asyncio.create_task(delivery.run(stop))
        async with asyncio.timeout(10):
            while await store.read_outbox(None, 10):
                await asyncio.sleep(0.01)
        stop.set()
        await running
    return api, registry, await store.dead_letters(None, 10)


QUICK = RetryPolicy(max_attempts=4, base_s=0.001, max_backoff_s=0.01)


async def test_a_reply_for_a_bot_not_in_the_cached_copy_reads_the_registry_again_and_is_sent():
    """A bot added through the API a moment ago: the supervisor's copy of the bots does not have
    it yet (issue 13); the reply is neither buried nor lost."""
    api, registry, dead = await deliver_one(
        lambda base: Registry(TelegramBot(api_base=base, token="1:x", secret_token="s"), known_from=1), QUICK)
    assert (registry.cached, registry.fresh) == (1, 1)  # read again at once: no wait
    assert dead == [] and [r.json["text"] for r in api.delivered] == ["hi"]


async def test_a_bot_still_missing_is_waited_for_with_attempts_spent():
    api, registry, dead = await deliver_one(
        lambda base: Registry(TelegramBot(api_base=base, token="1:x", secret_token="s"), known_from=3), QUICK)
    assert registry.fresh == 3 and dead == [] and len(api.delivered) == 1


async def test_a_bot_that_never_comes_is_buried_after_the_last_attempt_not_at_once():
    api, registry, dead = await deliver_one(
        lambda base: Registry(TelegramBot(api_base=base, token="1:x", secret_token="s"), known_from=None), QUICK)
    assert registry.fresh == QUICK.max_attempts and api.requests == []
    [letter] = dead
    assert letter.attempts == QUICK.max_attempts
    assert letter.reason == "no telegram bot 'late' for tenant 'acme'"


async def test_a_redirect_is_not_followed_so_a_signed_call_goes_nowhere_it_was_not_sent():
    """A hand-off webhook answered 307 to another path: buried after one attempt, with the
    target never called (a redirect would carry the signature, or a bot's token, elsewhere)."""
    from aiohttp import web

    from parlour.actors.tickets import hook_key
    from parlour.channels.handoff import HookSettings

    calls = []

    async def handle(request: web.Request) -> web.Response:
        calls.append(request.path)
        raise web.HTTPTemporaryRedirect("/elsewhere")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve(app) as url:
        store = MemoryStore()
        body = msgpack.packb({"schema": 1, "event": "opened", "ticket": {"id": "t1"}, "at": 0.0})
        await store.commit(Commit(outbox=[(hook_key("beta", "t1"), 1, body)]))

        async def hooks(tenant, channel, bot):
            return HookSettings.of(f"{url}/in", "k3y") if (tenant, channel) == ("beta", "handoff") else None
        delivery = Delivery(store, hooks, policy=RetryPolicy(max_attempts=5, base_s=3600.0), poll_s=0.01,
                            egress=Egress.from_allows({"beta": LOOPBACK}))
        stop = asyncio.Event()
        running = asyncio.create_task(delivery.run(stop))
        deadline = time.monotonic() + 10
        while await store.read_outbox(None, 10):
            assert time.monotonic() < deadline, "the event was neither sent nor buried"
            await asyncio.sleep(0.01)
        stop.set()
        await running
    [dead] = await store.dead_letters(None, 10)
    assert calls == ["/in"] and (dead.attempts, dead.reason[:8]) == (1, "HTTP 307")
