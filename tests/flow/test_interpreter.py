"""runtime/flow/interpreter.py: advance(flows, state, event, now) -> Turn, node kind by node kind.

Every conversation runs on real flows loaded from text; ``now`` is given, never read.
"""

from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from parlour.errors import StateError
from parlour.flow import (
    AgentAction,
    Button,
    CancelTimer,
    Catalog,
    End,
    Error,
    Forward,
    Handoff,
    HttpRequest,
    HttpResult,
    Reply,
    Resume,
    Secret,
    Start,
    StartTimer,
    State,
    TicketChanged,
    TimerFired,
    Unhandled,
    UserMessage,
    advance,
    load_catalog,
)
from parlour.flow.state import Frame
from tests.conftest import T0, Convo, flow, of

REGISTRATION = Path(__file__).resolve().parents[2] / "flows" / "registration.yaml"
HOUR = 3600.0


def errors(convo: Convo) -> list[tuple[str, bool]]:
    return [(e.reason, e.routed) for e in convo.effects(Error)]


# ---------------------------------------------------------------- say


def test_say_sends_text_buttons_list_and_media():
    c = Convo(flow("""
        flow: say
        triggers: [{default: true}]
        start: a
        nodes:
          a:
            say:
              - text: "Pick one, {{ user.name }}"
                buttons: [Tea, {id: coffee, title: Coffee please}]
              - text: Or browse
                list:
                  button: Menu
                  options: [{id: r1, title: "Row {{ 1 + 1 }}"}, r2]
              - media: "https://img.example/{{ user.id }}.png"
                text: A picture
              - media: {url: "https://files.example/menu.pdf", kind: document, filename: menu.pdf}
            end: true
        """))
    c.send("hi", user_id="u7", user_name="Ann")
    assert c.turn.replies == [
        Reply(text="Pick one, Ann", buttons=(Button("Tea", "Tea"), Button("coffee", "Coffee please")), prompt="p1"),
        Reply(text="Or browse", list_button="Menu", list=(Button("r1", "Row 2"), Button("r2", "r2")), prompt="p1"),
        Reply(text="A picture", media_url="https://img.example/u7.png", media_kind="image"),
        Reply(media_url="https://files.example/menu.pdf", media_kind="document", media_filename="menu.pdf"),
    ]
    assert c.effects(End) == [End("say", "a")]
    assert c.state.status == "ended"


# ---------------------------------------------------------------- ask


def ask_flow(validate: str):
    return flow("""
        flow: ask
        triggers: [{default: true}]
        start: q
        nodes:
          q:
            ask: Your answer?
            save: v
            validate: VALIDATE
            next: done
          done:
            say: "Saved {{ v }}"
            end: true
        """.replace("VALIDATE", validate))


ASKS = [
    # (validate, good answer, saved value, bad answer, the reason sent back)
    ("{type: text, length: {min: 2, max: 5}}", " abc ", "abc", "a", "Please use at least 2 characters."),
    ("{regex: '^[A-Z]{3}$'}", "ABC", "ABC", "abcd", "That answer is not in the expected format."),
    ("{type: integer, min: 1, max: 10}", "7", 7, "11", "Please enter a number of at most 10."),
    ("{type: number}", "3,5", 3.5, "three", "Please enter a number."),
    ("{type: email}", "ann@EXAMPLE.org", "ann@example.org", "ann@", "Please enter a valid email address."),
    ("{type: phone, region: GB}", "020 7946 0018", "+442079460018", "12", "That phone number does not exist."),
    ("{type: date, min: today, max: today+7}", "tomorrow", "2026-03-02", "yesterday",
     "Please enter a date on or after 2026-03-01."),
    ("{type: choice, choices: [Red, {id: b, title: Blue}]}", "2", "b", "green", "Please choose one of: Red, Blue."),
    ("{type: integer, error: '{{ message.text }} is not a whole number'}", "5", 5, "5.5",
     "5.5 is not a whole number"),
]


@pytest.mark.parametrize("validate, good, value, bad, reason", ASKS, ids=[a[0].split(",")[0] for a in ASKS])
def test_ask_validates_and_saves(validate, good, value, bad, reason):
    c = Convo(ask_flow(validate))
    assert c.send("hi")[0] == "Your answer?"
    assert c.send(bad) == [reason]
    assert (c.state.status, c.state.node, c.state.attempts) == ("waiting", "q", 1)
    assert "v" not in c.state.vars
    assert c.send(good) == [f"Saved {value}"]
    assert c.state.vars["v"] == value
    assert c.state.status == "ended"


def test_ask_by_choice_offers_its_choices_as_buttons_and_takes_a_press():
    c = Convo(ask_flow("{type: choice, choices: [Red, {id: b, title: Blue}]}"))
    c.send("hi")
    assert c.turn.replies[0].buttons == (Button("Red", "Red"), Button("b", "Blue"))
    c.send("nope")
    assert c.turn.replies[0].buttons == (Button("Red", "Red"), Button("b", "Blue"))  # offered again
    assert c.send("", button="b") == ["Saved b"]


RETRIES = """
    flow: retry
    triggers: [{default: true}]
    start: q
    nodes:
      q:
        ask: Age?
        save: age
        validate: {type: integer}
        RETRIES
        on_fail: gave_up
        next: done
      gave_up: {say: Never mind., end: true}
      done: {say: Thanks., end: true}
    """


@pytest.mark.parametrize("retries, refusals", [("retries: 0", 0), ("retries: 1", 1), ("", 2)],
                         ids=["retries-0", "retries-1", "default-is-2"])
def test_retries_then_on_fail(retries, refusals):
    c = Convo(flow(RETRIES.replace("RETRIES", retries)))
    c.send("hi")
    for attempt in range(1, refusals + 1):
        assert c.send("old") == ["Please enter a whole number."]
        assert c.state.attempts == attempt
    assert c.send("very old") == ["Never mind."]
    assert c.state.status == "ended"


def test_without_on_fail_an_ask_asks_forever():
    c = Convo(ask_flow("{type: integer}"))
    c.send("hi")
    for _ in range(20):
        assert c.send("x") == ["Please enter a whole number."]
    assert c.send("3") == ["Saved 3"]


# ---------------------------------------------------------------- menu

MENU = flow("""
    flow: menu
    triggers: [{default: true}]
    start: m
    nodes:
      m:
        menu:
          text: Fruit?
          options:
            - {id: a, title: Apple, next: apple}
            - {id: b, title: Banana, next: banana}
          invalid: Pick Apple or Banana.
        save: fruit
      apple: {say: Apple it is., end: true}
      banana: {say: Banana it is., end: true}
    """)
