"""runtime/flow/bounds.py and sandbox.py: what one message may cost, whatever a flow's templates do.

Each bomb of issue 12 is sent as one message to a flow: its turn must end as a routable error
(the flow's ``on_error`` says what went wrong) within the turn's budget, and leave the process's
memory where it was. Then random programs built from the template grammar, with large literals,
must do the same.
"""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parlour.errors import FlowError
from parlour.flow import Error, UserMessage, advance, load_text
from parlour.flow.bounds import TURN_BUDGET_S, work_budget
from parlour.flow.expressions import ExpressionError, RenderError, compile_expression, compile_template
from tests.conftest import T0, Convo, flow

SLACK_S = 1.0
"""How far past the budget a turn may end: the bound is the budget, this is the machine's noise."""
MEMORY_SLACK = 64 << 20

BIG = "[[0] * 100000] * 100000"
BOMBS = {
    "string": f"{{{{ ({BIG})|string }}}}",
    "tojson": f"{{{{ ({BIG})|tojson }}}}",
    "plain": f"{{{{ {BIG} }}}}",
    "translate": "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}",
    "sum": "{{ ([[1] * 100000] * 100000)|sum(start=[]) }}",
    "equal": f"{{% set big = {BIG} %}}{{% set other = {BIG} %}}{{{{ big == other }}}}",
    "max": f"{{{{ ({BIG})|max }}}}",
    "counter": "{% set ns = namespace(c=0) %}{% for i in range(100000) %}{% set ns.c = ns.c + 1 %}{% endfor %}"
               "{% for i in range(100000) %}{% set ns.c = ns.c + 1 %}{% endfor %}{{ ns.c }}",
    "text counter": "{% set ns = namespace(c='') %}{% for i in range(100000) %}{% set ns.c = ns.c ~ 'xxxxxxxxxx' %}"
                    "{% endfor %}{{ ns.c|length }}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                "{{ ns.s|length }}",
    "doubling lists": "{% set ns = namespace(v=[0] * 1000) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}"
                      "{% endfor %}{{ ns.v|string|length }}",
    "nesting": "{% set ns = namespace(v=0) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}"
               "{{ ns.v|tojson|length }}",
    "to_bytes": "{{ (0).to_bytes(10**9, 'big') }}",
    "bool to_bytes": "{{ ((0) < (1)).to_bytes(10**9, 'big') }}",  # a bool is an int: found by the random test
    "dict of lists": "{{ dict.fromkeys(range(100000), [0] * 100000)|tojson }}",
    "format": "{{ '{}'.format([[0] * 10000] * 90) }}",
}


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def bomb_flow(template: str, *, where: str = "say"):
    node = {"say": f"{{say: {template!r}, end: true}}",
            "set": f"{{set: {{v: {template.removeprefix('{{').removesuffix('}}').strip()!r}}}, say: done, end: true}}"}
    return flow(f"""
        flow: alpha
        triggers: [{{default: true}}]
        start: a
        on_error: oops
        nodes:
          a: {node[where]}
          oops: {{say: "failed: {{{{ error.message }}}}", end: true}}
        """)


@pytest.mark.parametrize("name", BOMBS)
def test_each_bomb_ends_its_turn_as_a_routable_error_within_the_budget(name):
    c = Convo(bomb_flow(BOMBS[name]))
    before = rss()
    for _ in range(3):
        c.state = None
        started = time.perf_counter()
        replies = c.send("hi")
        assert time.perf_counter() - started < TURN_BUDGET_S + SLACK_S
        assert len(replies) == 1 and replies[0].startswith("failed: "), replies
        assert [e.routed for e in c.effects(Error)] == [True]
    assert rss() - before < MEMORY_SLACK


@pytest.mark.parametrize("name", ["string", "tojson", "plain", "translate", "to_bytes", "bool to_bytes"])
def test_a_bomb_in_a_set_node_is_bounded_too(name):
    c = Convo(bomb_flow(BOMBS[name], where="set"))
    started = time.perf_counter()
    replies = c.send("hi")
    assert time.perf_counter() - started < TURN_BUDGET_S + SLACK_S
    assert replies[0].startswith("failed: ") and "SecurityError" in replies[0]


def test_five_thousand_chained_filters_are_refused_at_load_with_a_position():
    source = ("flow: f\ntriggers: [{default: true}]\nstart: a\nnodes:\n"
              "  a: {say: \"{{ 'x'" + "|upper" * 5000 + " }}\"}\n")
    with pytest.raises(Exception) as caught:
        load_text(source, "f.yaml")
    problems = str(caught.value)
    assert "f.yaml:5:" in problems and "nested more than 100 levels deep" in problems


@pytest.mark.parametrize("source", ["x" + "|upper" * 5000, "(" * 5000 + "1" + ")" * 5000, "[" * 3000 + "]" * 3000])
def test_deeply_nested_expressions_are_a_load_error(source):
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_expression(source)


@pytest.mark.parametrize("source, expected", [
    ("{{ [1, 2] + [3] }}", "[1, 2, 3]"),
    ("{{ 'a' ~ 1 ~ none ~ [2] }}", "a1None[2]"),
    ("{{ {'k': [1, (2, 3)]}|tojson }}", '{"k": [1, [2, 3]]}'),
    ("{% set a, b = [1, 2] %}{{ a + b }}", "3"),
    ("{{ ([1] * 1000)|sum }} {{ [[1], [2]]|sum(start=[]) }}", "1000 [1, 2]"),
    ("{{ 'abc'.translate({97: 'AA'}) }} {{ (255).to_bytes(2, 'big')|list }}", "AAbc [0, 255]"),
    ("{{ ([[0] * 1000] * 100)|length }}", "100"),
])
def test_ordinary_literals_operators_and_methods_still_work(source, expected):
    with work_budget():
        assert compile_template(source).render({}) == expected


