"""Settings for ``parlour serve``: precedence, every problem named, and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from parlour.config import ConfigError, hash_token, load_settings, new_token
from parlour.logs import setup_logging


def test_options_beat_the_environment_which_beats_the_file(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text("port: 9001\nhosts: 2\nlog_level: debug\nlimits: {max_pending: 5}\n")
    monkeypatch.setenv("PARLOUR_HOSTS", "3")
    monkeypatch.setenv("PARLOUR_LIMITS__MAX_BODY_BYTES", "2048")
    settings = load_settings(tmp_path / "p.yaml", port=None, log_level="warning")
    assert (settings.port, settings.hosts, settings.log_level) == (9001, 3, "warning")
    assert (settings.limits.max_pending, settings.limits.max_body_bytes) == (5, 2048)
    assert settings.store_url == "sqlite:///.parlour/parlour.db" and list(settings.tenants) == ["demo"]


def test_the_defaults_need_no_file():
    settings = load_settings()
    assert (settings.host, settings.port, settings.server_count(), settings.tenants["demo"].rate_limit) == (
        "127.0.0.1", 8080, os.cpu_count(), "200/second")  # a node server per core


def test_servers_and_hosts_are_one_setting():
    assert load_settings(hosts=3).server_count() == load_settings(servers=3).server_count() == 3
    assert load_settings(num_cpus=1).server_count() == 1
    with pytest.raises(ConfigError, match="servers .2. and hosts .3. are one setting"):
        load_settings(servers=2, hosts=3)


@pytest.mark.parametrize("text, expected", [
    ("hosts: 0\n", ["hosts: Input should be greater than or equal to 1"]),
    ("bogus: 1\nport: x\n", ["bogus: Extra inputs are not permitted", "port: Input should be a valid integer"]),
    ("tenants:\n  acme: {tokens: [abc]}\n", ["tenants.acme.tokens: Value error, a token is given by its hash"]),
    ("tenants:\n  acme: {rate_limit: often}\n", ["tenants.acme.rate_limit: Value error, not a rate limit"]),
    ("tenants:\n  acme: {admin_rate_limit: 10/fortnight}\n",
     ["tenants.acme.admin_rate_limit: Value error, not a rate"]),
    ("tenants:\n  acme: {max_dedicated: -1}\n",
     ["tenants.acme.max_dedicated: Input should be greater than or equal to 0"]),
    ("tenants:\n  acme: {web_answer_wait_s: 11}\n",
     ["tenants.acme.web_answer_wait_s: Input should be less than or equal to 10"]),
    ("tenants:\n  acme: {web_answer_wait_s: -1}\n",
     ["tenants.acme.web_answer_wait_s: Input should be greater than or equal to 0"]),
    ("limits: {mailbox_ttl_s: 59}\n", ["limits.mailbox_ttl_s: Input should be greater than or equal to 60"]),
    ("limits: {mailbox_ttl_s: .inf}\n", ["limits.mailbox_ttl_s: Input should be less than or equal to"]),
    ("tenants:\n  bad name: {}\n", ["tenants: Value error, tenant name 'bad name'"]),
    ("port: [\n", [":2:1: expected the node content"]),
    ("- 1\n", ["a config file is a YAML mapping of settings"]),
])
def test_every_problem_is_named_with_its_place(tmp_path, text, expected):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "p.yaml")
    for problem in expected:
        assert any(problem in line for line in caught.value.problems), caught.value.problems
    assert all(line.startswith(str(tmp_path / "p.yaml")) for line in caught.value.problems)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.yaml")


def test_tokens_are_random_and_kept_only_as_hashes(tmp_path):
    token = new_token()
    assert token != new_token() and len(token) > 40
    (tmp_path / "p.yaml").write_text(f"tenants:\n  acme: {{tokens: ['{hash_token(token)}']}}\n")
    assert load_settings(tmp_path / "p.yaml").tenants["acme"].tokens == [hash_token(token)]


def test_json_logs_are_one_object_per_line_with_their_fields(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json")
        logging.getLogger("parlour.test").info("served %s", "it", extra={"request_id": "r-1", "status": 200})
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert (line["message"], line["request_id"], line["status"], line["level"], line["logger"]) == (
        "served it", "r-1", 200, "INFO", "parlour.test")


def test_dedicated_caps_are_set_per_node_and_per_tenant(tmp_path):
    from parlour.serve import dedicated_caps
    (tmp_path / "p.yaml").write_text("dedicated: {max_per_node: 6, max_per_tenant: 1, idle_s: 30}\n"
                                     "tenants:\n  big: {max_dedicated: 3}\n  small: {}\n")
    caps = dedicated_caps(load_settings(tmp_path / "p.yaml"))
    assert (caps.max_actors, caps.of("big"), caps.of("small"), caps.idle_s) == (6, 3, 1, 30.0)
    (tmp_path / "p.yaml").write_text("dedicated: {max_per_node: -1, idle_s: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "p.yaml")
    assert {p.split(": ")[1] for p in caught.value.problems} == {"dedicated.max_per_node", "dedicated.idle_s"}


def test_each_tenants_egress_allow_is_read_and_checked(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "tenants:\n  acme: {egress: {allow: [10.1.0.0/16, members.internal]}}\n  beta: {}\n")
    settings = load_settings(tmp_path / "p.yaml")
    assert settings.egress_allows() == {"acme": ["10.1.0.0/16", "members.internal"], "beta": []}
    (tmp_path / "bad.yaml").write_text("tenants:\n  acme: {egress: {allow: [10.1.0.1/16]}}\n")
    with pytest.raises(ConfigError, match=r"tenants\.acme\.egress\.allow: Value error, egress allow entry "
                                          r"'10\.1\.0\.1/16' is not a CIDR range"):
        load_settings(tmp_path / "bad.yaml")


# ---------------------------------------------------------------- issue 12, finding 1: env and secrets are a tenant's


def test_each_tenant_has_its_own_env_and_secrets(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "tenants:\n"
        "  alpha: {env: {API: https://alpha.example}, secrets: {ALPHA_API_KEY: a-secret}}\n"
        "  beta: {env: {API: https://beta.example}, secrets: {BETA_API_KEY: b-secret}}\n")
    settings = load_settings(tmp_path / "p.yaml")
    alpha, beta = settings.tenants["alpha"], settings.tenants["beta"]
    assert alpha.env == {"API": "https://alpha.example"} and list(alpha.secrets) == ["ALPHA_API_KEY"]
    assert beta.secrets["BETA_API_KEY"].get_secret_value() == "b-secret" and "b-secret" not in repr(settings)


@pytest.mark.parametrize("node_wide", ["env: {API: https://x}\n", "secrets: {KEY: v}\n"])
def test_node_wide_values_are_refused_with_several_tenants(tmp_path, node_wide):
    (tmp_path / "p.yaml").write_text(node_wide + "tenants: {alpha: {}, beta: {}}\n")
    with pytest.raises(ConfigError, match=r"tenants\.<tenant>\.env and tenants\.<tenant>\.secrets"):
        load_settings(tmp_path / "p.yaml")


def test_node_wide_values_are_the_one_tenants_and_its_own_win(tmp_path):
    (tmp_path / "p.yaml").write_text("env: {API: https://node, OTHER: o}\nsecrets: {KEY: node}\n"
                                     "tenants: {solo: {env: {API: https://solo}}}\n")
    settings = load_settings(tmp_path / "p.yaml")
    assert settings.tenants["solo"].env == {"API": "https://solo", "OTHER": "o"}
    assert settings.tenants["solo"].secrets["KEY"].get_secret_value() == "node"
    assert settings.env == {} and settings.secrets == {}  # nothing node-wide is left to reach anyone else
    assert load_settings(env={"MEMBERS_API": "http://m"}).tenants["demo"].env == {"MEMBERS_API": "http://m"}


@pytest.mark.parametrize("name", ["1KEY", "has-dash", "K" * 65, ""])
def test_a_secret_or_env_name_is_one_a_flow_can_write(tmp_path, name):
    (tmp_path / "p.yaml").write_text(f"tenants: {{alpha: {{secrets: {{'{name}': v}}}}}}\n")
    with pytest.raises(ConfigError, match="tenants.alpha.secrets: Value error, name"):
        load_settings(tmp_path / "p.yaml")
