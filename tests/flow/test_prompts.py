"""Answers belong to their question: every reply with buttons or a list carries the id of its
prompt, and a press is judged against the prompt the conversation waits on (steps.stale_press).

Real flows loaded from text; ``now`` is given, never read.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from parlour.flow import (
    Button,
    Error,
    HttpResult,
    Reply,
    TimerFired,
    Unhandled,
    UserMessage,
    load_catalog,
)
from parlour.flow.steps import STALE
from tests.conftest import Convo, flow

REGISTRATION = Path(__file__).resolve().parents[2] / "flows" / "registration.yaml"
MAIN_MENU = (Button("register", "Register"), Button("about", "About us"), Button("quit", "Quit"))


def press(c: Convo, button: str, prompt: str | None) -> list[str | None]:
    """Press ``button`` of the message whose prompt is ``prompt`` (None: a client that does
    not say); the texts of the replies."""
    return [r.text for r in c.event(UserMessage("", button=button, kind="button", prompt=prompt)).replies]


@pytest.fixture
def registration() -> Convo:
    c = Convo(load_catalog([REGISTRATION], env={"MEMBERS_API": "http://members.test"}))
    c.send("hi")
    return c


# ---------------------------------------------------------------- the ids


def test_a_menu_carries_a_prompt_id_kept_while_it_waits_and_new_each_time(registration):
    c = registration
    assert [(r.text, r.prompt) for r in c.turn.replies] == [
        ("Hi there! Welcome to the club.", None), ("What would you like to do?", "p1")]
    assert c.state.prompt == "p1"
    assert c.send("nothing") == ["Please pick one of the options."]
    assert c.turn.replies[0].prompt == "p1"  # a refusal shows the same prompt's buttons again
    assert press(c, "about", "p1") == ["We are a book club that meets every Thursday.", "What would you like to do?"]
    assert (c.turn.replies[1].prompt, c.state.prompt) == ("p2", "p2")
    assert press(c, "register", "p2") == ["What's your full name?"]
    assert (c.turn.replies[0].prompt, c.state.prompt) == (None, None)  # an ask without buttons opens none


def test_buttons_of_a_say_join_the_prompt_of_the_ask_after_them():
    c = Convo(flow("""
        flow: s
        triggers: [{default: true}]
        start: hint
        nodes:
          hint: {say: {text: "Suggestions:", buttons: [tea, coffee]}, next: q}
          q: {ask: "What will you drink?", save: drink, next: done}
          done: {say: "{{ drink }} it is.", end: true}
        """))
    c.send("hi")
    assert [r.prompt for r in c.turn.replies] == ["p1", None]
    assert press(c, "tea", "p1") == ["tea it is."]


# ---------------------------------------------------------------- the stale-button case of issue 13


def test_an_old_menu_button_pressed_at_an_ask_is_refused_and_the_flow_stays(registration):
    c = registration
    assert press(c, "register", "p1") == ["What's your full name?"]
    assert press(c, "quit", "p1") == ["Letters only, please."]  # the ask's own refusal text
    assert (c.state.node, c.state.wait_for, c.state.attempts) == ("ask_name", "reply", 0)
    assert "name" not in c.state.vars
    assert c.effects(Unhandled) == [Unhandled("a press of 'quit' for prompt p1, while the open prompt is (none)")]
    assert c.send("Ann Lee") == ["Thanks Ann Lee. What's your email?"]


def test_an_old_button_at_a_newer_menu_gets_its_invalid_text_and_its_buttons(registration):
    c = registration
    press(c, "about", "p1")
    assert press(c, "quit", "p1") == ["Please pick one of the options."]
    assert c.turn.replies == [Reply(text="Please pick one of the options.", buttons=MAIN_MENU, prompt="p2")]
    assert (c.state.node, c.state.prompt) == ("main_menu", "p2")
    assert press(c, "quit", "p2") == ["Bye for now. Type hi to start again."]


def test_stale_presses_do_not_use_up_retries(registration):
    c = registration
    press(c, "register", "p1")
    c.send("Ann Lee")
    for _ in range(5):
        assert press(c, "quit", "p1") == ["That doesn't look like an email address."]
    assert (c.state.node, c.state.attempts) == ("ask_email", 0)
    for _ in range(3):
        c.send("nope")
    assert c.state.node == "ask_email"  # three refusals allowed, as without the presses
    assert c.send("nope") == ["What would you like to do?"]


def test_a_press_with_no_prompt_is_judged_as_before_where_the_node_has_buttons(registration):
    c = registration
    assert press(c, "register", None) == ["What's your full name?"]
    migrated = Convo(c.flows, state=replace(registration.state, node="main_menu", prompt=None))
    assert press(migrated, "about", None)[0] == "We are a book club that meets every Thursday."


def test_a_press_for_a_prompt_the_state_has_no_id_for_shows_the_buttons_with_a_new_one(registration):
    c = Convo(registration.flows, state=replace(registration.state, prompt=None))  # stored before ids
    assert press(c, "quit", "p9") == ["Please pick one of the options."]
    assert c.turn.replies[0].prompt == c.state.prompt == "p2"


ASK_WITHOUT_BUTTONS = """
    flow: a
    triggers: [{default: true}]
    start: q
    nodes:
      q: {ask: "Your name?", save: name, next: done}
      done: {say: "Hello {{ name }}.", end: true}
    """


@pytest.mark.parametrize("prompt", [None, "p1"])
def test_a_press_is_never_saved_as_text_by_an_ask_without_buttons(prompt):
    c = Convo(flow(ASK_WITHOUT_BUTTONS))
    c.send("hi")
    assert press(c, "quit", prompt) == [STALE]
    assert (c.state.node, c.state.vars.get("name")) == ("q", None)


def test_a_wait_for_a_reply_takes_no_press_unless_buttons_were_shown_before_it():
    c = Convo(flow("""
        flow: w
        triggers: [{default: true}]
        start: first
        nodes:
          first: {say: {text: "Rate us", buttons: ["1", "5"]}, wait: reply, save: rating, next: more}
          more: {say: "Anything else?", wait: reply, save: extra, next: done}
          done: {say: "Thanks: {{ rating }}, {{ extra }}.", end: true}
        """))
    c.send("hi")
    assert press(c, "5", "p1") == ["Anything else?"]
    assert press(c, "1", "p1") == [STALE]
    assert c.send("no") == ["Thanks: 5, no."]


def test_an_ask_with_buttons_refuses_an_old_press_with_its_error_and_its_buttons():
    c = Convo(flow("""
        flow: b
        triggers: [{default: true}]
        start: size
        nodes:
          size: {menu: {text: "Size?", options: [S, L]}, save: size, next: colour}
          colour:
            ask: {text: "Colour?", buttons: [red, blue]}
            validate: {type: choice, choices: [red, blue], error: "Red or blue, please."}
            save: colour
            next: done
          done: {say: "{{ size }} {{ colour }}", end: true}
        """))
    c.send("hi")
    press(c, "S", "p1")
    assert c.turn.replies[0].prompt == "p2"
    assert press(c, "L", "p1") == ["Red or blue, please."]
    assert c.turn.replies[0] == Reply(text="Red or blue, please.",
                                      buttons=(Button("red", "red"), Button("blue", "blue")), prompt="p2")
    assert press(c, "blue", "p2") == ["S blue"]


# ---------------------------------------------------------------- when a prompt closes


MENU_WITH_TIMEOUT = """
    flow: t
    triggers: [{default: true}]
    start: m
    nodes:
      m:
        menu: {text: "Pick", options: [{id: a, next: done}, {id: b, next: done}]}
        timeout_s: 60
        on_timeout: still
      still: {say: "Still there?", next: m}
      done: {say: "Done.", end: true}
    """


def test_a_timeout_closes_the_prompt_and_the_menu_shown_again_has_a_new_one():
    c = Convo(flow(MENU_WITH_TIMEOUT))
    c.send("hi")
    c.now += 60
    assert [r.text for r in c.event(TimerFired(c.state.timer)).replies] == ["Still there?", "Pick"]
    assert c.state.prompt == "p3"
    assert press(c, "a", "p1") == [STALE]  # a menu without `invalid`: the default
    assert press(c, "a", "p3") == ["Done."]


def test_a_press_held_during_an_http_call_is_judged_against_the_prompt_after_it():
    c = Convo(flow("""
        flow: h
        triggers: [{default: true}]
        start: m
        nodes:
          m: {menu: {text: "Go?", options: [go]}, next: call}
          call: {http: {url: "http://api/x"}, next: q}
          q: {ask: "Name?", save: name, next: done}
          done: {say: "Hi {{ name }}.", end: true}
        """))
    c.send("hi")
    press(c, "go", "p1")
    assert press(c, "go", "p1") == []  # held while the call is out
    assert [r.text for r in c.event(HttpResult(c.state.request, status=200)).replies] == ["Name?", STALE]
    assert c.state.node == "q" and "name" not in c.state.vars


def test_a_press_whose_text_is_a_command_word_answers_and_runs_no_command(registration):
    c = registration
    assert [r.text for r in c.event(UserMessage("stop", button="about", prompt="p1")).replies][0] == \
        "We are a book club that meets every Thursday."
    assert [r.text for r in c.event(UserMessage("stop", button="quit", prompt="p1")).replies] == \
        ["Please pick one of the options."]  # stale: neither the command nor the option
    assert c.state.node == "main_menu"


def test_an_ended_conversation_takes_a_press_as_any_message_by_the_triggers(registration):
    c = registration
    press(c, "quit", "p1")
    assert c.state.status == "ended"
    assert press(c, "register", "p1")[-1] == "What would you like to do?"  # `register` is a keyword


def test_a_refusal_text_that_fails_to_render_goes_to_on_error():
    c = Convo(flow("""
        flow: e
        triggers: [{default: true}]
        start: first
        nodes:
          first: {menu: {text: "Go?", options: [go]}, next: m}
          m: {menu: {text: "Again?", options: [go], invalid: "{{ 1 // 0 }}"}, next: m, on_error: oops}
          oops: {say: Oops., end: true}
        """))
    c.send("hi")
    press(c, "go", "p1")
    assert press(c, "go", "p1") == ["Oops."]
    assert [(e.node, e.routed) for e in c.effects(Error)] == [("m", True)]
