"""T2: resident conversations per GB of host memory on the registration flow, beside the same
flow with ``isolation: dedicated`` (one Ray actor per conversation), in the same run.

The host's RSS is read as conversations are added, each waiting at ``ask_name``; the store is
SQLite, so the store's data is not in the host. A dedicated conversation costs its own process
plus what the host keeps for it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass

from bench.harness import FLOWS, Context, Target
from parlour.actors.dedicated import DedicatedCaps
from parlour.actors.host import HostConfig
from parlour.flow import UserMessage
from parlour.messages import ConversationKey, Inbound
from parlour.runtime import Runtime

NAME = "t2"
TITLE = "T2 resident conversations per GB, shared host against isolation: dedicated"
GiB = 1 << 30
TARGET = 500_000


@dataclass(frozen=True)
class Plan:
    resident: int
    chunk: int
    dedicated: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(resident=20_000, chunk=10_000, dedicated=2)
        return cls(resident=200_000, chunk=20_000, dedicated=6)


def budget_s(quick: bool) -> float:
    return 15 if quick else 70


def key(tenant: str, user: str) -> ConversationKey:
    return ConversationKey(tenant, "bench", user)


async def host_rss(runtime: Runtime) -> int:
    """The resident memory of the runtime's one host's process."""
    (stats,) = await runtime.actors.stats()
    return stats["rss_bytes"]


async def send_all(runtime: Runtime, inbounds: list[Inbound], label: str) -> None:
    outcomes = await runtime.send_many(inbounds)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise RuntimeError(f"{label}: {len(bad)} sends failed, e.g. {bad[0]}")


async def timed(runtime: Runtime, inbound: Inbound) -> float:
    """One send, alone; milliseconds until its outcome."""
    started = time.perf_counter()
    outcome = await runtime.send(inbound)
    if not outcome.ok:
        raise RuntimeError(f"{inbound.message_id}: {outcome}")
    return (time.perf_counter() - started) * 1000


async def measure(ctx: Context, plan: Plan) -> None:
    dedicated = ctx.folder / "dedicated"
    dedicated.mkdir()
    source = (FLOWS / "registration.yaml").read_text()
    isolated = source.replace("\nstart: welcome", "\nisolation: dedicated\nstart: welcome")
    (dedicated / "registration.yaml").write_text(isolated)
    runtime = await Runtime.start(store=f"sqlite:///{ctx.folder}/resident.db", hosts=1, name="bench-t2",
                                  config=HostConfig(max_resident=10_000_000, idle_s=1e9, dedicated=DedicatedCaps(
                                      max_actors=plan.dedicated, max_per_tenant=plan.dedicated, idle_s=1e9)))
    try:
        await runtime.deploy("shared", [FLOWS / "registration.yaml"])
        await runtime.deploy("dedicated", [dedicated])

        async def walk(tenant: str, users: range) -> None:
            for step, text in (("a", "hi"), ("b", "register")):
                await send_all(runtime, [Inbound(key(tenant, f"u{i}"), f"{step}{i}", UserMessage(text)) for i in users],
                               f"{tenant} '{text}'")

        await walk("shared", range(1_000))  # the host's code paths and caches are warm before the first reading
        growth = [(0, await host_rss(runtime))]
        for start in range(1_000, 1_000 + plan.resident, plan.chunk):
            await walk("shared", range(start, start + plan.chunk))
            growth.append((start - 1_000 + plan.chunk, await host_rss(runtime)))
            ctx.log(f"resident: {growth[-1][0]:,} conversations, host RSS {growth[-1][1] / 2**20:,.0f} MiB")
        per_conversation = (growth[-1][1] - growth[0][1]) / plan.resident

        host_before = growth[-1][1]
        firsts = [await timed(runtime, Inbound(key("dedicated", f"u{i}"), f"a{i}", UserMessage("hi")))
                  for i in range(plan.dedicated)]
        await walk("dedicated", range(plan.dedicated))
        ctx.log(f"dedicated: {plan.dedicated} conversations, each in its own actor")
        dedicated_turns = [await timed(runtime, Inbound(key("dedicated", "u0"), f"t{i}", UserMessage("2")))
                           for i in range(50)]
        shared_turns = [await timed(runtime, Inbound(key("shared", "u0"), f"t{i}", UserMessage("2")))
                        for i in range(50)]
        actors = await runtime.actors.dedicated_rss()
        host_growth = await host_rss(runtime) - host_before
        per_dedicated = (sum(actors) + max(host_growth, 0)) / len(actors)
    finally:
        await runtime.stop()

    ctx.data.update(plan=asdict(plan), growth=growth, per_conversation=per_conversation, per_dedicated=per_dedicated,
                    dedicated_rss=actors)
    ctx.figure("T2", "resident conversations per GB (registration flow, shared host)", round(GiB / per_conversation),
               "per GB", anchor=round(GiB / per_dedicated, 1), anchor_name="isolation: dedicated",
               target=Target(">=", TARGET))
    ctx.figure("", "bytes per resident conversation (host RSS growth)", round(per_conversation), "B",
               anchor=round(per_dedicated), anchor_name="isolation: dedicated")
    ctx.figure("", "a turn, one at a time, p50", round(statistics.median(shared_turns), 2), "ms",
               anchor=round(statistics.median(dedicated_turns), 2), anchor_name="isolation: dedicated")
    ctx.figure("", "a dedicated conversation's first turn (its actor starts), p50", round(statistics.median(firsts), 1),
               "ms")
    ctx.note(f"resident: host RSS growth over {plan.resident:,} registration conversations waiting at ask_name, "
             f"after 1,000 to warm up; dedicated: the RSS of {len(actors)} conversation actors plus the host's growth")


def run(ctx: Context) -> None:
    ctx.shared.ray()
    asyncio.run(measure(ctx, Plan.of(ctx.quick)))


def details(data: dict) -> str:
    lines = ["| conversations | host RSS MiB | bytes per conversation so far |", "|---:|---:|---:|"]
    base = data["growth"][0][1]
    for count, rss in data["growth"]:
        lines.append(f"| {count:,} | {rss / 2**20:,.1f} | " + (f"{(rss - base) / count:,.0f}" if count else "-") + " |")
    return "\n".join(lines)


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    fig, (growth, per_gb) = plt.subplots(1, 2, figsize=(11, 4.2))
    counts = [c for c, _ in data["growth"]]
    growth.plot(counts, [rss / 2**20 for _, rss in data["growth"]], marker="o", color="#3b7dd8", label="shared host")
    growth.text(0.03, 0.95, f"isolation: dedicated costs {data['per_dedicated'] / 2**20:,.0f} MiB per conversation,\n"
                "so three would be off this chart", transform=growth.transAxes, va="top", fontsize=8, color="#d8833b")
    growth.set_ylim(0, max(rss for _, rss in data["growth"]) / 2**20 * 1.4)
    growth.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:,.0f}k")
    growth.set_xlabel("resident conversations")
    growth.set_ylabel("host RSS (MiB)")
    growth.set_title(f"memory per resident conversation: {data['per_conversation']:,.0f} B")
    growth.legend()
    growth.grid(alpha=0.3)
    per_gb.bar(["shared host", "isolation: dedicated"], [GiB / data["per_conversation"], GiB / data["per_dedicated"]],
               color=["#3b7dd8", "#d8833b"])
    per_gb.axhline(TARGET, color="grey", ls="--", label=f"target {TARGET:,}")
    per_gb.set_yscale("log")
    per_gb.set_title("resident conversations per GB (log)")
    per_gb.legend()
    fig.suptitle(f"T2: the registration flow, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
