"""Benchmarks of the conversation host on a real local Ray (issue 3's figures).

    python -m bench.host                  # about 4 minutes; bench/results/host-<time>.{json,md,png}
    python -m bench.host --quick          # under a minute, for a smoke run
    python -m bench.host --only resident  # one scenario: resident, throughput or cold

- **resident** (T2): resident conversations per GB of host memory on the registration flow:
  the host's RSS growth over N conversations, each waiting at ``ask_name``; beside it, the
  same flow with ``isolation: dedicated`` (one Ray actor per conversation), in the same run.
- **throughput**: turns per second through one host, with batches arriving from a driver
  (the dispatcher), memory store and Redis store; beside it, the same host without Ray.
- **cold** (T3): one turn at a time on a conversation that is resident (warm) and on one
  whose state is only in Redis (cold: the host has passivated it), p50 and p99.

Figures on a shared machine are noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ray
from parlour import __version__
from parlour.actors.host import Host, HostConfig
from parlour.flow import UserMessage, load_flow
from parlour.messages import ConversationKey, Inbound
from parlour.runtime import Runtime
from parlour.store import FlowRecord
from parlour.store.memory import MemoryStore
from parlour.wire import decode_outcomes, encode_batch

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
RESULTS = Path(__file__).resolve().parent / "results"
GiB = 1 << 30
TARGETS = {"resident_per_gb": 500_000, "turns_per_s_memory": 50_000, "cold_extra_p50_ms": 2.0}


@dataclass
class Sizes:
    resident: int = 200_000
    dedicated: int = 6
    conversations: int = 10_000
    rounds: int = 4
    latency: int = 2_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(resident=20_000, dedicated=2, conversations=4_000, rounds=2, latency=300)


@dataclass
class Report:
    figures: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def progress(text: str) -> None:
    print(f"  {datetime.now():%H:%M:%S} {text}", flush=True)


def key(tenant: str, user: str) -> ConversationKey:
    return ConversationKey(tenant, "bench", user)


async def send_all(runtime: Runtime, inbounds: list[Inbound], label: str, chunk: int = 20_000) -> None:
    """Send in chunks of concurrent sends (bounded driver memory), with progress."""
    for start in range(0, len(inbounds), chunk):
        outcomes = await runtime.send_many(inbounds[start:start + chunk])
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise RuntimeError(f"{label}: {len(bad)} sends failed, e.g. {bad[0]}")
        progress(f"{label}: {min(start + chunk, len(inbounds)):,}/{len(inbounds):,}")


# ---------------------------------------------------------------- resident conversations per GB


async def timed(runtime: Runtime, inbound: Inbound) -> float:
    """One send, alone; milliseconds until its outcome."""
    started = time.perf_counter()
    outcome = await runtime.send(inbound)
    if not outcome.ok:
        raise RuntimeError(f"{inbound.message_id}: {outcome}")
    return (time.perf_counter() - started) * 1000


async def resident(sizes: Sizes, report: Report, folder: Path) -> None:
    dedicated = folder / "dedicated"
    dedicated.mkdir()
    source = (FLOWS / "registration.yaml").read_text()
    (dedicated / "registration.yaml").write_text(source.replace("\nstart: welcome", "\nisolation: dedicated\nstart: welcome"))
    runtime = await Runtime.start(store=f"sqlite:///{folder}/resident.db", hosts=1, name="bench-resident",
                                  config=HostConfig(max_resident=10_000_000, idle_s=1e9))
    try:
        await runtime.deploy("shared", [FLOWS / "registration.yaml"])
        await runtime.deploy("dedicated", [dedicated])
        host = next(iter(runtime.hosts.values()))

        async def walk(tenant: str, users: range, label: str) -> None:
            for step, text in (("a", "hi"), ("b", "register")):
                await send_all(runtime, [Inbound(key(tenant, f"u{i}"), f"{step}{i}", UserMessage(text)) for i in users],
                               f"{label} '{text}'")

        await walk("shared", range(1_000), "warm-up")
        before = (await host.stats.remote())["rss_bytes"]
        await walk("shared", range(1_000, 1_000 + sizes.resident), "resident")
        after = await host.stats.remote()
        per_conversation = (after["rss_bytes"] - before) / sizes.resident
        report.figures["resident_bytes_per_conversation"] = round(per_conversation)
        report.figures["resident_per_gb"] = round(GiB / per_conversation)
        report.figures["resident_conversations"] = after["resident"]

        host_before = after["rss_bytes"]
        firsts = [await timed(runtime, Inbound(key("dedicated", f"u{i}"), f"a{i}", UserMessage("hi")))
                  for i in range(sizes.dedicated)]
        await walk("dedicated", range(sizes.dedicated), "dedicated")
        dedicated_turns = [await timed(runtime, Inbound(key("dedicated", "u0"), f"t{i}", UserMessage("2")))
                           for i in range(50)]
        shared_turns = [await timed(runtime, Inbound(key("shared", "u0"), f"t{i}", UserMessage("2")))
                        for i in range(50)]
        report.figures["dedicated_first_turn_ms"] = round(statistics.median(firsts), 1)
        report.figures["dedicated_turn_p50_ms"] = round(statistics.median(dedicated_turns), 2)
        report.figures["shared_turn_p50_ms"] = round(statistics.median(shared_turns), 2)
        actors = await host.dedicated_rss.remote()
        host_growth = (await host.stats.remote())["rss_bytes"] - host_before
        per_dedicated = (sum(actors) + max(host_growth, 0)) / len(actors)
        report.figures["dedicated_bytes_per_conversation"] = round(per_dedicated)
        report.figures["dedicated_per_gb"] = round(GiB / per_dedicated, 1)
        report.figures["dedicated_conversations"] = len(actors)
        report.notes.append(
            f"resident: host RSS growth over {sizes.resident:,} registration conversations waiting at ask_name "
            f"(SQLite store, so the store's data is not in the host); dedicated: the RSS of {len(actors)} "
            "conversation actors plus the host's growth")
    finally:
        await runtime.stop()


# ---------------------------------------------------------------- turns per second


def about_rounds(tenant: str, conversations: int, rounds: int, tag: str = "r") -> list[list[Inbound]]:
    return [[Inbound(key(tenant, f"u{i}"), f"{tag}{r}-{i}", UserMessage("about")) for i in range(conversations)]
            for r in range(rounds)]


async def through_runtime(store: str, name: str, sizes: Sizes) -> tuple[float, float]:
    """Turns/s through one host: batches built by the driver and sent straight to the host
    (two in flight), then the same load through the dispatcher, the gateway's path."""
    runtime = await Runtime.start(store=store, hosts=1, name=name)
    try:
        await runtime.deploy("t", [FLOWS / "registration.yaml"])
        await send_all(runtime, [Inbound(key("t", f"u{i}"), f"hi{i}", UserMessage("hi")) for i in range(sizes.conversations)],
                       f"{name} start")
        host = next(iter(runtime.hosts.values()))
        batches = [encode_batch(batch[at:at + 500]) for batch in about_rounds("t", sizes.conversations, sizes.rounds, "d")
                   for at in range(0, len(batch), 500)]
        two = asyncio.Semaphore(2)

        async def deliver(data: bytes) -> int:
            async with two:
                return sum(o.status == "applied" for o in decode_outcomes(await host.deliver.remote(data)))

        progress(f"{name}: {len(batches)} batches of 500 straight to the host")
        started = time.perf_counter()
        applied = sum(await asyncio.gather(*(deliver(data) for data in batches)))
        direct = applied / (time.perf_counter() - started)
        rounds = about_rounds("t", sizes.conversations, sizes.rounds)
        started = time.perf_counter()
        for n, batch in enumerate(rounds):
            await send_all(runtime, batch, f"{name} dispatcher round {n + 1}/{len(rounds)}")
        return direct, sizes.conversations * sizes.rounds / (time.perf_counter() - started)
    finally:
        await runtime.stop()