FRUITS = (Button("a", "Apple"), Button("b", "Banana"))


@pytest.mark.parametrize("text, button, replies, fruit", [
    ("", "a", ["Apple it is."], "a"),
    ("Apple", "b", ["Banana it is."], "b"),  # the pressed button wins over the text
    ("apple", None, ["Apple it is."], "a"),
    (" BANANA ", None, ["Banana it is."], "b"),
    ("b", None, ["Banana it is."], "b"),
    ("2", None, ["Banana it is."], "b"),
    ("3", None, ["Pick Apple or Banana."], None),
    ("0", None, ["Pick Apple or Banana."], None),
    ("kiwi", None, ["Pick Apple or Banana."], None),
    ("", "zzz", ["Pick Apple or Banana."], None),
])
def test_menu_answer(text, button, replies, fruit):
    c = Convo(MENU)
    c.send("hi")
    assert c.turn.replies == [Reply(text="Fruit?", buttons=FRUITS, prompt="p1")]
    assert c.send(text, button=button) == replies
    assert c.state.vars.get("fruit") == fruit
    if fruit is None:
        assert c.turn.replies[0].buttons == FRUITS
        assert (c.state.node, c.state.wait_for) == ("m", "reply")


def test_menu_answered_with_a_digit_int_cannot_read():
    c = Convo(MENU)
    c.send("hi")
    assert c.send("²") == ["Pick Apple or Banana."]
    assert c.state.status == "waiting"


def test_menu_without_invalid_text_has_a_default():
    c = Convo(flow("""
        flow: m
        triggers: [{default: true}]
        start: m
        nodes:
          m: {menu: {text: "Go?", options: [go]}, next: m}
        """))
    c.send("hi")
    assert c.send("stay") == ["Please choose one of the options."]
    assert c.send("go") == ["Go?"]  # an option without `next` follows the node's


def test_menus_are_reused_by_name():
    c = Convo(flow("""
        flow: reuse
        triggers: [{default: true}]
        menus:
          sure:
            text: "Sure, {{ user.name }}?"
            options:
              - {id: y, title: "Yes", next: again}
              - {id: n, title: "No", next: bye}
        start: first
        nodes:
          first: {menu: sure}
          again: {say: Once more., next: second}
          second: {menu: {use: sure}, save: said}
          bye: {say: Bye., end: true}
        """))
    c.send("hi", user_name="Ann")
    sure = Reply(text="Sure, Ann?", buttons=(Button("y", "Yes"), Button("n", "No")), prompt="p1")
    assert c.turn.replies == [sure]
    assert c.send("yes") == ["Once more.", "Sure, Ann?"]
    assert (c.state.node, c.turn.replies[-1]) == ("second", replace(sure, prompt="p2"))
    assert c.send("2") == ["Bye."]
    assert c.state.vars["said"] == "n"


# ---------------------------------------------------------------- branch and set

BRANCH = """
    flow: br
    triggers: [{default: true}]
    ON_ERROR
    start: q
    nodes:
      q: {ask: "Age?", save: age, validate: {type: integer}, next: check}
      check:
        branch:
          - if: "age < 13"
            next: child
          - if: "age < 18"
            next: teen
          ELSE
      child: {say: child, end: true}
      teen: {say: teen, end: true}
      adult: {say: adult, end: true}
      oops: {say: "Oops: {{ error.message }}", end: true}
    """


@pytest.mark.parametrize("age, replies", [("5", ["child"]), ("13", ["teen"]), ("17", ["teen"]), ("18", ["adult"])])
def test_branch_takes_the_first_condition_that_holds(age, replies):
    c = Convo(flow(BRANCH.replace("ON_ERROR", "").replace("ELSE", "- else: adult")))
    c.send("hi")
    assert c.send(age) == replies


def test_branch_without_else_fails_the_conversation_when_nothing_holds():
    c = Convo(flow(BRANCH.replace("ON_ERROR", "").replace("ELSE", "")))
    c.send("hi")
    assert c.send("40") == []
    assert errors(c) == [("no condition of the branch holds, and it has no `else`", False)]
    assert c.effects(Error)[0].node == "check"
    assert c.state.status == "failed"


def test_branch_without_else_goes_to_on_error_when_there_is_one():
    c = Convo(flow(BRANCH.replace("ON_ERROR", "on_error: oops").replace("ELSE", "")))
    c.send("hi")
    assert c.send("40") == ["Oops: no condition of the branch holds, and it has no `else`"]
    assert errors(c) == [("no condition of the branch holds, and it has no `else`", True)]
    assert c.state.vars["error"] == {"node": "check",
                                     "message": "no condition of the branch holds, and it has no `else`"}
    assert c.state.status == "ended"


def test_a_failed_conversation_starts_afresh_on_the_next_message():
    c = Convo(flow(BRANCH.replace("ON_ERROR", "").replace("ELSE", "")))
    c.send("hi")
    c.send("40")
    assert c.state.status == "failed"
    assert c.send("hello again") == ["Age?"]
    assert (c.state.status, c.state.node, c.state.vars) == ("waiting", "q", {})
    assert c.send("17") == ["teen"]


def test_set_assigns_constants_and_expressions_in_order():
    c = Convo(flow("""
        flow: set
        triggers: [{default: true}]
        vars: {count: 1}
        start: a
        nodes:
          a:
            set: {count: "count + 1", label: "'n=' ~ count", flag: true, nothing: null, pi: 3.5, year: "now.year"}
            say: "{{ label }} {{ count }} {{ flag }}"
            end: true
        """))
    assert c.send("hi") == ["n=2 2 True"]
    assert c.state.vars == {"count": 2, "label": "n=2", "flag": True, "nothing": None, "pi": 3.5, "year": 2026}


def test_a_failing_set_is_a_flow_error():
    c = Convo(flow("""
        flow: set
        triggers: [{default: true}]
        start: a
        nodes:
          a: {set: {x: "1 / 0"}, say: never, end: true}
        """))
    assert c.send("hi") == []
    assert c.effects(Error)[0].reason.startswith("expression '1 / 0': ZeroDivisionError")
    assert c.state.status == "failed"


# ---------------------------------------------------------------- http

