"""runtime/flow/source.py: YAML (or JSON) into data plus the line:column of every value and key."""

import pytest

from parlour.errors import FlowError
from parlour.flow.source import Spot, read_source

NESTED = """\
flow: demo
nodes:
  ask_age:
    validate:
      min: 13
    say:
      - hello
      - text: bye
"""


def refused(text: str) -> FlowError:
    with pytest.raises(FlowError) as caught:
        read_source(text, "f.yaml")
    return caught.value


@pytest.mark.parametrize("text, line, column, code", [
    ("\x00", 1, 1, "U+0000"), ("flow: x\nstart: a\x00b\n", 2, 9, "U+0000"), ("flow: \ufffe\n", 1, 7, "U+FFFE"),
])
def test_a_character_yaml_refuses_is_positioned_not_a_crash(text, line, column, code):
    error = refused(text)
    assert (error.line, error.column) == (line, column)
    assert error.reason == f"character {code} is not allowed in YAML"


@pytest.mark.parametrize("text, line, column, words", [
    ("flow: x\nstart: @a\n", 2, 8, "cannot start any token"),
    ("flow: x\n\tstart: a\n", 2, 1, "'\\t'"),
    # Something left open is reported where it should have been closed, not at the line after.
    ("flow: x\nnodes: [a, b\nstart: a\n", 2, 13,
     "expected ',' or ']' here: the flow sequence opened at line 2, column 8 is not closed"),
    ("flow: x\nstart: [a   # it's open\n\n", 2, 10, "the flow sequence opened at line 2, column 8 is not closed"),
    ("flow: x\nstart: {\nnodes: {}\n", 2, 9, "the flow mapping opened at line 2, column 8 is not closed"),
    ("nodes:\n  a: {say: hi, end: true\n  b: {end: true}\n", 2, 25,
     "the flow mapping opened at line 2, column 6 is not closed"),
    ("start: [a,\n   b\nnodes: {}\n", 2, 5, "the flow sequence opened at line 1, column 8 is not closed"),
    ('{"flow": "x",\n "start": "a"\n "nodes": {}}\n', 2, 14,
     "expected ',' or '}' here, before the next entry on line 3"),
    ('flow: x\nnodes:\n  a:\n    say: "hi\n    end: true\n', 4, 10, "the quoted text opened here is never closed"),
    ("flow: x\nstart:a\nnodes: {}\n", 2, 1, "expected ': ' (a colon and a space) after a key on this line"),
    ("flow: x\nstart: [\n", 2, 9, "a value is missing here"),
    # What is wrong where PyYAML stops stays there.
    ("nodes:\n  a:\n    say: hi\n   next: b\n", 4, 4, "expected <block end>"),
    ("nodes:\n  a:\n    say: hi: there\n", 3, 12, "mapping values are not allowed here"),
    ("flow: x\n---\nflow: y\n", 2, 1, "found another document"),
], ids=["bad-character", "tab-indent", "unclosed-list", "unclosed-at-the-end", "unclosed-mapping",
        "unclosed-flow-node", "unclosed-multiline", "json-missing-comma", "unclosed-quote", "key-without-space",
        "missing-value", "bad-indent", "colon-in-text", "two-documents"])
def test_syntax_error_is_positioned(text, line, column, words):
    error = refused(text)
    assert (error.path, error.line, error.column) == ("f.yaml", line, column)
    assert error.reason.startswith("YAML syntax: ")
    assert words in error.reason
    assert str(error).startswith(f"f.yaml:{line}:{column}: YAML syntax")


@pytest.mark.parametrize("text, line, column, first_line", [
    ("flow: x\nstart: a\nflow: y\n", 3, 1, 1),
    ("nodes:\n  a:\n    say: hi\n    next: b\n    say: ho\n", 5, 5, 3),
    ('{"a": {"b": 1, "b": 2}}', 1, 16, 1),
], ids=["top-level", "nested", "json"])
def test_duplicate_key_is_refused_at_the_second_key(text, line, column, first_line):
    error = refused(text)
    assert (error.line, error.column) == (line, column)
    assert f"(first defined at line {first_line})" in error.reason
    assert error.reason.startswith("duplicate key")


def test_every_duplicate_is_reported():
    error = refused("a: 1\na: 2\nb: 1\nb: 2\n")
    assert [(p.line, p.column) for p in error.problems] == [(2, 1), (4, 1)]


@pytest.mark.parametrize("path, value_at, key_at", [
    (("flow",), (1, 7), (1, 1)),
    (("nodes", "ask_age"), (4, 5), (3, 3)),
    (("nodes", "ask_age", "validate", "min"), (5, 12), (5, 7)),
    (("nodes", "ask_age", "say"), (7, 7), (6, 5)),
])
def test_positions_of_nested_values_and_keys(path, value_at, key_at):
    _, smap = read_source(NESTED, "f.yaml")
    assert smap.values[path] == Spot(*value_at)
    assert smap.keys[path] == Spot(*key_at)
    assert smap.spot(path) == Spot(*value_at)
    assert smap.spot(path, key=True) == Spot(*key_at)


@pytest.mark.parametrize("path, at", [
    (("nodes", "ask_age", "say", 0), (7, 9)),
    (("nodes", "ask_age", "say", 1, "text"), (8, 15)),
])
def test_positions_of_list_items(path, at):
    _, smap = read_source(NESTED, "f.yaml")
    assert smap.spot(path) == Spot(*at)


