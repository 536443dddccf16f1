"""Web-channel turns per second end to end through ``parlour serve`` (T1), beside a bare aiohttp
JSON handler measured in the same run with the same load generator.

    python -m bench.gateway                   # about 6 minutes; bench/results/gateway-<time>.{json,md,png}
    python -m bench.gateway --quick           # one short point per system, under 2 minutes (CI smoke)
    python -m bench.gateway --store redis     # one store only (sqlite, redis or both)
    python -m bench.gateway --plot bench/results/gateway-<time>.json   # draw an earlier run again

- **bare**: a minimal aiohttp app in a subprocess that parses the same JSON body and answers a
  JSON reply the size of parlour's: the ceiling of one gateway process on this machine.
- **parlour**: ``parlour serve`` in a subprocess (gateway -> Ray host -> store commit -> reply),
  on SQLite and on a Redis this benchmark starts on a free port.

Both are driven by ``wrk -t1`` with ``bench/wrk/turns.lua`` at 1, 4, 16, 64 and 128 connections.
wrk is closed-loop: a connection sends its next request when the last one is answered, so the
offered load is the number of connections and the latencies hide queueing a real open-loop
client would see (coordinated omission; wrk2 is not on this machine). Every request is a new
message (a unique id) of one of a few thousand users sitting at the registration flow's main
menu; its text, ``about``, makes each turn say a text and the menu again (two replies, two
outbox entries and a dedup id committed per turn). A warm-up starts every conversation first
(its figures are kept apart). For each point the CPU each process used is recorded (the
gateway, the host actor, the rest of Ray, redis, wrk, and what other programs took), since the
machine's two cores are shared.

Figures on a shared machine are noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from tests.redis_server import RedisServer, free_port

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LUA = BENCH / "wrk" / "turns.lua"
WRK = "/usr/bin/wrk"
PATH = "/v1/demo/web/messages"
TARGETS = {"ratio": 0.5, "p99_ms": 50.0}
TEXT = "about"
SERVER_CONFIG = "tenants: {demo: {rate_limit: null}}\nlimits: {max_pending: 20000}\n"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Plan:
    connections: tuple[int, ...] = (1, 4, 16, 64, 128)
    duration_s: int = 10
    users: int = 2_000
    bare_twice: bool = True  # before and after parlour: the machine is shared, the anchor may drift

    @classmethod
    def quick(cls) -> Plan:
        return cls(connections=(64,), duration_s=5, users=500, bare_twice=False)


def progress(text: str) -> None:
    print(f"  {datetime.now():%H:%M:%S} {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the bare anchor

BARE_REPLY = {"replies": [
    {"text": "We are a book club that meets every Thursday.", "buttons": []},
    {"text": "What would you like to do?", "buttons": [
        {"id": "register", "title": "Register"}, {"id": "about", "title": "About us"}, {"id": "quit", "title": "Quit"}]},
], "duplicate": False}


def bare_app():
    """The same route and body as parlour's web channel; the JSON parsed and checked, a reply
    of the same shape and size, nothing else."""
    from aiohttp import web

    async def message(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": {"code": "invalid_json"}}, status=400)
        if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in ("user", "id", "text")):
            return web.json_response({"error": {"code": "invalid_request"}}, status=400)
        return web.json_response(BARE_REPLY)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.add_routes([web.post("/v1/{tenant}/web/messages", message), web.get("/readyz", ready)])
    return app


def serve_bare(port: int) -> int:
    from aiohttp import web

    web.run_app(bare_app(), host="127.0.0.1", port=port, access_log=None, print=None)
    return 0


# ---------------------------------------------------------------- servers under test


class Server:
    """A server in a subprocess, on a free port, ready once ``GET /readyz`` answers 200."""

    def __init__(self, label: str, argv: list[str], folder: Path, port: int, cwd: Path | None = None):
        self.label, self.argv, self.folder, self.port, self.cwd = label, argv, folder, port, cwd or folder
        self.log = folder / f"{label}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self, timeout_s: float = 180.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.cwd, start_new_session=True)
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}:\n{self.tail()}")
            if self._ready():
                progress(f"{self.label} ready on port {self.port} in {time.monotonic() - started:.1f} s")
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.label} was not ready within {timeout_s:g} s:\n{self.tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (a graceful stop, Ray included); SIGKILL to the whole session if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            progress(f"{self.label} did not stop within {timeout_s:g} s: killing its process group")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def bare_server(folder: Path) -> Server:
    port = free_port()
    return Server("bare", [sys.executable, "-m", "bench.gateway", "--bare-server", str(port)], folder, port,
                  cwd=BENCH.parent)


def parlour_server(folder: Path, store_url: str | None) -> Server:
    port = free_port()
    (folder / "parlour.yaml").write_text(SERVER_CONFIG)
    argv = [sys.executable, "-m", "parlour.cli", "serve", "--port", str(port), "--data-dir", str(folder / "data"),
            "--config", str(folder / "parlour.yaml"), "--log-level", "warning"]
    return Server("parlour", argv + (["--store", store_url] if store_url else []), folder, port)


# ---------------------------------------------------------------- CPU accounting from /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


def tree(root: int) -> dict[int, tuple[str, float]]:
    """``root`` and its descendants: pid -> (argv[0], CPU seconds)."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if stats.get(pid) is not None:
            found[pid] = (_name(pid), stats[pid][1])
            todo += children.get(pid, [])
    return found


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


