"""The flows a host serves (:class:`parlour.actors.flows.Flows`): each tenant's catalog reads
that tenant's env and no other's (issue 12, finding 1)."""

from __future__ import annotations

from parlour.actors.flows import Flows
from parlour.flow import Error
from parlour.store import FlowRecord
from tests.conftest import Convo

SHOW_ENV = """\
flow: show_env
triggers: [{keyword: [env]}]
start: show
nodes:
  show: {say: "{{ env }} {{ env.BETA_ONLY | default('') }}", end: true}
"""


def test_env_in_a_flow_of_alpha_shows_alphas_values_only():
    flows = Flows(None, {"alpha": {"API": "https://alpha.example", "ALPHA_ONLY": "alpha-env"},
                         "beta": {"API": "https://beta.example", "BETA_ONLY": "beta-env"}})
    flows.install([FlowRecord(tenant, "show_env", "v1", SHOW_ENV, "show_env.yaml", 1.0, True)
                   for tenant in ("alpha", "beta")])
    (alpha,) = Convo(flows.catalog("alpha")).send("env")
    (beta,) = Convo(flows.catalog("beta")).send("env")
    assert "alpha-env" in alpha and "alpha.example" in alpha
    assert "beta" not in alpha  # neither beta's names nor its values
    assert "beta-env" in beta and "alpha" not in beta
    assert Convo(flows.catalog("gamma")).send("env") == []  # a tenant without flows runs nothing, and sees nothing


def test_reading_another_tenants_env_value_fails_naming_it_not_with_its_value():
    flows = Flows(None, {"alpha": {"API": "https://alpha.example"}, "beta": {"BETA_ONLY": "beta-env"}})
    flows.install([FlowRecord("alpha", "show_env", "v1", SHOW_ENV.replace(" | default('')", ""), "show_env.yaml",
                              1.0, True)])
    convo = Convo(flows.catalog("alpha"))
    assert convo.send("env") == []
    (error,) = convo.effects(Error)
    assert error.reason.endswith("EnvNotSet: env.BETA_ONLY is not set for tenant 'alpha' "
                                 "(tenants.alpha.env in the config)")
    assert "beta-env" not in error.reason
