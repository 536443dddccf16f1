"""The conversation host without Ray: a real memory store, real HTTP on loopback, a clock the
tests move. The Ray actors around it are tested in tests/actors/test_runtime.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parlour.actors.host import HTTP_GUARD, Host, HostConfig
from parlour.codec import unpack_outbound, unpack_record
from parlour.flow import UserMessage, load_paths
from parlour.http import HttpCaller
from parlour.messages import (
    APPLIED,
    DUPLICATE,
    MOVED,
    ConversationKey,
    Inbound,
    mailbox_log,
    partition_of,
)
from parlour.store import FlowRecord
from parlour.store.memory import MemoryStore
from tests.servers import Recorder, loopback_egress, members_app, serve

FLOWS = Path(__file__).parent / "flows"
T0 = 1_800_000_000.0

EGRESS = loopback_egress("t")  # the test APIs listen on loopback


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


async def deploy(store: MemoryStore, *paths, tenant: str = "t") -> None:
    for flow in load_paths(paths or [FLOWS]).flows:
        await store.put_flow(FlowRecord(tenant, flow.id, flow.version, flow.source, flow.path, 1.0, True))


def key(user: str) -> ConversationKey:
    return ConversationKey("t", "sms", user)


def said(outcome) -> list[str]:
    return [r.text for r in outcome.replies]


async def make_host(store=None, *, partitions=None, epoch=1, clock=None, http=None, **config) -> Host:
    store = store or MemoryStore(clock=clock or Clock())

    async def claim(name):
        return epoch, list(partitions if partitions is not None else range(64))

    host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, **config), claim,
                http=http, clock=clock or Clock())
    if not await store.flows():
        await deploy(store)
    await host.start()
    return host


async def outbox_texts(store, user: str) -> list[str]:
    entries = [unpack_outbound(e.data) for e in await store.read_outbox(None, 10_000)]
    return [e["reply"].text for e in entries if e["key"] == key(user).id]


async def until(condition, timeout_s: float = 5.0):
    """Wait for a host loop (timers, HTTP results) to have run; never for a timer's time."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "the host loop did not get there"
        await asyncio.sleep(0.01)


async def test_a_batch_runs_each_conversations_events_in_order_and_commits_once():
    host = await make_host()
    batch = [Inbound(key(u), f"{u}-{i}", UserMessage(f"{u}{i}")) for i in range(5) for u in ("a", "b")]
    outcomes = await host.deliver(batch)
    assert [o.status for o in outcomes] == [APPLIED] * 10
    assert [said(o) for o in outcomes[::2]] == [["1:a0"], ["2:a1"], ["3:a2"], ["4:a3"], ["5:a4"]]
    assert (await host.inspect(key("b"))).state.vars["log"] == ["b0", "b1", "b2", "b3", "b4"]
    assert host.stats()["commits"] == 1
    assert await outbox_texts(host.store, "a") == ["1:a0", "2:a1", "3:a2", "4:a3", "5:a4"]


async def test_a_replayed_message_id_never_moves_the_flow_twice_even_after_passivation():
    host = await make_host(max_resident=1)
    first = (await host.deliver([Inbound(key("a"), "m1", UserMessage("x"))]))[0]
    await host.deliver([Inbound(key("a"), "m2", UserMessage("y"))])
    await host.deliver([Inbound(key("b"), "m1", UserMessage("other"))])  # a is passivated (LRU)
    assert key("a").id not in host.resident and host.stats()["passivated_lru"] >= 1
    again = (await host.deliver([Inbound(key("a"), "m1", UserMessage("x"))]))[0]
    assert again.status == DUPLICATE and again.replies == first.replies
    in_one_batch = await host.deliver([Inbound(key("a"), "m3", UserMessage("z")),
                                       Inbound(key("a"), "m3", UserMessage("z"))])
    assert [o.status for o in in_one_batch] == [APPLIED, DUPLICATE] and said(in_one_batch[1]) == ["3:z"]
    assert (await host.inspect(key("a"))).state.vars["log"] == ["x", "y", "z"]


