"""Publishing flow versions (:mod:`parlour.publish`): what the Python API, ``parlour serve`` and
the admin API's upload share, on a real (in-memory) store."""

from __future__ import annotations

import pytest

from parlour.errors import FlowError, Problem
from parlour.publish import Draft, check_files, publish, write_to
from parlour.store import FlowRecord
from parlour.store.memory import MemoryStore
from tests.conftest import T0

HELLO = "flow: hello\nstart: a\nnodes:\n  a: {say: hi, end: true}\n"


def draft(version: str, tenant: str = "t") -> Draft:
    return Draft(tenant, "hello", version, HELLO, "hello.yaml")


async def registry(*records: FlowRecord) -> MemoryStore:
    store = MemoryStore()
    await store.open()
    for record in records:
        await store.put_flow(record)
    return store


async def test_a_new_version_is_added_current_and_created_now():
    store = await registry(draft("v1").record(T0))
    [published] = await publish([draft("v2")], write_to(store), now=T0 + 60, held=await store.flows())
    assert published.change == "added" and published.record == draft("v2").record(T0 + 60)
    assert [(r.version, r.current) for r in await store.flows()] == [("v1", False), ("v2", True)]


@pytest.mark.parametrize("current, change", [(True, "unchanged"), (False, "made_current")])
async def test_a_held_version_keeps_its_creation_time_and_becomes_current(current, change):
    store = await registry(draft("v1").record(T0), draft("v2").record(T0 + 1))
    if current:
        await store.put_flow(draft("v1").record(T0))
    [published] = await publish([draft("v1")], write_to(store), now=T0 + 60, held=await store.flows())
    assert (published.change, published.record.created_at, published.record.current) == (change, T0, True)
    assert {r.version: r.current for r in await store.flows()} == {"v1": True, "v2": False}


async def test_at_start_up_a_held_version_is_left_as_the_registry_has_it():
    """A restart undoes no rollback: v1 is held but not current, and stays so."""
    store = await registry(draft("v1").record(T0), draft("v2").record(T0 + 1))
    published = await publish([draft("v1"), draft("v1", tenant="u")], write_to(store), now=T0 + 60,
                              held=await store.flows(), keep_held=True)
    assert [(p.record.tenant, p.change) for p in published] == [("t", "kept"), ("u", "added")]
    assert {(r.tenant, r.version): r.current for r in await store.flows()} == \
        {("t", "v1"): False, ("t", "v2"): True, ("u", "v1"): True}


async def test_one_error_refuses_the_whole_publication_and_a_warning_does_not():
    store = await registry()
    error, warning = Problem("a.yaml", 3, 5, "no node 'b'"), Problem("a.yaml", 1, 1, "odd", severity="warning")
    with pytest.raises(FlowError) as refused:
        await publish([draft("v1")], write_to(store), now=T0, problems=[warning, error])
    assert refused.value.problems == [error] and await store.flows() == []
    await publish([draft("v1")], write_to(store), now=T0, problems=[warning])
    assert [r.version for r in await store.flows()] == ["v1"]


async def test_the_records_are_written_in_one_call():
    calls: list[list[FlowRecord]] = []

    async def write(records: list[FlowRecord]) -> None:
        calls.append(records)

    await publish([draft("v1"), draft("v1", tenant="u")], write, now=T0)
    assert [[r.tenant for r in records] for records in calls] == [["t", "u"]]


def test_files_are_checked_against_the_tenants_env_and_secrets(tmp_path):
    (tmp_path / "api.yaml").write_text(
        "flow: api\nstart: a\nnodes:\n"
        "  a: {http: {url: '{{ env.API }}', headers: {Authorization: {secret: KEY}}}, next: b}\n"
        "  b: {say: done, end: true}\n")
    checked = check_files("t", [tmp_path], {})
    assert [f.id for f in checked.flows] == ["api"] and checked.errors == []
    assert [p.message for p in checked.warnings] == ["env.API is used but not set for tenant 't'"]
    refused = check_files("t", [tmp_path], {"API": "x"}, secrets=["OTHER"])
    assert [p.message.split(":")[0] for p in refused.errors] == ["secret 'KEY' is not set for tenant 't'"]
    warned = check_files("t", [tmp_path], {"API": "x"}, secrets=[], secrets_severity="warning")
    assert warned.errors == [] and len(warned.warnings) == 1
