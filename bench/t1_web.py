"""T1: web-channel turns per second end to end (gateway, host, store commit, reply), beside a
bare aiohttp handler loaded the same way in the same run.

wrk (``-t1``, closed loop, ``bench/wrk/turns.lua``) offers increasing load, as connections, until
the throughput stops growing. Every request is a new message of one of a few thousand users at
the registration flow's main menu; its text, ``about``, makes each turn say a text and the menu
again (two replies and a dedup id committed per turn). A warm-up starts each conversation first.
The CPU each process used is recorded per point, since the two cores are shared.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import asdict, dataclass, field

from bench.harness import BENCH, Context, Target
from bench.processes import CpuMeter, Node, Profiler, Server, bare_server

NAME = "t1"
TITLE = "T1 web-channel turns per second, end to end, against a bare aiohttp handler"
LUA = BENCH / "wrk" / "turns.lua"
PATH = "/v1/demo/web/messages"
TEXT = "about"
RATIO, P99_MS = 0.5, 50.0


@dataclass(frozen=True)
class Plan:
    ladder: tuple[int, ...]
    seconds: int
    users: int
    bare_twice: bool  # before and after parlour: the machine is shared, the anchor may drift
    profile_at: int = 64

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(ladder=(32,), seconds=3, users=300, bare_twice=False, profile_at=32)
        return cls(ladder=(1, 4, 16, 32, 64, 128, 256), seconds=8, users=2_000, bare_twice=True)


def budget_s(quick: bool) -> float:
    return 45 if quick else 520


@dataclass
class Point:
    system: str  # "bare", "parlour" (node servers) or "split" (wave 1's shape: bench/split.py)
    store: str  # "-" for bare
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict
    cpu_cores: dict = field(default_factory=dict)
    round: int = 1


def wrk(url: str, connections: int, seconds: float, run: str, users: int) -> dict:
    """One wrk run; the figures its Lua ``done`` hook printed."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(LUA),
            url, "--", run, str(users), TEXT]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(line.removeprefix("WRK-RESULT "))


async def first_messages(url: str, users: int, run: str, concurrency: int = 64) -> int:
    """Each user's first message (wrk cannot stop after N requests); the number that failed."""
    import aiohttp

    failed, todo = 0, iter(range(users))

    async def one_by_one(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for i in todo:
            async with session.post(url, json={"user": f"t1-u{i}", "id": f"{run}-{i}", "text": TEXT}) as answer:
                await answer.read()
                failed += not 200 <= answer.status < 300

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(one_by_one(session) for _ in range(concurrency)))
    return failed


class Load:
    def __init__(self, ctx: Context, plan: Plan):
        self.ctx, self.plan = ctx, plan
        self.stamp = f"{time.time():.0f}"
        self.points: list[Point] = []
        self.profiles: dict[str, dict] = {}

    def point(self, server: Server, redis, system: str, store: str, connections: int, round_: int) -> Point:
        run = f"{self.stamp}-{system}-{store}-{round_}-c{connections}"
        with CpuMeter(server, redis) as meter:
            f = wrk(server.base + PATH, connections, self.plan.seconds, run, self.plan.users)
        latency, seconds = f["latency_us"], f["duration_us"] / 1e6
        errors = f["non2xx"] + f["duplicates"] + sum(v for k, v in f["errors"].items() if k != "status")
        got = Point(system, store, connections, round(seconds, 2), f["requests"], round(f["requests"] / seconds, 1),
                    latency["p50"] / 1e3, latency["p90"] / 1e3, latency["p99"] / 1e3, latency["max"] / 1e3,
                    errors, f["statuses"], meter.cores, round_)
        self.points.append(got)
        self.ctx.log(f"{system:7} {store:6} c={connections:<3} {got.rps:8,.0f} req/s  p50 {got.p50_ms:6.2f} ms  "
                     f"p99 {got.p99_ms:7.2f} ms" + (f"  {errors} ERRORS {f['statuses']}" if errors else ""))
        time.sleep(1.0)  # what is still in flight drains
        return got

    def ladder(self, server: Server, redis, system: str, store: str, round_: int = 1, stop_at_saturation: bool = True):
        """Up the ladder; stop once two steps in a row add less than 5 % to the best so far."""
        best, flat = 0.0, 0
        for connections in self.plan.ladder:
            rps = self.point(server, redis, system, store, connections, round_).rps
            flat = flat + 1 if rps < 1.05 * best else 0
            best = max(best, rps)
            if stop_at_saturation and flat == 2:
                self.ctx.log(f"{system} {store}: saturated at {best:,.0f} req/s")
                return

    def warm_up(self, server: Server, label: str) -> None:
        failed = asyncio.run(first_messages(server.base + PATH, self.plan.users, f"{self.stamp}-{label}-warm"))
        if failed:
            raise RuntimeError(f"{label}: {failed} of {self.plan.users} first messages failed")

    def bare(self, round_: int) -> None:
        server = bare_server(self.ctx.folder, self.ctx.log).start()
        try:
            self.warm_up(server, "bare")
            self.ladder(server, None, "bare", "-", round_, stop_at_saturation=False)
        finally:
            server.stop()

    def parlour(self, store: str, keep: bool, shape: str = "node") -> None:
        system = "parlour" if shape == "node" else "split"
        node = Node(self.ctx.folder / f"{shape}-{store}", store, self.ctx.log, shape).start()
        try:
            self.warm_up(node.server, f"{shape}-{store}")
            self.ladder(node.server, node.redis, system, store)
            if self.ctx.profile:
                self.profile(node, f"{shape}-{store}")
        except BaseException:
            node.close()
            raise
        if keep:
            self.ctx.shared.keep("node-redis", node)
        elif (code := node.close()) != 0:
            raise RuntimeError(f"{system} on {store} exited with {code} after SIGTERM:\n{node.server.tail(15)}")

    def profile(self, node: Node, store: str) -> None:
        """py-spy on the gateway (wave 1's shape) and the processes that run turns, during an
        extra point kept out of the figures."""
        seconds = max(self.plan.seconds, 10)
        pids = {f"{store}-host{i}": p for i, p in enumerate(node.host_pids())}
        if node.shape == "split":
            pids[f"{store}-gateway"] = node.server.pid
        self.ctx.log(f"profiling {', '.join(pids)} for {seconds} s at {self.plan.profile_at} connections")
        profiler = Profiler(pids, self.ctx.folder, self.ctx.artifacts("profile"))
        wrk(node.server.base + PATH, self.plan.profile_at, seconds, f"{self.stamp}-profile-{store}", self.plan.users)
        self.profiles.update(profiler.finish())