async def test_the_dedup_window_keeps_the_latest_ids_only():
    host = await make_host(window=3)
    for i in range(5):
        await host.deliver([Inbound(key("a"), f"m{i}", UserMessage(str(i)))])
    record = await host.inspect(key("a"))
    assert len(record.seen) == 3 * 8
    assert (await host.deliver([Inbound(key("a"), "m4", UserMessage("4"))]))[0].status == DUPLICATE
    assert (await host.deliver([Inbound(key("a"), "m0", UserMessage("0"))]))[0].status == APPLIED


async def test_an_event_for_a_partition_the_host_does_not_own_is_moved():
    host = await make_host(partitions=[partition_of(key("a").id, 64)])
    other = next(u for u in (f"u{i}" for i in range(100))
                 if partition_of(key(u).id, 64) != partition_of(key("a").id, 64))
    outcomes = await host.deliver([Inbound(key("a"), "m1", UserMessage("x")),
                                   Inbound(key(other), "m1", UserMessage("x"))])
    assert [o.status for o in outcomes] == [APPLIED, MOVED]
    assert outcomes[1].epoch == 1


async def test_a_zombie_host_cannot_overwrite_what_a_newer_owner_wrote():
    store = MemoryStore()
    zombie = await make_host(store)
    await zombie.deliver([Inbound(key("a"), "m1", UserMessage("x"))])
    await make_host(store, epoch=2)  # the same partitions claimed again, as after a restart
    outcome = (await zombie.deliver([Inbound(key("a"), "m2", UserMessage("zombie"))]))[0]
    assert outcome.status == MOVED
    assert unpack_record((await store.load([key("a").id]))[key("a").id]).state.vars["log"] == ["x"]
    assert partition_of(key("a").id, 64) not in zombie.owned and key("a").id not in zombie.resident


class SlowCommits(MemoryStore):
    """A memory store whose commits wait for the test to open ``gate``."""

    def __init__(self, clock):
        super().__init__(clock=clock)
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, commit):
        await self.gate.wait()
        await super().commit(commit)


async def test_batches_that_arrive_during_a_commit_are_committed_together_in_order():
    clock = Clock()
    store = SlowCommits(clock)
    host = await make_host(store, clock=clock)
    store.gate.clear()
    first = asyncio.create_task(host.deliver([Inbound(key("a"), "a0", UserMessage("a0"))]))
    await asyncio.sleep(0.01)  # the first batch holds the lock, waiting on its commit
    later = [asyncio.create_task(host.deliver([Inbound(key(u), f"{u}{n}", UserMessage(f"{u}{n}")) for u in "ab"]))
             for n in range(1, 4)]
    await asyncio.sleep(0.01)
    commits = host.stats().get("commits", 0)
    store.gate.set()
    outcomes = [await first] + [await task for task in later]
    assert host.stats()["commits"] == commits + 2  # the first batch, then the three others as one
    assert [said(o) for o in outcomes[3]] == [["4:a3"], ["3:b3"]]
    assert (await host.inspect(key("a"))).state.vars["log"] == ["a0", "a1", "a2", "a3"]


async def test_an_answered_channel_keeps_message_replies_out_of_the_outbox_but_not_timer_replies():
    clock = Clock()
    host = await make_host(clock=clock)
    web = ConversationKey("t", "web", "w")
    outcome = (await host.deliver([Inbound(web, "m1", UserMessage("timer"))]))[0]
    assert said(outcome) == ["waiting"]  # the caller's answer carries it
    assert (await host.deliver([Inbound(web, "m1", UserMessage("timer"))]))[0].replies == outcome.replies
    clock.now += 1.5
    await until(lambda: _has_outbox(host.store, web.id))
    entries = [unpack_outbound(e.data) for e in await host.store.read_outbox(None, 100)]
    assert [(e["reply"].text, e["message_id"], e["seq"]) for e in entries if e["key"] == web.id] == [("fired", None, 2)]


