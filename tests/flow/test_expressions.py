"""runtime/flow/expressions.py: sandboxed Jinja2, compiled once, internals refused at load."""

import pytest

from parlour.flow.bounds import work_budget
from parlour.flow.expressions import ExpressionError, RenderError, compile_expression, compile_template, constant


@pytest.mark.parametrize("source, scope, text", [
    ("Hi {{ name }}!", {"name": "Ann"}, "Hi Ann!"),
    ("{{ user.name or 'there' }}", {"user": {"name": None}}, "there"),
    ("{{ items | length }} items", {"items": [1, 2, 3]}, "3 items"),
    ("{% if age < 18 %}minor{% else %}adult{% endif %}", {"age": 30}, "adult"),
    ("[{{ missing }}]", {}, "[]"),  # an undefined name renders empty
    ("[{{ nothing }}]", {"nothing": None}, "[]"),  # None renders empty, not "None"
    ("{{ member.id }}", {"member": {"id": 42}}, "42"),
    ("a\n{{ x }}\n", {"x": 1}, "a\n1\n"),  # the trailing newline is kept
    ("<{{ x }}>", {"x": "<b>"}, "<<b>>"),  # no HTML escaping
])
def test_template_renders(source, scope, text):
    assert compile_template(source).render(scope) == text


def test_template_knows_the_names_it_reads():
    assert compile_template("{{ a }} {{ b.c }} {% for i in items %}{{ i }}{% endfor %}").names == {"a", "b", "items"}


@pytest.mark.parametrize("source", ["plain text", "", "50% off {not a marker}"])
def test_constant_text_costs_no_render(source):
    template = compile_template(source)
    assert template._render is None
    assert template.names == frozenset()
    assert template.render(None) is source  # the scope is never looked at


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ x.__globals__ }}",
    "{{ foo['__class__'] }}",
    "{{ x.mro() }}",
    "{{ x._hidden }}",
    "{% for c in ''.__class__.__subclasses__() %}{% endfor %}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ f.gi_frame.f_globals }}",
])
def test_sandbox_escape_in_a_template_is_refused_at_compile_time(source):
    with pytest.raises(ExpressionError, match="is not allowed"):
        compile_template(source)


@pytest.mark.parametrize("source", [
    "''.__class__.__mro__",
    "x.__globals__",
    "foo['__class__']",
    "x.mro()",
    "tb.tb_frame",
])
def test_sandbox_escape_in_an_expression_is_refused_at_compile_time(source):
    with pytest.raises(ExpressionError, match="is not allowed"):
        compile_expression(source)


@pytest.mark.parametrize("source", ["{{ f.func_globals }}", "{{ f.func_code }}", "{{ m.im_func }}"])
def test_python2_internals_are_refused_at_compile_time(source):
    with pytest.raises(ExpressionError, match="is not allowed"):
        compile_template(source)


def test_attr_filter_to_internals_is_refused_at_compile_time():
    with pytest.raises(ExpressionError):
        compile_template("{{ x | attr('__class__') }}")


def test_the_attr_filter_still_meets_the_run_time_sandbox():
    # Defence in depth: past the load-time check, the sandbox itself still refuses.
    from parlour.flow.expressions import ENVIRONMENT
    assert ENVIRONMENT.from_string("{{ x | attr('__class__') }}").render(x="") == ""


@pytest.mark.parametrize("source, column, message", [
    ("age <", 6, "the expression ends too soon"),
    ("1 +", 4, "the expression ends too soon"),
    ("(", 2, "the expression ends too soon: ')' was expected first"),
    ("a b", 3, "unexpected 'b': an operator is missing before it"),
    ("x | nosuchfilter", 5, "unknown filter 'nosuchfilter'"),
    ("  age | intt", 9, "unknown filter 'intt' (did you mean 'int'?)"),
    ("n is odd_", 6, "unknown test 'odd_' (did you mean 'odd'?)"),
    ("a ! b", 3, "unexpected character: '!', which no expression uses"),
    ("   ", None, "empty expression"),
])
def test_expression_syntax_error_in_parlours_words_at_its_token(source, column, message):
    with pytest.raises(ExpressionError) as raised:
        compile_expression(source)
    assert (str(raised.value), raised.value.column) == (message, column)