def run(ctx: Context) -> None:
    plan = Plan.of(ctx.quick)
    ctx.shared.no_ray()
    load = Load(ctx, plan)
    load.bare(1)
    load.parlour("sqlite", keep=False, shape="split")
    load.parlour("sqlite", keep=False)
    if plan.bare_twice:
        load.bare(2)
    load.parlour("redis", keep=False, shape="split")
    load.parlour("redis", keep=True)
    ctx.data.update(plan=asdict(plan), points=[asdict(p) for p in load.points], profiles=load.profiles)
    figures(ctx, ctx.data["points"])
    ctx.note(f"wrk -t1, closed loop, {plan.seconds} s per point: the offered load is the number of connections, "
             "and latency is measured from a request's send on a busy connection (coordinated omission: "
             "queueing before the send is not seen)")
    ctx.note(f"each request a new message id of one of {plan.users:,} users at the registration menu, text "
             f"'{TEXT}'; parlour serve with its defaults (a node server per core, max_batch 500), no rate limit, "
             "log level warning; 'split' is wave 1's shape (the gateway in its own process, one host actor behind "
             "it: bench/split.py), measured in the same run as the before; "
             "SQLite WAL with synchronous=FULL, Redis with AOF appendfsync everysec")
    ctx.note("bare: " + ("measured before and after parlour; at each load the faster round is the anchor"
                         if plan.bare_twice else "measured once"))


def anchors(points: list[dict]) -> dict[int, dict]:
    """The bare point at each load: the fastest of its rounds (the stricter anchor)."""
    best: dict[int, dict] = {}
    for p in points:
        if p["system"] == "bare" and (p["connections"] not in best or p["rps"] > best[p["connections"]]["rps"]):
            best[p["connections"]] = p
    return best