async def test_a_web_reply_no_answer_carried_goes_to_the_users_mailbox_until_its_time_is_up():
    clock = Clock()
    host = await make_host(clock=clock, mailbox_ttl_s=100.0)
    web, sms = ConversationKey("t", "web", "w"), key("s")
    await host.deliver([Inbound(web, "m1", UserMessage("timer")), Inbound(sms, "m1", UserMessage("timer"))])
    assert await host.store.read_log(mailbox_log(web.id)) == []  # the answer carried "waiting"
    clock.now += 1.5
    await until(lambda: _has_outbox(host.store, web.id))
    mail = [unpack_outbound(e.data) for e in await host.store.read_log(mailbox_log(web.id))]
    assert [(m["reply"].text, m["seq"]) for m in mail] == [("fired", 2)]  # the outbox entry's own data
    assert await host.store.read_log(mailbox_log(sms.id)) == []  # a messaging channel has no mailbox
    clock.now += 100.0
    assert await host.store.read_log(mailbox_log(web.id)) == []


async def _has_outbox(store, key_id: str) -> bool:
    return any(e.key == key_id for e in await store.read_outbox(None, 100))


async def test_a_timer_fires_once_when_due_and_its_row_goes_with_the_commit():
    clock = Clock()
    host = await make_host(clock=clock)
    assert said((await host.deliver([Inbound(key("a"), "m1", UserMessage("timer"))]))[0]) == ["waiting"]
    await asyncio.sleep(0.05)
    assert await outbox_texts(host.store, "a") == ["waiting"]  # not due yet: nothing fired
    clock.now += 1.5
    await until(lambda: _fired(host, "a"))
    await asyncio.sleep(0.05)  # more polls: it must not fire again
    assert await outbox_texts(host.store, "a") == ["waiting", "fired"]
    assert await host.store.due_timers(list(range(64)), clock.now + 10, 10) == []


async def _fired(host, user):
    return "fired" in await outbox_texts(host.store, user)


async def test_a_timer_survives_passivation_and_a_restart_of_the_host():
    clock = Clock()
    store = MemoryStore(clock=clock)
    first = await make_host(store, clock=clock, max_resident=1)
    await first.deliver([Inbound(key("a"), "m1", UserMessage("timer"))])
    await first.deliver([Inbound(key("b"), "m1", UserMessage("hello"))])  # a is passivated
    await first.stop()
    clock.now += 60
    second = await make_host(store, clock=clock, epoch=2)
    await until(lambda: _fired(second, "a"))
    await asyncio.sleep(0.05)
    assert await outbox_texts(store, "a") == ["waiting", "fired"]


async def test_a_slow_http_call_does_not_hold_other_conversations_and_its_reply_follows():
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)  # the API answers only when the test opens the gate
    async with serve(members_app(recorder)) as url, HttpCaller(egress=EGRESS) as http:
        store = MemoryStore()
        await deploy(store)
        host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, env={"t": {"API": url}}),
                    _claim_all, http=http, clock=Clock())
        await host.start()
        calling = (await host.deliver([Inbound(key("a"), "m1", UserMessage("call"))]))[0]
        assert said(calling) == ["calling"] and calling.conversation_status == "waiting"
        await until(lambda: _requested(recorder))
        other = (await host.deliver([Inbound(key("b"), "m1", UserMessage("hello"))]))[0]
        assert other.status == APPLIED and host.stats()["http_in_flight"] == 1
        gate.set()
        await until(lambda: _said(store, "a", "member 1"))
        assert await outbox_texts(store, "a") == ["calling", "member 1"]
        due = await store.due_timers(list(range(64)), T0 + 1e6, 10)
        assert not [t for t in due if t.timer_id.startswith(HTTP_GUARD)]
        await host.stop()


async def _claim_all(name):
    return 1, list(range(64))


async def _requested(recorder):
    return bool(recorder.requests)


async def _said(store, user, text):
    return text in await outbox_texts(store, user)