class CpuMeter:
    """The cores each part used over a point: ``server`` (the gateway process), the host actor
    and the rest of the server's process tree, redis, the client (wrk, a reaped child of this
    process, or this process's own warm-up client) and everything else the machine ran (``other``)."""

    def __init__(self, server: Server, redis: RedisServer | None):
        self.server, self.redis = server, redis

    def _sample(self) -> tuple:
        procs = tree(self.server.process.pid)
        if self.redis is not None and self.redis.process is not None:
            procs.update(tree(self.redis.process.pid))
        client = sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                               resource.RUSAGE_CHILDREN)))
        return time.monotonic(), machine_busy_s(), client, procs

    def __enter__(self) -> CpuMeter:
        self.before = self._sample()
        self.cores: dict[str, float] = {}
        return self

    def __exit__(self, *exc) -> None:
        (t0, busy0, client0, procs0), (t1, busy1, client1, procs1) = self.before, self._sample()
        wall = t1 - t0
        parts = {"server": 0.0, "host_actor": 0.0, "ray_other": 0.0, "redis": 0.0}
        for pid, (name, cpu) in procs1.items():
            used = cpu - procs0.get(pid, (name, 0.0))[1]
            if pid == self.server.process.pid:
                parts["server"] += used
            elif name.startswith("ray::HostActor"):
                parts["host_actor"] += used
            elif "redis-server" in name:
                parts["redis"] += used
            else:
                parts["ray_other"] += used
        parts["client"] = client1 - client0
        parts["other"] = max(0.0, (busy1 - busy0) - sum(parts.values()))
        parts["machine_busy"] = busy1 - busy0
        self.cores = {k: round(v / wall, 2) for k, v in parts.items()}


# ---------------------------------------------------------------- load


@dataclass
class Point:
    system: str  # bare or parlour
    store: str  # the store asked for, "-" for bare
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    duplicates: int
    socket_errors: dict
    statuses: dict
    cpu_cores: dict = field(default_factory=dict)
    load_avg: tuple = ()
    round: int = 1

    @property
    def errors(self) -> int:
        return self.non2xx + self.duplicates + sum(self.socket_errors.values())


