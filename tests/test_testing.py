"""The flow test runner: passing files, and how each kind of failure is reported."""

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from parlour.testing import find_test_files, run_file

from .conftest import REMINDER

FLOWS = Path(__file__).resolve().parent.parent / "flows"


@pytest.mark.parametrize("path", find_test_files([FLOWS]), ids=lambda p: p.name)
async def test_bundled_flow_tests_pass(path):
    outcome = await run_file(path)
    assert outcome.passed, f"{outcome.failure}\n" + "\n".join(outcome.transcript)


@pytest.fixture
def folder(tmp_path):
    shutil.copy(FLOWS / "registration.yaml", tmp_path)
    return tmp_path


HEAD = """\
flow: registration
env: {MEMBERS_API: "http://127.0.0.1:9999"}
http:
  "POST http://127.0.0.1:9999/members": {status: 201, json: {id: 42}}
steps:
  - user: hi
"""


@pytest.mark.parametrize("steps, where, message", [
    ("  - bot: Welcome\n  - bot: Register now", "8:5",
     "step 3 (bot): expected a reply containing 'Register now', got 'What would you like to do?'"),
    ("  - bot: \"re:^Bye\"", "7:5",
     "step 2 (bot): expected a reply matching /^Bye/, got 'Hi there! Welcome to the club.'"),
    ("  - bot: Welcome\n  - bot: What\n  - bot: more", "9:5",
     "step 4 (bot): expected a reply containing 'more', but the bot said nothing more"),
    ("  - bot: Welcome\n  - bot: What\n  - buttons: [register, about]", "9:5",
     "step 4 (buttons): expected buttons ['register', 'about'], the last reply checked offered "
     "['register', 'about', 'quit']"),
    ("  - vars: {tries: 1}", "7:5", "step 2 (vars): expected vars {'tries': 1}, but {'tries': 0}"),
    ("  - node: ask_name", "7:5", "step 2 (node): expected to be at node 'ask_name', at 'main_menu'"),
    ("  - status: ended", "7:5", "step 2 (status): expected status 'ended', it is 'waiting'"),
    ("  - handoff: true", "7:5", "step 2 (handoff): expected a hand-off since the last message"),
    ("  - no_reply: true", "7:5", "step 2 (no_reply): expected no more replies, the bot said "
     "'Hi there! Welcome to the club.'"),
    ("  - user: x\n    bot: y", "7:5", "one thing per step; this one has user, bot"),
    ("  - usr: hi", "7:5", "unknown key 'usr' (did you mean 'user'?)"),
    ("  - press: {id: quit, prompt: p1, node: x}", "7:35", "unknown key 'node'; expected one of: id, prompt"),
])
async def test_failures_name_the_step_and_what_was_expected(folder, steps, where, message):
    (folder / "t.test.yaml").write_text(HEAD + steps + "\n")
    outcome = await run_file(folder / "t.test.yaml")
    assert not outcome.passed
    assert str(outcome.failure).startswith(f"{folder}/t.test.yaml:{where}: ")
    assert message in outcome.failure.message


async def test_a_press_names_its_prompt_or_answers_the_open_one(folder):
    steps = textwrap.dedent("""\
        - press: register
        - press: {id: quit, prompt: p1}
        - bot: Letters only
        - node: ask_name
        - press: {id: quit, prompt: p1}
        - node: goodbye
    """).replace("- ", "  - ")
    (folder / "t.test.yaml").write_text(HEAD + steps)
    outcome = await run_file(folder / "t.test.yaml")
    assert "expected to be at node 'goodbye', at 'ask_name'" in outcome.failure.message
    assert outcome.transcript[:5] == [
        "you> hi", "bot> Hi there! Welcome to the club.",
        "bot> What would you like to do?  [register: Register | about: About us | quit: Quit] (p1)",
        "you> [register] (p1)", "bot> What's your full name?"]
    assert outcome.transcript[5:7] == [
        "you> [quit] (p1)", "   (unhandled: a press of 'quit' for prompt p1, while the open prompt is (none))"]


async def test_a_request_without_a_canned_answer_fails_the_step(folder):
    text = HEAD.replace('  "POST', '  "GET').replace("- user: hi", "- user: hi\n  - press: register\n"
        "  - user: Ada Lovelace\n  - user: ada@example.org\n  - user: '36'\n  - press: 'yes'")
    (folder / "t.test.yaml").write_text(text)
    outcome = await run_file(folder / "t.test.yaml")
    assert "no canned response for 'POST http://127.0.0.1:9999/members' (canned: GET http://127.0.0.1:9999/members)" \
        in outcome.failure.message
    assert outcome.transcript[0] == "you> hi"