def figures(ctx: Context, points: list[dict]) -> None:
    bare = anchors(points)
    bare_peak = max(bare.values(), key=lambda p: p["rps"])
    for store in ("sqlite", "redis"):
        before = [p for p in points if p["system"] == "split" and p["store"] == store]
        if before:
            peak = max(before, key=lambda p: p["rps"])
            ctx.figure("T1", f"{store}, before (wave 1's shape): turns/s at saturation ({peak['connections']} "
                             "connections)", peak["rps"], "req/s", anchor=bare_peak["rps"],
                       anchor_name=f"bare at saturation, {bare_peak['connections']} connections")
        mine = [p for p in points if p["system"] == "parlour" and p["store"] == store]
        if not mine:
            continue
        peak = max(mine, key=lambda p: p["rps"])
        ctx.figure("T1", f"{store}: turns/s at saturation ({peak['connections']} connections)", peak["rps"], "req/s",
                   anchor=bare_peak["rps"], anchor_name=f"bare at saturation, {bare_peak['connections']} connections",
                   target=Target(">=", RATIO, on="ratio"))
        ctx.figure("T1", f"{store}: p99 at saturation", peak["p99_ms"], "ms",
                   anchor=bare[peak["connections"]]["p99_ms"], anchor_name="bare, same load",
                   target=Target("<=", P99_MS))
        fast = [p for p in mine if p["p99_ms"] <= P99_MS and not p["errors"]]
        if fast:
            best = max(fast, key=lambda p: p["rps"] / bare[p["connections"]]["rps"])
            ctx.figure("T1", f"{store}: turns/s at the best load with p99 <= {P99_MS:g} ms "
                             f"({best['connections']} connections)", best["rps"], "req/s",
                       anchor=bare[best["connections"]]["rps"], anchor_name="bare, same load",
                       target=Target(">=", RATIO, on="ratio"))
        errors = sum(p["errors"] for p in mine)
        ctx.figure("T1", f"{store}: requests not answered 2xx or answered as duplicates", errors, "",
                   target=Target("<=", 0))


def cpu_ms(p: dict) -> float:
    """Server-side CPU milliseconds per request: all but the client and other programs."""
    cores = sum(p["cpu_cores"].get(k, 0) for k in ("server", "node_server", "host_actor", "ray_other", "redis"))
    return cores / p["rps"] * 1000 if p["rps"] else float("nan")


def details(data: dict) -> str:
    points, bare = data["points"], anchors(data["points"])
    lines = [("| shape | store | connections | bare req/s | parlour req/s | ratio | p50 ms | p99 ms | bare p99 ms | "
             "server CPU ms/req bare / parlour | of which: driver or gateway / node servers / host actor / Ray's "
             "others / redis | other programs (cores) | errors |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        if p["system"] == "bare":
            continue
        b = bare.get(p["connections"])
        split = " / ".join(f"{per_request_ms(p, part):.2f}" for part in ("server", "node_server", "host_actor",
                                                                         "ray_other", "redis"))
        lines.append(f"| {'node servers' if p['system'] == 'parlour' else 'wave 1 (split)'} | {p['store']} | "
                     f"{p['connections']} | {b['rps']:,.0f} | {p['rps']:,.0f} | "
                     f"{p['rps'] / b['rps']:.2f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {b['p99_ms']:.1f} | "
                     f"{cpu_ms(b):.2f} / {cpu_ms(p):.2f} | {split} | {p['cpu_cores'].get('other', 0):.2f} | "
                     + (f"**{p['errors']}**" if p["errors"] else "0") + " |")
    return "\n".join(lines)


def per_request_ms(p: dict, part: str) -> float:
    """CPU milliseconds per request of one part of the server's processes."""
    return p["cpu_cores"].get(part, 0) / p["rps"] * 1000 if p["rps"] else float("nan")


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    points = data["points"]
    fig, (rate, tail, cost) = plt.subplots(1, 3, figsize=(15, 4.4))
    series = [("bare aiohttp", list(anchors(points).values()), "#555555", "--")]
    for store, color in (("sqlite", "#3b7dd8"), ("redis", "#d8333b")):
        series.append((f"parlour, {store}", [p for p in points if p["system"] == "parlour" and p["store"] == store],
                       color, "-"))
        series.append((f"wave 1 shape, {store}", [p for p in points if p["system"] == "split" and p["store"] == store],
                       color, "-."))
    for label, mine, color, style in series:
        mine = sorted(mine, key=lambda p: p["connections"])
        x = [p["connections"] for p in mine]
        rate.plot(x, [p["rps"] for p in mine], marker="o", color=color, ls=style, label=label)
        tail.plot(x, [p["p99_ms"] for p in mine], marker="o", color=color, ls=style, label=f"{label} p99")
        tail.plot(x, [p["p50_ms"] for p in mine], marker=".", color=color, ls=":", alpha=0.5, lw=0.8,
                  label=f"{label} p50")
        cost.plot(x, [cpu_ms(p) for p in mine], marker="o", color=color, ls=style, label=label)
    tail.axhline(P99_MS, color="grey", ls="-.", label=f"target p99 {P99_MS:g} ms")
    loads = sorted({p["connections"] for p in points})
    for ax, title, unit in ((rate, "throughput", "requests/s"), (tail, "latency (wrk, closed loop)", "ms"),
                            (cost, "server-side CPU per request", "CPU ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(loads, labels=loads)
        ax.set_xlabel("connections (offered load)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    tail.set_yscale("log")
    cost.set_ylim(bottom=0)
    fig.suptitle(f"T1: web-channel turns end to end vs bare aiohttp, {result['machine']['cpus']} cores, "
                 f"{result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