@pytest.mark.parametrize("source, line, column, message", [
    ("Hi {{ name | uper }}", 1, 14, "unknown filter 'uper' (did you mean 'upper'?)"),
    ("{{ x is numbr }}", 1, 9, "unknown test 'numbr' (did you mean 'number'?)"),
    ("Hi {{ name nme }}", 1, 12, "unexpected 'nme': an operator, or }}, is missing before it"),
    ("Hi {{ name }", 1, 12, "unexpected '}'"),
    ("Hi {{ name", 1, 4, "{{ is not closed with }}"),
    ("{{ a + }}", 1, 8, "something is missing before }}: the expression ends too soon"),
    ("{{ (a }}", 1, 7, "unexpected '}': ')' was expected first"),
    ("{{ 'abc }}", 1, 4, "unexpected character: a quote that is never closed"),
    ("{% iff x %}y{% endif %}", 1, 4, "unknown statement {% iff %} (did you mean 'if'?)"),
    ("a\n{% if x %}y", 2, 4, "{% if %} is not closed: add {% endif %}"),
    ("{% endfor %}", 1, 4, "{% endfor %} closes or continues no open block"),
    ("one\n  {{ a | trimm }}", 2, 10, "unknown filter 'trimm' (did you mean 'trim'?)"),
])
def test_template_syntax_error_in_parlours_words_at_its_token(source, line, column, message):
    with pytest.raises(ExpressionError) as raised:
        compile_template(source)
    assert (str(raised.value), raised.value.line, raised.value.column) == (message, line, column)


@pytest.mark.parametrize("source", ["{{ age }} < 18", "{% if x %}1{% endif %}", "x {# note #}"])
def test_markers_inside_an_expression_are_refused(source):
    with pytest.raises(ExpressionError, match=r"without \{\{ \}\}"):
        compile_expression(source)


@pytest.mark.parametrize("source, line", [
    ("{{ name }", 1),
    ("{% if %}", 1),
    ("one\ntwo {{ x. }}", 2),
])
def test_template_syntax_error_has_a_line(source, line):
    with pytest.raises(ExpressionError) as caught:
        compile_template(source)
    assert caught.value.line == line


@pytest.mark.parametrize("source", ["{{ x | nosuchfilter }}", "{{ x is nosuchtest }}"])
def test_unknown_filter_or_test_in_a_template_is_an_expression_error(source):
    with pytest.raises(ExpressionError):
        compile_template(source)


@pytest.mark.parametrize("source, scope, value", [
    ("age < 18", {"age": 12}, True),
    ("age < 18", {"age": 40}, False),
    ("tries + 1", {"tries": 2}, 3),
    ("name ~ '!'", {"name": "Ann"}, "Ann!"),
    ("missing", {}, None),  # undefined becomes None
    ("[1, 2] | sum", {}, 3),
])
def test_expression_evaluates(source, scope, value):
    assert compile_expression(source).evaluate(scope) == value


def test_expression_knows_the_names_it_reads():
    assert compile_expression("age < limit and name").names == {"age", "limit", "name"}


def test_constant_expression():
    assert constant([1, 2]).evaluate({}) == [1, 2]


@pytest.mark.parametrize("source, scope, words", [
    ("{{ x.y.z }}", {}, "UndefinedError"),
    ("{{ 1 / 0 }}", {}, "ZeroDivisionError"),
    ("{{ items.append(4) }}", {"items": [1]}, "SecurityError"),  # the sandbox is immutable
    ("{{ n + 'a' }}", {"n": 1}, "TypeError"),
])
def test_template_failure_raises_render_error(source, scope, words):
    with pytest.raises(RenderError, match=words) as caught:
        compile_template(source).render(scope)
    assert source in str(caught.value)


@pytest.mark.parametrize("source, scope, words", [
    ("1 / 0", {}, "ZeroDivisionError"),
    ("missing.x", {}, "UndefinedError"),
    ("items.pop()", {"items": [1]}, "SecurityError"),
])
def test_expression_failure_raises_render_error(source, scope, words):
    with pytest.raises(RenderError, match=words):
        compile_expression(source).evaluate(scope)