async def in_process(sizes: Sizes) -> float:
    """The same turns through a Host in this process: no Ray, no dispatcher."""
    store = MemoryStore()
    flow = load_flow(FLOWS / "registration.yaml")
    await store.put_flow(FlowRecord("t", flow.id, flow.version, flow.source, flow.path, 1.0, True))

    async def claim(name):
        return 1, list(range(1024))

    host = Host("in-process", store, HostConfig(), claim)
    await host.start()
    starts = [Inbound(key("t", f"u{i}"), f"hi{i}", UserMessage("hi")) for i in range(sizes.conversations)]
    for at in range(0, len(starts), 500):
        await host.deliver(starts[at:at + 500])
    rounds = about_rounds("t", sizes.conversations, sizes.rounds)
    started = time.perf_counter()
    for batch in rounds:
        for at in range(0, len(batch), 500):
            await host.deliver(batch[at:at + 500])
    rate = sizes.conversations * sizes.rounds / (time.perf_counter() - started)
    await host.stop()
    return rate


async def throughput(sizes: Sizes, report: Report, folder: Path) -> None:
    progress("in-process host (no Ray)")
    report.figures["turns_per_s_in_process"] = round(await in_process(sizes))
    direct, dispatched = await through_runtime("memory://", "bench-memory", sizes)
    report.figures["turns_per_s_memory"] = round(direct)
    report.figures["turns_per_s_memory_dispatcher"] = round(dispatched)
    redis = RedisServer(folder / "redis-throughput", fsync="everysec").start()
    try:
        direct, dispatched = await through_runtime(redis.url, "bench-redis", sizes)
        report.figures["turns_per_s_redis"] = round(direct)
        report.figures["turns_per_s_redis_dispatcher"] = round(dispatched)
    finally:
        redis.stop()
    report.notes.append(
        f"throughput: {sizes.conversations:,} registration conversations at the main menu, {sizes.rounds} rounds "
        "of 'about' (a text and the menu again: two replies, two outbox entries, a dedup entry per turn); "
        "from a driver: batches of 500 built beforehand, two in flight; through the dispatcher: all sends of a "
        "round at once; Redis with AOF appendfsync everysec")


