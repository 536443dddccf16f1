"""runtime/flow/loader.py, compiler.py, checks.py: every problem is `path:line:column: message`.

Each bad flow below is loaded from a real file; the table says where the problem must point
and a key part of what it must say. Errors refuse the flow; warnings let it load.
"""

import textwrap
from pathlib import Path

import pytest

from parlour.errors import FlowError
from parlour.flow import Start, UserMessage, advance, load_catalog, load_flow, load_paths, load_text
from tests.conftest import flow

REPO = Path(__file__).resolve().parents[2]
E, W = "error", "warning"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def has(problems, line: int, column: int, severity: str, words: str) -> bool:
    return any((p.line, p.column, p.severity) == (line, column, severity) and words in p.message for p in problems)


def listing(problems) -> str:
    return "\n".join(str(p) for p in problems) or "(no problems)"


# (id, flow text, line, column, severity, words)
ONE_FLOW = [
    ("unknown-node-key", """
        flow: x
        start: a
        nodes:
          a:
            say: hi
            nxt: b
          b: {end: true}
        """, 6, 5, E, "unknown key 'nxt' (did you mean 'next'?)"),
    ("unknown-top-key", """
        flow: x
        strat: a
        start: a
        nodes:
          a: {end: true}
        """, 2, 1, E, "unknown key 'strat' (did you mean 'start'?)"),
    ("unknown-validate-key", """
        flow: x
        start: a
        nodes:
          a:
            ask: Age?
            validate: {typ: integer}
            next: a
        """, 6, 16, E, "unknown key 'typ' (did you mean 'type'?); expected one of: type, regex"),
    ("missing-start", """
        flow: x
        nodes:
          a: {end: true}
        """, 1, 1, E, "missing required key 'start'"),
    ("missing-http-url", """
        flow: x
        start: a
        nodes:
          a:
            http: {method: GET}
            next: a
        """, 5, 11, E, "missing required key 'url' in nodes.a.http"),
    ("bad-flow-id", """
        flow: My Flow
        start: a
        nodes:
          a: {end: true}
        """, 1, 7, E, "flow: 'My Flow' is not a valid name: lowercase letters, digits, _ and -"),
    ("next-to-missing-node", """
        flow: x
        start: a
        nodes:
          a:
            say: hi
            next: goodby
          goodbye: {end: true}
        """, 6, 11, E, "no node 'goodby' (did you mean 'goodbye'?)"),
    ("start-at-missing-node", """
        flow: x
        start: welcom
        nodes:
          welcome: {end: true}
        """, 2, 8, E, "no node 'welcom' (did you mean 'welcome'?)"),
    ("menu-option-to-missing-node", """
        flow: x
        start: a
        nodes:
          a:
            menu:
              text: Pick
              options:
                - {id: one, next: zzz}
        """, 8, 27, E, "no node 'zzz'"),
    ("goto-missing-node", """
        flow: x
        start: a
        nodes:
          a: {goto: b}
        """, 4, 13, E, "no node 'b'"),
    ("unreachable-node", """
        flow: x
        start: a
        nodes:
          a: {end: true}
          b: {end: true}
        """, 5, 3, W, "node 'b' is unreachable"),
    ("inescapable-loop", """
        flow: x
        start: a
        nodes:
          a:
            say: hi
            next: b
          b:
            goto: a
        """, 4, 3, E, "loop a -> b -> a never waits for the user and never ends"),
    ("loop-with-branch-exit", """
        flow: x
        start: a
        vars: {n: 0}
        nodes:
          a:
            set: {n: "n + 1"}
            next: b
          b:
            branch:
              - if: "n > 3"
                next: c
              - else: a
          c: {end: true}
        """, 5, 3, W, "loop a -> b -> a does not wait for the user"),
    ("template-does-not-compile", """
        flow: x
        start: a
        nodes:
          a:
            say: "Hi {{ name }"
            end: true
        """, 5, 22, E, "template does not compile: unexpected '}'"),  # at the `}`, not the value's start
    ("set-expression-does-not-compile", """
        flow: x
        start: a
        nodes:
          a:
            set: {n: "1 +"}
            end: true
        """, 5, 18, E, "expression does not compile: the expression ends too soon"),
    ("condition-with-braces", """
        flow: x
        start: a
        nodes:
          a:
            branch:
              - if: "{{ x }}"
                next: b
              - else: b
          b: {end: true}
        """, 6, 13, E, "an expression is written without {{ }}"),
    ("sandbox-escape-in-template", """
        flow: x
        start: a
        nodes:
          a:
            say: "{{ ''.__class__.__mro__ }}"
            end: true
        """, 5, 10, E, "is not allowed"),
    ("sandbox-escape-in-condition", """
        flow: x
        start: a
        nodes:
          a:
            branch:
              - if: "x.__globals__"
                next: b
              - else: b
          b: {end: true}
        """, 6, 13, E, "'__globals__' is not allowed"),
    ("sandbox-escape-in-http-map", """
        flow: x
        start: a
        nodes:
          a:
            http:
              url: http://api
              map: {k: "response['__class__']"}
            next: b
          b: {end: true}
        """, 7, 16, E, "'__class__' is not allowed"),
    ("validate-on-say", """
        flow: x
        start: a
        nodes:
          a:
            say: hi
            validate: {type: integer}
            next: a
        """, 6, 5, E, "`validate` applies to ask nodes only"),
    ("retries-without-on_fail", """
        flow: x
        start: a
        nodes:
          a:
            ask: Age?
            retries: 2
            next: a
        """, 6, 5, E, "`retries` needs `on_fail`"),
    ("timeout_s-without-on_timeout", """
        flow: x
        start: a
        nodes:
          a:
            ask: Age?
            timeout_s: 30
            next: a
        """, 6, 5, E, "`timeout_s` and `on_timeout` go together"),
    ("on_timeout-without-timeout_s", """
        flow: x
        start: a
        nodes:
          a:
            ask: Age?
            on_timeout: a
            next: a
        """, 6, 5, E, "`timeout_s` and `on_timeout` go together"),
    ("timeout-on-timed-wait", """
        flow: x
        start: a
        nodes:
          a:
            wait: 1h
            timeout_s: 30
            on_timeout: a
            next: a
        """, 6, 5, E, "`timeout_s` applies to ask, menu, wait: reply nodes only"),
    ("yes-unquoted-as-option-id", """
        flow: x
        start: a
        nodes:
          a:
            menu:
              text: Sure?
              options:
                - {id: true, next: a}
                - {id: "no", next: a}
        """, 8, 16, E, "nodes.a.menu.options[0].id: YAML reads this as True: quote it to keep it as written"),
    ("true-unquoted-in-button-shorthand", """
        flow: x
        start: a
        nodes:
          a:
            say:
              - text: Sure?
                buttons: [true, false]
            end: true
        """, 7, 19, E, "quote it"),
    ("regex-does-not-compile", """
        flow: x
        start: a
        nodes:
          a:
            ask: Code?
            validate: {regex: "[a-"}
            next: a
        """, 6, 23, E, "regex does not compile"),
    ("date-bound-not-a-date", """
        flow: x
        start: a
        nodes:
          a:
            ask: When?
            validate: {type: date, max: next week}
            next: a
        """, 6, 33, E, "max of a date must be an ISO date, today, or today+N"),
    ("number-bound-not-a-number", """
        flow: x
        start: a
        nodes:
          a:
            ask: Age?
            validate: {type: integer, min: ten}
            next: a
        """, 6, 36, E, "must be a number"),
    ("bound-on-text", """
        flow: x
        start: a
        nodes:
          a:
            ask: Name?
            validate: {min: 3}
            next: a
        """, 6, 16, E, "`min` applies to type integer or number or date, not text"),
    ("choice-without-choices", """
        flow: x
        start: a
        nodes:
          a:
            ask: Colour?
            validate: {type: choice}
            next: a
        """, 6, 15, E, "`type: choice` needs `choices`"),
    ("two-actions", """
        flow: x
        start: a
        nodes:
          a:
            ask: Name?
            wait: 1h
            next: a
        """, 6, 5, E, "a node has one action; this one has ask, wait"),
    ("end-with-next", """
        flow: x
        start: a
        nodes:
          a: {end: true, next: a}
        """, 4, 18, E, "a end node has no `next`"),
    ("dead-end-node", """
        flow: x
        start: a
        nodes:
          a: {say: hi}
        """, 4, 3, E, "neither acts nor has a `next`"),
    ("goto-node-with-next", """
        flow: x
        start: a
        nodes:
          a: {goto: b, next: b}
          b: {ask: "Name?", next: b}
        """, 4, 16, E, "a goto without `return` never reaches `next`"),
    ("missing-named-menu", """
        flow: x
        start: a
        nodes:
          a: {menu: main}
        """, 4, 13, E, "no menu 'main' under `menus`"),
    ("bad-duration", """
        flow: x
        start: a
        nodes:
          a: {wait: soon, next: b}
          b: {end: true}
        """, 4, 13, E, "'soon' is not a duration"),
    ("built-in-variable-name", """
        flow: x
        start: a
        nodes:
          a: {ask: "Name?", save: user, next: b}
          b: {end: true}
        """, 4, 27, E, "'user' is a built-in name"),
    ("unknown-variable", """
        flow: x
        start: a
        nodes:
          a: {ask: "Name?", save: name, next: b}
          b:
            say: "Hi {{ nmae }}"
            end: true
        """, 6, 10, W, "unknown variable 'nmae' (did you mean 'name'?)"),
    ("branch-without-else", """
        flow: x
        start: a
        nodes:
          a:
            branch:
              - if: "true"
                next: b
          b: {end: true}
        """, 6, 7, W, "no `else`: when no condition holds the turn fails"),
    ("trigger-of-two-kinds", """
        flow: x
        triggers:
          - {keyword: hi, default: true}
        start: a
        nodes:
          a: {end: true}
        """, 3, 5, E, "a trigger is one of"),
    ("repeated-command", """
        flow: x
        commands: {Stop: a, stop: a}
        start: a
        nodes:
          a: {ask: "Name?", next: a}
        """, 2, 21, E, "command 'stop' repeats 'Stop'"),
]


