"""Random event sequences against every bundled flow.

Whatever arrives, in whatever order: ``advance`` never raises, never reports an internal error
(the mark of a parlour defect), and returns state that msgpack stores and gives back unchanged.
Users' words are drawn from each flow's own vocabulary (keywords, commands, button and option
ids and titles) as well as at random, so the fuzzing reaches deep into the flows.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parlour.flow import (
    Error,
    Flow,
    HttpResult,
    Resume,
    Start,
    State,
    TimerFired,
    UserMessage,
    advance,
    load_catalog,
)
from parlour.flow.compiled import Ask, Menu
from parlour.flow.validators import Invalid, check
from tests.conftest import T0

CATALOG = load_catalog([Path(__file__).resolve().parents[2] / "flows"], env={"MEMBERS_API": "http://127.0.0.1:9"})
CURRENT = "<current>"  # stands for the timer or request id the conversation waits on
ANSWERS = ["Ann Lee", "ann@example.org", "30", "17", "12", "1", "2", "3", "0", "yes", "no", "today",
           "tomorrow", "2026-03-04", "+14155552671", "020 7946 0958", "123456", "", " ", "hi", "stop"]
CHANNELS = [None, "web", "whatsapp", "telegram"]


def vocabulary(flow: Flow) -> list[str]:
    """Every word the flow itself reacts to."""
    words = set(flow.commands) | {k for t in flow.triggers for k in t.keywords}
    for node in flow.nodes.values():
        action = node.action
        messages = list(node.say) + ([action.prompt] if isinstance(action, Ask) else [])
        for msg in messages:
            words.update(i for i, _ in msg.buttons + msg.list)
            words.update(t.source for _, t in msg.buttons + msg.list)
        if isinstance(action, Menu):
            words.update(o.id for o in action.options)
            words.update(o.title.source for o in action.options)
        if isinstance(action, Ask):
            words.update(w for choice in action.rule.choices for w in choice)
    return sorted(words)


JSON = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.floats(allow_nan=False)
    # beyond 64 bits too: plain() must refuse what msgpack cannot store
    | st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
API_JSON = JSON | st.fixed_dictionaries({  # what the bundled flows' APIs answer
    "id": st.integers(0, 10 ** 6), "status": st.sampled_from(["processing", "shipped", "delivered", "lost"]),
    "eta": st.sampled_from(["2026-03-05", None])})
VARS = st.none() | st.dictionaries(st.sampled_from(["name", "email", "age", "tries", "member", "x"]), JSON, max_size=3)


@dataclass(frozen=True)
class Answer:
    """A user message that answers what the conversation waits for (an option of the menu, an
    answer the ask accepts, when there is one), chosen once the state is known."""

    pick: int


def events(flow: Flow):
    words = vocabulary(flow) + ANSWERS
    said = st.sampled_from(words)
    digits = st.sampled_from(["²", "١", "٣", "9" * 5000, "0", "07"])  # unicode and huge "numbers"
    text = st.one_of(said, said, said, st.text(max_size=24), digits)  # mostly words the flow knows
    message = st.builds(UserMessage, text=text, button=st.none() | st.sampled_from(words),
                        channel=st.sampled_from(CHANNELS), user_name=st.none() | st.text(max_size=8))
    ids = st.just(CURRENT) | st.sampled_from(["t1", "t2", "r1", "r2", ""]) | st.text(max_size=4)
    timer = st.builds(TimerFired, timer_id=ids)
    http = st.builds(HttpResult, request_id=ids,
                     status=st.none() | st.sampled_from([200, 201, 204, 400, 404, 500, 503]) | st.integers(0, 999),
                     json=API_JSON, text=st.none() | st.text(max_size=8),
                     error=st.none() | st.sampled_from(["timeout", "connection refused"]))
    start = st.builds(Start, flow=st.sampled_from(sorted(f.id for f in CATALOG) + ["nope"]),
                      node=st.none() | st.sampled_from(sorted(flow.nodes) + ["nowhere"]), vars=VARS)
    resume = st.builds(Resume, vars=VARS)
    answer = st.builds(Answer, st.integers(0, 99))
    event = st.one_of(answer, answer, answer, answer, message, message, timer, http, start, resume)
    return st.lists(st.tuples(event, st.floats(min_value=0, max_value=2 * 86400)), min_size=5, max_size=40)


def answer_to(state: State, pick: int, now: float) -> UserMessage:
    node = CATALOG.get(state.flow, state.version).nodes.get(state.node) if state.flow in CATALOG else None
    action = node.action if node else None
    if isinstance(action, Menu):
        return UserMessage(button=action.options[pick % len(action.options)].id)
    if isinstance(action, Ask):
        today = datetime.fromtimestamp(now, UTC).date()
        valid = [a for a in ANSWERS + vocabulary(CATALOG.get(state.flow, state.version)) if passes(action, a, today)]
        if valid:
            return UserMessage(valid[pick % len(valid)])
    return UserMessage(ANSWERS[pick % len(ANSWERS)])


def passes(ask: Ask, text: str, today) -> bool:
    try:
        check(ask.rule, text, today)
    except Invalid:
        return False
    return True


def resolve(event, state: State, now: float):
    if isinstance(event, Answer):
        return answer_to(state, event.pick, now)
    if isinstance(event, TimerFired) and event.timer_id == CURRENT:
        return replace(event, timer_id=state.timer or "t1")
    if isinstance(event, HttpResult) and event.request_id == CURRENT:
        return replace(event, request_id=state.request or "r1")
    return event


def check_turn(state: State | None, event, now: float) -> State:
    turn = advance(CATALOG, state, event, now)  # must not raise
    internal = [e.reason for e in turn.effects if isinstance(e, Error) and e.reason.startswith("internal error")]
    assert internal == [], f"{event!r} on {state!r}"
    data = turn.state.to_data()
    back = msgpack.unpackb(msgpack.packb(data))
    assert back == data
    assert State.from_data(back).to_data() == data
    return turn.state


@pytest.mark.parametrize("flow_id", sorted(f.id for f in CATALOG))
def test_random_events_never_break_a_conversation(flow_id):
    flow = CATALOG.current(flow_id)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=events(flow))
    def run(steps):
        now = T0
        state = check_turn(None, Start(flow_id), now)
        for event, later in steps:
            now += later
            state = check_turn(state, resolve(event, state, now), now)

    run()