async def test_a_canned_error_takes_the_flow_to_on_error(folder):
    text = HEAD.replace("{status: 201, json: {id: 42}}", "{error: timeout}") + textwrap.dedent("""\
        - press: register
        - user: Ada Lovelace
        - user: ada@example.org
        - user: "36"
        - press: "yes"
        - bot: Our system is busy
        - vars: {tries: 1}
        - status: ended
    """).replace("- ", "  - ")
    (folder / "t.test.yaml").write_text(text)
    outcome = await run_file(folder / "t.test.yaml")
    assert outcome.passed, outcome.failure


async def test_an_unknown_flow_and_a_broken_flow_are_reported(folder):
    (folder / "t.test.yaml").write_text(HEAD.replace("flow: registration", "flow: registrations"))
    outcome = await run_file(folder / "t.test.yaml")
    assert outcome.failure.message == "no flow 'registrations' among registration"
    (folder / "broken.yaml").write_text("flow: broken\nstart: a\nnodes: {a: {next: b}}\n")
    outcome = await run_file(folder / "t.test.yaml")
    assert outcome.failure.message == "the flows do not load:"
    assert outcome.transcript == [f"{folder}/broken.yaml:3:19: no node 'b'"]


async def test_wait_moves_the_clock_and_fires_timers(tmp_path):
    (tmp_path / "remind.yaml").write_text(REMINDER)
    (tmp_path / "remind.test.yaml").write_text(textwrap.dedent("""\
        flow: remind
        steps:
          - user: hi
          - bot: See you
          - no_reply: true
          - wait: 3599
          - no_reply: true
          - wait: 1
          - bot: It has been an hour
          - status: ended
    """))
    outcome = await run_file(tmp_path / "remind.test.yaml")
    assert outcome.passed, outcome.failure
    assert "   (clock +3599 s)" in outcome.transcript
    assert outcome.transcript[-1] == "   (end: flow 'remind' ended at node 'later')"


async def test_a_test_file_is_found_by_its_content_wherever_it_is(folder):
    (folder / "pizza_test.yaml").write_text(HEAD + "  - bot: Welcome\n")
    (folder / "tests").mkdir()
    (folder / "tests" / "more.yml").write_text(HEAD.replace("flow: registration", "flow: registration\nchannel: web"))
    (folder / "notes.yaml").write_text("just: some data\n")
    (folder / "broken.yml").write_text("steps: [\n")
    assert find_test_files([folder]) == [folder / "pizza_test.yaml", folder / "tests" / "more.yml"]
    (folder / "notes.yaml").unlink()
    (folder / "broken.yml").unlink()
    outcome = await run_file(folder / "pizza_test.yaml")  # its flows load beside it, the test left out
    assert outcome.passed, f"{outcome.failure}\n" + "\n".join(outcome.transcript)


def test_every_bundled_flow_has_a_test_file():
    flows = {p.name.removesuffix(".yaml") for p in FLOWS.glob("*.yaml") if not p.name.endswith(".test.yaml")}
    tests = {p.name.removesuffix(".test.yaml") for p in find_test_files([FLOWS])}
    assert len(flows) >= 3 and flows <= tests, f"flows without a test file: {sorted(flows - tests)}"


@pytest.mark.parametrize("step, where, message", [
    ("  - wait: soon", "7:11", "'soon' is not a duration"),
    ("  - bot: \"re:Table (or\"", "7:10", "the regular expression does not compile"),
])
async def test_bad_step_values_are_positioned_problems_not_crashes(folder, step, where, message):
    (folder / "t.test.yaml").write_text(HEAD + step + "\n")
    outcome = await run_file(folder / "t.test.yaml")
    assert str(outcome.failure).startswith(f"{folder}/t.test.yaml:{where}: ") and message in outcome.failure.message


async def test_no_reply_false_expects_a_pending_reply(folder):
    (folder / "t.test.yaml").write_text(
        HEAD + "  - no_reply: false\n  - bot: Welcome\n  - bot: What\n  - no_reply: false\n")
    outcome = await run_file(folder / "t.test.yaml")
    assert outcome.failure.message == (
        "step 5 (no_reply): expected a reply not yet checked, but the bot said nothing more")


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Tokyo"])
async def test_a_clock_start_without_a_zone_is_utc_whatever_the_machine_says(tmp_path, monkeypatch, tz):
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        (tmp_path / "clock.yaml").write_text(
            "flow: clock\ntriggers: [{default: true}]\nstart: a\nnodes:\n"
            "  a: {say: \"It is {{ now.hour }}:00 UTC\", end: true}\n")
        (tmp_path / "clock.test.yaml").write_text(
            "flow: clock\nnow: \"2026-11-22T10:00:00\"\nsteps:\n  - user: hi\n  - bot: It is 10:00 UTC\n")
        outcome = await run_file(tmp_path / "clock.test.yaml")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert outcome.passed, outcome.failure