def test_measure_counts_what_appears_as_often_as_it_appears_and_stops_at_the_limits():
    from parlour.flow.bounds import MAX_DEPTH, MAX_VALUE, measure
    inner = [0] * 1000
    with work_budget():
        assert measure([inner] * 10) == 1 + 10 * 1001
        assert measure({"a": "xyz"}) == 1 + 2 + 4
        deep = 0
        for _ in range(MAX_DEPTH + 1):
            deep = [deep]
        with pytest.raises(Exception, match="levels deep"):
            measure(deep)
        with pytest.raises(Exception, match="over the limit"):
            measure([inner] * (MAX_VALUE // 1000))


def test_a_failed_turn_leaves_no_cycle_holding_its_values():
    import gc
    gc.collect()
    gc.disable()  # as a host with a high threshold: nothing but reference counts frees
    try:
        before = rss()
        for _ in range(5):
            with work_budget(), pytest.raises(RenderError):
                compile_template("{% set big = 'x' * 100000 %}{% set v = [big] * 100 %}{{ v|string }}").render({})
        assert rss() - before < 16 << 20
    finally:
        gc.enable()


# ---------------------------------------------------------------- random programs

NUMBERS = st.sampled_from(["0", "1", "7", "100000", "10**9", "2**64", "-1", "99999"])
TEXTS = st.sampled_from(["'x'", "'ab'", "''", "s", "'x' * 100000", "'\\t'"])
LISTS = st.sampled_from(["[0]", "[[0] * 100000]", "l", "range(100000)", "[s, s]", "[]"])
LEAVES = NUMBERS | TEXTS | LISTS | st.sampled_from(["d", "none", "ns.v"])
UNARY = ["|string", "|tojson", "|list", "|sum", "|sum(start=[])", "|max", "|min", "|sort", "|unique|list",
         "|join", "|length", "|first", "|reverse|list", "|batch(3)|list", "|pprint", "|center(100000)",
         "|replace('x', 'yyyy')", "|indent(1000)", "|wordwrap(1)", "|urlencode", "|dictsort"]
METHODS = [".translate({120: 'y' * 100000})", ".ljust(100000)", ".replace('x', s)", ".join(l)",
           ".to_bytes(10**9, 'big')", ".count('x')", ".split('x')", ".format(l, l)", ".expandtabs(100000)"]


def _combine(inner):
    binary = st.tuples(inner, st.sampled_from(["*", "+", "~", "**", "%", "==", "<", "in", "//"]), inner)
    return (binary.map(lambda t: f"({t[0]}) {t[1]} ({t[2]})")
            | st.tuples(inner, st.sampled_from(UNARY)).map(lambda t: f"({t[0]}){t[1]}")
            | st.tuples(inner, st.sampled_from(METHODS)).map(lambda t: f"({t[0]}){t[1]}")
            | st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]")
            | st.tuples(inner, inner).map(lambda t: f"{{'k': {t[0]}, 'j': {t[1]}}}"))


EXPRESSIONS = st.recursive(LEAVES, _combine, max_leaves=6)
TEMPLATES = st.one_of(
    EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    EXPRESSIONS.map(lambda e: f"{{% set v = {e} %}}{{{{ v|length }}}}"),
    st.tuples(EXPRESSIONS, st.integers(1, 40)).map(
        lambda t: f"{{% for i in range({t[1]}) %}}{{% set ns.v = {t[0]} %}}{{% endfor %}}{{{{ ns.v }}}}"),
).map(lambda body: "{% set ns = namespace(v=[0]) %}" + body)
PROGRAMS = st.one_of(TEMPLATES.map(lambda t: ("say", t)), EXPRESSIONS.map(lambda e: ("set", e)))
SCOPE = {"s": "'x' * 20000", "l": "range(20000)|list", "d": "{'a': [1, 2], 'b': 'x' * 1000}"}


def program_flow(kind: str, source: str):
    """A flow that sets the scope's variables, then runs ``source`` as a `say` or a `set`."""
    node = {"say": {"say": source, "end": True}, "set": {"set": {"v": source}, "say": "done", "end": True}}[kind]
    return load_text(json.dumps({
        "flow": "fuzz", "triggers": [{"default": True}], "start": "scope", "on_error": "oops",
        "nodes": {"scope": {"set": SCOPE, "next": "program"}, "program": node,
                  "oops": {"say": "{{ error.message }}", "end": True}}}), "fuzz.json")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM, the peak resident memory


def _peak() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=PROGRAMS)
def test_random_programs_end_within_the_budget_and_memory_stays_bounded(program):
    try:
        compiled = program_flow(*program)
    except FlowError:
        return  # refused when the flow loads: fine
    before = rss()
    _reset_peak()
    started = time.perf_counter()
    turn = advance(compiled, None, UserMessage("hi"), T0)
    assert time.perf_counter() - started < TURN_BUDGET_S + SLACK_S, program
    assert _peak() - before < 2 * MEMORY_SLACK, program
    assert turn.replies and not [e for e in turn.effects if isinstance(e, Error) and "internal error" in e.reason]