@pytest.mark.parametrize("text, line, column, severity, words",
                         [c[1:] for c in ONE_FLOW], ids=[c[0] for c in ONE_FLOW])
def test_bad_flow_is_reported_at_its_place(tmp_path, text, line, column, severity, words):
    problems = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert has(problems, line, column, severity, words), listing(problems)
    assert all(p.path == str(tmp_path / "f.yaml") for p in problems)
    if severity == E:
        with pytest.raises(FlowError) as caught:
            flow(text, "f.yaml")
        assert has(caught.value.problems, line, column, E, words)
    else:
        assert flow(text).id == "x"  # a warning does not refuse the flow


KNOWN_BUGS = [
    pytest.param("""
        flow: x
        start: a
        nodes:
          a:
            menu:
              text: Pick
              options:
                - {id: one, nxt: a}
        """, 8, 21, E, "unknown key 'nxt' (did you mean 'next'?)", id="unknown-key-in-option"),
    pytest.param("""
        flow: x
        start: a
        nodes:
          a:
            say: {txt: hi}
            end: true
        """, 5, 11, E, "unknown key 'txt' (did you mean 'text'?)", id="unknown-key-in-say-shorthand"),
]


@pytest.mark.parametrize("text, line, column, severity, words", KNOWN_BUGS)
def test_bad_flow_is_reported_at_its_place_known_bugs(tmp_path, text, line, column, severity, words):
    problems = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert has(problems, line, column, severity, words), listing(problems)


