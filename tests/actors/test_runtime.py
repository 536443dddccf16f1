"""The runtime on a real local Ray, with real SQLite and a real redis-server: the delivery
guarantees of DESIGN.md, each proven by breaking something and counting what was lost."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import ray

from parlour.actors.dedicated import DedicatedCaps
from parlour.actors.host import HostConfig
from parlour.codec import unpack_outbound
from parlour.errors import Unavailable
from parlour.flow import UserMessage
from parlour.messages import APPLIED, DUPLICATE, FAILED, ConversationKey, Inbound
from parlour.runtime import Runtime
from parlour.store import open_store
from tests.ray_local import local_ray
from tests.redis_server import RedisServer
from tests.servers import LOOPBACK, Recorder, members_app, serve

FLOWS = Path(__file__).parent / "flows"
BUNDLED = Path(__file__).parents[2] / "flows"
_names = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def ray_for_tests():
    with local_ray():
        yield


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/parlour.db"
    return f"{request.getfixturevalue('redis_server').url}?prefix=rt{next(_names)}:"


@asynccontextmanager
async def running(store_url: str, hosts: int = 2, env=None, **config):
    runtime = await Runtime.start(store=store_url, hosts=hosts, name=f"test{os.getpid()}-{next(_names)}",
                                  env=env, config=HostConfig(timer_poll_s=0.1, **config),
                                  egress={"t": LOOPBACK, "demo": LOOPBACK})
    try:
        await runtime.deploy("t", [FLOWS])
        yield runtime
    finally:
        await runtime.stop()


def key(user: str) -> ConversationKey:
    return ConversationKey("t", "sms", user)


def message(user: str, n: int, text: str | None = None) -> Inbound:
    return Inbound(key(user), f"{user}-m{n}", UserMessage(text or f"m{n}"))


async def transcript(runtime: Runtime, user: str) -> list[str]:
    record = await runtime.conversation(key(user))
    return record.state.vars.get("log", []) if record else []


async def outbox(store_url: str) -> dict[str, list[str]]:
    """Every reply in the outbox, by conversation, in commit order."""
    store = open_store(store_url)
    await store.open()
    try:
        by_key: dict[str, list[str]] = {}
        for entry in await store.read_outbox(None, 1_000_000):
            data = unpack_outbound(entry.data)
            by_key.setdefault(data["key"], []).append(data["reply"].text)
        return by_key
    finally:
        await store.aclose()


async def until_ready(runtime: Runtime, timeout_s: float = 60.0) -> None:
    """Wait for Ray to have restarted a killed host and for it to have claimed its partitions."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await runtime.ready(timeout_s=5)
            return
        except (Unavailable, TimeoutError):
            assert time.monotonic() < deadline, "the hosts did not come back"
            await asyncio.sleep(0.2)


class Channel:
    """Sends a conversation's messages one at a time, as Telegram does, and sends a message
    again until it is acknowledged, as every channel does. Counts what it saw."""

    def __init__(self, runtime: Runtime, deadline_s: float = 120.0, replay_rate: float = 0.1):
        self.runtime = runtime
        self.replay_rate = replay_rate
        self.replays = 0
        self.deadline = time.monotonic() + deadline_s
        self.acked = 0
        self.failures = 0
        self.duplicates = 0

    async def converse(self, user: str, count: int) -> None:
        for n in range(count):
            while True:
                outcome = await self.runtime.send(message(user, n))
                if outcome.ok:
                    self.acked += 1
                    self.duplicates += outcome.status == DUPLICATE
                    await self.maybe_replay(user, n)
                    break
                self.failures += 1
                assert outcome.retryable, outcome
                assert time.monotonic() < self.deadline, f"{user} m{n} never got through: {outcome.error}"
                await asyncio.sleep(random.uniform(0.05, 0.2))


    async def until_acked(self, count: int, load: asyncio.Future) -> None:
        """Wait for ``count`` acknowledgements; if the load fails or ends first, say so at once."""
        while self.acked < count:
            if load.done():
                load.result()
                raise AssertionError(f"the load ended after {self.acked} acknowledgements, before {count}")
            await asyncio.sleep(0.01)

    async def maybe_replay(self, user: str, n: int) -> None:
        """Deliver an acknowledged message once more, as WhatsApp may: it must not apply."""
        if random.random() < self.replay_rate:
            outcome = await self.runtime.send(message(user, n))
            assert outcome.status in (DUPLICATE, "failed"), outcome
            self.replays += outcome.status == DUPLICATE


