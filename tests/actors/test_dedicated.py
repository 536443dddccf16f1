"""Dedicated conversations without Ray: the pool's caps and idle retirement, and the host's
lanes that keep their turns out of its batches. A runner here runs the same pure
``run_turns`` in this process, behind a gate the test opens (as a Ray actor that is still
starting); the Ray actors themselves are tested in tests/actors/test_runtime.py."""

from __future__ import annotations

import asyncio

from parlour.actors.conversation import run_turns
from parlour.actors.dedicated import DedicatedCaps, DedicatedPool
from parlour.actors.host import Host, HostConfig
from parlour.flow import UserMessage
from parlour.messages import APPLIED, DUPLICATE, FAILED, ConversationKey, Inbound
from parlour.store.memory import MemoryStore
from tests.actors.test_host import FLOWS, Clock, deploy, said, until


class InProcess:
    """A dedicated conversation's runner in this process; ``gate`` holds its turns (a start)."""

    def __init__(self, host, gate: asyncio.Event, fail: bool):
        self.host, self.gate, self.fail, self.killed = host, gate, fail, False

    async def run(self, tenant, key, record, events, now):
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("its actor died")
        return run_turns(self.host.flows.catalog(tenant), key, record, events, now, self.host.config.window)

    def kill(self) -> None:
        self.killed = True


async def dedicated_host(caps: DedicatedCaps, clock: Clock | None = None, **config):
    clock = clock or Clock()
    store = MemoryStore(clock=clock)
    for tenant in ("t", "u", "v"):
        await deploy(store, FLOWS, tenant=tenant)
    runners: dict[str, InProcess] = {}
    gate = asyncio.Event()
    gate.set()

    def spawn(key: str) -> InProcess:
        runners[key] = InProcess(host, gate, fail=key.endswith("/bad"))
        return runners[key]

    host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, dedicated=caps, **config), _claim_all,
                clock=clock, isolated=DedicatedPool(spawn, caps, clock))
    await host.start()
    return host, runners, gate


async def _claim_all(name: str):
    return 1, list(range(64))


def heavy(tenant: str, user: str, n: int = 0, text: str = "heavy") -> Inbound:
    return Inbound(ConversationKey(tenant, "sms", user), f"{user}-{n}", UserMessage(text))


async def test_a_dedicated_turn_that_fails_fails_only_its_own_conversation():
    host, runners, _ = await dedicated_host(DedicatedCaps(max_actors=4, max_per_tenant=4))
    outcomes = await host.deliver([heavy("t", "bad"), heavy("t", "good"),
                                   Inbound(ConversationKey("t", "sms", "plain"), "m1", UserMessage("hello"))])
    assert [(o.status, o.retryable) for o in outcomes] == [(FAILED, False), (APPLIED, False), (APPLIED, False)]
    assert "its actor died" in outcomes[0].error and said(outcomes[1]) == ["your name?"]
    assert host.stats()["turn_errors"] == 1
    assert runners["t/sms/bad"].killed and "t/sms/bad" not in host.isolated.slots  # its slot is free again


async def test_over_a_cap_a_new_dedicated_conversation_is_refused_retryably_and_starts_nothing():
    host, runners, _ = await dedicated_host(DedicatedCaps(max_actors=3, max_per_tenant=2, per_tenant={"u": 1}))
    outcomes = await host.deliver([heavy("t", "a"), heavy("t", "b"), heavy("t", "c"), heavy("u", "a"), heavy("u", "b")])
    assert [o.status for o in outcomes] == [APPLIED, APPLIED, FAILED, APPLIED, FAILED]
    assert outcomes[2].retryable and "tenant 't' runs its maximum of 2 dedicated" in outcomes[2].error
    assert outcomes[4].retryable and "tenant 'u' runs its maximum of 1" in outcomes[4].error
    assert sorted(runners) == ["t/sms/a", "t/sms/b", "u/sms/a"]
    refused = (await host.deliver([heavy("v", "a")]))[0]  # a third tenant: the node's cap
    assert refused.status == FAILED and "this node runs its maximum of 3" in refused.error
    assert await host.inspect(ConversationKey("t", "sms", "c")) is None  # its state did not move
    again = (await host.deliver([heavy("t", "a", 1, "Ann")]))[0]  # one that holds a slot goes on
    assert said(again) == ["hello Ann", "your name?"]
    assert host.stats()["dedicated_refused"] == 3 and host.stats()["dedicated"] == 3