HTTP = """
    flow: api
    triggers: [{default: true}]
    vars: {q: books}
    start: call
    nodes:
      call:
        http:
          method: POST
          url: "{{ env.API }}/search"
          headers:
            Authorization: {secret: API_TOKEN, prefix: "Bearer "}
            X-User: "{{ user.id }}"
          query: {q: "{{ q }}", key: {secret: API_KEY}}
          json: {q: "{{ q }}", n: 3, tags: [a, "{{ q }}"], deep: {ok: true}}
          timeout_s: 2
          retries: 1
          save: result
          map: {count: "response.json.count", code: "response.status", hits: "1 / response.json.count"}
          ON_ERROR
        next: done
      done:
        say: "{{ count }} results ({{ code }})"
        end: true
      failed:
        say: "Failed: {{ error.message }} ({{ error.status }})"
        end: true
    """


def http_convo(on_error: str = "on_error: failed") -> Convo:
    c = Convo(Catalog([flow(HTTP.replace("ON_ERROR", on_error))], env={"API": "https://api.example"}))
    c.send("hi", user_id="u1")
    return c


def test_http_sends_a_request_and_waits_for_its_result():
    c = http_convo()
    assert c.turn.effects == (HttpRequest(
        request_id="r1", method="POST", url="https://api.example/search",
        headers=(("Authorization", Secret("API_TOKEN", "Bearer ")), ("X-User", "u1")),
        query=(("q", "books"), ("key", Secret("API_KEY"))),
        json={"q": "books", "n": 3, "tags": ["a", "books"], "deep": {"ok": True}},
        timeout_s=2.0, retries=1),)
    assert (c.state.status, c.state.wait_for, c.state.request) == ("waiting", "http", "r1")


def test_secrets_never_reach_the_state():
    c = http_convo()
    assert "API_TOKEN" not in repr(c.state.to_data())


def test_http_success_saves_and_maps_the_response():
    c = http_convo()
    c.event(HttpResult("r1", status=200, json={"count": 4}, headers={"x": "y"}))
    assert c.turn.replies == [Reply(text="4 results (200)")]
    assert {k: c.state.vars[k] for k in ("result", "count", "code", "hits")} == {
        "result": {"count": 4}, "count": 4, "code": 200, "hits": 0.25}
    assert c.state.request is None


def test_http_saves_the_text_when_there_is_no_json():
    c = http_convo()
    c.event(HttpResult("r1", status=200, text="4 things", json=None))
    assert c.state.vars["result"] == "4 things"  # saved before `map`, which then fails on it


@pytest.mark.parametrize("result, reply", [
    (HttpResult("r1", status=500, json={"detail": "down"}), "Failed: HTTP 500 (500)"),
    (HttpResult("r1", status=404), "Failed: HTTP 404 (404)"),
    (HttpResult("r1", error="timed out after 2s"), "Failed: timed out after 2s ()"),
    (HttpResult("r1", status=200, json={"count": 0}), "Failed: expression '1 / response.json.count': "
                                                      "ZeroDivisionError: division by zero ()"),
], ids=["500", "404", "no-answer", "map-fails"])
def test_http_failure_goes_to_on_error(result, reply):
    c = http_convo()
    assert [r.text for r in c.event(result).replies] == [reply]
    assert [e.routed for e in c.effects(Error)] == [True]
    assert c.state.vars["error"]["node"] == "call"


def test_http_failure_without_on_error_fails_the_conversation():
    c = http_convo(on_error="")
    c.event(HttpResult("r1", status=503))
    assert errors(c) == [("HTTP 503", False)]
    assert c.state.status == "failed"


@pytest.mark.parametrize("result", [HttpResult("r9", status=200), HttpResult("", status=200)])
def test_a_stale_http_result_is_ignored(result):
    c = http_convo()
    before = c.state
    assert c.event(result).effects == (Unhandled(f"stale http result {result.request_id}"),)
    assert c.state == before
    c.event(HttpResult("r1", status=200, json={"count": 1}))
    assert c.turn.replies == [Reply(text="1 results (200)")]
    assert c.event(HttpResult("r1", status=200)).effects == (Unhandled("stale http result r1"),)


def test_http_form_and_body_are_rendered():
    c = Convo(flow("""
        flow: f
        triggers: [{default: true}]
        start: a
        nodes:
          a: {http: {method: PUT, url: "http://x/{{ message.text }}", form: {who: "{{ message.text }}"}}, next: b}
          b: {http: {url: "http://x", body: "raw {{ message.text }}"}, next: c}
          c: {end: true}
        """))
    c.send("ann")
    assert c.effects(HttpRequest)[0].form == (("who", "ann"),)
    assert c.effects(HttpRequest)[0].url == "http://x/ann"
    c.event(HttpResult("r1", status=204))
    assert c.effects(HttpRequest)[0].body == "raw "  # `message` is the event of this turn: none


def test_a_value_msgpack_cannot_hold_never_reaches_the_state():
    c = http_convo()
    c.event(HttpResult("r1", status=200, json={"count": 2 ** 70}))
    msgpack.packb(c.state.to_data())


# ---------------------------------------------------------------- handoff

HANDOFF = """
    flow: help
    triggers: [{default: true}]
    start: h
    nodes:
      h:
        say: Connecting you.
        handoff: {reason: "{{ user.name }} needs help", queue: billing}
        NEXT
      back:
        say: "Welcome back. Ticket {{ ticket }}."
        end: true
    """


def test_handoff_forwards_messages_until_resumed():
    c = Convo(flow(HANDOFF.replace("NEXT", "next: back")))
    assert c.send("hi", user_name="Ann") == ["Connecting you."]
    ticket = c.state.ticket
    assert c.effects(Handoff) == [Handoff("Ann needs help", "billing", ticket)]
    assert (c.state.status, c.state.wait_for) == ("handoff", "agent")
    c.send("my card is blocked")
    assert c.turn.effects == (Forward("my card is blocked"),)
    c.send("", button="b1")
    assert c.turn.effects == (Forward("", "b1"),)
    assert c.event(Resume(vars={"ticket": "T-1"})).replies == [Reply(text="Welcome back. Ticket T-1.")]
    assert c.effects(TicketChanged) == [TicketChanged(ticket, "resumed")]
    assert (c.state.status, c.state.ticket) == ("ended", None)


def test_resume_of_a_handoff_without_next_ends_it():
    c = Convo(flow(HANDOFF.replace("NEXT", "")))
    c.send("hi")
    ticket = c.state.ticket
    assert c.event(Resume(agent="kim")).effects == (TicketChanged(ticket, "resumed", "kim"), End("help", "h"))
    assert c.state.status == "ended"