def wrk(url: str, connections: int, duration_s: float, run: str, users: int) -> dict:
    """One wrk run; the figures its Lua ``done`` hook printed."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "--timeout", "10s", "-s", str(LUA),
            url, "--", run, str(users), TEXT]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("WRK-RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(line.removeprefix("WRK-RESULT "))


async def first_messages(url: str, users: int, run: str, concurrency: int = 64) -> dict:
    """Each user's first message, from an aiohttp client (wrk cannot stop after N requests);
    the figures in the shape of ``bench/wrk/turns.lua``'s."""
    import aiohttp

    latencies, statuses, duplicates, todo = [], {}, 0, iter(range(users))

    async def one_by_one(session: aiohttp.ClientSession) -> None:
        nonlocal duplicates
        for i in todo:
            body = {"user": f"t1-u{i}", "id": f"{run}-{i}", "text": TEXT}
            sent = time.perf_counter()
            async with session.post(url, json=body) as answer:
                reply = await answer.read()
            latencies.append(time.perf_counter() - sent)
            if not 200 <= answer.status < 300:
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
            elif b'"duplicate": true' in reply:
                duplicates += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(one_by_one(session) for _ in range(concurrency)))
    latencies.sort()
    at = {q: int(latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1e6) for q in (50, 90, 99)}
    return {"requests": len(latencies), "duration_us": int((time.perf_counter() - started) * 1e6),
            "non2xx": sum(statuses.values()), "duplicates": duplicates, "statuses": statuses,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
            "latency_us": {"p50": at[50], "p90": at[90], "p99": at[99], "max": int(latencies[-1] * 1e6)}}


def point(system: str, store: str, connections: int, figures: dict, cores: dict, round_: int = 1) -> Point:
    latency, seconds = figures["latency_us"], figures["duration_us"] / 1e6
    socket = {k: v for k, v in figures["errors"].items() if k != "status"}
    return Point(system, store, connections, round(seconds, 2), figures["requests"], round(figures["requests"] / seconds, 1),
                 latency["p50"] / 1e3, latency["p90"] / 1e3, latency["p99"] / 1e3, latency["max"] / 1e3,
                 figures["non2xx"], figures["duplicates"], socket, figures["statuses"], cores,
                 tuple(round(x, 2) for x in os.getloadavg()), round_)


