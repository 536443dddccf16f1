"""Micro-benchmark of the pure interpreter: turns per second on one core, bundled flows.

    python -m bench.advance            # about 20 s; writes bench/results/advance-<time>.{json,md,png}
    python -m bench.advance --quick    # about 3 s, for a smoke run

Each scenario replays one kind of turn from a fixed state, in one thread, so turns/s is per
core. The target (issue 2) is 30,000 turns/s for a turn that only renders a template and moves
a step (`template-step`). Figures on a shared machine are noisy: compare scenarios of one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from parlour import __version__
from parlour.codec import pack_state, unpack_state
from parlour.flow import Catalog, HttpResult, State, UserMessage, advance, load_catalog

FLOWS = Path(__file__).resolve().parent.parent / "flows"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 30_000
NOW = 1_790_000_000.0


def _walk(catalog: Catalog, *texts: str | tuple[str, str]) -> State:
    state = None
    for item in texts:
        msg = UserMessage(button=item[1]) if isinstance(item, tuple) else UserMessage(item)
        state = advance(catalog, state, msg, NOW).state
    return state


def scenarios(catalog: Catalog) -> dict[str, tuple[str, Callable[[], object]]]:
    """name -> (what one turn does, a function running one turn)."""
    at_menu = _walk(catalog, "hi")
    at_name = _walk(catalog, "hi", ("b", "register"))
    at_email = _walk(catalog, "hi", ("b", "register"), "Ada Lovelace")
    at_confirm = _walk(catalog, "hi", ("b", "register"), "Ada Lovelace", "ada@example.org", "36")
    at_save = advance(catalog, at_confirm, UserMessage(button="yes"), NOW).state
    name, two, hi = UserMessage("Ada Lovelace"), UserMessage("2"), UserMessage("hi")
    email, saved = UserMessage("ada@example.org"), HttpResult(at_save.request, status=201, json={"id": 42})

    stored = pack_state(at_name)

    def cold():  # what a host does for a conversation that is not resident: read, turn, write
        pack_state(advance(catalog, unpack_state(stored), name, NOW).state)

    return {
        "template-step": ("answer an ask (regex), save, render the next prompt's template",
                          lambda: advance(catalog, at_name, name, NOW)),
        "menu-say-menu": ("pick a menu option by number: say a text, show the menu again",
                          lambda: advance(catalog, at_menu, two, NOW)),
        "start": ("a new conversation: match the trigger, welcome, show the menu",
                  lambda: advance(catalog, None, hi, NOW)),
        "http-result": ("an http result: save the JSON, render, say twice, end",
                        lambda: advance(catalog, at_save, saved, NOW)),
        "email-ask": ("answer the email ask (email-validator), render the next prompt",
                      lambda: advance(catalog, at_email, email, NOW)),
        "template-step-cold": ("template-step with the state read from msgpack and written back", cold),
    }


def measure(turn: Callable[[], object], seconds: float, repeats: int = 5) -> list[float]:
    """Turns per second in each of ``repeats`` timed batches of about ``seconds / repeats``."""
    batch, turns = 200, 0
    start = time.perf_counter()
    while time.perf_counter() - start < 0.05:  # warm up and size the batch
        for _ in range(batch):
            turn()
        turns += batch
    per_turn = (time.perf_counter() - start) / turns
    batch = max(200, int(seconds / repeats / max(per_turn, 1e-7)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            turn()
        rates.append(batch / (time.perf_counter() - t0))
    return rates


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["scenario"] for r in results]
    rates = [r["turns_per_s"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    # The target is template-step's; the other scenarios are context, drawn in grey.
    colours = [("#2b7bba" if r >= TARGET else "#d0573d") if n == "template-step" else "#9a9a9a"
               for n, r in zip(names, rates)]
    bars = ax.barh(names, rates, color=colours)
    ax.axvline(TARGET, color="black", linestyle="--", linewidth=1)
    ax.text(TARGET, len(names) - 0.45, f" target for template-step: {TARGET:,}", va="bottom", fontsize=8)
    for bar, rate in zip(bars, rates):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {rate:,.0f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("turns per second, one core (median of 5 batches)")
    ax.set_title("parlour: advance() on the bundled registration flow")
    ax.set_xlim(0, max(rates + [TARGET]) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.advance", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 3 s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per scenario (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    seconds = 0.4 if args.quick else args.seconds

    catalog = load_catalog([FLOWS], env={"MEMBERS_API": "http://127.0.0.1:9"})
    chosen = scenarios(catalog)
    results = []
    for index, (name, (what, turn)) in enumerate(chosen.items(), 1):
        print(f"[{index}/{len(chosen)}] {name} ...", end="", flush=True, file=sys.stderr)
        rates = measure(turn, seconds)
        median = statistics.median(rates)
        results.append({"scenario": name, "what": what, "turns_per_s": round(median),
                        "us_per_turn": round(1e6 / median, 2), "spread": [round(min(rates)), round(max(rates))]})
        print(f" {median:,.0f} turns/s", file=sys.stderr)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headline = results[0]["turns_per_s"]
    report = {
        "benchmark": "advance", "date": stamp, "parlour": __version__, "python": platform.python_version(),
        "machine": {"cpu": platform.processor() or platform.machine(), "system": platform.platform()},
        "target": {"scenario": "template-step", "turns_per_s": TARGET, "met": headline >= TARGET},
        "results": results,
    }
    table = ["| scenario | turns/s (one core) | µs/turn | spread (min-max) | what one turn does |",
             "|---|---:|---:|---|---|"]
    table += [f"| {r['scenario']} | {r['turns_per_s']:,} | {r['us_per_turn']} | "
              f"{r['spread'][0]:,}-{r['spread'][1]:,} | {r['what']} |" for r in results]
    verdict = "met" if headline >= TARGET else "MISSED"
    table.append(f"\nTarget: template-step >= {TARGET:,} turns/s: {verdict} ({headline:,}).")
    print("\n".join(table))
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        base = args.out / f"advance-{stamp}"
        base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        base.with_suffix(".md").write_text("\n".join(table) + "\n")
        plot(results, base.with_suffix(".png"))
        print(f"\nwrote {base}.json, .md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