async def test_a_shared_turn_never_waits_for_a_dedicated_process_to_start():
    host, runners, gate = await dedicated_host(DedicatedCaps())
    gate.clear()  # the dedicated process is "starting"
    first = asyncio.ensure_future(host.deliver([heavy("t", "d", 0)]))
    second = asyncio.ensure_future(host.deliver([heavy("t", "d", 1, "Ann")]))
    await until(lambda: _true(runners))
    shared = await host.deliver([Inbound(ConversationKey("u", "sms", "s"), "s-0", UserMessage("hello"))])
    assert said(shared[0]) == ["1:hello"] and not first.done() and not second.done()
    gate.set()
    assert said((await first)[0]) == ["your name?"] and said((await second)[0]) == ["hello Ann", "your name?"]
    assert (await host.deliver([heavy("t", "d", 1, "Ann")]))[0].status == DUPLICATE
    assert (await host.inspect(ConversationKey("t", "sms", "d"))).state.vars["name"] == "Ann"
    assert host.stats()["dedicated_lanes"] == 0 and "t/sms/d" in host.resident


async def test_an_idle_dedicated_process_retires_on_its_own_and_frees_its_slot():
    clock = Clock()
    host, runners, _ = await dedicated_host(DedicatedCaps(max_actors=1, idle_s=60.0), clock, dedicated_reap_s=0.01)
    assert (await host.deliver([heavy("t", "a")]))[0].status == APPLIED
    assert (await host.deliver([heavy("t", "b")]))[0].status == FAILED
    clock.now += 61.0
    await until(lambda: _true(not host.isolated.slots))
    assert runners["t/sms/a"].killed and host.stats()["dedicated_retired"] == 1
    assert said((await host.deliver([heavy("t", "b", 1)]))[0]) == ["your name?"]
    again = (await host.deliver([heavy("t", "a", 1, "Ann")]))[0]  # its state is in the store
    assert again.status == FAILED and again.retryable  # b holds the one slot now
    clock.now += 61.0
    await until(lambda: _true(not host.isolated.slots))
    assert said((await host.deliver([heavy("t", "a", 1, "Ann")]))[0]) == ["hello Ann", "your name?"]


async def _true(value) -> bool:
    return bool(value)


def test_the_hosts_share_the_node_caps_without_ever_exceeding_them():
    caps = DedicatedCaps(max_actors=5, max_per_tenant=2, per_tenant={"big": 7}, idle_s=30.0)
    for hosts in (1, 2, 3, 8):
        shares = [caps.share(i, hosts) for i in range(hosts)]
        assert sum(s.max_actors for s in shares) == 5 and sum(s.max_per_tenant for s in shares) == 2
        assert sum(s.of("big") for s in shares) == 7 and {s.idle_s for s in shares} == {30.0}


async def test_a_dedicated_conversation_knows_a_replay_out_of_its_window_and_its_lane_keeps_the_order():
    host, runners, gate = await dedicated_host(DedicatedCaps(), window=2)
    gate.clear()
    sent = [Inbound(ConversationKey("t", "whatsapp", "d"), f"wamid.{n}", UserMessage(text), sent_at=1000.0 + n)
            for n, text in enumerate(["heavy", "Ann", "Bob", "Cy"])]
    pending = [asyncio.ensure_future(host.deliver([inbound])) for inbound in sent]
    await until(lambda: _true(runners))
    gate.set()
    assert [said((await p)[0]) for p in pending] == [
        ["your name?"], ["hello Ann", "your name?"], ["hello Bob", "your name?"], ["hello Cy", "your name?"]]
    replay = (await host.deliver([sent[1]]))[0]  # out of the window of 2: the store knows it
    assert replay.status == DUPLICATE and said(replay) == ["hello Ann", "your name?"]
    assert host.stats()["replay_checks"] == 1 and host.stats()["dedicated_turns"] == 4
    assert (await host.inspect(ConversationKey("t", "whatsapp", "d"))).state.vars["name"] == "Cy"


async def test_a_dedicated_turn_that_runs_past_its_time_ends_its_process_and_frees_the_lane():
    host, runners, gate = await dedicated_host(DedicatedCaps(turn_timeout_s=0.05))
    gate.clear()  # the process never answers
    outcome = (await host.deliver([heavy("t", "stuck")]))[0]
    assert outcome.status == FAILED and "ran past 0.05 s" in outcome.error
    assert runners["t/sms/stuck"].killed and not host.isolated.slots and host.stats()["dedicated_lanes"] == 0
    gate.set()
    assert said((await host.deliver([heavy("t", "stuck", 1)]))[0]) == ["your name?"]  # a new process