def test_each_handoff_opens_a_ticket_of_its_own_that_sorts_by_time():
    c = Convo(flow(HANDOFF.replace("NEXT", "")))
    c.send("hi")
    first = c.state.ticket
    c.event(Resume())
    c.now += 60
    c.send("hi again")
    second = c.state.ticket
    assert len(first) == len(second) == 21 and first < second
    other = Convo(flow(HANDOFF.replace("NEXT", "")), now=c.now)
    other.send("hi", user_id="someone-else")
    assert other.state.ticket not in (first, second)


def test_resume_can_name_the_node_to_go_on_from():
    c = Convo(flow(HANDOFF.replace("NEXT", "")))
    c.send("hi")
    assert c.event(Resume(vars={"ticket": "T-9"}, ticket=c.state.ticket, node="back")).replies == [
        Reply(text="Welcome back. Ticket T-9.")]


def test_a_resume_to_a_missing_node_or_of_another_ticket_changes_nothing():
    c = Convo(flow(HANDOFF.replace("NEXT", "next: back")))
    c.send("hi")
    before = c.state
    assert c.event(Resume(node="nowhere")).effects == (Unhandled("resume refused: no node 'nowhere' in flow 'help'"),)
    assert c.event(Resume(ticket="0000")).effects == (
        Unhandled("ticket '0000' is not this conversation's open hand-off"),)
    assert c.event(AgentAction("0000", "message", text="hello")).effects == (
        Unhandled("ticket '0000' is not this conversation's open hand-off"),)
    assert c.state == before


def test_an_agent_takes_the_ticket_speaks_and_closes_it():
    c = Convo(flow(HANDOFF.replace("NEXT", "next: back")))
    c.send("hi")
    ticket = c.state.ticket
    assert c.event(AgentAction(ticket, "assign", agent="kim")).effects == (TicketChanged(ticket, "assigned", "kim"),)
    assert c.state.status == "handoff"
    assert c.event(AgentAction(ticket, "message", agent="kim", text="Hello, I'm Kim.")).replies == [
        Reply(text="Hello, I'm Kim.")]
    assert c.event(AgentAction(ticket, "close", agent="kim")).effects == (
        TicketChanged(ticket, "closed", "kim"), End("help", "h"))
    assert (c.state.status, c.state.ticket) == ("ended", None)
    assert c.event(AgentAction(ticket, "message", text="late")).effects == (Unhandled("not in a hand-off"),)


def test_a_flow_started_over_a_handoff_closes_its_ticket():
    c = Convo(flow(HANDOFF.replace("NEXT", "")))
    c.send("hi")
    ticket = c.state.ticket
    turn = c.event(Start("help"))
    assert TicketChanged(ticket, "closed") in turn.effects
    assert c.state.ticket != ticket


def test_resume_outside_a_handoff_is_unhandled():
    c = Convo(MENU)
    c.send("hi")
    before = c.state
    assert c.event(Resume()).effects == (Unhandled("not in a hand-off"),)
    assert c.state == before


# ---------------------------------------------------------------- wait and timers

WAIT_FOR = flow("""
    flow: w
    triggers: [{default: true}]
    start: w
    nodes:
      w: {say: Back in 90 minutes., wait: 1h30m, next: later}
      later: {say: Hello again., end: true}
    """)


def test_wait_for_a_duration_arms_a_timer():
    c = Convo(WAIT_FOR)
    c.send("hi")
    assert c.effects(StartTimer) == [StartTimer("t1", T0 + 5400)]
    assert (c.state.wait_for, c.state.timer) == ("timer", "t1")
    assert c.send("are you there?") == []
    assert c.effects(Unhandled) == [Unhandled("not waiting for a reply (waiting for timer)")]
    c.now += 5400
    assert [r.text for r in c.event(TimerFired("t1")).replies] == ["Hello again."]
    assert c.state.status == "ended"


WAIT_AT = flow("""
    flow: at
    start: w
    nodes:
      w: {wait: {at: "{{ when }}"}, next: done}
      done: {say: Time., end: true}
    """)


@pytest.mark.parametrize("when, due", [
    ("2026-03-01T13:00:00+00:00", T0 + HOUR),
    ("2026-03-01T13:00:00", T0 + HOUR),  # no zone: UTC
    ("2026-03-01T14:00:00+01:00", T0 + HOUR),
    ("2026-03-02", T0 + 12 * HOUR),
    ("2026-03-01T11:00:00+00:00", None),  # already past: go on at once
    ("2026-03-01T12:00:00+00:00", None),
])
def test_wait_at_an_iso_time(when, due):
    c = Convo(WAIT_AT)
    c.event(Start("at", vars={"when": when}))
    if due is None:
        assert c.turn.replies == [Reply(text="Time.")]
        assert c.effects(StartTimer) == []
    else:
        assert c.effects(StartTimer) == [StartTimer("t1", due)]
        assert c.turn.replies == []


def test_wait_at_something_not_a_time_is_a_flow_error():
    c = Convo(WAIT_AT)
    c.event(Start("at", vars={"when": "soon"}))
    assert errors(c) == [("wait `at` gave 'soon', not an ISO date-time", False)]


WAIT_REPLY = flow("""
    flow: wr
    triggers: [{default: true}]
    start: w
    nodes:
      w:
        say: Say something.
        wait: reply
        save: said
        timeout_s: 600
        on_timeout: gone
        next: got
      got: {say: "Got {{ said }}.", end: true}
      gone: {say: Gone., end: true}
    """)


def test_wait_until_reply_takes_the_reply_and_cancels_the_timer():
    c = Convo(WAIT_REPLY)
    c.send("hi")
    assert c.effects(StartTimer) == [StartTimer("t1", T0 + 600)]
    c.now += 599
    assert c.send("hey") == ["Got hey."]
    assert c.effects(CancelTimer) == [CancelTimer("t1")]
    assert c.state.timer is None


def test_wait_until_reply_times_out():
    c = Convo(WAIT_REPLY)
    c.send("hi")
    c.now += 600
    assert [r.text for r in c.event(TimerFired("t1")).replies] == ["Gone."]


