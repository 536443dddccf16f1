"""H1: turns per second through one host on a real local Ray, with batches arriving from a
driver, memory store and Redis store; beside it, the same host called in this process (no Ray,
no dispatcher), and a node server's own path: each message sent alone, as its gateway does,
many at once, in-process. The target (issue 3) is 50,000 turns/s with the memory store.

Turns: registration conversations at the main menu, text ``about`` (a text and the menu again:
two replies, two outbox entries and a dedup entry per turn). From a driver: batches of 500
built beforehand, two in flight; through the dispatcher: all sends of a round at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from bench.harness import FLOWS, Context, Target
from bench.processes import Profiler
from bench.t2_memory import key, send_all
from parlour.actors.host import Host, HostConfig
from parlour.flow import UserMessage, load_flow
from parlour.messages import Inbound
from parlour.runtime import Runtime
from parlour.store import FlowRecord
from parlour.store.memory import MemoryStore
from parlour.wire import decode_outcomes, encode_batch
from tests.redis_server import RedisServer

NAME = "host"
TITLE = "H1 turns per second through one host, against the same host without Ray"
TARGET = 50_000
BATCH = 500


@dataclass(frozen=True)
class Plan:
    conversations: int
    rounds: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        return cls(conversations=3_000, rounds=2) if quick else cls(conversations=10_000, rounds=4)


def budget_s(quick: bool) -> float:
    return 10 if quick else 40


def rounds(plan: Plan, tag: str = "r") -> list[list[Inbound]]:
    return [[Inbound(key("t", f"u{i}"), f"{tag}{r}-{i}", UserMessage("about")) for i in range(plan.conversations)]
            for r in range(plan.rounds)]


def starts(plan: Plan) -> list[Inbound]:
    return [Inbound(key("t", f"u{i}"), f"hi{i}", UserMessage("hi")) for i in range(plan.conversations)]


async def through_ray(store: str, name: str, plan: Plan, ctx: Context) -> tuple[float, float]:
    """(batches straight to the host, the same turns through the dispatcher), turns/s."""
    runtime = await Runtime.start(store=store, hosts=1, name=name)
    try:
        await runtime.deploy("t", [FLOWS / "registration.yaml"])
        await send_all(runtime, starts(plan), f"{name} start")
        host = next(iter(runtime.actors.hosts))
        batches = [encode_batch(batch[at:at + BATCH]) for batch in rounds(plan, "d")
                   for at in range(0, len(batch), BATCH)]
        two = asyncio.Semaphore(2)

        async def deliver(data: bytes) -> int:
            async with two:
                outcomes = decode_outcomes(await runtime.actors.deliver_packed(host, data))
                return sum(o.status == "applied" for o in outcomes)

        pid = (await runtime.actors.pids())[host]
        profiler = (Profiler({name: pid}, ctx.folder, ctx.artifacts("profile"))
                    if ctx.profile else None)
        started = time.perf_counter()
        applied = sum(await asyncio.gather(*(deliver(data) for data in batches)))
        direct = applied / (time.perf_counter() - started)
        if profiler is not None:
            ctx.data.setdefault("profiles", {}).update(profiler.finish())
        started = time.perf_counter()
        for batch in rounds(plan):
            await send_all(runtime, batch, f"{name} dispatcher")
        dispatched = plan.conversations * plan.rounds / (time.perf_counter() - started)
        ctx.log(f"{name}: {direct:,.0f} turns/s from a driver, {dispatched:,.0f} through the dispatcher")
        return direct, dispatched
    finally:
        await runtime.stop()


@asynccontextmanager
async def started_host(name: str, plan: Plan) -> AsyncIterator[Host]:
    """A host in this process on a memory store, owning every partition, with every
    conversation of ``plan`` started."""
    store = MemoryStore()
    flow = load_flow(FLOWS / "registration.yaml")
    await store.put_flow(FlowRecord("t", flow.id, flow.version, flow.source, flow.path, 1.0, True))

    async def claim(name):
        return 1, list(range(1024))

    host = Host(name, store, HostConfig(), claim)
    await host.start()
    try:
        first = starts(plan)
        for at in range(0, len(first), BATCH):
            await host.deliver(first[at:at + BATCH])
        yield host
    finally:
        await host.stop()


async def in_process(plan: Plan) -> float:
    async with started_host("in-process", plan) as host:
        started = time.perf_counter()
        for batch in rounds(plan):
            for at in range(0, len(batch), BATCH):
                await host.deliver(batch[at:at + BATCH])
        return plan.conversations * plan.rounds / (time.perf_counter() - started)


async def node_path(plan: Plan, concurrency: int = 64) -> float:
    """A node server's own path without HTTP: each message sent alone, as the gateway sends
    it (``NodeBackend.send`` -> ``Host.deliver([message])``), ``concurrency`` at a time, so that
    the host's group commit gathers them; memory store."""
    async with started_host("node-path", plan) as host:
        todo = iter([message for batch in rounds(plan, "n") for message in batch])

        async def sender() -> None:
            for message in todo:
                await host.deliver([message])

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return plan.conversations * plan.rounds / (time.perf_counter() - started)