# ---------------------------------------------------------------- 1. order


async def test_each_conversations_transcript_is_in_send_order_under_concurrency(tmp_path):
    url = f"sqlite:///{tmp_path}/parlour.db"
    async with running(url) as runtime:
        users = [f"u{i}" for i in range(200)]
        sends = []
        for n in range(20):  # all sent without waiting, in rounds that leave as separate batches
            sends += [asyncio.ensure_future(runtime.send(message(u, n))) for u in users]
            await asyncio.sleep(0.001 * random.random())
        outcomes = await asyncio.gather(*sends)
        assert {o.status for o in outcomes} == {APPLIED}
        for user in users:
            assert await transcript(runtime, user) == [f"m{n}" for n in range(20)], user
        replies = await outbox(url)
        assert all(replies[key(u).id] == [f"{n + 1}:m{n}" for n in range(20)] for u in users)


# ---------------------------------------------------------------- 2. no double application


async def test_a_replayed_message_never_advances_a_flow_twice_across_passivation_and_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/parlour.db"
    async with running(url, hosts=1, max_resident=3) as runtime:
        first = await runtime.send(message("a", 0))
        await runtime.send(message("a", 1))
        for i in range(5):  # pushes "a" out of its host (LRU)
            await runtime.send(message(f"other{i}", 0))
        assert (await runtime.stats())[0]["passivated_lru"] >= 1
        again = await runtime.send(message("a", 0))
        assert again.status == DUPLICATE and again.replies == first.replies
        os.kill((await runtime.pids())[runtime.settings.names.host(0)], signal.SIGKILL)
        await until_ready(runtime)
        assert (await runtime.send(message("a", 1))).status == DUPLICATE
        assert (await runtime.send(message("a", 2))).status == APPLIED
        assert await transcript(runtime, "a") == ["m0", "m1", "m2"]


# ---------------------------------------------------------------- 3. a host killed under load


async def test_killing_a_host_under_load_loses_nothing_and_applies_nothing_twice(store_url):
    async with running(store_url) as runtime:
        channel = Channel(runtime)
        users = [f"u{i}" for i in range(1000)]
        load = asyncio.gather(*(channel.converse(u, 10) for u in users))
        await channel.until_acked(2500, load)
        victim = (await runtime.pids())[runtime.settings.names.host(0)]
        os.kill(victim, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(load), 90)
        except TimeoutError:
            d = runtime.dispatcher
            lanes = {host: (len(lane.waiting), dict(list(lane.busy.items())[:5]), lane.senders, lane.scheduled,
                            lane.closed) for host, lane in d._lanes.items()}
            print("STUCK", channel.acked, channel.failures, d.table, len(d._unrouted), d._routing, lanes)
            raise
        assert channel.acked == 10_000
        assert channel.failures > 0, "the kill landed after the load: nothing was tested"
        assert channel.replays > 500
        assert (await runtime.pids())[runtime.settings.names.host(0)] != victim
        expected = [f"m{n}" for n in range(10)]
        wrong = [u for u in users if await transcript(runtime, u) != expected]
        assert wrong == [], f"{len(wrong)} conversations lost, repeated or reordered messages"
        replies = await outbox(store_url)
        assert all(replies[key(u).id] == [f"{n + 1}:m{n}" for n in range(10)] for u in users)


# ---------------------------------------------------------------- 4. a timer due while its host is dead


async def test_a_timer_due_while_its_host_is_dead_fires_once_when_it_is_back(tmp_path):
    url = f"sqlite:///{tmp_path}/parlour.db"
    async with running(url, hosts=1) as runtime:
        assert [r.text for r in (await runtime.send(message("a", 0, "timer"))).replies] == ["waiting"]
        pid = (await runtime.pids())[runtime.settings.names.host(0)]
        os.kill(pid, signal.SIGSTOP)  # the host is gone for the world...
        await asyncio.sleep(2.0)      # ...while its timer falls due (1 s)...
        os.kill(pid, signal.SIGKILL)  # ...and it dies without having fired it
        await until_ready(runtime)
        deadline = time.monotonic() + 30
        while (await outbox(url)).get(key("a").id) != ["waiting", "fired"]:
            assert time.monotonic() < deadline, await outbox(url)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # ten more polls: it must not fire again
        assert (await outbox(url))[key("a").id] == ["waiting", "fired"]
        assert (await runtime.conversation(key("a"))).state.status == "ended"