async def test_an_http_call_lost_with_its_host_is_answered_with_an_error_after_the_restart():
    clock = Clock()
    store = MemoryStore(clock=clock)
    gate = asyncio.Event()
    async with serve(members_app(Recorder(gate=gate))) as url, HttpCaller(egress=EGRESS) as http:
        await deploy(store)
        config = HostConfig(partitions=64, timer_poll_s=0.01, env={"t": {"API": url}})
        first = Host("h", store, config, _claim_all, http=http, clock=clock)
        await first.start()
        await first.deliver([Inbound(key("a"), "m1", UserMessage("call"))])
        await first.stop()  # the call dies with its host

        async def claim_again(name):
            return 2, list(range(64))
        second = Host("h", store, config, claim_again, http=http, clock=clock)
        await second.start()
        clock.now += 10 * 60
        await until(lambda: _said(store, "a", "call failed: the call was interrupted (its host restarted)"))
        assert (await second.inspect(key("a"))).state.status == "ended"
        gate.set()
        await second.stop()


async def test_an_unreadable_record_starts_the_conversation_afresh_instead_of_wedging_it():
    store = MemoryStore()
    host = await make_host(store)
    await store.commit(_raw_commit(key("a"), b"\xc1 not msgpack"))
    outcome = (await host.deliver([Inbound(key("a"), "m1", UserMessage("hello"))]))[0]
    assert outcome.status == APPLIED and said(outcome) == ["1:hello"]
    assert host.stats()["unreadable_records"] == 1


def _raw_commit(k: ConversationKey, data: bytes):
    from parlour.store import Commit
    partition = partition_of(k.id, 64)
    return Commit(fences={partition: 1}, records=[(k.id, partition, data, T0 + 3600)])


async def test_an_ended_conversation_expires_after_its_ttl_and_then_starts_afresh():
    clock = Clock()
    store = MemoryStore(clock=clock)
    host = await make_host(store, clock=clock, ended_ttl_s=100, idle_s=0.01)
    await host.deliver([Inbound(key("a"), "m1", UserMessage("timer"))])
    clock.now += 2
    await until(lambda: _fired(host, "a"))
    assert (await host.inspect(key("a"))).state.status == "ended"
    clock.now += 100 + 1 + 1.0
    await store.sweep(clock.now)
    host.resident.clear()
    assert await host.inspect(key("a")) is None


async def test_a_tenant_without_flows_gets_an_unhandled_turn_not_a_crash():
    host = await make_host()
    outcome = (await host.deliver([Inbound(ConversationKey("nobody", "web", "u"), "m1", UserMessage("hi"))]))[0]
    assert outcome.status in (APPLIED, MOVED) and outcome.replies == ()


@pytest.mark.parametrize("window", [1, 32])
async def test_stats_count_turns_duplicates_and_activations(window):
    host = await make_host(window=window)
    await host.deliver([Inbound(key("a"), "m1", UserMessage("x")), Inbound(key("a"), "m1", UserMessage("x"))])
    stats = host.stats()
    assert (stats["turns"], stats["duplicates"], stats["activations"], stats["resident"]) == (1, 1, 1, 1)


async def test_an_api_answer_with_a_lone_surrogate_neither_stops_the_host_nor_wedges_anyone():
    from aiohttp import web

    async def odd(request):
        return web.Response(text='{"id": "\\ud800"}', content_type="application/json", status=201)

    app = web.Application()
    app.router.add_post("/members", odd)
    clock = Clock()
    async with serve(app) as url, HttpCaller(egress=EGRESS) as http:
        store = MemoryStore(clock=clock)
        await deploy(store)
        host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, env={"t": {"API": url}}), _claim_all,
                    http=http, clock=clock)
        await host.start()
        await host.deliver([Inbound(key("a"), "m1", UserMessage("call")),
                            Inbound(key("b"), "m1", UserMessage("timer"))])
        await until(lambda: _said(store, "a", "member \ud800"))
        clock.now += 2
        await until(lambda: _fired(host, "b"))  # the internal loop is still alive
        assert (await host.inspect(key("a"))).state.vars["member"] == {"id": "\ud800"}
        await host.stop()