@pytest.mark.parametrize("source", [
    "{{ 10 ** (10 ** 10) }}",                          # would hang while Jinja folds constants
    "{{ ((10 ** 200) ** 256) ** 256 }}",
    "{% set a = (2 ** 256) ** 256 %}{% set b = a ** 12 %}{{ b * b * b * b * b * b * b * b }}",
    "{{ ('x' * 10 ** 8) | length }}",
    "{{ [0] * 10 ** 8 }}",
    "{{ '{:>100000000}'.format('x') }}",
    "{{ '{x:>9999999}'.format_map({'x': 1}) }}",
    "{{ '{0:{1}}'.format('x', '300000000') }}",
    "{{ ('{0:99999}' * 3000).format('x') }}",
    "{{ '%100000000s' % 'x' }}",
    "{{ '%*s' % (300000000, 'x') }}",
    "{{ '%100000000s' | format('x') }}",
    "{{ 'x' | center(10 ** 8) }}",
    "{{ 'x'.ljust(10 ** 8) }}",
    "{{ ('\\t' * 3000).expandtabs(100000) }}",
    "{{ ('x' * 100000).replace('x', 'yyyyy' * 600) }}",
    "{{ (['x' * 100000] * 3000) | join }}",
    "{{ '-'.join(['x' * 100000] * 3000) }}",
    "{{ [1] | slice(10 ** 8) | list }}",
    "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}",  # over the rendered-text limit
])
def test_one_message_cannot_make_a_template_build_gigabytes(source):
    with pytest.raises(RenderError, match="SecurityError"):
        compile_template(source).render({})


@pytest.mark.parametrize("source", [
    "{{ ([range(100000)] * 3000) | map('sum') | list | length }}",
    "{% for i in range(100000) %}{{ (('x' * 99999).count('y')) and '' }}{% endfor %}",
])
def test_work_past_the_turns_time_budget_is_refused(source):
    with work_budget(0.05), pytest.raises(RenderError, match="took longer than"):
        compile_template(source).render({})


@pytest.mark.parametrize("source, expected", [
    ('{{ "Order {}".format(order) }}', "Order 1234567"),
    ('{{ "{:,}".format(amount) }}', "1,234,567.5"),
    ('{{ "Your code is %s" | format(order) }}', "Your code is 1234567"),
    ("{{ order | tojson }}", "1234567"),
    ("{{ missing | default(1000000) }}", "1000000"),
    ('{{ "Call 0800123456 or %s" % name }}', "Call 0800123456 or Ada"),
    ('{{ "Ref 20261122-{}".format(name) }}', "Ref 20261122-Ada"),
    ('{{ "100%% of {}".format(name) }}', "100%% of Ada"),
    ('{{ "%d%%" % 50 }}', "50%"),
    ("{% for i in range(3) %}{% if i %}-{% endif %}{{ loop.index }}{% endfor %}", "1-2-3"),
    ("{{ [1, 2, 3] | batch(2) | list }} {{ 'a b c' | wordwrap(3) }}", "[[1, 2], [3]] a b\nc"),
])
def test_plain_numbers_and_ordinary_formatting_are_not_limited(source, expected):
    scope = {"order": 1234567, "amount": 1234567.5, "name": "Ada"}
    assert compile_template(source).render(scope) == expected


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for x in xs recursive %}{{ loop(x) }}{% endfor %}",
    "{% macro m() %}{% endmacro %}",
])
def test_templates_whose_cost_has_no_bound_are_refused_at_load(source):
    with pytest.raises(ExpressionError, match="not allowed in flow templates"):
        compile_template(source)


def test_ordinary_arithmetic_and_formatting_still_work():
    source = "{{ 2 ** 64 }} {{ 'ab' * 3 }} {{ '%05.1f' % 3.14159 }} {{ '{:>4}'.format(7) }} {{ 'x' | center(5) }}"
    assert compile_template(source).render({}) == "18446744073709551616 ababab 003.1    7   x  "


def test_json_keys_with_one_underscore_are_data():
    assert compile_template("{{ doc['_id'] }}").render({"doc": {"_id": "abc"}}) == "abc"
    with pytest.raises(ExpressionError):
        compile_template("{{ doc['__class__'] }}")
