"""The `parlour` command, run as a real process."""

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
PARLOUR = shutil.which("parlour")


def parlour(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert PARLOUR, "the `parlour` console script is not installed (pip install .)"
    return subprocess.run([PARLOUR, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60)


BAD = """\
flow: bad
start: welcom
nodes:
  welcome:
    say: "Hi {{ ''.__class__.__mro__ }}"
    nxt: welcome
"""


def test_validate_accepts_the_bundled_flows():
    run = parlour("flows", "validate", "flows", "--strict")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ""
    assert "0 error(s), 0 warning(s)" in run.stderr


def test_validate_reports_every_problem_with_its_position(tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    run = parlour("flows", "validate", str(tmp_path))
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{tmp_path}/bad.yaml:2:8: no node 'welcom' (did you mean 'welcome'?)",
        f"{tmp_path}/bad.yaml:6:5: unknown key 'nxt' (did you mean 'next'?); expected one of: set, say, ask, "
        "menu, branch, http, handoff, wait, goto, end, next, save, validate, retries, on_fail, on_error, "
        "timeout_s, on_timeout, note"]


def test_validate_reports_meaning_problems_in_file_order(tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD.replace("nxt", "next"))
    run = parlour("flows", "validate", str(tmp_path / "bad.yaml"), "--json")
    assert run.returncode == 1
    found = [(p["line"], p["column"], p["severity"], p["message"].split(":")[0]) for p in json.loads(run.stdout)]
    assert found == [(2, 8, "error", "no node 'welcom' (did you mean 'welcome'?)"),  # the cause, once
                     (4, 3, "error", "loop welcome -> welcome never waits for the user and never ends"),
                     (5, 10, "error", "template does not compile")]


def test_warnings_fail_only_with_strict(tmp_path):
    (tmp_path / "warn.yaml").write_text(
        "flow: w\nstart: a\nnodes:\n  a: {say: hi, end: true}\n  b: {say: lost, end: true}\n")
    assert parlour("flows", "validate", str(tmp_path)).returncode == 0
    strict = parlour("flows", "validate", str(tmp_path), "--strict")
    assert strict.returncode == 1 and ":5:3: warning: node 'b' is unreachable" in strict.stdout


def test_validate_warns_of_env_values_read_and_not_set(tmp_path):
    bare = parlour("flows", "validate", "flows", "--strict")  # without --env or --config: only named
    assert bare.returncode == 0 and "env values the flows read: MEMBERS_API, ORDERS_API" in bare.stderr
    run = parlour("flows", "validate", "flows", "--env", "MEMBERS_API=http://x")
    assert run.returncode == 0 and run.stdout.splitlines() == [
        "flows/support.yaml:90:16: warning: env.ORDERS_API is used but not set"]
    (tmp_path / "parlour.yaml").write_text("tenants:\n  shop:\n    tokens: []\n    env: {ORDERS_API: 'http://x'}\n")
    configured = parlour("flows", "validate", "flows/support.yaml", "--config", str(tmp_path / "parlour.yaml"),
                         "--strict")
    assert configured.returncode == 0 and configured.stdout == "", configured.stdout + configured.stderr


def test_validate_a_missing_path_is_a_usage_error():
    run = parlour("flows", "validate", "no/such/dir")
    assert run.returncode == 2 and "no such file or directory: no/such/dir" in run.stderr


def test_the_shipped_schema_is_current_and_accepts_every_bundled_flow():
    run = parlour("flows", "schema")
    assert run.returncode == 0
    schema = json.loads(run.stdout)
    assert schema == json.loads((FLOWS / "flow.schema.json").read_text()), \
        "flows/flow.schema.json is stale: run `parlour flows schema -o flows/flow.schema.json`"
    jsonschema.Draft202012Validator.check_schema(schema)
    flows = [p for p in FLOWS.glob("*.yaml") if not p.name.endswith(".test.yaml")]
    assert flows
    for path in flows:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="nxt"):
        jsonschema.validate({"flow": "x", "start": "a", "nodes": {"a": {"say": "hi", "nxt": "a"}}}, schema)


def test_parlour_test_runs_the_bundled_flow_tests():
    run = parlour("test", "flows")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert "PASS flows/registration.test.yaml" in run.stdout


def test_parlour_test_shows_the_failing_step_and_the_conversation(tmp_path):
    shutil.copy(FLOWS / "registration.yaml", tmp_path)
    # named as some people name tests: found by its content, and not loaded as a broken flow
    (tmp_path / "r_test.yaml").write_text("flow: registration\nsteps:\n  - user: hi\n  - bot: Welcome\n"
                                          "  - bot: Goodbye forever\n")
    run = parlour("test", str(tmp_path))
    assert run.returncode == 1
    assert (f"FAIL {tmp_path}/r_test.yaml:5:5: step 3 (bot): expected a reply containing 'Goodbye forever', "
            "got 'What would you like to do?'") in run.stdout
    assert "you> hi" in run.stdout and "bot> Hi there! Welcome to the club." in run.stdout
    assert run.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_chat_in_a_terminal_session():
    run = parlour("chat", "flows/registration.yaml", "--name", "Ada",
                  stdin="hi\n2\n/state\n/wait 10\n/nonsense\n/quit\n")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "bot › Hi Ada! Welcome to the club." in out
    assert "1. Register   2. About us   3. Quit" in out
    assert "bot › We are a book club that meets every Thursday." in out
    assert '"node": "main_menu"' in out
    assert "/wait SECONDS" in out  # the help shown for an unknown command


def test_chat_refuses_an_invalid_flow_with_its_position(tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    run = parlour("chat", str(tmp_path / "bad.yaml"), stdin="")
    assert run.returncode == 1 and "bad.yaml:6:5: unknown key 'nxt'" in run.stderr


def test_chat_refuses_a_bad_egress_allow():
    run = parlour("chat", "flows/registration.yaml", "--allow-egress", "127.0.0.1/8", stdin="")
    assert run.returncode == 2 and "--allow-egress: egress allow entry '127.0.0.1/8' is not a CIDR range" in run.stderr


def test_parlour_secrets_set_prompts_on_a_terminal_without_echo():
    """On a terminal the value is asked for and never echoed (nor taken from the command line)."""
    import os
    import pty
    import time

    assert PARLOUR, "the `parlour` console script is not installed (pip install .)"  # before the fork
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal for stdin, stdout and stderr
        try:
            os.execv(PARLOUR, [PARLOUR, "secrets", "set", "acme", "TOKEN",
                               "--url", "http://127.0.0.1:9", "--token", "x"])
        finally:
            os._exit(127)  # never run the rest of pytest in the child
    seen, deadline, typed = b"", time.monotonic() + 60, False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child is gone: EIO on Linux
            break
        if not chunk:
            break
        seen += chunk
        if not typed and b"(not shown)" in seen:
            os.write(fd, b"typed-s3cret\n")
            typed = True
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert typed and b"value of TOKEN (not shown):" in seen
    assert b"typed-s3cret" not in seen and b"no node answers at http://127.0.0.1:9" in seen
    assert os.waitstatus_to_exitcode(status) == 1