class Bench:
    def __init__(self, plan: Plan, folder: Path):
        self.plan, self.folder = plan, folder
        self.stamp = datetime.now(UTC).strftime("%H%M%S")
        self.points: list[Point] = []
        self.warmups: list[Point] = []
        self.incidents: list[str] = []
        self.started = time.monotonic()

    def measure(self, server: Server, redis: RedisServer | None, system: str, store: str, round_: int = 1) -> None:
        for connections in self.plan.connections:
            run = f"{self.stamp}-{system}-{store}-{round_}-c{connections}"
            with CpuMeter(server, redis) as meter:
                figures = wrk(server.url, connections, self.plan.duration_s, run, self.plan.users)
            got = point(system, store, connections, figures, meter.cores, round_)
            self.points.append(got)
            flag = f", {got.errors} ERRORS {got.statuses or ''}" if got.errors else ""
            progress(f"{system:7} {store:6} c={connections:<3} {got.rps:9,.0f} req/s  p50 {got.p50_ms:6.2f} ms  "
                     f"p99 {got.p99_ms:7.2f} ms  cpu {meter.cores}{flag}  [{self.elapsed()}]")
            time.sleep(1.0)  # let what is still in flight drain

    def warm_up(self, server: Server, redis: RedisServer | None, system: str, store: str) -> None:
        """Every user's first message (a conversation starts), 64 at a time; kept apart."""
        with CpuMeter(server, redis) as meter:
            figures = asyncio.run(first_messages(server.url, self.plan.users, f"{self.stamp}-{system}-{store}-warm"))
        got = point(system, store, 64, figures, meter.cores, 0)
        self.warmups.append(got)
        progress(f"{system} {store} warm-up: {got.requests:,} first messages, {got.rps:,.0f} req/s, "
                 f"p50 {got.p50_ms:.1f} ms, p99 {got.p99_ms:.1f} ms{', ERRORS' if got.errors else ''}")

    def bare(self, round_: int) -> None:
        server = bare_server(self.folder).start()
        try:
            self.warm_up(server, None, "bare", "-")
            self.measure(server, None, "bare", "-", round_)
        finally:
            self.stop(server, "bare")

    def parlour(self, store: str) -> None:
        folder = self.folder / store
        folder.mkdir()
        redis = RedisServer(folder / "redis", fsync="everysec").start() if store == "redis" else None
        try:
            server = parlour_server(folder, redis.url if redis else None)
            progress(f"starting parlour serve on {store} (Ray start-up takes a while)")
            server.start()
            try:
                self.warm_up(server, redis, "parlour", store)
                self.measure(server, redis, "parlour", store)
            finally:
                self.stop(server, f"parlour on {store}")
        finally:
            if redis is not None:
                redis.stop()

    def stop(self, server: Server, label: str) -> None:
        """SIGTERM; an exit other than 0 is kept as an incident, with the end of its log."""
        server.stop()
        code = server.process.returncode
        progress(f"{label} stopped (exit {code})")
        if code != 0:
            self.incidents.append(f"{label} exited with {code} after SIGTERM; the end of its log:\n{server.tail(15)}")
            print(self.incidents[-1], file=sys.stderr, flush=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"


# ---------------------------------------------------------------- report


def anchors(points: list[dict]) -> dict[int, dict]:
    """The bare point per connection count: the fastest of its rounds (the stricter anchor)."""
    best: dict[int, dict] = {}
    for p in points:
        if p["system"] == "bare" and (p["connections"] not in best or p["rps"] > best[p["connections"]]["rps"]):
            best[p["connections"]] = p
    return best


def summarise(points: list[dict]) -> dict[str, dict]:
    """Per store: the best ratio to bare at one connection count, the peak-to-peak ratio, and
    whether some point meets T1 (ratio >= 0.5, p99 < 50 ms, no errors)."""
    bare = anchors(points)
    peak_bare = max((p["rps"] for p in bare.values()), default=0.0)
    out = {}
    for store in dict.fromkeys(p["store"] for p in points if p["system"] == "parlour"):
        mine = [p for p in points if p["system"] == "parlour" and p["store"] == store and p["connections"] in bare]
        if not mine:
            continue
        ratio = {p["connections"]: p["rps"] / bare[p["connections"]]["rps"] for p in mine}
        best = max(mine, key=lambda p: ratio[p["connections"]])
        meeting = [p for p in mine if ratio[p["connections"]] >= TARGETS["ratio"] and p["p99_ms"] < TARGETS["p99_ms"]
                   and not _errors(p)]
        out[store] = {"best_ratio": round(ratio[best["connections"]], 3), "best_ratio_connections": best["connections"],
                      "best_ratio_p99_ms": best["p99_ms"],
                      "peak_ratio": round(max(p["rps"] for p in mine) / peak_bare, 3) if peak_bare else None,
                      "peak_rps": max(p["rps"] for p in mine), "peak_bare_rps": peak_bare,
                      "errors": sum(_errors(p) for p in mine), "t1_met": bool(meeting),
                      "t1_met_at": [p["connections"] for p in meeting]}
    return out


def _errors(p: dict) -> int:
    return p["non2xx"] + p["duplicates"] + sum(p["socket_errors"].values())


def table(result: dict) -> str:
    points, summary = result["points"], result["summary"]
    bare = anchors(points)
    lines = []
    for store, s in summary.items():
        lines += [f"### parlour on {store}", "",
                  "| connections | bare req/s | parlour req/s | ratio | p50 ms | p99 ms | bare p99 ms "
                  "| CPU ms/req bare / parlour | other programs (cores) | errors |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in sorted((p for p in points if p["system"] == "parlour" and p["store"] == store),
                        key=lambda p: p["connections"]):
            lines.append(_row(p, bare.get(p["connections"])))
        verdict = "met" if s["t1_met"] else "**MISSED**"
        lines += ["", f"best ratio {s['best_ratio']:.2f} at {s['best_ratio_connections']} connections "
                      f"(p99 {s['best_ratio_p99_ms']:.1f} ms); peak {s['peak_rps']:,.0f} req/s against bare's peak "
                      f"{s['peak_bare_rps']:,.0f} = {s['peak_ratio']:.2f}", "",
                  f"T1 (ratio >= {TARGETS['ratio']} and p99 < {TARGETS['p99_ms']:g} ms at one load, no errors): "
                  f"{verdict}" + (f" at {s['t1_met_at']} connections" if s["t1_met"] else ""), ""]
    warm = [f"{w['system']}{'' if w['system'] == 'bare' else ' on ' + w['store']}: {w['requests']:,} at {w['rps']:,.0f} req/s, p50 {w['p50_ms']:.1f} ms, "
            f"p99 {w['p99_ms']:.1f} ms" + (f", {_errors(w)} errors" if _errors(w) else "") for w in result["warmups"]]
    lines += ["warm-ups (first message of each conversation, 64 connections, not in the figures above): "
              + "; ".join(warm)]
    for incident in result.get("incidents", []):
        lines.append(f"\n**INCIDENT**: {incident.splitlines()[0]} (the log's tail is in the JSON)")
    flagged = [p for p in points + result["warmups"] if _errors(p)]
    if flagged:
        lines.append(f"\n**FLAGGED**: {len(flagged)} runs had errors: "
                     + "; ".join(f"{p['system']} {p['store']} c={p['connections']}: {p['non2xx']} non-2xx "
                                 f"{p['statuses']}, {p['duplicates']} duplicates, sockets {p['socket_errors']}"
                                 for p in flagged))
    return "\n".join(lines)


def _row(p: dict, b: dict | None) -> str:
    errors = _errors(p) + (_errors(b) if b else 0)
    cells = [p["connections"], f"{b['rps']:,.0f}" if b else "-", f"{p['rps']:,.0f}",
             f"{p['rps'] / b['rps']:.2f}" if b else "-", f"{p['p50_ms']:.2f}", f"{p['p99_ms']:.2f}",
             f"{b['p99_ms']:.2f}" if b else "-", f"{cpu_ms(b):.2f} / {cpu_ms(p):.2f}" if b else f"- / {cpu_ms(p):.2f}",
             f"{p['cpu_cores'].get('other', 0):.2f}", f"**{errors} FLAGGED**" if errors else "0"]
    return "| " + " | ".join(map(str, cells)) + " |"


def cpu_ms(p: dict) -> float:
    """CPU milliseconds per request the server side used: the gateway process, the host
    actor, the rest of its Ray processes and redis (not the client, not other programs)."""
    cores = sum(p["cpu_cores"].get(k, 0) for k in ("server", "host_actor", "ray_other", "redis"))
    return cores / p["rps"] * 1000 if p["rps"] else float("nan")


def cpu_table(points: list[dict]) -> str:
    parts = ("server", "host_actor", "ray_other", "redis", "client", "other", "machine_busy")
    lines = ["| system | store | connections | " + " | ".join(parts) + " |", "|---|---|---:|" + "---:|" * len(parts)]
    for p in points:
        lines.append(f"| {p['system']} | {p['store']} | {p['connections']} | "
                     + " | ".join(f"{p['cpu_cores'].get(k, 0):.2f}" for k in parts) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    fig, (rate, tail, cost) = plt.subplots(1, 3, figsize=(15, 4.4))
    series = [("bare aiohttp", [p for p in anchors(points).values()], "#555555", "--")]
    colors = {"sqlite": "#3b7dd8", "redis": "#d8333b"}
    for store in dict.fromkeys(p["store"] for p in points if p["system"] == "parlour"):
        series.append((f"parlour, {store}", [p for p in points if p["system"] == "parlour" and p["store"] == store],
                       colors.get(store, "#3bb83b"), "-"))
    for label, mine, color, style in series:
        mine = sorted(mine, key=lambda p: p["connections"])
        x = [p["connections"] for p in mine]
        rate.plot(x, [p["rps"] for p in mine], marker="o", color=color, ls=style, label=label)
        tail.plot(x, [p["p99_ms"] for p in mine], marker="o", color=color, ls=style, label=label)
        cost.plot(x, [cpu_ms(p) for p in mine], marker="o", color=color, ls=style, label=label)
    tail.axhline(TARGETS["p99_ms"], color="grey", ls=":", label=f"target p99 {TARGETS['p99_ms']:g} ms")
    for ax, title, unit in ((rate, "throughput", "requests/s"), (tail, "p99 latency (wrk, closed loop)", "ms"),
                            (cost, "server-side CPU per request", "CPU ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["connections"] for p in points}), labels=sorted({p["connections"] for p in points}))
        ax.set_xlabel("connections (offered load)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    tail.set_yscale("log")
    cost.set_ylim(bottom=0)
    machine = result["machine"]
    fig.suptitle(f"parlour {machine['parlour']} web-channel turns end to end vs bare aiohttp, "
                 f"{machine['cpus']} cores, {result['when']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_facts() -> dict:
    wrk_version = subprocess.run([WRK, "--version"], capture_output=True, text=True).stdout.split("[")[0]
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2:3]
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), "?")
    return {"node": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "aiohttp": version("aiohttp"), "ray": version("ray"),
            "parlour": version("parlour"), "wrk": wrk_version.removeprefix("wrk ").strip(),
            "redis": "".join(redis_version).removeprefix("v="), "load_avg_at_start": os.getloadavg()}


def notes(plan: Plan) -> list[str]:
    return [
        f"wrk -t1, closed loop ({plan.duration_s} s per point): offered load = connections; latency is from a request's "
        "send to its answer on a busy connection, so queueing before the send is not seen (coordinated omission)",
        f"each request a new message id of one of {plan.users:,} users at the registration flow's main menu, text "
        f"'{TEXT}' (a text and the menu again); the warm-up sent every user's first message (a new conversation)",
        "parlour serve with defaults (1 host, 1024 partitions, max_batch 500), tenant rate limit off, max_pending 20000, "
        "log level warning; SQLite (WAL, synchronous=FULL) in the data folder, or Redis with AOF appendfsync everysec",
        "bare: aiohttp app in a subprocess, json.loads of the body, a reply of the same shape as parlour's; "
        + ("measured before and after parlour, the faster of the two rounds is the anchor" if plan.bare_twice
           else "measured once"),
        "cpu_cores: cores used during the point by the gateway process (server), the host actor, the rest of the "
        "server's process tree (raylet, GCS, router, ...), redis, the client (wrk), and whatever else ran (other: "
        "the machine is shared); CPU ms/req = the server side's CPU (all but the client and other programs) per "
        "request, the figure least disturbed by other programs",
    ]


def run(plan: Plan, stores: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="parlour-bench-gateway-") as folder:
        bench = Bench(plan, Path(folder))
        steps = [("bare", 1)] + [("parlour", s) for s in stores] + ([("bare", 2)] if plan.bare_twice else [])
        for index, (kind, arg) in enumerate(steps, 1):
            print(f"[{index}/{len(steps)}] {kind} {arg if kind == 'parlour' else f'(round {arg})'}",
                  file=sys.stderr, flush=True)
            bench.bare(arg) if kind == "bare" else bench.parlour(arg)
        progress(f"done in {bench.elapsed()}")
    return {"points": [asdict(p) for p in bench.points], "warmups": [asdict(p) for p in bench.warmups],
            "incidents": bench.incidents}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short point per system, for a smoke run")
    parser.add_argument("--store", choices=("sqlite", "redis", "both"), default="both", help="parlour's store")
    parser.add_argument("--plot", metavar="JSON", help="draw the plot of an earlier run again, and stop")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        return serve_bare(args.bare_server)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the servers started are stopped
    if args.plot:
        plot(json.loads(Path(args.plot).read_text()), Path(args.plot).with_suffix(".png"))
        return 0
    plan = Plan.quick() if args.quick else Plan()
    stores = ["sqlite", "redis"] if args.store == "both" else [args.store]
    machine = machine_facts()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {"when": stamp, "machine": machine, "plan": asdict(plan), "targets": TARGETS, **run(plan, stores)}
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["summary"] = summarise(result["points"])
    result["notes"] = notes(plan)
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / f"gateway-{stamp}{'-quick' if args.quick else ''}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1))
    markdown = "\n".join([table(result), "", "CPU (cores) per point:", "", cpu_table(result["points"]), "",
                          *[f"- {n}" for n in result["notes"]]])
    base.with_suffix(".md").write_text(markdown + "\n")
    plot(result, base.with_suffix(".png"))
    print(markdown)
    print(f"\nwrote {base}.json, .md and .png")
    return 1 if any(_errors(p) for p in result["points"] + result["warmups"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