@pytest.mark.parametrize("path, at", [
    (("nodes", "ask_age", "validate", "max"), (5, 7)),  # absent: its parent mapping
    (("nodes", "ask_age", "function-after", "validate", "min"), (5, 12)),  # a component the file lacks
    (("nodes", "nope", "say"), (3, 3)),
])
def test_a_missing_path_falls_back_to_its_nearest_ancestor(path, at):
    _, smap = read_source(NESTED, "f.yaml")
    assert smap.spot(path) == Spot(*at)


def test_problem_carries_the_position():
    _, smap = read_source(NESTED, "f.yaml")
    problem = smap.problem(("nodes", "ask_age", "validate", "min"), "too small", severity="warning")
    assert str(problem) == "f.yaml:5:12: warning: too small"


def test_json_input_reads_like_yaml():
    text = '{\n  "flow": "demo",\n  "nodes": {"a": {"say": ["hi", {"text": "yo"}]}}\n}\n'
    data, smap = read_source(text, "f.json")
    assert data == {"flow": "demo", "nodes": {"a": {"say": ["hi", {"text": "yo"}]}}}
    assert smap.spot(("flow",)) == Spot(2, 11)
    assert smap.spot(("nodes", "a", "say", 1, "text")) == Spot(3, 42)
    assert smap.spot(("nodes", "a"), key=True) == Spot(3, 13)


def test_keys_stay_text_while_values_keep_their_yaml_type():
    data, _ = read_source("yes: true\n1: 2\nnull: ~\n", "f.yaml")
    assert data == {"yes": True, "1": 2, "null": None}


@pytest.mark.parametrize("scalar, value", [
    # YAML 1.2 core schema, not PyYAML's YAML 1.1: what authors mean, and what JSON means
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),
    ("true", True), ("False", False),
    ("11:30", "11:30"),            # 1.1: the base-60 number 690
    ("2026-12-01", "2026-12-01"),  # 1.1: a datetime.date, which msgpack cannot store
    ("010", "010"),                # a zip code, not 8 (1.1 octal) nor 10.0
    ("1_000", "1_000"),
    ("0", 0), ("-7", -7), ("+3", 3), ("0x1F", 31), ("0o17", 15),
    ("1.5", 1.5), ("-.5", -0.5), ("2e3", 2000.0), ("1.5e3", 1500.0), (".inf", float("inf")),
    ("~", None), ("null", None),
])
def test_scalars_follow_the_yaml_1_2_core_schema(scalar, value):
    data, _ = read_source(f"v: {scalar}\n", "f.yaml")
    assert data["v"] == value and type(data["v"]) is type(value)


def test_a_key_that_is_not_a_name_is_refused():
    error = refused("flow: x\n? [a, b]\n: 1\n")
    assert (error.line, error.column) == (1, 1)
    assert "a mapping key must be a plain name" in error.reason


def test_empty_document_is_none():
    assert read_source("", "f.yaml")[0] is None


def test_merge_keys_are_resolved():
    data, _ = read_source("base: &b {x: 1, y: 2}\nnode:\n  <<: *b\n  z: 3\n", "f.yaml")
    assert data["node"] == {"x": 1, "y": 2, "z": 3}


def test_a_key_may_override_a_merged_one():
    data, _ = read_source("base: &b {x: 1, y: 2}\nnode:\n  <<: *b\n  x: 3\n", "f.yaml")
    assert data["node"] == {"x": 3, "y": 2}


def _laughs(levels: int) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(levels):
        name, previous = chr(98 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, line, column, words", [
    (_laughs(7), 1, 1, "more than 100,000 values once its aliases are expanded"),  # 523 bytes, 10^8 values
    ("a: &a [*a]\n", 1, 4, "an alias refers to a value that contains it"),
    ("a: &a {b: *a}\n", 1, 4, "an alias refers to a value that contains it"),
    ("x: !!int abc\n", 1, 4, "!!int 'abc': the value does not fit its tag"),
    ("x: !!float abc\n", 1, 4, "!!float 'abc': the value does not fit its tag"),
    ("x: !!bool maybe\n", 1, 4, "!!bool 'maybe': the value does not fit its tag"),
    ("x: !!timestamp notadate\n", 1, 4, "!!timestamp 'notadate': the value does not fit its tag"),
    ("x: {<<: 5}\n", 1, 9, "a merge key (<<) takes a mapping or a list of mappings"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", 1, 1, "nested too deeply"),
])
def test_documents_that_would_exhaust_the_loader_are_refused_with_a_position(text, line, column, words):
    error = refused(text)
    assert (error.line, error.column) == (line, column) and words in error.reason


def test_merges_of_merges_stay_the_size_of_their_distinct_keys():
    inner = "&a0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"
    for level in range(1, 13):  # PyYAML alone would build 10^12 pairs
        inner = f"&a{level} {{<<: [{inner}, " + ", ".join([f"*a{level - 1}"] * 9) + "]}"
    data, _ = read_source("x: " + inner + "\n", "f.yaml")
    assert data["x"] == {f"k{i}": i for i in range(10)}


def test_aliases_within_the_limit_still_expand():
    data, _ = read_source(_laughs(3), "f.yaml")
    assert len(data["d"]) == 10 and data["d"][0][0][0] == ["x"] * 10
