"""I1: the flow interpreter alone (``advance``), turns per second on one core, on the bundled
registration flow. The target (issue 2) is 30,000 turns/s for ``template-step``: a turn that
answers an ask (regex), saves, and renders the next prompt's template.

Its anchor is the same turn written by hand in Python, the floor any interpreter sits on: the
same regex, the same Jinja2 sandbox rendering the same prompt, a new dict of variables. The
ratio is how much of the hand-written speed the interpreter keeps.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

from jinja2.sandbox import ImmutableSandboxedEnvironment

from bench.harness import FLOWS, Context, Target
from parlour.codec import pack_state, unpack_state
from parlour.flow import Catalog, HttpResult, State, UserMessage, advance, load_catalog

NAME = "interpreter"
TITLE = "I1 the flow interpreter, turns per second on one core"
TARGET = 30_000
NOW = 1_790_000_000.0


def budget_s(quick: bool) -> float:
    return 5 if quick else 25


def walk(catalog: Catalog, *texts: str | tuple[str, str]) -> State:
    state = None
    for item in texts:
        message = UserMessage(button=item[1]) if isinstance(item, tuple) else UserMessage(item)
        state = advance(catalog, state, message, NOW).state
    return state


def by_hand() -> Callable[[], object]:
    """template-step without an interpreter: validate, save, render, reply."""
    name = re.compile(r"^[A-Za-z][A-Za-z .'-]{1,60}$")
    prompt = ImmutableSandboxedEnvironment(autoescape=False).from_string("Thanks {{ name }}. What's your email?")
    variables = {"tries": 0}

    def turn():
        text = "Ada Lovelace"
        if not name.match(text):
            return "ask_name", variables, [{"text": "Letters only, please."}]
        saved = {**variables, "name": text}
        return "ask_email", saved, [{"text": prompt.render(saved)}]
    return turn


def scenarios(catalog: Catalog) -> dict[str, tuple[str, Callable[[], object]]]:
    """name -> (what one turn does, a function running one turn)."""
    at_menu = walk(catalog, "hi")
    at_name = walk(catalog, "hi", ("b", "register"))
    at_email = walk(catalog, "hi", ("b", "register"), "Ada Lovelace")
    at_confirm = walk(catalog, "hi", ("b", "register"), "Ada Lovelace", "ada@example.org", "36")
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
        "template-step-by-hand": ("the anchor: template-step written by hand (regex, Jinja2 sandbox, dict)", by_hand()),
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


def run(ctx: Context) -> None:
    seconds = 0.5 if ctx.quick else 3.0
    catalog = load_catalog([FLOWS], env={"MEMBERS_API": "http://127.0.0.1:9"})
    rows = []
    for name, (what, turn) in scenarios(catalog).items():
        rates = measure(turn, seconds)
        rows.append({"scenario": name, "what": what, "turns_per_s": round(statistics.median(rates)),
                     "spread": [round(min(rates)), round(max(rates))]})
        ctx.log(f"{name}: {rows[-1]['turns_per_s']:,} turns/s")
    ctx.data["rows"] = rows
    rate = {r["scenario"]: r["turns_per_s"] for r in rows}
    ctx.figure("I1", "template-step, turns/s on one core", rate["template-step"], "turns/s",
               anchor=rate["template-step-by-hand"], anchor_name="the same turn by hand", target=Target(">=", TARGET))
    for name in ("menu-say-menu", "start", "http-result", "email-ask", "template-step-cold"):
        ctx.figure("", f"interpreter: {name}", rate[name], "turns/s")
    ctx.note(f"each kind of turn replayed from a fixed state in one thread for about {seconds:g} s, "
             "the median of 5 batches")


def details(data: dict) -> str:
    lines = ["| turn | turns/s (one core) | µs/turn | spread (min-max) | what one turn does |",
             "|---|---:|---:|---|---|"]
    lines += [f"| {r['scenario']} | {r['turns_per_s']:,} | {1e6 / r['turns_per_s']:.1f} | "
              f"{r['spread'][0]:,}-{r['spread'][1]:,} | {r['what']} |" for r in data["rows"]]
    return "\n".join(lines)


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    names, rates = [r["scenario"] for r in rows], [r["turns_per_s"] for r in rows]
    colours = ["#2b7bba" if n == "template-step" else "#777777" if n.endswith("by-hand") else "#a9c4e0" for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.barh(names, rates, color=colours)
    ax.bar_label(bars, fmt=" {:,.0f}", fontsize=8)
    ax.axvline(TARGET, color="black", ls="--", lw=1, label=f"target for template-step: {TARGET:,}")
    ax.invert_yaxis()
    ax.set_xlabel("turns per second, one core (median of 5 batches)")
    ax.set_xlim(0, max(rates + [TARGET]) * 1.2)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"I1: advance() on the registration flow, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
