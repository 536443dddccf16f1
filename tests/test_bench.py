"""The benchmark harness: its verdicts and counts on known inputs, and ``python -m bench --quick``
run whole as CI's smoke run (real Ray, real redis-server, real wrk, real ``parlour serve``).

No figure's speed is asserted here: speed is the harness's business. What is asserted is that
each scenario ran, that every figure carries its anchor and verdict, that the fault run counted
nothing lost, twice or out of order, and that the report, plots and README block are written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from bench import markdown
from bench.harness import ROOT, Figure, Outcome, Target, report
from bench.t5_faults import BUCKET_S, count, recovered_at

MACHINE = {"node": "n", "cpus": 2, "cpu_model": "cpu", "memory_bytes": 2**34, "kernel": "6", "python": "3.11",
           "versions": {"parlour": "0", "ray": "2", "aiohttp": "3", "redis-server": "7", "wrk": "4"},
           "load_avg_at_start": (0.1, 0.1, 0.1)}


@pytest.mark.parametrize("target, value, ratio, met", [
    (Target(">=", 0.5, on="ratio"), 100, 0.5, True),
    (Target(">=", 0.5, on="ratio"), 100, 0.49, False),
    (Target(">=", 0.5, on="ratio"), 100, None, False),  # no anchor: not met, never assumed
    (Target("<=", 2.0), 2.0, None, True),
    (Target("<=", 2.0), 2.01, 9, False),
    (Target("<=", 0), 0, None, True),
])
def test_a_target_is_checked_on_the_value_or_on_the_ratio(target, value, ratio, met):
    assert target.met(value, ratio) is met


@pytest.mark.parametrize("found, expected", [
    ({"a": [0, 1, 2], "b": [0, 1]}, {"lost": 0, "twice": 0, "out_of_order": 0, "applied_not_acknowledged": 0}),
    ({"a": [0, 2], "b": [0, 1]}, {"lost": 1, "twice": 0, "out_of_order": 0, "applied_not_acknowledged": 0}),
    ({"a": [0, 1, 1, 2], "b": [0, 1]}, {"lost": 0, "twice": 1, "out_of_order": 0, "applied_not_acknowledged": 0}),
    ({"a": [0, 2, 1], "b": [1, 0]}, {"lost": 0, "twice": 0, "out_of_order": 2, "applied_not_acknowledged": 0}),
    ({"a": [0, 1, 2, 3], "b": [0, 1]}, {"lost": 0, "twice": 0, "out_of_order": 0, "applied_not_acknowledged": 1}),
    ({"a": [0, 1, 2]}, {"lost": 2, "twice": 0, "out_of_order": 0, "applied_not_acknowledged": 0}),
])
def test_transcripts_are_counted_against_what_was_acknowledged(found, expected):
    assert count({"a": [0, 1, 2], "b": [0, 1]}, found) == expected | {"acknowledged": 5}


def steady(start: float, end: float, per_s: float) -> list[float]:
    return [start + i / per_s for i in range(int((end - start) * per_s))]


def test_recovery_is_the_start_of_the_first_normal_second_after_the_fault():
    fault = 10.0
    acks = steady(0, fault, 300) + steady(fault + 2.0, 20, 300)  # nothing acknowledged for 2 s
    at = recovered_at(acks, [], 300, fault, 20)
    assert at == pytest.approx(fault + 2.0, abs=BUCKET_S)
    refused = [fault + 2.5]  # a refusal once serving again puts the recovery after it
    assert recovered_at(acks, refused, 300, fault, 20) == pytest.approx(fault + 2.6, abs=BUCKET_S)
    assert recovered_at(steady(0, fault, 300) + steady(fault, 20, 100), [], 300, fault, 20) is None  # a third of normal
    assert recovered_at(acks, [], 300, fault, fault + 2.5) is None  # not a whole normal second yet


def outcome(name: str, figures: list[Figure], error: str | None = None) -> Outcome:
    return Outcome(name, f"{name} title", 1.0, figures, ["a note"], {}, error)


def test_the_report_lists_every_missed_target_and_failed_scenario():
    missed = Figure("T1", "sqlite: turns/s", 900, "req/s", 9000, "bare", 0.1, "ratio >= 0.5", False)
    met = Figure("T2", "per GB", 1e6, "per GB", None, None, None, ">= 500,000", True)
    result = report([outcome("t1", [missed]), outcome("t2", [met]), outcome("t5", [], error="Traceback: boom")],
                    MACHINE, False, datetime(2026, 11, 22), 60)
    assert [f["name"] for f in result["missed"]] == ["sqlite: turns/s"] and result["failed"] == ["t5"]
    text = markdown.document(result, {}, {})
    assert "**MISSED** T1 sqlite: turns/s: 900 req/s (ratio 0.1), target ratio >= 0.5" in text
    assert "**FAILED** scenario `t5`" in text and "Traceback: boom" in text
    assert "| T2 | per GB | 1,000,000 per GB | - | - | >= 500,000 | met |" in text


def test_the_readme_block_is_replaced_and_nothing_else(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{markdown.README_BEGIN}\nold table\n{markdown.README_END}\nafter\n")
    markdown.update_readme(readme, f"{markdown.README_BEGIN}\nnew table\n{markdown.README_END}")
    assert readme.read_text() == f"# x\n\nbefore\n{markdown.README_BEGIN}\nnew table\n{markdown.README_END}\nafter\n"
    readme.write_text("# no block\n")
    with pytest.raises(SystemExit, match="no benchmark block"):
        markdown.update_readme(readme, "x")


def test_an_unknown_scenario_is_refused_with_the_list_of_known_ones():
    run = subprocess.run([sys.executable, "-m", "bench", "--only", "t9"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2 and "no scenario 't9'" in run.stderr and "t1, t5" in run.stderr


def test_the_quick_run_measures_every_scenario_and_writes_its_report(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    [record] = tmp_path.glob("*.json")
    result = json.loads(record.read_text())
    assert result["quick"] and not result["failed"]
    assert list(result["scenarios"]) == ["interpreter", "t2", "t3", "host", "t1", "t5"]
    figures = {(f["target_id"], f["name"]): f for f in result["figures"]}
    assert {"I1", "T1", "T2", "T3", "T5", "H1"} <= {target for target, _ in figures}
    for f in result["figures"]:
        assert (f["met"] is None) == (f["target"] is None), f
        assert (f["ratio"] is None) == (f["anchor"] is None), f
    counts = result["scenarios"]["t5"]["data"]["counts"]
    assert counts["acknowledged"] > 1000 and counts["lost"] == counts["twice"] == counts["out_of_order"] == 0
    for store in ("sqlite", "redis"):
        assert figures["T1", f"{store}: requests not answered 2xx or answered as duplicates"]["value"] == 0
    text = record.with_suffix(".md").read_text()
    assert all(f["name"] in text for f in result["figures"])
    assert text.count("**MISSED**") == 2 * len(result["missed"])  # in the table and in the list below it
    for name in ("interpreter", "t2", "t3", "host", "t1", "t5"):
        plot = tmp_path / f"{record.stem}-{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot.name})" in text
    assert "MISSED" in run.stdout if result["missed"] else "MISSED" not in run.stdout
