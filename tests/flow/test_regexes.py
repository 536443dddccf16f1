"""One regex budget per message, whatever the number of triggers (issue 12, finding 6).

These are bound checks, not speed tests: the elapsed time of a turn that would take seconds
without the budget is compared with twice the budget.
"""

from __future__ import annotations

import time

import regex

from parlour.flow import Catalog, Start, Unhandled, UserMessage, advance
from parlour.flow.regexes import REGEX_BUDGET_S, RegexBudget, RegexTimeout, overruns
from tests.conftest import T0, Convo, flow, of

EVIL = "a" * 4000 + "!"  # ^(a+)+$ takes some 0.3 s to fail on it, and 100 of them 30 s
TRIGGERS = "\n".join("  - {regex: '^(a+)+$'}" for _ in range(100))


def catalog() -> Catalog:
    evil = flow(f"flow: evil\ntriggers:\n{TRIGGERS}\nstart: a\nnodes: {{a: {{say: evil, end: true}}}}\n")
    fallback = flow("flow: fallback\ntriggers: [{default: true}]\nstart: a\nnodes: {a: {say: fallback, end: true}}\n")
    return Catalog([evil, fallback])


def test_a_hundred_backtracking_triggers_take_one_budget_and_the_turn_goes_on():
    before, flows = overruns(), catalog()
    started = time.perf_counter()
    turn = advance(flows, None, UserMessage(EVIL), T0)
    elapsed = time.perf_counter() - started
    assert elapsed < 2 * REGEX_BUDGET_S, f"{elapsed:.2f} s for one message"
    assert turn.state.flow == "fallback"  # no trigger matched in time: the default flow took it
    assert overruns() > before  # counted, for parlour_host_regex_overruns_total


def test_the_same_triggers_still_match_an_ordinary_message():
    assert advance(catalog(), None, UserMessage("aaaa"), T0).state.flow == "evil"
    assert advance(catalog(), None, UserMessage("hello"), T0).state.flow == "fallback"


def test_a_host_asking_twice_for_one_message_spends_the_budget_once():
    found = catalog()
    assert found.match(EVIL, "web") == "fallback"
    started = time.perf_counter()
    assert found.match(EVIL, "web") == "fallback"  # the host's second question: kept, not searched
    assert time.perf_counter() - started < REGEX_BUDGET_S / 10
    assert found.match("aaa", "web") == "evil"


def test_a_validate_regex_shares_the_budget_and_running_out_is_a_flow_error():
    c = Convo(flow("""
        flow: f
        start: a
        on_error: oops
        nodes:
          a: {ask: q, validate: {regex: "^(a+)+$"}, save: x, next: b}
          b: {say: ok, end: true}
          oops: {say: "sorry: {{ error.message }}", end: true}
        """))
    c.event(Start("f"))
    started = time.perf_counter()
    # (without IGNORECASE the search is faster: a longer answer, some 3 s without the budget)
    assert c.send("a" * 20_000 + "!") == ["sorry: the `validate` regex took too long on this answer"]
    assert time.perf_counter() - started < 2 * REGEX_BUDGET_S


def test_a_spent_budget_runs_no_search_at_all():
    now = [0.0]
    budget = RegexBudget(0.1, clock=lambda: now[0])
    assert budget.search(regex.compile("^h"), "hello") is not None
    now[0] = 0.1
    try:
        budget.search(regex.compile("^h"), "hello")
    except RegexTimeout as exc:
        assert "budget of 0.1 s is spent" in str(exc)
    else:
        raise AssertionError("a spent budget searched")


def test_no_flow_matches_when_there_is_no_default():
    evil = flow(f"flow: evil\ntriggers:\n{TRIGGERS}\nstart: a\nnodes: {{a: {{say: evil, end: true}}}}\n")
    turn = advance(Catalog([evil]), None, UserMessage(EVIL), T0)
    assert [e.reason for e in of(turn, Unhandled)] == ["no flow's trigger matches this message"]