CASCADE = """
    flow: x
    start: welcome
    nodes:
      welcome: {say: hi, next: ask_nmae}
      ask_name: {ask: Name, save: name, next: ask_age}
      ask_age: {ask: Age, save: age, next: thanks}
      thanks: {say: Thanks, next: bye}
      bye: {end: true}
      old: {say: unused, next: older}
      older: {say: unused too, next: bye}
    """


def test_one_bad_next_is_reported_once_not_as_a_cascade_of_unreachable_nodes(tmp_path):
    problems = load_paths([write(tmp_path, "f.yaml", CASCADE)]).problems
    assert [(p.line, p.column, p.severity, p.message) for p in problems] == [
        (4, 28, E, "no node 'ask_nmae' (did you mean 'ask_name'?)"),
        # nodes nothing leads to, whatever the typo: one warning for the group, at its head
        (9, 3, W, "node 'old' is unreachable: nothing leads to it (nor to 'older', reached only through it)"),
    ], listing(problems)


@pytest.mark.parametrize("value, line, column, message", [
    ('"{{ name | uppr }}"', 5, 21, "unknown filter 'uppr' (did you mean 'upper'?)"),
    ("'It''s {{ n is numbr }}'", 5, 25, "unknown test 'numbr' (did you mean 'number'?)"),
    ('"\\u00e9\\t{{ name nme }}"', 5, 27, "unexpected 'nme': an operator, or }}, is missing before it"),
    ("Hi {{ name | lowr }}", 5, 23, "unknown filter 'lowr' (did you mean 'lower'?)"),
    ("|\n      Hello,\n        {{ name | tittle }}", 7, 19, "unknown filter 'tittle' (did you mean 'title'?)"),
    ('{text: "{{ x | nope }}"}', 5, 25, "unknown filter 'nope'"),
    (">\n      folded {{ a | bad }}", 5, 10, "unknown filter 'bad'"),  # folded: the value's start
])
def test_a_template_error_points_at_its_token_in_the_file(tmp_path, value, line, column, message):
    text = f"flow: x\nstart: a\nnodes:\n  a:\n    say: {value}\n    end: true\n"
    problems = load_paths([write(tmp_path, "f.yaml", text)]).errors
    assert [(p.line, p.column, p.message) for p in problems] == [
        (line, column, f"template does not compile: {message}")], listing(problems)


