"""What every scenario shares: its figures, progress, the node it may reuse, and the run's report.

A scenario is a module with ``NAME``, ``TITLE``, ``budget_s(quick)`` (its expected seconds, for
the progress bar), ``run(ctx)``, and optionally ``plot(data, path)`` and ``details(data)`` (a
Markdown section). It reports with ``ctx.figure(...)``: a measured value, the anchor measured
beside it in the same run, and the target, which the harness checks and never hides.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
FLOWS = ROOT / "flows"


@dataclass(frozen=True)
class Target:
    """``value`` (or the ratio to the anchor, with ``on="ratio"``) ``op`` ``bound``."""

    op: str  # ">=" or "<="
    bound: float
    on: str = "value"  # or "ratio"

    def met(self, value: float, ratio: float | None) -> bool:
        subject = ratio if self.on == "ratio" else value
        return subject is not None and {">=": operator.ge, "<=": operator.le}[self.op](subject, self.bound)

    def __str__(self) -> str:
        return f"{'ratio ' if self.on == 'ratio' else ''}{self.op} {self.bound:,g}"


@dataclass
class Figure:
    target_id: str  # "T1".."T5", "I1" (interpreter), "H1" (host), or "" for a figure given as context
    name: str
    value: float
    unit: str
    anchor: float | None = None
    anchor_name: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None


@dataclass
class Outcome:
    name: str
    title: str
    seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    error: str | None = None


class Progress:
    """One bar over the run, in expected seconds: each scenario moves it along its budget as
    time passes and jumps to its end when it finishes; lines are printed above the bar."""

    def __init__(self, budgets: dict[str, float]):
        self.budgets, self.done = budgets, 0.0
        self.bar = tqdm(total=round(sum(budgets.values())), unit="s", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {elapsed} of ~{total}s{postfix}", disable=None)
        self.current: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            if self.current is not None:
                name, started = self.current
                self.bar.n = round(self.done + min(time.monotonic() - started, 0.97 * self.budgets[name]))
                self.bar.refresh()

    def begin(self, name: str, index: int) -> None:
        self.current = (name, time.monotonic())
        self.bar.set_description(f"[{index}/{len(self.budgets)}] {name}")
        self.log(f"[{index}/{len(self.budgets)}] {name}")

    def end(self) -> None:
        name, _ = self.current
        self.done += self.budgets[name]
        self.current = None
        self.bar.n = round(self.done)
        self.bar.refresh()

    def log(self, text: str) -> None:
        tqdm.write(f"  {datetime.now():%H:%M:%S} {text}", file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        self.bar.close()


class Context:
    """What a scenario is given: its size, a scratch folder, progress, and where its figures go."""

    def __init__(self, outcome: Outcome, quick: bool, folder: Path, progress: Progress, shared: Shared,
                 profile: bool, base: Path):
        self.outcome, self.quick, self.folder, self.progress, self.shared = outcome, quick, folder, progress, shared
        self.profile, self.data, self.base = profile, outcome.data, base

    def artifacts(self, kind: str) -> Path:
        """Where a file kept with the results goes: ``<results>/<stamp>-<scenario>-<kind>``."""
        return self.base.parent / f"{self.base.name}-{self.outcome.name}-{kind}"

    def log(self, text: str) -> None:
        self.progress.log(text)

    def note(self, text: str) -> None:
        self.outcome.notes.append(text)

    def figure(self, target_id: str, name: str, value: float, unit: str, *, anchor: float | None = None,
               anchor_name: str | None = None, target: Target | None = None) -> Figure:
        ratio = float(f"{value / anchor:.3g}") if anchor else None
        figure = Figure(target_id, name, value, unit, anchor, anchor_name, ratio,
                        str(target) if target else None, target.met(value, ratio) if target else None)
        self.outcome.figures.append(figure)
        if figure.met is False:
            self.log(f"MISSED {target_id} {name}: {value:,} {unit} (target {figure.target})")
        return figure


class Shared:
    """What scenarios of one run may share, in order: a local Ray in this process for the
    scenarios that drive a host directly, and a ``parlour serve`` node that T1 leaves running on
    Redis for T5 to break (starting Ray and a node costs 10 to 20 s each)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._ray = False
        self.kept: dict[str, object] = {}

    def ray(self) -> None:
        if not self._ray:
            import ray
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="parlour-bench")
            self._ray = True

    def no_ray(self) -> None:
        """Stop this process's Ray, so that it takes nothing from a scenario that does not use it."""
        if self._ray:
            import ray
            ray.shutdown()
            self._ray = False

    def keep(self, name: str, resource: object) -> None:
        self.kept[name] = resource

    def take(self, name: str) -> object | None:
        return self.kept.pop(name, None)

    def close(self) -> None:
        for resource in self.kept.values():
            resource.close()
        self.kept.clear()
        self.no_ray()