async def measure(ctx: Context, plan: Plan) -> dict:
    rates = {"in_process": await in_process(plan)}
    ctx.log(f"in-process host: {rates['in_process']:,.0f} turns/s")
    rates["node_path"] = await node_path(plan)
    ctx.log(f"a node server's path, one message per call, no HTTP: {rates['node_path']:,.0f} turns/s")
    rates["memory"], rates["memory_dispatcher"] = await through_ray("memory://", "bench-h1-memory", plan, ctx)
    redis = RedisServer(ctx.folder / "redis", fsync="everysec").start()
    try:
        rates["redis"], rates["redis_dispatcher"] = await through_ray(redis.url, "bench-h1-redis", plan, ctx)
    finally:
        redis.stop()
    return rates


def run(ctx: Context) -> None:
    ctx.shared.ray()
    plan = Plan.of(ctx.quick)
    rates = {k: round(v) for k, v in asyncio.run(measure(ctx, plan)).items()}
    ctx.data.update(plan=asdict(plan), rates=rates)
    anchor = {"anchor": rates["in_process"], "anchor_name": "the same host in-process, memory store"}
    ctx.figure("H1", "turns/s through one host, memory store, batches from a driver", rates["memory"], "turns/s",
               target=Target(">=", TARGET), **anchor)
    ctx.figure("H1", "a node server's own path: one message per call, 64 at once, in-process, no HTTP",
               rates["node_path"], "turns/s", **anchor)
    ctx.figure("H1", "the same through the dispatcher (wave 1's gateway path)", rates["memory_dispatcher"], "turns/s",
               **anchor)
    ctx.figure("H1", "turns/s through one host, Redis store, batches from a driver", rates["redis"], "turns/s",
               **anchor)
    ctx.figure("H1", "the same through the dispatcher", rates["redis_dispatcher"], "turns/s", **anchor)
    ctx.note(f"{plan.conversations:,} registration conversations at the main menu, {plan.rounds} rounds of 'about'; "
             f"from a driver: batches of {BATCH} built beforehand, two in flight; through the dispatcher: all sends "
             "of a round at once; Redis with AOF appendfsync everysec")


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    rates = data["rates"]
    names = ["in_process", "node_path", "memory", "memory_dispatcher", "redis", "redis_dispatcher"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = [n for n in names if n in rates]  # runs from before the node path have none
    bars = ax.bar([n.replace("_dispatcher", "\n+dispatcher").replace("in_process", "in-process\n(anchor)")
                   .replace("node_path", "node server\npath") for n in names],
                  [rates[n] for n in names], color=["#777777"] + ["#3b7dd8"] * (len(names) - 1))
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.axhline(TARGET, color="grey", ls="--", label=f"target {TARGET:,} (memory store)")
    ax.set_ylabel("turns per second")
    ax.set_title(f"H1: turns per second through one host, {result['date']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