# ---------------------------------------------------------------- cold against warm


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def cold(sizes: Sizes, report: Report, folder: Path) -> None:
    redis = RedisServer(folder / "redis-cold", fsync="everysec").start()
    runtime = await Runtime.start(store=redis.url, hosts=1, name="bench-cold")
    try:
        await runtime.deploy("t", [FLOWS / "registration.yaml"])
        await send_all(runtime, [Inbound(key("t", f"u{i}"), f"hi{i}", UserMessage("hi")) for i in range(sizes.latency)],
                       "cold start")
        host = next(iter(runtime.hosts.values()))

        async def one_at_a_time(round_: str) -> list[float]:
            latencies = []
            for i in range(sizes.latency):
                inbound = Inbound(key("t", f"u{i}"), f"{round_}{i}", UserMessage("about"))
                started = time.perf_counter()
                outcome = await runtime.send(inbound)
                latencies.append((time.perf_counter() - started) * 1000)
                assert outcome.ok, outcome
            return latencies

        progress("warm turns, one at a time")
        warm = await one_at_a_time("w")
        progress(f"passivated {await host.passivate.remote():,} conversations; cold turns, one at a time")
        cold_ = await one_at_a_time("c")
        for name, values in (("warm", warm), ("cold", cold_)):
            report.figures[f"{name}_p50_ms"] = round(percentile(values, 0.5), 3)
            report.figures[f"{name}_p99_ms"] = round(percentile(values, 0.99), 3)
        report.figures["cold_extra_p50_ms"] = round(report.figures["cold_p50_ms"] - report.figures["warm_p50_ms"], 3)
        report.figures["cold_extra_p99_ms"] = round(report.figures["cold_p99_ms"] - report.figures["warm_p99_ms"], 3)
        report.figures["latency_samples"] = {"warm": warm, "cold": cold_}
        report.notes.append(
            f"cold: {sizes.latency:,} turns one at a time from the driver (Ray round trip and Redis commit "
            "included in both); cold = the host passivated every conversation first, so each turn reads its record from Redis")
    finally:
        await runtime.stop()
        redis.stop()


# ---------------------------------------------------------------- report


SCENARIOS = {"resident": resident, "throughput": throughput, "cold": cold}


def table(figures: dict) -> str:
    rows = [
        ("T2 resident conversations per GB (registration, shared host)", "resident_per_gb", ">= 500,000"),
        ("  same flow, isolation: dedicated", "dedicated_per_gb", "(anchor)"),
        ("  bytes per resident conversation (host RSS growth)", "resident_bytes_per_conversation", ""),
        ("  bytes per dedicated conversation (its process)", "dedicated_bytes_per_conversation", ""),
        ("  dedicated: first turn (the actor starts) p50 (ms)", "dedicated_first_turn_ms", ""),
        ("  a turn, one at a time, dedicated / shared host p50 (ms)", ("dedicated_turn_p50_ms", "shared_turn_p50_ms"), ""),
        ("turns/s through one host, memory store: batches of 500 from a driver", "turns_per_s_memory", ">= 50,000"),
        ("turns/s through one host, Redis store: batches of 500 from a driver", "turns_per_s_redis", ""),
        ("  the same through the dispatcher (the gateway's path), memory / Redis",
         ("turns_per_s_memory_dispatcher", "turns_per_s_redis_dispatcher"), ""),
        ("turns/s, the same host in-process (no Ray)", "turns_per_s_in_process", "(anchor)"),
        ("T3 warm turn p50 / p99 (ms)", ("warm_p50_ms", "warm_p99_ms"), ""),
        ("T3 cold turn p50 / p99 (ms), state only in Redis", ("cold_p50_ms", "cold_p99_ms"), ""),
        ("T3 cold minus warm, p50 / p99 (ms)", ("cold_extra_p50_ms", "cold_extra_p99_ms"), "p50 <= 2 ms"),
    ]
    lines = ["| figure | measured | target | met |", "|---|---:|---|---|"]
    for label, name, target in rows:
        names = name if isinstance(name, tuple) else (name,)
        if not all(n in figures for n in names):
            continue
        value = " / ".join(f"{figures[n]:,}" for n in names)
        met = ""
        if names[0] in TARGETS:
            goal = TARGETS[names[0]]
            ok = figures[names[0]] <= goal if names[0].startswith("cold") else figures[names[0]] >= goal
            met = "yes" if ok else "**missed**"
        lines.append(f"| {label} | {value} | {target} | {met} |")
    return "\n".join(lines)