def machine_facts() -> dict:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        except OSError:
            return "not installed"

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"node": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "memory_bytes": memory,
            "kernel": platform.release(), "python": platform.python_version(),
            "versions": {name: version(name) for name in ("parlour", "ray", "aiohttp", "redis", "msgpack", "pydantic")}
            | {"redis-server": run("redis-server", "--version").split(" v=")[-1].split()[0],
               "wrk": run("wrk", "--version").split(" [")[0].removeprefix("wrk ")},
            "load_avg_at_start": os.getloadavg()}


def run_scenarios(modules: list[ModuleType], quick: bool, folder: Path, profile: bool, base: Path) -> list[Outcome]:
    """Each scenario in turn; one that fails is recorded with its error and the run goes on."""
    progress = Progress({m.NAME: m.budget_s(quick) for m in modules})
    shared = Shared(folder)
    outcomes = []
    try:
        for index, module in enumerate(modules, 1):
            outcome = Outcome(module.NAME, module.TITLE)
            progress.begin(module.NAME, index)
            scratch = folder / module.NAME
            scratch.mkdir()
            started = time.monotonic()
            try:
                module.run(Context(outcome, quick, scratch, progress, shared, profile, base))
            except Exception as exc:  # noqa: BLE001 - the run completes; the failure is in the report
                outcome.error = "".join(traceback.format_exception(exc))
                progress.log(f"{module.NAME} FAILED: {exc!r}")
            outcome.seconds = round(time.monotonic() - started, 1)
            progress.log(f"{module.NAME} done in {outcome.seconds:g} s")
            progress.end()
            outcomes.append(outcome)
    finally:
        shared.close()
        progress.close()
    return outcomes


def report(outcomes: list[Outcome], machine: dict, quick: bool, started: datetime, seconds: float) -> dict:
    figures = [asdict(f) | {"scenario": o.name} for o in outcomes for f in o.figures]
    return {"when": started.strftime("%Y%m%dT%H%M%SZ"), "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "quick": quick, "seconds": round(seconds, 1), "machine": machine | {"load_avg_at_end": os.getloadavg()},
            "scenarios": {o.name: asdict(o) for o in outcomes},
            "figures": figures,
            "missed": [f for f in figures if f["met"] is False],
            "failed": [o.name for o in outcomes if o.error]}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def save(result: dict, base: Path, modules: dict[str, ModuleType], draw: Callable) -> list[Path]:
    """``<base>.json``, ``<base>.md`` and a PNG per scenario that draws one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plots = draw(result, base, modules)
    from bench.markdown import document
    base.with_suffix(".md").write_text(document(result, modules, {n: p.name for n, p in plots.items()}))
    return [base.with_suffix(".json"), base.with_suffix(".md"), *plots.values()]


def draw(result: dict, base: Path, modules: dict[str, ModuleType]) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    plots = {}
    for name, outcome in result["scenarios"].items():
        module = modules.get(name)
        if module is None or not hasattr(module, "plot") or outcome["error"] or not outcome["data"]:
            continue
        path = base.parent / f"{base.name}-{name}.png"
        module.plot(outcome["data"], path, result)
        plots[name] = path
    return plots
