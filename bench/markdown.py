"""The run's report as Markdown: the summary table of every figure with its anchor and target,
then each scenario's own section, notes and plot; and the README's block of the latest run."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

README_BEGIN = "<!-- bench:begin (written by python -m bench --readme) -->"
README_END = "<!-- bench:end -->"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: ""}[met]


def summary_table(result: dict) -> str:
    lines = ["| id | figure | measured | anchor (same run) | ratio | target | |",
             "|---|---|---:|---|---:|---|---|"]
    for f in result["figures"]:
        anchor = f"{number(f['anchor'])} {f['unit']} ({f['anchor_name']})" if f["anchor"] is not None else "-"
        lines.append(f"| {f['target_id']} | {f['name']} | {number(f['value'])} {f['unit']} | {anchor} | "
                     f"{number(f['ratio'])} | {f['target'] or ''} | {verdict(f['met'])} |")
    return "\n".join(lines)


def machine_line(result: dict) -> str:
    m = result["machine"]
    v = m["versions"]
    return (f"{m['cpus']} cores ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.0f} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}, parlour {v['parlour']}, Ray {v['ray']}, aiohttp {v['aiohttp']}, "
            f"redis-server {v['redis-server']}, wrk {v['wrk']}; load average {m['load_avg_at_start'][0]:.2f} "
            f"at the start")


def missed_lines(result: dict) -> list[str]:
    lines = [f"- **MISSED** {f['target_id']} {f['name']}: {number(f['value'])} {f['unit']}"
             + (f" (ratio {number(f['ratio'])})" if f["ratio"] is not None else "") + f", target {f['target']}"
             for f in result["missed"]]
    lines += [f"- **FAILED** scenario `{name}`: it did not finish (its error is below)" for name in result["failed"]]
    return lines


def profile_lines(profiles: dict[str, dict]) -> list[str]:
    lines = []
    for label, profile in profiles.items():
        if "samples" not in profile:
            lines += [f"Profile of {label} failed: {profile.get('error', '?')}", ""]
            continue
        graph = f", flame graph [{profile['flamegraph']}]({profile['flamegraph']})" if "flamegraph" in profile else ""
        lines += [(f"Profile of {label} (py-spy, {profile['samples']:,} samples{graph}): the functions most often on "
                  "the stack (share of samples in the function or below it), and most often at its top:"), "",
                  "| in or below | function | | at the top | function |", "|---:|---|---|---:|---|"]
        for (frame, share), (top, own) in zip(profile["inclusive"], profile["self"], strict=False):
            lines.append(f"| {share:.0%} | `{frame}` | | {own:.0%} | `{top}` |")
        lines.append("")
    return lines


def document(result: dict, modules: dict[str, ModuleType], plots: dict[str, str]) -> str:
    kind = "quick run (smoke sizes: figures are not comparable with a full run)" if result["quick"] else "full run"
    out = [f"# parlour benchmark, {result['date']}", "",
           (f"A {kind} of {len(result['scenarios'])} scenarios in {result['seconds']:.0f} s "
            f"on {result['machine']['node']}: {machine_line(result)}."), "",
           ("Each figure's anchor was measured in the same run, on the same machine: compare ratios, since the "
           "machine is shared and absolute figures drift."), "", summary_table(result), ""]
    missed = missed_lines(result)
    out += (["Targets missed or scenarios failed:", "", *missed, ""] if missed else ["Every target was met.", ""])
    for name, outcome in result["scenarios"].items():
        out += [f"## {outcome['title']}", ""]
        module = modules.get(name)
        if outcome["error"]:
            out += ["**This scenario failed**; what it measured before failing is above.", "", "```",
                    outcome["error"].strip()[-3000:], "```", ""]
        if module is not None and hasattr(module, "details") and outcome["data"] and not outcome["error"]:
            out += [module.details(outcome["data"]), ""]
        out += profile_lines(outcome["data"].get("profiles", {}))
        out += [f"- {note}" for note in outcome["notes"]]
        if name in plots:
            out += ["", f"![{outcome['title']}]({plots[name]})"]
        out += ["", f"_{outcome['seconds']:g} s_", ""]
    return "\n".join(out)


def readme_block(result: dict, json_path: Path, plots: list[Path], root: Path) -> str:
    def rel(path: Path) -> str:
        return path.resolve().relative_to(root.resolve()).as_posix()
    lines = [README_BEGIN, "",
             (f"Latest full run: {result['date']}, {result['seconds'] / 60:.0f} minutes on this project's machine: "
             f"{machine_line(result)}. Record: [`{rel(json_path)}`]({rel(json_path)}), "
             f"report: [`{rel(json_path.with_suffix('.md'))}`]({rel(json_path.with_suffix('.md'))})."), "",
             summary_table(result), ""]
    missed = missed_lines(result)
    lines += (["Missed:", "", *missed, ""] if missed else ["Every target was met.", ""])
    lines += [f"![{p.stem.rsplit('-', 1)[-1]}]({rel(p)})" for p in plots if p.suffix == ".png"]
    return "\n".join(lines + ["", README_END])


def update_readme(readme: Path, block: str) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no benchmark block to replace (a line '{README_BEGIN}' ... '{README_END}')")
    readme.write_text(pattern.sub(lambda _: block, text, count=1))