# ---------------------------------------------------------------- 5. redis-server killed under load


async def test_killing_redis_under_load_fails_callers_loses_nothing_acknowledged_and_recovers(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        async with running(server.url + "?timeout_s=1") as runtime:
            channel = Channel(runtime)
            users = [f"u{i}" for i in range(300)]
            load = asyncio.gather(*(channel.converse(u, 20) for u in users))
            await channel.until_acked(1500, load)
            server.kill()
            acked_at_kill, failures_at_kill = channel.acked, channel.failures
            await asyncio.sleep(2.0)
            assert channel.failures > failures_at_kill, "callers got no error while redis was down"
            assert channel.acked - acked_at_kill < 300, "acknowledgements went on without a store"
            server.start()  # same port, same AOF: the runtime must find it again on its own
            await load
            assert channel.acked == 300 * 20
            expected = [f"m{n}" for n in range(20)]
            wrong = [u for u in users if await transcript(runtime, u) != expected]
            assert wrong == [], f"{len(wrong)} conversations lost, repeated or reordered messages"
    finally:
        server.stop()


# ---------------------------------------------------------------- the rest of the API


async def test_a_whole_registration_with_its_http_call_runs_across_processes(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/parlour.db"
    recorder = Recorder()
    async with serve(members_app(recorder)) as api, \
            running(url, env={"demo": {"MEMBERS_API": api, "API": api}}) as runtime:
        await runtime.deploy("demo", [BUNDLED])
        warned = [r.getMessage() for r in caplog.records if "env." in r.getMessage() and "'demo'" in r.getMessage()]
        assert warned == [f"{BUNDLED / 'support.yaml'}:90:16: warning: env.ORDERS_API is used but not set "
                          "for tenant 'demo'"]  # deployed all the same; MEMBERS_API is set
        said = []
        for n, text in enumerate(["hi", "register", "Ann Lee", "ann@example.org", "34", "yes"]):
            key = ConversationKey("demo", "whatsapp", "447700900123")
            outcome = await runtime.send(Inbound(key, f"w{n}", UserMessage(text)))
            said += [r.text for r in outcome.replies]
        assert said[-1] == "Register Ann Lee <ann@example.org>, 34?"
        deadline = time.monotonic() + 10
        while "You're in, member #1." not in (replies := (await outbox(url)).get("demo/whatsapp/447700900123", [])):
            assert time.monotonic() < deadline, replies
            await asyncio.sleep(0.05)
        assert replies[-2:] == ["You're in, member #1.", "Bye for now. Type hi to start again."]
        assert len(recorder.requests) == 1


async def test_a_dedicated_flow_runs_each_conversation_in_an_actor_of_its_own(tmp_path):
    async with running(f"sqlite:///{tmp_path}/parlour.db", hosts=1) as runtime:
        assert [r.text for r in (await runtime.send(message("a", 0, "heavy"))).replies] == ["your name?"]
        assert [r.text for r in (await runtime.send(message("a", 1, "Ann"))).replies] == ["hello Ann", "your name?"]
        assert [r.text for r in (await runtime.send(message("b", 0, "m0"))).replies] == ["1:m0"]
        stats = (await runtime.stats())[0]
        assert (stats["dedicated"], stats["dedicated_turns"]) == (1, 2)
        assert (await runtime.send(message("a", 1, "Ann"))).status == DUPLICATE
        assert (await runtime.conversation(key("a"))).state.vars["name"] == "Ann"


async def test_over_the_cap_a_dedicated_conversation_is_refused_and_a_shared_turn_never_waits_for_one(tmp_path):
    caps = DedicatedCaps(max_actors=2, max_per_tenant=2)
    async with running(f"sqlite:///{tmp_path}/parlour.db", hosts=1, dedicated=caps) as runtime:
        await runtime.deploy("u", [FLOWS])
        arrived = []

        async def send(inbound: Inbound, what: str):
            outcome = await runtime.send(inbound)
            arrived.append(what)
            return outcome

        starting = asyncio.ensure_future(send(message("d0", 0, "heavy"), "dedicated"))
        deadline = time.monotonic() + 30
        while not (await runtime.stats())[0].get("dedicated"):  # the host starts its actor now
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        shared = await send(Inbound(ConversationKey("u", "sms", "s"), "s-0", UserMessage("hello")), "shared")
        assert [r.text for r in (await starting).replies] == ["your name?"]
        assert [r.text for r in shared.replies] == ["1:hello"] and arrived == ["shared", "dedicated"]
        over = await runtime.send_many([message(f"d{i}", 0, "heavy") for i in range(1, 4)])
        assert [o.status for o in over] == [APPLIED, FAILED, FAILED]
        assert all(o.retryable and "tenant 't' runs its maximum of 2 dedicated" in o.error for o in over[1:])
        prefix = runtime.settings.names.prefix + "-conv-"
        alive = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
        assert len(alive) == 2 and (await runtime.stats())[0]["dedicated_started"] == 2


async def test_deploying_an_invalid_flow_changes_nothing(tmp_path):
    from parlour.errors import FlowError
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: bad\nstart: nowhere\nnodes: {}\n")
    async with running(f"sqlite:///{tmp_path}/parlour.db", hosts=1) as runtime:
        with pytest.raises(FlowError, match=r"bad.yaml:\d+:\d+"):
            await runtime.deploy("t", [bad])
        assert (await runtime.send(message("a", 0))).status == APPLIED


async def test_a_router_restarted_by_ray_keeps_its_table_and_its_epochs_only_grow(tmp_path):
    async with running(f"sqlite:///{tmp_path}/parlour.db") as runtime:
        before = await runtime.actors.table()
        assert before.epoch == 3  # the table made (1), then claimed by each of two hosts
        os.kill((await runtime.pids())["router"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                after = await runtime.actors.table()
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert after == before
        os.kill((await runtime.pids())[runtime.settings.names.host(1)], signal.SIGKILL)
        await until_ready(runtime)
        epochs = {s["name"]: s["epoch"] for s in await runtime.stats()}
        assert epochs[runtime.settings.names.host(1)] == before.epoch + 1
        assert (await runtime.send(message("a", 0))).status == APPLIED


@pytest.mark.parametrize("kwargs, error", [
    ({"hosts": 0}, "at least one host"),
    ({"hosts": 3, "partitions": 2}, "partitions"),
    ({"store": "memory://", "hosts": 2}, "exactly one host"),
    ({"store": "postgres://x"}, "no store for"),
])
async def test_a_runtime_that_cannot_work_is_refused_before_it_starts(kwargs, error):
    from parlour.errors import ParlourError
    with pytest.raises(ParlourError, match=error):
        await Runtime.start(**{"store": "memory://", **kwargs})


async def test_another_process_joins_the_running_cluster_by_its_address(redis_server):
    """A second driver (a gateway, say) joins this Ray cluster by address and talks to a runtime."""
    import subprocess
    import sys
    import textwrap
    address = ray.get_runtime_context().gcs_address
    script = textwrap.dedent(f"""
        import asyncio
        from parlour.flow import UserMessage
        from parlour.messages import ConversationKey, Inbound
        from parlour.runtime import Runtime

        async def main():
            runtime = await Runtime.start(address={address!r}, store={redis_server.url + "?prefix=join:"!r},
                                          name="joined", hosts=1)
            try:
                await runtime.deploy("t", [{str(FLOWS)!r}])
                outcome = await runtime.send(Inbound(ConversationKey("t", "web", "u"), "m0", UserMessage("joined")))
                print(outcome.status, [r.text for r in outcome.replies])
            finally:
                await runtime.stop()
        asyncio.run(main())
    """)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script],
                                   capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "applied ['1:joined']"


async def test_a_runtime_started_before_its_store_is_up_starts_when_the_store_comes(tmp_path):
    server = RedisServer(tmp_path / "late")  # its port is chosen, nothing listens yet
    starting = asyncio.ensure_future(Runtime.start(store=server.url + "?timeout_s=1", name="late", hosts=1,
                                                   config=HostConfig(timer_poll_s=0.1)))
    await asyncio.sleep(3.0)
    assert not starting.done()
    server.start()
    try:
        runtime = await asyncio.wait_for(starting, 60)
        try:
            await runtime.deploy("t", [FLOWS])
            assert (await runtime.send(message("a", 0))).status == APPLIED
        finally:
            await runtime.stop()
    finally:
        server.stop()


async def test_a_running_runtime_is_not_restarted_with_other_numbers(tmp_path):
    from parlour.errors import ParlourError
    url = f"sqlite:///{tmp_path}/parlour.db"
    async with running(url, hosts=1) as runtime:
        with pytest.raises(ParlourError, match="already runs with 1 hosts"):
            await Runtime.start(store=url, name=runtime.settings.names.prefix, hosts=2)
        assert (await runtime.send(message("a", 0))).status == APPLIED