def test_a_refused_answer_rearms_the_timeout():
    c = Convo(flow("""
        flow: a
        triggers: [{default: true}]
        start: q
        nodes:
          q: {ask: "Age?", validate: {type: integer}, timeout_s: 60, on_timeout: gone, next: gone}
          gone: {say: Gone., end: true}
        """))
    c.send("hi")
    c.now += 30
    c.send("old")
    assert c.turn.effects[1:] == (CancelTimer("t1"), StartTimer("t2", T0 + 90))
    assert c.event(TimerFired("t1")).effects == (Unhandled("stale timer t1"),)
    assert [r.text for r in c.event(TimerFired("t2")).replies] == ["Gone."]


@pytest.mark.parametrize("timer", ["t2", "t0", "", "r1"])
def test_a_timer_that_is_not_the_current_one_is_ignored(timer):
    c = Convo(WAIT_FOR)
    c.send("hi")
    before = c.state
    assert c.event(TimerFired(timer)).effects == (Unhandled(f"stale timer {timer}"),)
    assert c.state == before


def test_a_timer_that_already_fired_is_ignored():
    c = Convo(WAIT_FOR)
    c.send("hi")
    c.event(TimerFired("t1"))
    ended = c.state
    assert c.event(TimerFired("t1")).effects == (Unhandled("stale timer t1"),)
    assert c.state == ended


def test_a_timer_cancelled_by_a_reply_is_ignored():
    c = Convo(WAIT_REPLY)
    c.send("hi")
    c.send("hey")
    assert c.event(TimerFired("t1")).effects == (Unhandled("stale timer t1"),)


# ---------------------------------------------------------------- goto, end, sub-flows

MAIN = """
    flow: main
    triggers: [{keyword: hi}]
    commands: {menu: top}
    start: top
    nodes:
      top:
        say: Main.
        GOTO
        NEXT
      back:
        say: "Back in main, {{ colour }}."
        end: true
    """
SUB = flow("""
    flow: sub
    commands: {again: ask}
    start: intro
    nodes:
      intro: {say: Sub., next: ask}
      ask: {ask: "Colour?", save: colour, next: bye}
      bye: {say: Sub done., end: true}
    """)


def sub_convo(goto: str, returns: bool = True) -> Convo:
    main = MAIN.replace("GOTO", goto).replace("NEXT", "next: back" if returns else "")
    c = Convo(Catalog([flow(main), SUB]))
    c.send("hi")
    return c


def test_goto_a_node():
    c = Convo(flow("""
        flow: g
        triggers: [{default: true}]
        start: a
        nodes:
          a: {say: one, goto: c}
          b: {say: never, end: true}
          c: {say: two, end: true}
        """))
    assert c.send("hi") == ["one", "two"]


def test_goto_a_flow_with_return_comes_back():
    c = sub_convo("goto: {flow: sub, return: true}")
    assert c.turn.replies == [Reply(text="Main."), Reply(text="Sub."), Reply(text="Colour?")]
    main = c.flows.current("main")
    assert (c.state.flow, c.state.node) == ("sub", "ask")
    assert c.state.stack == (Frame("main", main.version, "back"),)
    assert c.send("red") == ["Sub done.", "Back in main, red."]
    assert c.effects(End) == [End("main", "back")]
    assert (c.state.flow, c.state.stack, c.state.status) == ("main", (), "ended")


def test_goto_a_flow_at_a_node():
    c = sub_convo("goto: {flow: sub, node: ask, return: true}")
    assert c.turn.replies == [Reply(text="Main."), Reply(text="Colour?")]


def test_goto_a_flow_without_return_ends_there():
    c = sub_convo("goto: {flow: sub}", returns=False)
    assert c.state.stack == ()
    assert c.send("red") == ["Sub done."]
    assert c.effects(End) == [End("sub", "bye")]
    assert c.state.status == "ended"


def test_goto_a_flow_that_is_not_loaded_is_a_flow_error():
    c = Convo(flow(MAIN.replace("GOTO", "goto: {flow: sub}").replace("NEXT", "")))  # a catalog without `sub`
    assert c.send("hi") == ["Main."]
    assert errors(c) == [("no flow 'sub' is loaded", False)]


def test_a_command_of_the_calling_flow_works_inside_the_sub_flow():
    c = sub_convo("goto: {flow: sub, return: true}")
    assert c.send("menu") == ["Main.", "Sub.", "Colour?"]
    assert len(c.state.stack) == 1  # the frame was popped, then pushed again
    assert c.send("blue") == ["Sub done.", "Back in main, blue."]


def test_a_command_of_the_sub_flow_keeps_the_stack():
    c = sub_convo("goto: {flow: sub, return: true}")
    stack = c.state.stack
    assert c.send("AGAIN") == ["Colour?"]
    assert (c.state.flow, c.state.stack) == ("sub", stack)


# ---------------------------------------------------------------- commands

COMMANDS = flow("""
    flow: cmd
    triggers: [{default: true}]
    commands: {Stop: bye, help: helpme}
    start: q
    nodes:
      q: {ask: "Name?", timeout_s: 60, on_timeout: bye, next: w}
      w: {say: Waiting., wait: 1d, next: bye}
      helpme: {say: Type stop to leave., next: q}
      bye: {say: Bye., end: true}
    """)


@pytest.mark.parametrize("answers, command, replies, cancelled", [
    ([], "stop", ["Bye."], "t1"),
    ([], "  STOP ", ["Bye."], "t1"),
    ([], "help", ["Type stop to leave.", "Name?"], "t1"),
    (["Ann"], "Stop", ["Bye."], "t2"),  # while waiting for a timer
    (["Ann"], "help", ["Type stop to leave.", "Name?"], "t2"),
], ids=["ask", "ask-case-and-spaces", "ask-help", "wait", "wait-help"])
def test_commands_work_at_any_step(answers, command, replies, cancelled):
    c = Convo(COMMANDS)
    c.send("hi")
    for answer in answers:
        c.send(answer)
    assert c.send(command) == replies
    assert CancelTimer(cancelled) in c.turn.effects


def test_a_command_word_inside_a_sentence_is_just_text():
    c = Convo(COMMANDS)
    c.send("hi")
    assert c.send("please stop") == ["Waiting."]


# ---------------------------------------------------------------- triggers

TRIGGERS = Catalog([
    flow("flow: kw\ntriggers: [{keyword: [order, buy]}]\nstart: a\nnodes: {a: {say: kw, end: true}}\n"),
    flow("flow: tg\ntriggers: [{keyword: track, channels: [telegram]}]\nstart: a\nnodes: {a: {say: tg, end: true}}\n"),
    flow("flow: rx\ntriggers: [{regex: '^track\\s+\\d+$'}]\nstart: a\nnodes: {a: {say: rx, end: true}}\n"),
    flow("flow: wa\ntriggers: [{default: true, channels: [whatsapp]}]\nstart: a\nnodes: {a: {say: wa, end: true}}\n"),
])