def test_an_expression_error_points_at_its_token_in_the_file(tmp_path):
    text = ("flow: x\nstart: a\nnodes:\n  a:\n    set: {n: \"count | intt\"}\n    branch:\n"
            "      - {if: 'n >', next: b}\n      - else: b\n  b: {end: true}\n")
    problems = load_paths([write(tmp_path, "f.yaml", text)]).errors
    assert [(p.line, p.column, p.message) for p in problems] == [
        (5, 23, "expression does not compile: unknown filter 'intt' (did you mean 'int'?)"),
        (7, 18, "expression does not compile: the expression ends too soon")], listing(problems)  # at the end


def test_date_bound_may_be_an_unquoted_iso_date():
    loaded = flow("""
        flow: x
        start: a
        nodes:
          a:
            ask: When?
            validate: {type: date, min: 2026-01-01}
            next: a
        """)
    assert loaded.nodes["a"].action.rule.min == "2026-01-01"


def test_problems_come_sorted_and_formatted():
    # the reference is checked after the template is compiled; the report follows the file
    with pytest.raises(FlowError) as caught:
        flow("""
            flow: x
            start: a
            nodes:
              a:
                say: hi
                next: c
              b:
                say: "{{ x._y }}"
                end: true
            """, "f.yaml")
    error = caught.value
    assert [str(p) for p in error.problems] == [
        "f.yaml:6:11: no node 'c'",
        "f.yaml:8:10: template does not compile: '_y' is not allowed: names starting with '_' "
        "and interpreter internals are outside the sandbox",
    ]
    assert (error.path, error.line, error.column, error.reason) == ("f.yaml", 6, 11, "no node 'c'")


