"""A tenant's secrets (issue 12, finding 1): sealed at rest, rotated, bounded, refused at start
when a flow names one its tenant does not have. On a real memory store, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parlour.channels.registry import Cipher
from parlour.errors import FlowError
from parlour.flows_dir import bundled_flows
from parlour.serve import check_flows
from parlour.store.memory import MemoryStore
from parlour.vault import SECRETS_META, DeclaredInConfig, NoKey, SecretError, Vault, saved_names

T0 = 1_800_000_000.0


async def opened() -> MemoryStore:
    store = MemoryStore()
    await store.open()
    return store


async def test_a_secret_is_sealed_at_rest_and_opened_by_a_host_for_its_tenant_only():
    store, key = await opened(), Cipher.new_key()
    gateway = Vault(store, Cipher.from_keys(key), unseal=False, clock=lambda: T0)
    info, new = await gateway.put("beta", "BETA_API_KEY", "beta-secret-value")
    assert new and (info.name, info.source, info.set_at) == ("BETA_API_KEY", "api", T0)
    assert b"beta-secret-value" not in await store.get_meta(SECRETS_META)
    assert gateway.secrets_of("beta") == {}  # a gateway never holds a value
    host = Vault(store, Cipher.from_keys(key))
    assert await host.reload() == 1
    assert host.secrets_of("beta") == {"BETA_API_KEY": "beta-secret-value"}
    assert host.secrets_of("alpha") == {} and host.secrets_of(None) == {}
    assert await saved_names(store) == {"beta": {"BETA_API_KEY"}}


async def test_rotation_a_secret_sealed_with_key_a_opens_with_b_then_a_and_not_with_b_alone():
    store, a, b = await opened(), Cipher.new_key(), Cipher.new_key()
    await Vault(store, Cipher.from_keys(a)).put("acme", "TOKEN", "t0ken")
    rotated = Vault(store, Cipher.from_keys(f"{b},{a}"))
    await rotated.reload()
    assert rotated.secrets_of("acme") == {"TOKEN": "t0ken"}
    await rotated.put("acme", "TOKEN", "t0ken")  # saved again: now sealed with b
    only_b = Vault(store, Cipher.from_keys(b))
    await only_b.reload()
    assert only_b.secrets_of("acme") == {"TOKEN": "t0ken"}
    await Vault(store, Cipher.from_keys(a)).put("acme", "OLD", "x")
    await only_b.reload()  # a secret it cannot open is left out, by name, and the others stay
    assert only_b.secrets_of("acme") == {"TOKEN": "t0ken"} and "do not decrypt" in only_b.broken["acme/OLD"]


async def test_a_sealed_value_moved_to_another_tenants_entry_does_not_open_there():
    store, key = await opened(), Cipher.new_key()
    await Vault(store, Cipher.from_keys(key)).put("beta", "KEY", "beta-secret-value")
    raw = json.loads(await store.get_meta(SECRETS_META))
    raw["alpha/KEY"] = raw["beta/KEY"]
    await store.put_meta(SECRETS_META, json.dumps(raw).encode())
    host = Vault(store, Cipher.from_keys(key))
    await host.reload()
    assert host.secrets_of("alpha") == {} and "another entry" in host.broken["alpha/KEY"]


@pytest.mark.parametrize("name, value, problem", [
    ("1BAD", "v", "name"), ("A" * 65, "v", "name"), ("OK", "", "1 to 64 bytes"), ("OK", "x" * 65, "this one is 65"),
    ("OK", "é" * 33, "this one is 66"), ("OK", "a\r\nX-Injected: 1", "line break"), ("OK", "\ud800", "surrogate"),
])
async def test_a_bad_name_or_value_is_refused(name, value, problem):
    vault = Vault(await opened(), Cipher.from_keys(Cipher.new_key()), max_secret_bytes=64)
    with pytest.raises(SecretError, match=problem):
        await vault.put("acme", name, value)


async def test_a_tenant_has_at_most_max_secrets_and_the_config_files_are_changed_there():
    vault = Vault(await opened(), Cipher.from_keys(Cipher.new_key()), {"acme": {"FROM_FILE": "f"}}, max_secrets=2)
    await vault.put("acme", "A", "1")
    await vault.put("acme", "B", "2")
    await vault.put("acme", "B", "3")  # a change is not one more
    await vault.put("beta", "A", "1")  # another tenant's count is its own
    with pytest.raises(SecretError, match="limits.max_secrets"):
        await vault.put("acme", "C", "3")
    with pytest.raises(DeclaredInConfig):
        await vault.put("acme", "FROM_FILE", "x")
    with pytest.raises(DeclaredInConfig):
        await vault.delete("acme", "FROM_FILE")
    assert [(i.name, i.source) for i in vault.infos("acme")] == [("A", "api"), ("B", "api"), ("FROM_FILE", "config")]
    assert await vault.delete("acme", "A") and not await vault.delete("acme", "A")


async def test_without_a_key_nothing_is_sealed():
    with pytest.raises(NoKey):
        await Vault(await opened(), None).put("acme", "A", "1")


ALPHA_FLOW = """\
flow: steal
start: call
nodes:
  call:
    http:
      url: "http://127.0.0.1:9/x"
      headers: {X: {secret: BETA_API_KEY}}
    next: done
  done: {say: done, end: true}
"""


def test_serve_refuses_a_config_flow_naming_a_secret_its_tenant_lacks(tmp_path):
    (tmp_path / "steal.yaml").write_text(ALPHA_FLOW)
    flows = {"alpha": [tmp_path], "beta": [tmp_path]}
    with pytest.raises(FlowError) as raised:
        check_flows(flows, {"alpha": {"ALPHA_API_KEY"}, "beta": {"BETA_API_KEY"}})
    (problem,) = raised.value.problems
    assert (Path(problem.path).name, problem.line, problem.column) == ("steal.yaml", 7, 20)
    assert "secret 'BETA_API_KEY' is not set for tenant 'alpha'" in problem.message
    assert set(check_flows(flows, {"alpha": {"BETA_API_KEY"}, "beta": {"BETA_API_KEY"}})) == {"alpha", "beta"}


def test_the_bundled_flows_start_without_their_secrets_and_say_so(caplog):
    loaded = check_flows({"demo": [bundled_flows()]}, {})
    assert loaded["demo"] and "secret 'ORDERS_TOKEN' is not set for tenant 'demo'" in caplog.text


def test_an_env_value_a_flow_reads_and_its_tenant_lacks_is_a_warning_at_its_place(caplog):
    loaded = check_flows({"demo": [bundled_flows()]}, {}, {"demo": {"MEMBERS_API": "http://127.0.0.1:9"}})
    assert loaded["demo"]  # a warning: the flow still starts
    warned = [r.getMessage() for r in caplog.records if "env." in r.getMessage()]
    assert warned == [f"{bundled_flows() / 'support.yaml'}:90:16: warning: env.ORDERS_API is used but not set "
                      "for tenant 'demo'"]
