"""The processes a benchmark runs and watches: servers on free ports, what CPU each process
used (from /proc), and py-spy profiles of them."""

from __future__ import annotations

import collections
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Self

from bench.harness import ROOT
from tests.redis_server import RedisServer, free_port

TICK = os.sysconf("SC_CLK_TCK")
LOG_FLOW = ROOT / "tests" / "actors" / "flows" / "log.yaml"  # keeps each user's transcript, for T5


class Server:
    """A server in a subprocess, on a free port, ready once ``GET /readyz`` answers 200."""

    def __init__(self, label: str, argv: list[str], folder: Path, port: int, log: Callable[[str], None],
                 cwd: Path | None = None):
        self.label, self.argv, self.folder, self.port, self.cwd = label, argv, folder, port, cwd or folder
        self.log_path = folder / f"{label}.log"
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout_s: float = 180.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.cwd, start_new_session=True)
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}:\n{self.tail()}")
            if self.ready():
                self.log(f"{self.label} ready on port {self.port} in {time.monotonic() - started:.1f} s")
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.label} was not ready within {timeout_s:g} s:\n{self.tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (a graceful stop, Ray included); SIGKILL to the whole session if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.log(f"{self.label} did not stop within {timeout_s:g} s: killing its process group")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return self.process.returncode


def bare_server(folder: Path, log: Callable[[str], None]) -> Server:
    port = free_port()
    return Server("bare", [sys.executable, "-m", "bench.bare", str(port)], folder, port, log, cwd=ROOT)


class Node:
    """``parlour serve`` on its own data folder (and a Redis started for it, for ``store="redis"``):
    tenant ``demo`` on the bundled flows and tenant ``ledger`` on a flow that keeps each user's
    transcript; no rate limits, room for 20,000 pending messages."""

    CONFIG = ("tenants:\n  demo: {{rate_limit: null, user_rate_limit: null}}\n"
              "  ledger: {{rate_limit: null, user_rate_limit: null, flows: [{log_flow}]}}\n"
              "limits: {{max_pending: 20000}}\n")

    def __init__(self, folder: Path, store: str, log: Callable[[str], None], shape: str = "node"):
        """``shape`` is ``node`` (``parlour serve``: node servers, one per core) or ``split``
        (wave 1's: the gateway in the driver, one host actor behind it: :mod:`bench.split`)."""
        self.folder, self.store, self.log, self.shape = folder, store, log, shape
        folder.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(folder / "redis", fsync="everysec") if store == "redis" else None
        (folder / "parlour.yaml").write_text(self.CONFIG.format(log_flow=LOG_FLOW))
        program = ["-m", "parlour.cli", "serve"] if shape == "node" else ["-m", "bench.split"]
        argv = [sys.executable, *program, "--port", str(free_port()),
                "--data-dir", str(folder / "data"), "--config", str(folder / "parlour.yaml"), "--log-level", "warning"]
        if self.redis is not None:
            argv += ["--store", self.redis.url]
        self.server = Server(f"parlour-{shape}-{store}", argv, folder, int(argv[argv.index("--port") + 1]), log,
                             cwd=ROOT if shape == "split" else None)

    def start(self) -> Node:
        if self.redis is not None:
            self.redis.start()
        self.log(f"starting parlour serve on {self.store} (Ray takes a while to start)")
        self.server.start()
        return self

    @property
    def admin_token(self) -> str:
        return (self.folder / "data" / "admin-token").read_text().strip()

    def host_pids(self) -> list[int]:
        """The processes that run conversations: node servers, or (``split``) host actors."""
        return [pid for pid, (name, _) in sorted(tree(self.server.pid).items())
                if role(name) in ("node_server", "host_actor")]

    def close(self) -> int | None:
        code = self.server.stop()
        if self.redis is not None:
            self.redis.stop()
        return code


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


def role(name: str) -> str:
    """What a process of a node's tree is, by its title: ``node_server`` (``ray::NodeServer``),
    ``host_actor`` (wave 1's ``ray::HostActor``, or its class's name ``HostProcess``), ``redis``,
    or ``ray_other`` (Ray's own: GCS, raylet, agents, the router and delivery actors)."""
    if name.startswith("ray::NodeServer"):
        return "node_server"
    if name.startswith(("ray::HostActor", "ray::HostProcess")):
        return "host_actor"
    return "redis" if "redis-server" in name else "ray_other"


class CpuMeter:
    """The cores each part used over a measurement: ``server`` (the process started: the driver
    of ``parlour serve``, or the gateway of wave 1's shape), the node servers, the host actor, the
    rest of the server's process tree, redis, the client (wrk, a reaped child of this process, or
    this process itself) and everything else the machine ran (``other``)."""

    def __init__(self, server: Server, redis: RedisServer | None):
        self.server, self.redis = server, redis

    def _sample(self) -> tuple:
        procs = tree(self.server.pid)
        if self.redis is not None and self.redis.process is not None:
            procs.update(tree(self.redis.process.pid))
        client = sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                               resource.RUSAGE_CHILDREN)))
        return time.monotonic(), machine_busy_s(), client, procs

    def __enter__(self) -> Self:
        self.before = self._sample()
        self.cores: dict[str, float] = {}
        return self

    def __exit__(self, *exc) -> None:
        (t0, busy0, client0, procs0), (t1, busy1, client1, procs1) = self.before, self._sample()
        wall = t1 - t0
        parts = {"server": 0.0, "node_server": 0.0, "host_actor": 0.0, "ray_other": 0.0, "redis": 0.0}
        for pid, (name, cpu) in procs1.items():
            used = cpu - procs0.get(pid, (name, 0.0))[1]
            if pid == self.server.pid:
                parts["server"] += used
            else:
                parts[role(name)] += used
        parts["client"] = client1 - client0
        parts["other"] = max(0.0, (busy1 - busy0) - sum(parts.values()))
        parts["machine_busy"] = busy1 - busy0
        self.cores = {k: round(v / wall, 2) for k, v in parts.items()}