# (id, {file name: text}, file with the problem, line, column, words)
MANY_FLOWS = [
    ("duplicate-flow-id", {
        "a.yaml": "flow: shop\nstart: s\nnodes:\n  s: {end: true}\n",
        "b.yaml": "flow: shop\nstart: t\nnodes:\n  t: {end: true}\n",
    }, "b.yaml", 1, 7, "duplicate flow id 'shop' (also in {dir}/a.yaml:1)"),
    ("same-keyword", {
        "a.yaml": "flow: a\ntriggers:\n  - keyword: [hi, order]\nstart: s\nnodes:\n  s: {end: true}\n",
        "b.yaml": "flow: b\ntriggers:\n  - keyword: [ORDER]\nstart: s\nnodes:\n  s: {end: true}\n",
    }, "b.yaml", 3, 14, "keyword 'order' is claimed by flow 'a' too"),
    ("same-keyword-same-channel", {
        "a.yaml": "flow: a\ntriggers:\n  - {keyword: hi, channels: [web]}\nstart: s\nnodes:\n  s: {end: true}\n",
        "b.yaml": "flow: b\ntriggers:\n  - {keyword: hi, channels: [sms, web]}\nstart: s\nnodes:\n  s: {end: true}\n",
    }, "b.yaml", 3, 15, "keyword 'hi' is claimed by flow 'a' too"),
    ("two-defaults", {
        "a.yaml": "flow: a\ntriggers: [{default: true}]\nstart: s\nnodes:\n  s: {end: true}\n",
        "b.yaml": "flow: b\ntriggers: [{default: true}]\nstart: s\nnodes:\n  s: {end: true}\n",
    }, "b.yaml", 2, 22, "the default trigger is claimed by flow 'a' too"),
    ("goto-unknown-flow", {
        "a.yaml": "flow: a\nstart: s\nnodes:\n  s:\n    goto: {flow: registraton}\n",
        "b.yaml": "flow: registration\nstart: s\nnodes:\n  s: {end: true}\n",
    }, "a.yaml", 5, 18, "no flow 'registraton' among those loaded (did you mean 'registration'?)"),
    ("goto-unknown-node-of-flow", {
        "a.yaml": "flow: a\nstart: s\nnodes:\n  s:\n    goto: {flow: b, node: strat}\n",
        "b.yaml": "flow: b\nstart: start\nnodes:\n  start: {end: true}\n",
    }, "a.yaml", 5, 27, "flow 'b' has no node 'strat' (did you mean 'start'?)"),
]


@pytest.mark.parametrize("files, where, line, column, words",
                         [c[1:] for c in MANY_FLOWS], ids=[c[0] for c in MANY_FLOWS])
def test_flows_loaded_together_are_checked_together(tmp_path, files, where, line, column, words):
    for name, text in files.items():
        write(tmp_path, name, text)
    problems = load_paths([tmp_path]).problems
    words = words.format(dir=tmp_path)
    assert [(p.path, p.line, p.column, p.severity) for p in problems if words in p.message] == [
        (str(tmp_path / where), line, column, E)], listing(problems)
    with pytest.raises(FlowError):
        load_catalog([tmp_path])


def test_same_keyword_on_other_channels_is_no_conflict(tmp_path):
    write(tmp_path, "a.yaml",
          "flow: a\ntriggers:\n  - {keyword: hi, channels: [web]}\nstart: s\nnodes:\n  s: {end: true}\n")
    write(tmp_path, "b.yaml",
          "flow: b\ntriggers:\n  - {keyword: hi, channels: [sms]}\nstart: s\nnodes:\n  s: {end: true}\n")
    assert load_paths([tmp_path]).problems == []


def test_a_directory_loads_flows_but_not_flow_tests_or_schemas(tmp_path):
    write(tmp_path, "a.yaml", "flow: a\nstart: s\nnodes:\n  s: {end: true}\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.json", '{"flow": "b", "start": "s", "nodes": {"s": {"end": true}}}')
    write(tmp_path, "a.test.yaml", "flow: a\nsteps:\n  - user: hi\n")
    write(tmp_path, "flow.schema.json", '{"type": "object"}')
    loaded = load_paths([tmp_path])
    assert sorted(f.id for f in loaded.flows) == ["a", "b"] and loaded.problems == [], listing(loaded.problems)