class GatedStore(MemoryStore):
    """A memory store whose loads wait for the test to open a gate."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate: asyncio.Event | None = None

    async def load(self, keys):
        if self.gate is not None:
            await self.gate.wait()
        return await super().load(keys)


async def test_passivating_while_a_batch_reads_the_store_loses_nothing():
    store = GatedStore()
    host = await make_host(store)
    await host.deliver([Inbound(key("a"), f"a{i}", UserMessage(f"x{i}")) for i in range(2)])
    store.gate = asyncio.Event()
    batch = asyncio.ensure_future(host.deliver([Inbound(key("a"), "a2", UserMessage("x2")),
                                                Inbound(key("b"), "b0", UserMessage("y"))]))
    await asyncio.sleep(0.01)  # the batch waits on the store's read of b
    passivate = asyncio.ensure_future(host.passivate())
    await asyncio.sleep(0.01)
    store.gate.set()
    assert [o.status for o in await batch] == [APPLIED, APPLIED]
    await passivate
    assert (await host.inspect(key("a"))).state.vars["log"] == ["x0", "x1", "x2"]
    assert (await host.deliver([Inbound(key("a"), "a0", UserMessage("x0"))]))[0].status == DUPLICATE


async def test_a_replay_out_of_the_window_is_a_duplicate_within_the_horizon_and_new_messages_cost_no_read():
    clock = Clock()
    host = await make_host(window=3, clock=clock)

    def sent(n: int, at: float | None = None) -> Inbound:
        return Inbound(key("a"), f"wamid.{n}", UserMessage(f"x{n}"), sent_at=T0 - 100 + (n if at is None else at))

    for n in range(6):
        assert (await host.deliver([sent(n)]))[0].status == APPLIED
    assert host.stats().get("replay_checks", 0) == 0  # newer than every id out of the window: no read
    record = await host.inspect(key("a"))
    assert (record.latest_at, record.evicted_at) == (T0 - 95, T0 - 96)  # a bound: wamid.2 left at T0 - 98
    replay = (await host.deliver([sent(0)]))[0]
    assert replay.status == DUPLICATE and said(replay) == ["1:x0"]  # its first answer, kept
    assert (await host.deliver([sent(5)]))[0].status == DUPLICATE  # in the window: no read either
    assert host.stats()["replay_checks"] == 1
    assert (await host.deliver([sent(9, at=1)]))[0].status == APPLIED  # as old, never seen: one read
    assert host.stats()["replay_checks"] == 2
    assert (await host.inspect(key("a"))).state.vars["log"] == [f"x{n}" for n in (0, 1, 2, 3, 4, 5, 9)]
    clock.now += host.config.replay_horizon_s + 1  # past the channel's horizon, the store forgets it
    assert await host.store.replied([(key("a").id, "wamid.0")]) == set()


def test_a_record_keeps_its_channel_times_only_once_it_has_some():
    from parlour.codec import Record, pack_record
    from parlour.flow import State
    plain = Record(State(), b"\x01" * 8, 3)
    assert unpack_record(pack_record(plain)) == plain and len(pack_record(plain)) < len(
        pack_record(Record(State(), b"\x01" * 8, 3, 1.5, 0.5)))
    assert unpack_record(pack_record(Record(State(), b"", 0, 1.5, 0.5))).evicted_at == 0.5


async def test_a_partition_lost_while_its_batch_loads_moves_its_events_and_writes_nothing():
    """A lane's fenced commit can take a partition from under a batch that is reading records:
    the batch answers moved for it (the caller resends to the new owner) and writes nothing."""
    store = MemoryStore(clock=Clock())
    host = await make_host(store)
    await host.passivate()
    loading, lost = asyncio.Event(), asyncio.Event()
    real_load = store.load

    async def held_load(keys):
        loading.set()
        await lost.wait()
        return await real_load(keys)

    store.load = held_load
    sent = asyncio.create_task(host.deliver([Inbound(key("a"), "m1", UserMessage("hi"))]))
    await loading.wait()
    host.lose({partition_of(key("a").id, 64): 2})
    lost.set()
    (outcome,) = await sent
    assert outcome.status == MOVED, outcome
    assert await real_load([key("a").id]) == {}
    await host.stop()
