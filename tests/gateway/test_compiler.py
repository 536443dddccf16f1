"""Checking an upload: alone, with the tenant's other flows, and in the compiler process."""

from __future__ import annotations

from parlour.flows_dir import bundled_flows
from parlour.gateway.compiler import CompilerProcess, check_upload

GOTO = "flow: hop\nstart: a\nnodes:\n  a: {goto: {flow: registration}}\n"


def test_an_upload_is_checked_with_the_tenants_other_flows():
    registration = ((bundled_flows() / "registration.yaml").read_text(), "registration.yaml")
    alone = check_upload(GOTO, "hop.yaml", "hop", [])
    assert alone.version is None and any("registration" in p.message for p in alone.errors)
    together = check_upload(GOTO, "hop.yaml", "hop", [registration])
    assert together.version and not together.errors
    renamed = check_upload(GOTO, "other.yaml", "other", [registration])
    assert renamed.version is None and "uploaded as 'other'" in renamed.errors[0].message


async def test_the_compiler_process_answers_what_the_function_does():
    compiler = CompilerProcess()
    try:
        checked = await compiler.check(GOTO, "hop.yaml", "hop", [])
        assert checked == check_upload(GOTO, "hop.yaml", "hop", [])
    finally:
        compiler.close()