@pytest.mark.parametrize("name, text", [
    ("pizza_test.yaml", "flow: a\nsteps:\n  - user: hi\n"),
    ("sub/checks.yml", "flow: a\nhttp: {}\nsteps: []\n"),  # a test of the wrong shape is still a test
    ("sub/more.json", '{"flow": "a", "env": {"K": "v"}, "steps": [{"user": "hi"}]}'),
])
def test_a_flow_test_is_told_by_its_content_whatever_its_name(tmp_path, name, text):
    write(tmp_path, "a.yaml", "flow: a\nstart: s\nnodes:\n  s: {end: true}\n")
    (tmp_path / "sub").mkdir()
    test = write(tmp_path, name, text)
    loaded = load_paths([tmp_path])
    assert [f.id for f in loaded.flows] == ["a"] and loaded.problems == [], listing(loaded.problems)
    named = load_paths([test]).problems  # named on its own, it is not taken for a broken flow either
    assert [str(p) for p in named] == [f"{test}:1:1: this is a flow test file (it has `steps`, no `start` or "
                                       "`nodes`), not a flow: run it with `parlour test`"]


def test_a_yaml_syntax_error_is_a_problem_not_an_exception(tmp_path):
    path = write(tmp_path, "f.yaml", "flow: x\nstart: [a\n")
    problems = load_paths([path]).problems
    assert [(p.line, p.column, p.severity) for p in problems] == [(2, 10, E)]  # where the `]` belongs
    assert problems[0].message.startswith("YAML syntax")


def test_a_file_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "f.yaml", "- just\n- a list\n")
    assert [str(p) for p in load_paths([path]).problems] == [
        f"{path}:1:1: a flow file is a mapping with `flow`, `start` and `nodes`"]


def test_load_flow_raises_with_every_error(tmp_path):
    path = write(tmp_path, "f.yaml", "flow: x\nstart: a\nnodes:\n  a: {say: '{{ x._y }}', next: b}\n")
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert [(p.line, p.column) for p in caught.value.problems] == [(4, 12), (4, 32)]


def test_registration_flow_loads_with_zero_problems():
    loaded = load_paths([REPO / "flows" / "registration.yaml"])
    assert loaded.problems == []
    assert [f.id for f in loaded.flows] == ["registration"]


def test_shorthands_compile_like_their_long_forms():
    short = load_text(textwrap.dedent("""
        flow: x
        version: v1
        start: a
        nodes:
          a: {say: hi, wait: 1h30m, next: b}
          b: {menu: main}
          c: {handoff: Billing, next: a}
          d: {goto: a}
          e: {wait: reply, save: text, next: a}
        menus:
          main: {text: Pick, options: [{id: one, next: c}, {id: two, next: d}, {id: three, next: e}]}
        """))
    a, b, c, e = (short.nodes[n] for n in "abce")
    assert a.say[0].text.source == "hi" and a.action.seconds == 5400
    assert [o.id for o in b.action.options] == ["one", "two", "three"]
    assert c.action.reason.source == "Billing"
    assert e.action.reply and e.action.save == "text"
    assert short.version == "v1"


def test_version_defaults_to_a_hash_of_the_source():
    text = "flow: x\nstart: a\nnodes:\n  a: {end: true}\n"
    assert load_text(text).version == load_text(text).version
    assert load_text(text).version != load_text(text + "# changed\n").version


def test_flow_vars_must_be_data_a_conversation_can_hold(tmp_path):
    path = write(tmp_path, "f.yaml", "flow: f\nstart: a\nvars: {x: 99999999999999999999, d: !!timestamp 2026-01-01}\n"
                                     "nodes:\n  a: {say: hi, end: true}\n")
    loaded = load_paths([path])
    assert [(p.line, p.column, p.message) for p in loaded.problems] == [
        (3, 11, "'x' cannot hold 99999999999999999999: integers are limited to 64 bits")]


def test_a_date_bound_written_as_a_number_is_read_as_its_text():
    f = load_text("flow: f\nstart: a\nnodes:\n  a: {ask: 'When?', validate: {type: date, min: 20261201}, "
                  "save: d, next: b}\n  b: {say: ok, end: true}\n")
    turn = advance(f, advance(f, None, Start("f"), 1.7e9).state, UserMessage("2026-12-05"), 1.7e9)
    assert [r.text for r in turn.replies] == ["ok"] and turn.state.vars["d"] == "2026-12-05"


