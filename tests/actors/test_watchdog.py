"""actors/watchdog.py: a turn that does not end takes its process down, and its message is
quarantined after the tries; proven on real processes, a host, and a host on a real Ray."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from parlour.actors.host import Host, HostConfig
from parlour.actors.watchdog import TurnWatch
from parlour.flow import UserMessage
from parlour.messages import APPLIED, DUPLICATE, FAILED, ConversationKey, Inbound
from parlour.runtime import Runtime
from parlour.store import store_identity
from parlour.store.memory import MemoryStore
from tests.actors.test_host import Clock, deploy, said
from tests.actors.test_runtime import until_ready
from tests.ray_local import local_ray

STUCK = """
import sys, time
from pathlib import Path
from parlour.actors.watchdog import TurnWatch
watch = TurnWatch(Path(sys.argv[1]))
watch.open()
watch.start_watchdog(__import__("os").getpid(), limit_s=0.2, period_s=0.02)
watch.begin("t/sms/u1", "m-7")
sum(range(10 ** 12))  # one C call that no Python thread could interrupt
"""


def test_the_watchdog_kills_a_process_stuck_in_c_and_the_next_one_counts_a_try(tmp_path):
    path = tmp_path / "host-0"
    for tries in (1, 2):
        started = time.monotonic()
        process = subprocess.run([sys.executable, "-c", STUCK, str(path)], capture_output=True, text=True, timeout=60)
        assert process.returncode == -9, process.stderr
        assert time.monotonic() - started < 30
        assert "ran past 0.2 s" in process.stderr and "t/sms/u1 m-7" in process.stderr
        watch = TurnWatch(path, tries=2)
        assert watch.open() == "t/sms/u1\0m-7"
        assert watch.poisoned("t/sms/u1", "m-7") == (tries if tries >= 2 else 0)
        watch.close()
    again = TurnWatch(path, tries=2)
    assert again.open() is None  # the slot was cleared: nothing died in a turn since
    assert again.poisoned("t/sms/u1", "m-7") == 2 and again.poisoned("t/sms/u1", "m-8") == 0
    again.close()


def test_a_turn_that_ends_leaves_nothing_in_flight(tmp_path):
    watch = TurnWatch(tmp_path / "h")
    watch.open()
    watch.begin("t/sms/u1", "m-1")
    watch.end()
    watch.close()
    assert TurnWatch(tmp_path / "h").open() is None


def _dies_in_a_turn(path: Path, key: str, token: str, times: int) -> None:
    for _ in range(times):
        watch = TurnWatch(path)
        watch.open()
        watch.begin(key, token)  # and the process "dies" here: the slot is left as it is
        watch._slot.close()


async def test_a_host_quarantines_a_message_in_flight_at_each_of_its_deaths(tmp_path):
    key = ConversationKey("t", "sms", "u1")
    path = tmp_path / "h"
    _dies_in_a_turn(path, key.id, "u1-m0", 2)
    store = MemoryStore(clock=Clock())
    await deploy(store)
    host = Host("h", store, HostConfig(partitions=64), lambda name: _claim(), watch=TurnWatch(path, tries=2),
                clock=Clock())
    await host.start()
    try:
        [poison] = await host.deliver([Inbound(key, "u1-m0", UserMessage("m0"))])
        assert poison.status == APPLIED and poison.conversation_status == "failed" and said(poison) == []
        [replay] = await host.deliver([Inbound(key, "u1-m0", UserMessage("m0"))])
        assert replay.status == DUPLICATE
        [next_one] = await host.deliver([Inbound(key, "u1-m1", UserMessage("m1"))])
        assert next_one.status == APPLIED and next_one.conversation_status != "failed"  # starts afresh
        assert host.counts["quarantined"] == 1 and host.counts["died_in_turn"] == 1
        metrics = {name: samples for name, _, _, samples in host.export_metrics()}
        assert metrics["parlour_host_quarantined"][0][2] == 1.0
    finally:
        await host.stop()


async def _claim():
    return 1, list(range(64))


SLOW = textwrap.dedent("""\
    flow: slow
    triggers: [{keyword: [slow]}]
    start: a
    on_error: oops
    nodes:
      a:
        say: "{% set ns = namespace(c=0) %}{% for i in range(100000) %}{% set ns.c = ns.c + 1 %}{% endfor %}{{ ns.c }}"
        end: true
      oops: {say: "{{ error.message }}", end: true}
    """)
ECHO = textwrap.dedent("""\
    flow: echo
    triggers: [{default: true}]
    start: a
    nodes:
      a: {say: "you said {{ message.text }}", end: true}
    """)


@pytest.fixture(scope="module")
def ray_for_tests():
    with local_ray():
        yield


async def test_on_ray_a_stuck_turn_restarts_its_host_and_is_quarantined_while_others_are_served(tmp_path,
                                                                                             ray_for_tests):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "slow.yaml").write_text(SLOW)
    (flows / "echo.yaml").write_text(ECHO)
    config = HostConfig(watchdog_s=0.1, watchdog_period_s=0.02, poison_tries=2, watch_dir=str(tmp_path / "watch"))
    runtime = await Runtime.start(store=f"sqlite:///{tmp_path}/parlour.db", hosts=1, name=f"watch{time.time_ns()}",
                                  config=config)
    try:
        await runtime.deploy("alpha", [flows])
        await runtime.deploy("beta", [flows])
        beta = ConversationKey("beta", "sms", "b1")
        assert said(await runtime.send(Inbound(beta, "b-0", UserMessage("hello")))) == ["you said hello"]
        alpha = Inbound(ConversationKey("alpha", "sms", "a1"), "a-0", UserMessage("slow"))
        pids = []
        for _ in range(2):  # the channel retries what was not acknowledged
            pids.append((await runtime.pids())[runtime.settings.names.host(0)])
            outcome = await runtime.send(alpha)
            assert outcome.status == FAILED and outcome.retryable, outcome
            await until_ready(runtime)
        quarantined = await runtime.send(alpha)
        assert quarantined.status == APPLIED and quarantined.conversation_status == "failed"
        assert (await runtime.send(alpha)).status == DUPLICATE
        assert said(await runtime.send(Inbound(beta, "b-1", UserMessage("again")))) == ["you said again"]
        assert len({*pids, (await runtime.pids())[runtime.settings.names.host(0)]}) == 3  # two restarts
        [host] = (await runtime.metrics()).values()
        counted = {name: samples[0][2] for name, _, _, samples in host if samples}
        assert counted["parlour_host_quarantined"] == 1 and counted["parlour_host_restarts_in_a_turn"] == 1
    finally:
        await asyncio.wait_for(runtime.stop(), 60)


# ---------------------------------------------------------------- bombs beside another tenant

async def test_one_tenants_bombs_leave_another_tenants_latency_and_the_hosts_memory_as_they_were(tmp_path):
    from tests.flow.test_bounds import BOMBS, rss

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "echo.yaml").write_text(ECHO)
    for number, name in enumerate(["string", "translate", "to_bytes", "counter", "doubling lists"]):
        (flows / f"bomb{number}.yaml").write_text(textwrap.dedent(f"""\
            flow: bomb{number}
            triggers: [{{keyword: [boom{number}]}}]
            start: a
            on_error: oops
            nodes:
              a: {{say: {BOMBS[name]!r}, end: true}}
              oops: {{say: "failed: {{{{ error.message }}}}", end: true}}
            """))
    store = MemoryStore(clock=Clock())
    await deploy(store, flows, tenant="alpha")
    await deploy(store, flows, tenant="beta")
    host = Host("h", store, HostConfig(partitions=64), lambda name: _claim(), clock=Clock())
    await host.start()
    ids = iter(range(10 ** 6))

    async def beta_turn() -> float:
        started = time.perf_counter()
        key = ConversationKey("beta", "sms", f"b{next(ids)}")
        [outcome] = await host.deliver([Inbound(key, "b", UserMessage("hi"))])
        assert said(outcome) == ["you said hi"]
        return time.perf_counter() - started

    try:
        normal = max([await beta_turn() for _ in range(5)])
        before = rss()
        for number in range(5):
            for _ in range(3):
                bomb = Inbound(ConversationKey("alpha", "sms", f"a{next(ids)}"), "a", UserMessage(f"boom{number}"))
                [exploded], beside = await asyncio.gather(host.deliver([bomb]), beta_turn())
                assert said(exploded)[0].startswith("failed: ")
                assert beside < normal + 1.0
        assert rss() - before < 64 << 20
    finally:
        await host.stop()


def test_two_nodes_on_the_default_sqlite_url_in_two_folders_keep_their_watch_files_apart(tmp_path, monkeypatch):
    """The default store URL is relative (``sqlite:///.parlour/parlour.db``): the watch files
    are kept per store, so two nodes started in two folders must not count each other's deaths
    against their messages (they did: a restart test quarantined a message as poison after
    other runs had died with the same message id in flight)."""
    identities = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        identities.append(store_identity("sqlite:///.parlour/parlour.db"))
    assert identities == [f"sqlite:///{tmp_path}/one/.parlour/parlour.db",
                          f"sqlite:///{tmp_path}/two/.parlour/parlour.db"]
    assert store_identity("sqlite:////srv/p.db") == "sqlite:////srv/p.db"
    assert store_identity("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
