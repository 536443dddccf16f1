"""parlour's benchmark: every scenario beside its anchor, measured in one run on one machine.

    python -m bench                      # the full run, about 8 minutes
    python -m bench --quick              # small sizes, under 2 minutes: a smoke run for CI
    python -m bench --only t1            # one scenario (repeat --only for several)
    python -m bench --profile --only t1  # with py-spy flame graphs of the gateway and the host under load
    python -m bench --readme             # and write the run into README.md's benchmark section
    python -m bench --report bench/results/<stamp>.json [--readme]   # its Markdown and plots again

Each run writes ``bench/results/<stamp>.json`` (machine, versions, every figure with its anchor,
ratio and target), ``<stamp>.md`` and a PNG per scenario; a quick run writes into
``bench/results/quick/``. A missed target is printed as MISSED and the run goes on; the exit
status is 1 only when a scenario could not run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    harness,
    host_throughput,
    interpreter,
    markdown,
    t1_web,
    t2_memory,
    t3_cold,
    t5_faults,
)

# In-process Ray scenarios first (one Ray for them all), then those that run ``parlour serve``;
# T5 breaks the Redis node that T1 leaves running.
SCENARIOS = {m.NAME: m for m in (interpreter, t2_memory, t3_cold, host_throughput, t1_web, t5_faults)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="scenarios:\n" + "\n".join(f"  {n:12} {m.TITLE}"
                                                                       for n, m in SCENARIOS.items()))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (under 2 minutes)")
    parser.add_argument("--only", action="append", metavar="NAME", type=str.lower,
                        help=f"run only this scenario: {', '.join(SCENARIOS)}")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy profiles of the gateway and the host under load, in T1 and H1")
    parser.add_argument("--out", type=Path, help="where results go (default bench/results, or bench/results/quick)")
    parser.add_argument("--readme", action="store_true", help="write this run into README.md's benchmark section")
    parser.add_argument("--report", type=Path, metavar="JSON", help="write the Markdown and plots of a run again")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(SCENARIOS))
    if args.readme and (args.quick or args.only):
        parser.error("--readme shows a full run of every scenario: not with --quick or --only")
    if unknown:
        parser.error(f"no scenario {', '.join(map(repr, unknown))}; the scenarios are {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report:
        result = harness.load(args.report)
        paths = harness.save(result, args.report.with_suffix(""), SCENARIOS, harness.draw)
        print("\n".join(map(str, paths)))
        if args.readme:
            readme(result, paths)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the servers it started are stopped
    chosen = [m for n, m in SCENARIOS.items() if not args.only or n in args.only]
    out = args.out or (harness.RESULTS / "quick" if args.quick else harness.RESULTS)
    started = datetime.now(UTC)
    base = out / started.strftime("%Y%m%dT%H%M%SZ")
    machine = harness.machine_facts()
    clock = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parlour-bench-") as folder:
        outcomes = harness.run_scenarios(chosen, args.quick, Path(folder), args.profile, base)
    result = harness.report(outcomes, machine, args.quick, started, time.monotonic() - clock)
    paths = harness.save(result, base, SCENARIOS, harness.draw)
    print(markdown.summary_table(result))
    for line in markdown.missed_lines(result):
        print(line)
    print(f"\n{len(result['figures'])} figures in {result['seconds']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    if args.readme:
        readme(result, paths)
    return 1 if result["failed"] else 0


def readme(result: dict, paths: list[Path]) -> None:
    if result["quick"] or result["failed"] or list(result["scenarios"]) != list(SCENARIOS):
        raise SystemExit("--readme shows a full run of every scenario, all of which finished: not this one")
    markdown.update_readme(harness.ROOT / "README.md", markdown.readme_block(result, paths[0], paths[2:], harness.ROOT))
    print("README.md: benchmark section updated")


if __name__ == "__main__":
    raise SystemExit(main())
