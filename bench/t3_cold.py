"""T3: the latency of a turn on a cold conversation (its state only in Redis) against a warm
one (resident in the host), p50 and p99, one turn at a time from a driver.

Both include the Ray round trip and the Redis commit; cold turns come after the host has
passivated every conversation, so each reads its record from Redis first.
"""

from __future__ import annotations

import asyncio
import time

from bench.harness import FLOWS, Context, Target
from bench.t2_memory import key, send_all
from parlour.flow import UserMessage
from parlour.messages import Inbound
from parlour.runtime import Runtime
from tests.redis_server import RedisServer

NAME = "t3"
TITLE = "T3 turn latency, cold (state only in Redis) against warm"
TARGET_MS = 2.0


def budget_s(quick: bool) -> float:
    return 6 if quick else 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(ctx: Context, turns: int) -> dict[str, list[float]]:
    redis = RedisServer(ctx.folder / "redis", fsync="everysec").start()
    runtime = await Runtime.start(store=redis.url, hosts=1, name="bench-t3")
    try:
        await runtime.deploy("t", [FLOWS / "registration.yaml"])
        starts = [Inbound(key("t", f"u{i}"), f"hi{i}", UserMessage("hi")) for i in range(turns)]
        await send_all(runtime, starts, "start")

        async def one_at_a_time(tag: str) -> list[float]:
            latencies = []
            for i in range(turns):
                started = time.perf_counter()
                outcome = await runtime.send(Inbound(key("t", f"u{i}"), f"{tag}{i}", UserMessage("about")))
                latencies.append((time.perf_counter() - started) * 1000)
                if not outcome.ok:
                    raise RuntimeError(f"{tag}{i}: {outcome}")
            return latencies

        ctx.log(f"warm: {turns:,} turns one at a time")
        warm = await one_at_a_time("w")
        ctx.log(f"passivated {await runtime.actors.passivate():,} conversations; cold: {turns:,} turns one at a time")
        cold = await one_at_a_time("c")
        return {"warm": warm, "cold": cold}
    finally:
        await runtime.stop()
        redis.stop()


def run(ctx: Context) -> None:
    ctx.shared.ray()
    turns = 300 if ctx.quick else 2_000
    samples = asyncio.run(measure(ctx, turns))
    ctx.data["samples"] = samples
    at = {(name, q): round(percentile(values, q), 3) for name, values in samples.items() for q in (0.5, 0.99)}
    ctx.figure("T3", "cold turn p50", at["cold", 0.5], "ms", anchor=at["warm", 0.5], anchor_name="warm turn p50")
    ctx.figure("T3", "cold turn p99", at["cold", 0.99], "ms", anchor=at["warm", 0.99], anchor_name="warm turn p99")
    ctx.figure("T3", "cold minus warm, p50", round(at["cold", 0.5] - at["warm", 0.5], 3), "ms",
               target=Target("<=", TARGET_MS))
    ctx.figure("T3", "cold minus warm, p99", round(at["cold", 0.99] - at["warm", 0.99], 3), "ms")
    ctx.note(f"{turns:,} registration conversations at the main menu, text 'about', one turn at a time from the "
             "driver through the dispatcher; Redis with AOF appendfsync everysec")


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    samples = data["samples"]
    for name, color in (("warm", "#3b7dd8"), ("cold", "#d8833b")):
        values = sorted(samples[name])
        ax.plot(values, [i / len(values) for i in range(len(values))], color=color, label=name)
    both = sorted(samples["warm"] + samples["cold"])
    ax.set_xlim(0, both[int(0.995 * (len(both) - 1))])  # the slowest 0.5 % would flatten the rest
    ax.set_xlabel("ms per turn (driver round trip), up to p99.5")
    ax.set_ylabel("share of turns")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"T3: turn latency, warm vs cold (CDF), {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