def plot(figures: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("resident", "throughput", "cold") if _has(figures, p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "resident":
            ax.bar(["shared host", "dedicated actor"], [figures["resident_per_gb"], figures["dedicated_per_gb"]],
                   color=["#3b7dd8", "#d8833b"])
            ax.set_yscale("log")
            ax.axhline(TARGETS["resident_per_gb"], color="grey", ls="--", label="target 500k")
            ax.set_title("resident conversations per GB (log)")
        elif panel == "throughput":
            names = [n for n in ("turns_per_s_in_process", "turns_per_s_memory", "turns_per_s_memory_dispatcher",
                                 "turns_per_s_redis", "turns_per_s_redis_dispatcher") if n in figures]
            ax.bar([n.removeprefix("turns_per_s_").replace("_dispatcher", "\n+dispatcher") for n in names],
                   [figures[n] for n in names], color="#3b7dd8")
            ax.axhline(TARGETS["turns_per_s_memory"], color="grey", ls="--", label="target 50k (memory)")
            ax.set_title("turns per second, one host")
        else:
            samples = figures["latency_samples"]
            for name, color in (("warm", "#3b7dd8"), ("cold", "#d8833b")):
                values = sorted(samples[name])
                ax.plot(values, [i / len(values) for i in range(len(values))], color=color, label=name)
            both = sorted(samples["warm"] + samples["cold"])
            ax.set_xlim(0, both[int(0.995 * (len(both) - 1))])  # the slowest 0.5 % would flatten the rest
            ax.set_xlabel("ms per turn (driver round trip), up to p99.5")
            ax.set_title("turn latency, warm vs cold (CDF)")
        ax.legend()
    fig.suptitle(f"parlour {__version__} host benchmark, {platform.node()}, {datetime.now(UTC):%Y-%m-%d}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _has(figures: dict, panel: str) -> bool:
    return {"resident": "resident_per_gb", "throughput": "turns_per_s_memory", "cold": "latency_samples"}[panel] in figures


async def run(names: list[str], sizes: Sizes) -> Report:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="parlour-bench-") as folder:
        for index, name in enumerate(names, 1):
            print(f"[{index}/{len(names)}] {name}", flush=True)
            scenario_folder = Path(folder) / name
            scenario_folder.mkdir()
            await SCENARIOS[name](sizes, report, scenario_folder)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario")
    parser.add_argument("--plot", metavar="JSON", help="draw the plot of an earlier run again, and stop")
    args = parser.parse_args(argv)
    if args.plot:
        plot(json.loads(Path(args.plot).read_text())["figures"], Path(args.plot).with_suffix(".png"))
        return 0
    sizes = Sizes.quick() if args.quick else Sizes()
    names = args.only or list(SCENARIOS)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="parlour")
    try:
        report = asyncio.run(run(names, sizes))
    finally:
        ray.shutdown()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / f"host-{stamp}{'-quick' if args.quick else ''}"
    machine = {"node": platform.node(), "python": platform.python_version(), "ray": ray.__version__,
               "cpus": __import__("os").cpu_count(), "parlour": __version__}
    base.with_suffix(".json").write_text(json.dumps(
        {"when": stamp, "machine": machine, "sizes": sizes.__dict__, "targets": TARGETS, "figures": report.figures,
         "notes": report.notes}, indent=1))
    markdown = "\n".join([table(report.figures), "", *[f"- {n}" for n in report.notes]])
    base.with_suffix(".md").write_text(markdown + "\n")
    plot(report.figures, base.with_suffix(".png"))
    print(markdown)
    print(f"\nwrote {base}.json, .md and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