@pytest.mark.parametrize("text, line, column, severity, message", [
    ("flow: f\nversion: 1.10\nstart: a\nnodes:\n  a: {end: true}\n", 2, 10, E,
     "version: YAML reads this as 1.1: quote it to keep it as written"),
    ("flow: f\nstart: a\nnodes:\n  a: {say: hi, next: 1.10}\n  '1.10': {end: true}\n", 4, 22, E,
     "nodes.a.next: YAML reads this as 1.1: quote it to keep it as written"),
    ("flow: f\nstart: a\nnodes:\n  a:\n    say: |\n      Hello,\n      {{ items | join(', ') }\n    end: true\n",
     7, 29, E, "template does not compile: unexpected '}'"),
    ("flow: f\nstart: a\nnodes:\n  a:\n    say: \"Hello,\\n{{ x }\"\n    end: true\n",
     5, 10, E, "template does not compile: unexpected '}' (line 2 of the text)"),
    ("flow: f\nstart: a\nmenus:\n  spare: {text: hi, options: [{id: b, next: a}]}\nnodes:\n  a: {end: true}\n",
     4, 3, W, "menu 'spare' is not used by any node"),
])
def test_positions_and_hints_for_less_common_mistakes(tmp_path, text, line, column, severity, message):
    loaded = load_paths([write(tmp_path, "f.yaml", text)])
    assert [(p.line, p.column, p.severity, p.message) for p in loaded.problems] == [(line, column, severity, message)]


def test_a_shared_menu_with_a_broken_template_is_reported_once(tmp_path):
    text = ("flow: f\nstart: a\nmenus:\n  m: {text: '{{ x', options: [{id: o, next: b}]}\n"
            "nodes:\n  a: {menu: m}\n  b: {menu: m}\n")
    loaded = load_paths([write(tmp_path, "f.yaml", text)])
    assert [(p.line, p.message.split(":")[0]) for p in loaded.errors] == [(4, "template does not compile")]


def test_a_loop_through_a_called_flow_that_waits_is_not_a_runaway(tmp_path):
    write(tmp_path, "main.yaml",
          "flow: main\nstart: again\nnodes:\n  again: {goto: {flow: quiz, return: true}, next: again}\n")
    write(tmp_path, "quiz.yaml",
          "flow: quiz\nstart: q\nnodes:\n  q: {ask: '2+2?', save: a, next: e}\n  e: {end: true}\n")
    assert load_paths([tmp_path]).problems == []


@pytest.mark.parametrize("text, expected", [
    ("flow: f\nstart: a\nvars: {9bad: 1}\nnodes:\n  a: {end: true}\n",
     [(3, 8, "vars: '9bad' is not a valid name: letters, digits and _, not starting with a digit")]),
    # a union (text, or {secret: NAME}): one error, for the member the value was meant for, no tags
    ("flow: f\nstart: a\nnodes:\n  a:\n    http: {url: 'http://x', headers: {A: {secret: 1}}}\n    next: b\n"
     "  b: {end: true}\n",
     [(5, 51, "nodes.a.http.headers.A.secret: 1 is not a valid name: "
              "letters, digits and _, not starting with a digit")]),
])
def test_names_and_unions_read_plainly(tmp_path, text, expected):
    loaded = load_paths([write(tmp_path, "f.yaml", text)])
    assert [(p.line, p.column, p.message) for p in loaded.problems] == expected


def test_a_shape_error_does_not_hide_the_flows_other_errors(tmp_path):
    text = ("flow: f\nstart: a\nnodes:\n  a:\n    ask: 'Name?'\n    sav: name\n    next: b\n"
            "  b:\n    say: '{{ x.__class__ }}'\n    next: nowhere\n"
            "  c:\n    menu: {text: x, options: [{id: 1.5, next: a}]}\n")
    loaded = load_paths([write(tmp_path, "f.yaml", text)])
    assert [(p.line, p.column, p.message.split(" (")[0].split(";")[0]) for p in loaded.problems] == [
        (6, 5, "unknown key 'sav'"),
        (12, 36, "nodes.c.menu.options[0].id: YAML reads this as 1.5: quote it to keep it as written"),
        (9, 10, "template does not compile: '__class__' is not allowed: names starting with '_' and interpreter "
                "internals are outside the sandbox"),
        (10, 11, "no node 'nowhere'"),
    ]
    assert all(p.severity == "error" for p in loaded.problems)