@pytest.mark.parametrize("text, button, channel, started", [
    ("order", None, "web", "kw"),
    (" BUY ", None, None, "kw"),
    ("", "order", None, "kw"),  # a pressed button's id counts as the text
    ("track", None, "telegram", "tg"),
    ("track", None, "web", None),  # the keyword is for telegram only, the regex wants a number
    ("Track 123", None, "web", "rx"),
    ("track 42", None, "telegram", "rx"),  # keywords are whole messages
    ("hello", None, "whatsapp", "wa"),
    ("order", None, "whatsapp", "kw"),  # a keyword beats a default
    ("hello", None, "web", None),
    ("hello", None, None, None),
])
def test_triggers_pick_the_flow(text, button, channel, started):
    c = Convo(TRIGGERS)
    replies = c.send(text, button=button, channel=channel)
    if started is None:
        assert c.turn.effects == (Unhandled("no flow's trigger matches this message"),)
        assert c.state.status == "idle"
    else:
        assert replies == [started]
        assert c.state.flow == started


def test_start_runs_a_flow_at_a_node_with_vars_and_a_message():
    c = Convo(Catalog([flow("""
        flow: camp
        start: a
        nodes:
          a: {say: never, end: true}
          b: {say: "{{ offer }} for {{ user.name }} ({{ message.text }})", end: true}
        """)]))
    c.event(Start("camp", node="b", vars={"offer": "10% off"}, message=UserMessage("promo", user_name="Ann")))
    assert c.turn.replies == [Reply(text="10% off for Ann (promo)")]


def test_start_of_an_unknown_flow_is_unhandled():
    c = Convo(TRIGGERS)
    assert c.event(Start("nope")).effects == (Unhandled("flow 'nope' is not loaded"),)


def test_something_that_is_not_an_event_is_unhandled():
    c = Convo(TRIGGERS)
    assert c.event("hello").effects == (Unhandled("not an event: str"),)


# ---------------------------------------------------------------- failures, limits, buffering

LOOP = """
    flow: loop
    triggers: [{default: true}]
    max_steps: 10
    vars: {n: 0}
    ON_ERROR
    start: a
    nodes:
      a: {set: {n: "n + 1"}, next: b}
      b:
        branch:
          - if: "n > 1000"
            next: oops
          - else: a
      oops: {say: "Sorry, that went wrong.", end: true}
    """


def test_step_limit_fails_the_conversation():
    c = Convo(flow(LOOP.replace("ON_ERROR", "")))
    assert c.send("hi") == []
    assert errors(c) == [("more than 10 steps without waiting (a loop?)", False)]
    assert c.state.status == "failed"
    assert c.state.vars["n"] == 5  # a and b ran five times each


def test_step_limit_goes_to_on_error():
    c = Convo(flow(LOOP.replace("ON_ERROR", "on_error: oops")))
    assert c.send("hi") == ["Sorry, that went wrong."]
    assert errors(c) == [("more than 10 steps without waiting (a loop?)", True)]
    assert c.state.status == "ended"


BUFFERED = """
    flow: buf
    triggers: [{default: true}]
    ON_ERROR
    start: call
    nodes:
      call: {http: {url: "http://api/x"}, next: name}
      name: {ask: "Name?", save: name, next: age}
      age: {ask: "Age?", save: age, validate: {type: integer}, next: check}
      check:
        branch:
          - if: "age < 150"
            next: done
      done: {say: "{{ name }} is {{ age }}.", end: true}
      oops: {say: Oops., next: age}
    """


def test_messages_during_an_http_call_are_kept_and_answered_in_order():
    c = Convo(flow(BUFFERED.replace("ON_ERROR", "")))
    c.send("hi")
    assert c.send("Ann") == [] and c.send("41") == []
    assert c.turn.effects == ()
    assert [m["text"] for m in c.state.inbox] == ["Ann", "41"]
    assert [r.text for r in c.event(HttpResult("r1", status=200)).replies] == ["Name?", "Age?", "Ann is 41."]
    assert (c.state.inbox, c.state.status) == ((), "ended")


def test_an_overfull_inbox_drops_the_oldest():
    c = Convo(flow(BUFFERED.replace("ON_ERROR", "")))
    c.send("hi")
    for i in range(51):
        c.send(f"m{i}")
    assert c.turn.effects == (Unhandled("more than 50 messages during an http call: oldest dropped"),)
    assert [m["text"] for m in c.state.inbox] == [f"m{i}" for i in range(1, 51)]


def test_buffered_messages_are_handled_like_separate_turns():
    c = Convo(flow(BUFFERED.replace("ON_ERROR", "on_error: oops")))
    c.send("hi")
    for answer in ("Ann", "200", "300"):
        c.send(answer)
    c.event(HttpResult("r1", status=200))
    assert [r.text for r in c.turn.replies] == ["Name?", "Age?", "Oops.", "Age?", "Oops.", "Age?"]
    assert [e.routed for e in c.effects(Error)] == [True, True]
    assert c.state.status == "waiting"


# ---------------------------------------------------------------- versions and state

VERSIONED = """
    flow: pinned
    version: VERSION
    triggers: [{default: true}]
    start: q
    nodes:
      q: {ask: "VERSION: name?", save: name, next: bye}
      bye: {say: "VERSION: bye {{ name }}", end: true}
    """
V1, V2 = (flow(VERSIONED.replace("VERSION", v)) for v in ("v1", "v2"))


def test_a_conversation_stays_on_the_version_it_started_on():
    catalog = Catalog([V1])
    old = Convo(catalog)
    assert old.send("hi") == ["v1: name?"]
    catalog.add(V2)
    assert old.send("Ann") == ["v1: bye Ann"]
    assert old.state.version == "v1"
    assert Convo(catalog).send("hi") == ["v2: name?"]


def test_a_version_added_as_not_current_serves_no_new_conversation():
    catalog = Catalog([V1])
    catalog.add(V2, make_current=False)
    assert Convo(catalog).send("hi") == ["v1: name?"]
    assert catalog.get("pinned", "v2") is V2