# ---------------------------------------------------------------- profiles


class Profiler:
    """``py-spy record`` of some processes until :meth:`finish`, as a flame graph (SVG) and as
    collapsed stacks, summarised into the functions that take the most samples."""

    def __init__(self, pids: dict[str, int], scratch: Path, prefix: Path):
        """Flame graphs go to ``<prefix>-<label>.svg``, collapsed stacks to ``scratch``."""
        if shutil.which("py-spy") is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.running = []
        for label, pid in pids.items():
            for fmt, path in (("flamegraph", prefix.parent / f"{prefix.name}-{label}.svg"),
                              ("raw", scratch / f"profile-{label}.txt")):
                self.running.append((label, fmt, path, subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", fmt, "--output", str(path),
                     "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))

    def finish(self) -> dict[str, dict]:
        """Per label: the summary of its samples and its flame graph's file name, or an error."""
        results: dict[str, dict] = {}
        for *_, process in self.running:
            process.send_signal(signal.SIGINT)  # py-spy writes its output as it stops
        for label, fmt, path, process in self.running:
            _, error = process.communicate(timeout=120)
            mine = results.setdefault(label, {})
            if process.returncode != 0 or not path.exists():
                mine["error"] = error.decode(errors="replace")[-500:]
            elif fmt == "raw":
                mine.update(summarise(path))
            else:
                mine["flamegraph"] = path.name
        return results


FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):\d+\)$")
# Frames that hold up every stack (the event loop, threads, Ray's task wrapper): left out of the
# "in or below" list, where they would fill the top rows with ~100 %.
CARRIERS = {"threading.py", "base_events.py", "events.py", "runners.py", "tracing_helper.py", "worker.py"}


def summarise(collapsed: Path, top: int = 15) -> dict:
    """From py-spy's collapsed stacks: the share of samples in each function (inclusive: anywhere
    on the stack) and at the top of the stack (self), the most frequent first."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            name, path = (match["function"], match["path"]) if match else (frame, "")
            frames.append((name, path.rsplit("/", 1)[-1]))
        n = int(count)
        total += n
        own[f"{frames[-1][0]} ({frames[-1][1]})"] += n
        for name, file in set(frames):
            if file not in CARRIERS:
                inclusive[f"{name} ({file})"] += n

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(n / total, 3)) for frame, n in counter.most_common(top)]
    return {"samples": total, "inclusive": share(inclusive), "self": share(own)}