@pytest.mark.parametrize("pattern, words", [
    ("(?:x{1000}){8000}", "nested counts multiply to 8,000,000"),  # `regex` would build 2 GB compiling it
    ("((a{400}){100}){100}", "nested counts multiply to 4,000,000"),
])
def test_a_regex_that_would_explode_when_compiled_is_refused(tmp_path, pattern, words):
    text = f"flow: f\ntriggers: [{{regex: '{pattern}'}}]\nstart: a\nnodes:\n  a: {{end: true}}\n"
    (problem,) = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert (problem.line, problem.column) == (2, 20) and words in problem.message


@pytest.mark.parametrize("node, column, words", [
    ("{wait: nan, next: b}", 13, "a duration must be a positive, finite number of seconds, got 'nan'"),
    ("{wait: .inf, next: b}", 13, "a duration must be a positive, finite number of seconds"),
    ("{ask: 'When?', validate: {type: date, max: today+3000000}, save: d, next: b}", 49,
     "max of a date must be an ISO date, today, or today+N"),
])
def test_durations_and_date_bounds_stay_within_what_a_clock_can_hold(tmp_path, node, column, words):
    text = f"flow: f\nstart: a\nnodes:\n  a: {node}\n  b: {{end: true}}\n"
    (problem,) = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert (problem.line, problem.column) == (4, column) and words in problem.message


def test_a_text_repeated_by_aliases_compiles_once_and_reports_once(tmp_path):
    template = "{{ " + " ~ ".join(["(nam | upper | trim)"] * 12) + " }}"
    lines = ["flow: f", "start: n0", f"description: &t '{template}'",
             "nodes:", "  n0: {say: &l [" + ", ".join(["*t"] * 100) + "], next: n1}"]
    lines += [f"  n{i}: {{say: *l, next: n{i + 1}}}" for i in range(1, 199)] + ["  n199: {end: true}"]
    loaded = load_paths([write(tmp_path, "f.yaml", "\n".join(lines) + "\n")])
    assert [(p.line, p.message) for p in loaded.problems] == [(3, "unknown variable 'nam'")]


@pytest.mark.parametrize("url, warned", [
    ("{{ env.BASE }}/orders/{{ q }}", False),
    ("https://api.test/orders/{{ q }}", False),
    ("{{ api | verbatim }}/orders", False),
    ("{{ api }}/orders", True),
    ("{{ env.BASE ~ '/orders' }}", True),
])
def test_a_url_whose_start_would_be_encoded_is_warned_about(tmp_path, url, warned):
    text = (f"flow: f\nstart: a\nvars: {{api: x, q: y}}\nnodes:\n"
            f"  a: {{http: {{url: \"{url}\"}}, next: b}}\n  b: {{end: true}}\n")
    problems = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert [(p.line, p.severity, p.message.split(":")[0]) for p in problems] == (
        [(5, W, "the start of this url is percent-encoded like any inserted value")] if warned else [])


def test_an_invalid_name_does_not_hide_the_other_errors(tmp_path):
    text = ("flow: f\nstart: a\nmenus:\n  main menu: {text: x, options: [{id: o, next: a}]}\nnodes:\n"
            "  a: {say: \"{{ name | nosuchfilter }}\", end: true}\n  my node: {end: true}\n"
            "  b:\n    http: {url: 'http://x', headers: {A: [1]}}\n    next: a\n")
    problems = load_paths([write(tmp_path, "f.yaml", text)]).problems
    assert [(p.line, p.column, p.message) for p in problems] == [
        (4, 3, "menus: 'main menu' is not a valid name: letters, digits, _, . and -"),
        (7, 3, "nodes: 'my node' is not a valid name: letters, digits, _, . and -"),
        (9, 42, "nodes.b.http.headers.A: Input should be a valid string or a secret, {secret: NAME}"),
        (6, 23, "template does not compile: unknown filter 'nosuchfilter'"),
    ]