def test_a_missing_pinned_version_fails_the_conversation_without_raising():
    pinned = State(flow="pinned", version="v0", node="q", status="waiting", wait_for="reply", timer="t1")
    c = Convo(Catalog([V1]), state=pinned)
    c.event(TimerFired("t1"))
    assert errors(c) == [("flow 'pinned' version 'v0' is not loaded", False)]
    assert (c.state.status, c.state.flow, c.state.version) == ("failed", "pinned", "v0")
    assert c.send("hi") == ["v1: name?"]  # the next message starts afresh on what is loaded
    assert (c.state.status, c.state.version) == ("waiting", "v1")


def _mid_sub_flow() -> State:
    return sub_convo("goto: {flow: sub, return: true}").state


def _buffering() -> State:
    c = Convo(flow(BUFFERED.replace("ON_ERROR", "")))
    c.send("hi", user_id="u1", user_name="Ann", channel="web")
    c.send("Ann", button="b1", kind="button", data={"row": 1})
    return c.state


def _timing() -> State:
    c = Convo(WAIT_REPLY)
    c.send("hi")
    return c.state


def _http_saved() -> State:
    c = http_convo()
    c.event(HttpResult("r1", status=200, json={"count": 2, "items": [{"a": None, "b": 1.5}]}))
    return c.state


@pytest.mark.parametrize("make", [_mid_sub_flow, _buffering, _timing, _http_saved, State])
def test_state_round_trips_through_msgpack(make):
    state = make()
    data = msgpack.unpackb(msgpack.packb(state.to_data()))
    assert data == state.to_data()
    assert State.from_data(data) == state


def test_a_restored_state_carries_on_like_the_original():
    state = _buffering()
    restored = State.from_data(msgpack.unpackb(msgpack.packb(state.to_data())))
    catalog = Catalog([flow(BUFFERED.replace("ON_ERROR", ""))])
    event = HttpResult("r1", status=200)
    assert advance(catalog, restored, event, T0) == advance(catalog, state, event, T0)


@pytest.mark.parametrize("change, words", [
    ({"schema": 3}, "state schema 3 is newer than this parlour"),
    ({"schema": 0}, "unreadable conversation state"),  # no migration from 0
    ({"stack": [["only-two", "items"]]}, "unreadable conversation state"),
    ({"vars": 7}, "unreadable conversation state"),
])
def test_from_data_refuses_state_it_cannot_read(change, words):
    with pytest.raises(StateError, match=words):
        State.from_data({**_timing().to_data(), **change})


def test_from_data_refuses_missing_keys():
    data = _timing().to_data()
    del data["vars"]
    with pytest.raises(StateError, match="unreadable"):
        State.from_data(data)


def test_flow_vars_reach_the_state_as_plain_data():
    c = Convo(flow("""
        flow: d
        triggers: [{default: true}]
        vars: {opening: 2026-04-01}
        start: q
        nodes:
          q: {ask: "Opening {{ opening }}?", next: q}
        """))
    assert c.send("hi") == ["Opening 2026-04-01?"]
    msgpack.packb(c.state.to_data())


# ---------------------------------------------------------------- the reference flow


@pytest.fixture
def registration() -> Convo:
    return Convo(load_catalog([REGISTRATION], env={"MEMBERS_API": "http://members.test"}))


SIGN_UP = [
    # (what the user sends, the replies)
    (("hi",), ["Hi Ann! Welcome to the club.", "What would you like to do?"]),
    (("2",), ["We are a book club that meets every Thursday.", "What would you like to do?"]),
    (("", "register"), ["What's your full name?"]),
    (("R2-D2",), ["Letters only, please."]),
    (("Ann Lee",), ["Thanks Ann Lee. What's your email?"]),
    (("menu",), ["What would you like to do?"]),  # a command mid-way
    (("register",), ["What's your full name?"]),
    (("Ann Lee",), ["Thanks Ann Lee. What's your email?"]),
    (("ann@example",), ["That doesn't look like an email address."]),
    (("ann@example.org",), ["How old are you?"]),
    (("twelve",), ["Please enter a whole number."]),
    (("12",), ["Please enter a number of at least 13."]),
    (("30",), ["Register Ann Lee <ann@example.org>, 30?"]),
    (("", "yes"), []),
]


def test_registration_from_hello_to_member(registration):
    c = registration
    for message, replies in SIGN_UP:
        assert c.send(*message, user_name="Ann") == replies, message
    assert c.effects(HttpRequest) == [HttpRequest(
        request_id=c.state.request, method="POST", url="http://members.test/members",
        json={"name": "Ann Lee", "email": "ann@example.org", "age": 30}, timeout_s=5.0)]
    c.event(HttpResult(c.state.request, status=201, json={"id": 7}))
    assert [r.text for r in c.turn.replies] == ["You're in, member #7.", "Bye for now. Type hi to start again."]
    assert c.effects(End) == [End("registration", "goodbye")]
    assert (c.state.status, c.state.vars["member"]) == ("ended", {"id": 7})


def test_registration_when_the_members_api_fails(registration):
    c = registration
    for message, _ in SIGN_UP:
        c.send(*message)
    c.event(HttpResult(c.state.request, status=503))
    assert [r.text for r in c.turn.replies] == ["Our system is busy, please try again later.",
                                                "Bye for now. Type hi to start again."]
    assert [e.routed for e in c.effects(Error)] == [True]
    assert c.state.vars["tries"] == 1


@pytest.mark.parametrize("age, replies", [
    ("17", ["Sorry Ann Lee, members must be 18 or older.", "Bye for now. Type hi to start again."]),
    ("18", ["Register Ann Lee <a@b.org>, 18?"]),
])
def test_registration_of_a_minor(registration, age, replies):
    c = registration
    for message in ("hi", "Register", "Ann Lee", "a@b.org"):
        c.send(message)
    assert c.send(age) == replies


def test_registration_gives_up_on_the_email_after_three_retries(registration):
    c = registration
    for message in ("hi", "1", "Ann Lee"):
        c.send(message)
    for _ in range(3):
        assert c.send("nope") == ["That doesn't look like an email address."]
    assert c.send("nope") == ["What would you like to do?"]


def test_registration_stops_at_any_step(registration):
    c = registration
    c.send("hello")
    c.send("Register")
    assert c.send("STOP") == ["Bye for now. Type hi to start again."]
    assert c.state.status == "ended"
    assert c.send("hi")[0] == "Hi there! Welcome to the club."


@pytest.mark.parametrize("event", [
    Start("f", vars={"big": 2 ** 64}),
    Resume(vars={"when": object()}),
])
def test_an_event_bringing_unstorable_vars_is_refused_and_the_state_kept(event):
    c = Convo(flow("""
        flow: f
        triggers: [{default: true}]
        start: a
        nodes:
          a: {handoff: busy, next: b}
          b: {say: back, end: true}
    """))
    c.send("hi")
    before = c.state
    turn = c.event(event)
    assert turn.state == before
    assert [e.reason.split(":")[0] for e in of(turn, Unhandled)] == [f"{type(event).__name__.lower()} refused"]


def test_a_regex_that_backtracks_forever_is_cut_off():
    f = flow("""
        flow: f
        triggers: [{regex: "^(a|aa)+$"}]
        start: a
        on_error: oops
        nodes:
          a: {ask: q, validate: {regex: "^(a|aa)+$"}, save: x, next: b}
          b: {say: ok, end: true}
          oops: {say: "sorry: {{ error.message }}", end: true}
        """)
    evil = "a" * 40 + "b"
    trigger = Convo(f)
    trigger.send(evil)
    assert [e.reason for e in trigger.effects(Unhandled)] == ["no flow's trigger matches this message"]
    answer = Convo(f)
    answer.event(Start("f"))
    assert answer.send(evil) == ["sorry: the `validate` regex took too long on this answer"]


def test_an_error_body_the_state_cannot_hold_still_reaches_on_error():
    c = Convo(flow("""
        flow: g
        triggers: [{default: true}]
        start: a
        on_error: o
        nodes:
          a: {http: {url: "http://api.test"}, next: b}
          b: {say: ok, end: true}
          o: {say: "failed {{ error.status }} {{ error.json }}", end: true}
        """))
    c.send("hi")
    replies = [r.text for r in c.event(HttpResult(c.state.request, status=500, json={"n": 10 ** 30})).replies]
    assert replies == ["failed 500 "]


def test_a_response_nested_too_deeply_is_a_routed_error():
    c = Convo(flow("""
        flow: g
        triggers: [{default: true}]
        start: a
        on_error: o
        nodes:
          a: {http: {url: "http://api.test", save: r}, next: b}
          b: {say: ok, end: true}
          o: {say: "failed: {{ error.message }}", end: true}
        """))
    c.send("hi")
    nested: list = []
    for _ in range(100):
        nested = [nested]
    turn = c.event(HttpResult(c.state.request, status=200, json=nested))
    assert [r.text for r in turn.replies] == ["failed: 'r' cannot hold data nested more than 64 levels deep"]
    assert [e.routed for e in of(turn, Error)] == [True]


def test_a_vanished_flow_version_cancels_the_conversations_timer():
    f = flow("""
        flow: f
        triggers: [{default: true}]
        start: a
        nodes:
          a: {say: later, wait: 1h, next: b}
          b: {say: now, end: true}
        """)
    c = Convo(f)
    c.send("hi")
    timer = c.state.timer
    stale = State.from_data({**c.state.to_data(), "version": "gone"})
    turn = advance(Catalog([f]), stale, TimerFired(timer), T0 + 3600)
    assert turn.state.status == "failed" and turn.state.timer is None
    assert CancelTimer(timer) in turn.effects


@pytest.mark.parametrize("answer, url", [
    ("123456", "https://api.test/v1/orders/123456?x=1"),
    ("../../admin/users/delete?all=1#", "https://api.test/v1/orders/..%2F..%2Fadmin%2Fusers%2Fdelete%3Fall%3D1%23?x=1"),
    ("a b/é", "https://api.test/v1/orders/a%20b%2F%C3%A9?x=1"),
])
def test_a_users_answer_cannot_change_the_path_or_query_of_a_request(answer, url):
    c = Convo(Catalog([flow(URL_FLOW)], env={"API": "https://api.test/v1"}))
    c.send("hi")
    c.send(answer)
    assert [r.url for r in c.effects(HttpRequest)] == [url]


def test_a_url_part_that_walks_up_the_path_is_refused():
    c = Convo(Catalog([flow(URL_FLOW)], env={"API": "https://api.test/v1"}))
    c.send("hi")
    assert c.send("..") == ["failed: template '{{ env.API }}/orders/{{ id }}?x=1': SecurityError: "
                            "a URL part may not be '..'"]


def test_an_env_value_the_tenant_lacks_fails_naming_it_and_a_default_still_works():
    c = Convo(Catalog([flow(URL_FLOW)], env={"APX": "https://api.test/v1"}, tenant="shop"))
    c.send("hi")
    assert c.send("1") == ["failed: template '{{ env.API }}/orders/{{ id }}?x=1': EnvNotSet: env.API is not set "
                           "for tenant 'shop' (tenants.shop.env in the config)"]
    optional = flow("""
        flow: o
        triggers: [{default: true}]
        start: a
        nodes:
          a: {say: "{{ env.SIGN | default('the team') }}, {{ 'set' if env.SIGN is defined else 'unset' }}", end: true}
        """)
    assert Convo(Catalog([optional], tenant="shop")).send("hi") == ["the team, unset"]


URL_FLOW = """
    flow: u
    triggers: [{default: true}]
    start: a
    on_error: o
    nodes:
      a: {ask: "Which order?", save: id, next: b}
      b: {http: {url: "{{ env.API }}/orders/{{ id }}?x=1", headers: {K: {secret: KEY}}}, next: c}
      c: {say: ok, end: true}
      o: {say: "failed: {{ error.message }}", end: true}
"""


def test_a_turn_cannot_store_or_send_without_bound():
    big_var = Convo(flow("""
        flow: f
        triggers: [{default: true}]
        start: a
        on_error: o
        nodes:
          a: {set: {a: "'x' * 60000", b: "a ~ a"}, say: never, end: true}
          o: {say: "{{ error.message }}", end: true}
        """))
    # refused as `~` builds it, before the variable could hold it
    assert big_var.send("hi") == ["expression 'a ~ a': SecurityError: ~ would make 120,000 items or characters, "
                                  "over the limit of 100,000"]
    loud = Convo(flow("""
        flow: f
        triggers: [{default: true}]
        start: a
        max_steps: 1000
        on_error: o
        nodes:
          a: {say: "{{ 'x' * 90000 }}", next: b}
          b: {branch: [{if: "true", next: a}, {else: o}]}
          o: {say: "{{ error.message }}", end: true}
        """))
    replies = loud.send("hi")
    assert len(replies) == 12 and replies[-1] == "the replies of one turn are over 1,000,000 characters (a loop?)"
