"""The contract every store backend passes: the same tests on memory, SQLite and a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from parlour.store import (
    BadCursor,
    Commit,
    Fenced,
    FlowRecord,
    StoreError,
    StoreUnavailable,
    Ticket,
    Timer,
    open_store,
)

_prefixes = itertools.count()
BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path):
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/parlour.db"
    else:
        server = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=contract{next(_prefixes)}:"
    store = open_store(url)
    await store.open()
    yield store
    await store.aclose()


LATER = time.time() + 3600


def commit(fences=None, **parts) -> Commit:
    return Commit(fences=fences or {}, **parts)


async def test_a_record_committed_is_loaded_and_a_missing_one_is_not(store):
    await store.claim({1: 1, 2: 1})
    await store.commit(commit({1: 1, 2: 1}, records=[("t/web/a", 1, b"A1", LATER), ("t/web/b", 2, b"B1", LATER)]))
    assert await store.load(["t/web/a", "t/web/b", "t/web/none"]) == {"t/web/a": b"A1", "t/web/b": b"B1"}
    await store.commit(commit({1: 1}, records=[("t/web/a", 1, b"A2", LATER)]))
    assert await store.load(["t/web/a"]) == {"t/web/a": b"A2"}
    assert await store.load([]) == {}


async def test_binary_records_and_odd_keys_round_trip(store):
    key = "t/whatsapp/+44 7700/900123 ü\x00x"
    data = bytes(range(256)) * 4
    await store.claim({3: 1})
    await store.commit(commit({3: 1}, records=[(key, 3, data, LATER)]))
    assert await store.load([key]) == {key: data}


async def test_a_commit_under_an_old_epoch_writes_nothing(store):
    await store.claim({1: 5})
    stale = commit({1: 4}, records=[("t/web/a", 1, b"zombie", LATER)], outbox=[("t/web/a", 1, b"hi")],
                   timers=[Timer("t/web/a", 1, "t1", 10.0)], replies=[("t/web/a", "m1", b"r", LATER)])
    with pytest.raises(Fenced) as caught:
        await store.commit(stale)
    assert caught.value.epochs == {1: 5}
    assert await store.load(["t/web/a"]) == {}
    assert await store.read_outbox(None, 10) == []
    assert await store.due_timers([1], 100.0, 10) == []
    assert await store.reply("t/web/a", "m1") is None


async def test_one_stale_partition_refuses_the_whole_commit(store):
    await store.claim({1: 2, 2: 3})
    mixed = commit({1: 2, 2: 2}, records=[("t/web/a", 1, b"A", LATER), ("t/web/b", 2, b"B", LATER)])
    with pytest.raises(Fenced) as caught:
        await store.commit(mixed)
    assert caught.value.epochs == {2: 3}
    assert await store.load(["t/web/a", "t/web/b"]) == {}


async def test_a_commit_to_an_unclaimed_partition_is_refused(store):
    with pytest.raises(Fenced):
        await store.commit(commit({9: 1}, records=[("t/web/a", 9, b"A", LATER)]))


async def test_claims_only_move_epochs_forward_and_all_or_nothing(store):
    await store.claim({1: 5, 2: 5})
    await store.claim({1: 5})  # the same epoch again: a restarted host re-claiming
    with pytest.raises(Fenced) as caught:
        await store.claim({1: 7, 2: 4})
    assert caught.value.epochs == {2: 5}
    assert await store.fences([1, 2, 3]) == {1: 5, 2: 5, 3: 0}
    await store.claim({1: 7})
    assert await store.fences([1]) == {1: 7}


async def test_timers_come_due_in_order_for_the_partitions_asked(store):
    await store.claim({1: 1, 2: 1})
    await store.commit(commit({1: 1, 2: 1}, timers=[
        Timer("t/web/a", 1, "t1", 30.0), Timer("t/web/b", 2, "t1", 10.0),
        Timer("t/web/a", 1, "t2", 20.0), Timer("t/web/c", 1, "t1", 99.0)]))
    due = await store.due_timers([1, 2], 50.0, 10)
    assert [(t.key, t.timer_id, t.due_at) for t in due] == [
        ("t/web/b", "t1", 10.0), ("t/web/a", "t2", 20.0), ("t/web/a", "t1", 30.0)]
    assert [t.partition for t in due] == [2, 1, 1]
    assert [t.key for t in await store.due_timers([1], 50.0, 10)] == ["t/web/a", "t/web/a"]
    assert len(await store.due_timers([1, 2], 50.0, 2)) == 2


async def test_a_timer_set_again_moves_and_a_cancelled_one_is_gone(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, timers=[Timer("t/web/a", 1, "t1", 10.0), Timer("t/web/a", 1, "t2", 11.0)]))
    await store.commit(commit({1: 1}, timers=[Timer("t/web/a", 1, "t1", 40.0)], cancels=[("t/web/a", 1, "t2")]))
    assert [(t.timer_id, t.due_at) for t in await store.due_timers([1], 100.0, 10)] == [("t1", 40.0)]
    await store.commit(commit({1: 1}, cancels=[("t/web/a", 1, "t1"), ("t/web/a", 1, "never-set")]))
    assert await store.due_timers([1], 100.0, 10) == []


async def test_the_outbox_keeps_commit_order_and_acked_entries_leave(store):
    await store.claim({1: 1, 2: 1})
    await store.commit(commit({1: 1}, outbox=[("t/web/a", 1, b"a1"), ("t/web/a", 2, b"a2")]))
    await store.commit(commit({2: 1}, outbox=[("t/web/b", 1, b"b1")]))
    entries = await store.read_outbox(None, 10)
    assert [(e.key, e.seq, e.data) for e in entries] == [
        ("t/web/a", 1, b"a1"), ("t/web/a", 2, b"a2"), ("t/web/b", 1, b"b1")]
    assert [e.data for e in await store.read_outbox(entries[0].id, 10)] == [b"a2", b"b1"]
    assert [e.data for e in await store.read_outbox(None, 1)] == [b"a1"]
    await store.ack_outbox([entries[0].id, entries[2].id])
    assert [e.data for e in await store.read_outbox(None, 10)] == [b"a2"]


async def test_a_buried_entry_leaves_the_outbox_for_the_dead_letters_whole(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, outbox=[("t/wa:b/a", 1, b"a1\x00"), ("t/wa:b/a", 2, b"a2"),
                                              ("t/wa:b/c", 1, b"c1")]))
    first, second, _ = await store.read_outbox(None, 10)
    await store.bury(second, "HTTP 500 after 8 attempts", 8, 1234.5)
    await store.bury(first, "HTTP 400: bad \u00e9", 1, 1235.0)
    await store.bury(first, "buried twice", 1, 1236.0)  # already gone from the outbox: nothing happens
    assert [e.data for e in await store.read_outbox(None, 10)] == [b"c1"]
    dead = await store.dead_letters()
    assert [(d.key, d.seq, d.data, d.reason, d.attempts, d.failed_at) for d in dead] == [
        ("t/wa:b/a", 2, b"a2", "HTTP 500 after 8 attempts", 8, 1234.5),
        ("t/wa:b/a", 1, b"a1\x00", "HTTP 400: bad \u00e9", 1, 1235.0)]
    assert [d.data for d in await store.dead_letters(dead[0].id, 10)] == [b"a1\x00"]
    assert [d.data for d in await store.dead_letters(None, 1)] == [b"a2"]


async def test_revived_dead_letters_go_back_to_the_end_of_the_outbox_once(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, outbox=[("t/wa:b/a", 1, b"a1"), ("t/wa:b/a", 2, b"a2"), ("t/wa:b/a", 3, b"a3")]))
    entries = await store.read_outbox(None, 10)
    for entry in entries[:2]:
        await store.bury(entry, "gone", 3, 1.0)
    d1, d2 = await store.dead_letters()
    assert await store.revive([d2.id, d1.id, d2.id, "nope", "99999999999999999999"]) == 2  # in the order asked; once
    assert [(e.key, e.seq, e.data) for e in await store.read_outbox(None, 10)] == [
        ("t/wa:b/a", 3, b"a3"), ("t/wa:b/a", 2, b"a2"), ("t/wa:b/a", 1, b"a1")]
    assert await store.dead_letters() == []
    outbox = await store.read_outbox(None, 10)
    await store.bury(outbox[0], "again", 1, 2.0)
    [again] = await store.dead_letters()
    assert await store.drop_dead([again.id, again.id, "nope", "-1"]) == 1 and await store.dead_letters() == []
    assert await store.revive([]) == 0 and await store.drop_dead([]) == 0


async def test_replies_are_kept_until_they_expire(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"R1", LATER),
                                               ("t/web/a", "m0", b"R0", time.time() - 1)]))
    assert await store.reply("t/web/a", "m1") == b"R1"
    assert await store.reply("t/web/a", "m0") is None
    assert await store.reply("t/web/b", "m1") is None


async def test_replied_says_which_messages_have_replies_kept_in_one_call(store):
    """What recognises a replay once its id left the conversation's window (issue 12, finding 7)."""
    await store.claim({1: 1, 2: 1})
    key = "t/whatsapp/+44 7700 ü"
    await store.commit(commit({1: 1}, replies=[(key, "wamid.1", b"R1", LATER),
                                               (key, "wamid.0", b"R0", time.time() - 1)]))
    await store.commit(commit({2: 1}, replies=[("t/web/a1", "x", b"X", LATER), ("t/web/b", "m", b"M", LATER)]))
    asked = [(key, "wamid.1"), (key, "wamid.0"), (key, "wamid.2"), ("t/web/a", "1x"), ("t/web/a1", "x"),
             ("t/web/b", "m"), ("t/web/b", "m"), ("t/web/none", "wamid.1")]
    assert await store.replied(asked) == {(key, "wamid.1"), ("t/web/a1", "x"), ("t/web/b", "m")}
    assert await store.replied([]) == set()
    many = [(key, f"wamid.{i}") for i in range(2, 2_000)] + [(key, "wamid.1")]
    assert await store.replied(many) == {(key, "wamid.1")}


KEPT = float(int(time.time()) + 3600)  # whole seconds: Redis keeps an expiry to the millisecond


async def test_recent_lists_a_conversations_replies_newest_first(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"R1", KEPT), ("t/web/b", "b1", b"B1", KEPT + 1)]))
    # Equal expiries: the later written is newer, within a commit and across commits. The ids
    # are in neither the order written nor its reverse.
    await store.commit(commit({1: 1}, replies=[("t/web/a", "y", b"Y", KEPT + 1), ("t/web/a", "z", b"Z", KEPT + 1)]))
    await store.commit(commit({1: 1}, replies=[("t/web/a", "x", b"X", KEPT + 1), ("t/web/b", "b2", b"B2", KEPT + 2)]))
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m5", b"R5", KEPT + 2)]))
    assert await store.recent("t/web/a") == [
        ("m5", b"R5", KEPT + 2), ("x", b"X", KEPT + 1), ("z", b"Z", KEPT + 1), ("y", b"Y", KEPT + 1),
        ("m1", b"R1", KEPT)]
    assert await store.recent("t/web/b") == [("b2", b"B2", KEPT + 2), ("b1", b"B1", KEPT + 1)]
    assert await store.recent("t/web/none") == []


async def test_recent_orders_by_writing_not_by_expiry(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"R1", KEPT + 600)]))
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m2", b"R2", KEPT)]))  # a shorter TTL since
    assert await store.recent("t/web/a") == [("m2", b"R2", KEPT), ("m1", b"R1", KEPT + 600)]


async def test_recent_lists_at_most_limit_replies(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", f"m{i}", b"R", KEPT + i) for i in range(5)]))
    assert [m for m, _, _ in await store.recent("t/web/a", 2)] == ["m4", "m3"]
    assert len(await store.recent("t/web/a")) == 5
    assert await store.recent("t/web/a", 0) == []


async def test_recent_skips_expired_replies(store):
    await store.claim({1: 1})
    gone = time.time() - 1
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"R1", KEPT), ("t/web/a", "m0", b"R0", gone)]))
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m2", b"R2", gone)]))
    assert await store.recent("t/web/a") == [("m1", b"R1", KEPT)]
    await store.sweep(time.time())
    assert await store.recent("t/web/a") == [("m1", b"R1", KEPT)]


async def test_a_reply_written_again_is_listed_once_as_the_newest(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"old", KEPT), ("t/web/a", "m2", b"R2", KEPT)]))
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"new", KEPT)]))
    assert await store.recent("t/web/a") == [("m1", b"new", KEPT), ("m2", b"R2", KEPT)]
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m2", b"R2'", KEPT + 1),
                                               ("t/web/a", "m2", b"R2''", KEPT + 1)]))
    assert await store.recent("t/web/a") == [("m2", b"R2''", KEPT + 1), ("m1", b"new", KEPT)]


async def test_recent_keeps_odd_keys_apart(store):
    odd = "t/whatsapp/+44 7700:{900123} ü"
    keys = [odd, odd + ":{x}", odd[:-2], "t/web/a"]
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[(key, f"m:{{{n}}}é", key.encode(), KEPT + n)
                                               for n, key in enumerate(keys)]))
    for n, key in enumerate(keys):
        assert await store.recent(key) == [(f"m:{{{n}}}é", key.encode(), KEPT + n)]
        assert await store.reply(key, f"m:{{{n}}}é") == key.encode()


async def test_expired_records_are_not_loaded_and_sweep_removes_them(store):
    await store.claim({1: 1})
    now = time.time()
    await store.commit(commit({1: 1}, records=[("t/web/old", 1, b"O", now - 1), ("t/web/new", 1, b"N", now + 3600)]))
    assert await store.load(["t/web/old", "t/web/new"]) == {"t/web/new": b"N"}
    await store.sweep(now)
    assert await store.load(["t/web/old", "t/web/new"]) == {"t/web/new": b"N"}
    await store.sweep(now + 7200)
    assert await store.load(["t/web/new"]) == {} or store.url.startswith("redis")  # Redis expires by its own clock


def flow_record(version: str, current: bool, created_at: float, tenant: str = "demo", flow: str = "registration"):
    return FlowRecord(tenant, flow, version, f"flow: {flow}  # {version}", f"{flow}.yaml", created_at, current)


async def test_the_registry_keeps_every_version_and_one_current(store):
    await store.put_flow(flow_record("v1", True, 1.0))
    await store.put_flow(flow_record("v2", True, 2.0))
    await store.put_flow(flow_record("v1", False, 3.0))  # the same version again: kept, not current
    await store.put_flow(flow_record("x1", True, 1.0, tenant="other"))
    found = await store.flows("demo")
    assert [(r.version, r.current) for r in found] == [("v1", False), ("v2", True)]
    assert found[0].source == "flow: registration  # v1" and found[0].created_at == 1.0
    await store.put_flow(flow_record("v1", True, 4.0))  # roll back to v1
    assert [(r.version, r.current) for r in await store.flows("demo")] == [("v1", True), ("v2", False)]
    assert {r.tenant for r in await store.flows()} == {"demo", "other"}


async def test_deleting_a_flow_drops_every_version_and_only_that_flow(store):
    await store.put_flow(flow_record("v1", False, 1.0))
    await store.put_flow(flow_record("v2", True, 2.0))
    await store.put_flow(flow_record("s1", True, 1.0, flow="support"))
    await store.put_flow(flow_record("x1", True, 1.0, tenant="other"))
    assert await store.delete_flow("demo", "registration") == 2
    assert [(r.tenant, r.flow) for r in await store.flows()] == [("demo", "support"), ("other", "registration")]
    assert await store.delete_flow("demo", "registration") == 0
    await store.put_flow(flow_record("v3", True, 3.0))  # the name can be used again, afresh
    assert [(r.version, r.current) for r in await store.flows("demo") if r.flow == "registration"] == [("v3", True)]


async def _listed(store, tenant, after=None, **options):
    """Every key of ``tenant``'s conversations, page by page; and how many pages it took."""
    keys, pages = [], 0
    while True:
        page = await store.conversations(tenant, after, **options)
        keys += [key for key, _ in page.records]
        pages += 1
        if page.next is None:
            return keys, pages
        assert pages < 100, "the listing never ends"
        after = page.next


async def test_a_tenants_conversations_are_listed_page_by_page_and_no_other_tenants(store):
    await store.claim({1: 1})
    now = time.time()
    mine = [f"acme/web/u{n:02d}" for n in range(23)]
    others = ["acme2/web/x", "acm/web/y", "other/web/z", "acme/web/gone"]
    records = [(k, 1, k.encode(), LATER) for k in mine + others]
    records[-1] = ("acme/web/gone", 1, b"G", now - 1)  # expired: never listed
    await store.commit(commit({1: 1}, records=records))
    keys, pages = await _listed(store, "acme", limit=5)
    assert sorted(keys) == mine and len(set(keys)) == len(keys) and pages >= 5
    page = await store.conversations("acme", limit=100)
    assert dict(page.records)["acme/web/u07"] == b"acme/web/u07" and page.next is None
    if not store.url.startswith("redis"):  # memory and SQLite list in key order
        assert keys == mine


async def test_a_listing_keeps_what_the_filter_wants_and_reads_no_more_than_asked(store):
    await store.claim({1: 1})
    keys = [f"t/web/u{n:02d}" for n in range(30)]
    await store.commit(commit({1: 1}, records=[(k, 1, b"odd" if n % 2 else b"even", LATER)
                                               for n, k in enumerate(keys)]))
    odd, _ = await _listed(store, "t", limit=4, keep=lambda key, record: record == b"odd")
    assert sorted(odd) == keys[1::2]
    seen = []
    page = await store.conversations("t", limit=100, keep=lambda key, record: seen.append(key) or False, examine=7)
    assert page.records == [] and len(seen) == 7 and page.next is not None  # a filter that keeps nothing still ends
    rest, _ = await _listed(store, "t", after=page.next, limit=100)
    assert sorted(rest + seen) == keys


async def test_a_conversations_cursor_that_no_store_gave_is_refused_or_starts_nowhere(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, records=[("t/web/a", 1, b"A", LATER)]))
    if store.url.startswith("redis"):
        with pytest.raises(BadCursor, match="not a cursor"):
            await store.conversations("t", "garbage")
    else:  # a key order cursor: anything past every key lists nothing
        assert (await store.conversations("t", "t/web/zz")).records == []
    assert (await store.conversations("t/web/a")).records == []  # a key is not a tenant


async def test_add_meta_keeps_the_first_value_of_racing_writers(store):
    values = [f"+1415555{n:04d}".encode() for n in range(8)]
    told = await asyncio.gather(*(store.add_meta("whatsapp-user:t/b/US.1", v) for v in values))
    assert told[0] in values and set(told) == {told[0]}  # every writer is told the one winner
    assert await store.get_meta("whatsapp-user:t/b/US.1") == told[0]
    assert await store.add_meta("whatsapp-user:t/b/US.1", b"later") == told[0]


async def test_meta_values_are_stored_whole(store):
    assert await store.get_meta("router") is None
    await store.put_meta("router", b"\x00table-1")
    await store.put_meta("router", b"\x00table-2")
    assert await store.get_meta("router") == b"\x00table-2"


async def test_an_empty_commit_is_accepted(store):
    await store.commit(Commit())


# ---------------------------------------------------------------- backend-specific


async def test_sqlite_keeps_everything_across_a_reopen_and_fences_other_connections(tmp_path):
    url = f"sqlite:///{tmp_path}/deep/folder/parlour.db"
    first, second = open_store(url), open_store(url)
    await first.open()
    await second.open()
    await first.claim({1: 1})
    await first.commit(commit({1: 1}, records=[("t/web/a", 1, b"A", LATER)], timers=[Timer("t/web/a", 1, "t1", 5.0)]))
    await second.claim({1: 2})  # another host (process) takes the partition over
    with pytest.raises(Fenced):
        await first.commit(commit({1: 1}, records=[("t/web/a", 1, b"zombie", LATER)]))
    await first.aclose()
    await second.aclose()
    again = open_store(url)
    await again.open()
    assert await again.load(["t/web/a"]) == {"t/web/a": b"A"}
    assert [t.timer_id for t in await again.due_timers([1], 10.0, 5)] == ["t1"]
    await again.aclose()


async def test_sqlite_adds_the_recent_index_to_a_file_made_before_it(tmp_path):
    import sqlite3
    url = f"sqlite:///{tmp_path}/parlour.db"
    store = open_store(url)
    await store.open()
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, replies=[("t/web/a", "m1", b"R1", KEPT)]))
    await store.aclose()
    with sqlite3.connect(tmp_path / "parlour.db") as conn:
        conn.execute("DROP INDEX replies_recent")
    again = open_store(url)
    await again.open()
    assert await again.recent("t/web/a") == [("m1", b"R1", KEPT)]
    await again.aclose()
    with sqlite3.connect(tmp_path / "parlour.db") as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT message_id FROM replies WHERE key = ? AND expires_at > ?"
                            " ORDER BY rowid DESC LIMIT 10", ("t/web/a", 0)).fetchall()
    assert "USING INDEX replies_recent" in str(plan) and "TEMP B-TREE" not in str(plan)


async def test_redis_keeps_the_50_newest_replies_of_a_conversation_until_the_last_expires(redis_server):
    store = open_store(f"{redis_server.url}?prefix=contract{next(_prefixes)}:")
    await store.open()
    await store.claim({1: 1})
    for first in (0, 40):
        await store.commit(commit({1: 1}, replies=[("t/web/a", f"m{i}", b"R", KEPT + i)
                                                   for i in range(first, first + 40)]))
    assert [m for m, _, _ in await store.recent("t/web/a", 100)] == [f"m{i}" for i in range(79, 29, -1)]
    index = f"{store.prefix}recent:t/web/a"
    assert await store._redis.llen(index) == 50
    expires_in_ms = (KEPT + 79 - time.time()) * 1000
    assert abs(await store._redis.pttl(index) - expires_in_ms) < 5000
    # More replies in one commit than Lua can unpack into one call: the index takes the last 50.
    await store.commit(commit({1: 1}, replies=[("t/web/b", f"m{i}", b"R", KEPT) for i in range(9000)]))
    assert [m for m, _, _ in await store.recent("t/web/b", 100)] == [f"m{i}" for i in range(8999, 8949, -1)]
    await store.aclose()


async def test_redis_that_cannot_be_reached_raises_store_unavailable():
    from tests.redis_server import free_port
    store = open_store(f"redis://127.0.0.1:{free_port()}/0?timeout_s=0.5")
    await store.open()
    with pytest.raises(StoreUnavailable):
        await store.load(["t/web/a"])
    with pytest.raises(StoreUnavailable):
        await store.commit(commit({1: 1}, records=[("t/web/a", 1, b"A", LATER)]))
    await store.aclose()


def test_an_unknown_store_url_is_refused_with_the_choices():
    with pytest.raises(StoreError, match="memory://, sqlite:///path or redis://"):
        open_store("postgres://localhost/x")


# ---------------------------------------------------------------- logs


async def test_a_log_is_read_in_order_after_its_cursor_and_only_in_its_own_log(store):
    odd = "transcript/t/whatsapp/+44 7700:{900123} ü\x00"
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, logs=[("mail/t/web/a", b"A1", LATER), (odd, b"X1", LATER),
                                            ("mail/t/web/a", b"A2", LATER)]))
    await store.commit(commit({1: 1}, logs=[("mail/t/web/a", bytes(range(256)), LATER)]))
    entries = await store.read_log("mail/t/web/a")
    assert [e.data for e in entries] == [b"A1", b"A2", bytes(range(256))]
    assert entries == sorted(entries, key=lambda e: e.id) and all(len(e.id) == 20 for e in entries)
    assert [e.data for e in await store.read_log("mail/t/web/a", after=entries[0].id)] == [b"A2", bytes(range(256))]
    assert [e.data for e in await store.read_log("mail/t/web/a", after=entries[0].id, limit=1)] == [b"A2"]
    assert await store.read_log("mail/t/web/a", after=entries[-1].id) == []
    assert [e.data for e in await store.read_log(odd)] == [b"X1"]
    assert await store.read_log("mail/t/web/none") == []


async def test_a_fenced_commit_appends_to_no_log_and_writes_no_ticket(store):
    await store.claim({1: 5})
    with pytest.raises(Fenced):
        await store.commit(commit({1: 4}, logs=[("mail/t/web/a", b"zombie", LATER)], tickets=[ticket("t", "h1")]))
    assert await store.read_log("mail/t/web/a") == []
    assert await store.ticket("t", "h1") is None


async def test_tail_gives_the_newest_entries_oldest_first(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, logs=[("transcript/t/web/a", str(n).encode(), LATER) for n in range(6)]))
    assert [e.data for e in await store.tail_log("transcript/t/web/a", 3)] == [b"3", b"4", b"5"]
    assert [e.data for e in await store.tail_log("transcript/t/web/a", 10)] == [str(n).encode() for n in range(6)]
    assert await store.tail_log("transcript/t/web/a", 0) == []


async def test_trim_deletes_up_to_the_cursor_included(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, logs=[("mail/t/web/a", str(n).encode(), LATER) for n in range(4)]
                              + [("mail/t/web/b", b"B", LATER)]))
    entries = await store.read_log("mail/t/web/a")
    assert await store.trim_log("mail/t/web/a", entries[1].id) == 2
    assert [e.data for e in await store.read_log("mail/t/web/a")] == [b"2", b"3"]
    assert [e.data for e in await store.read_log("mail/t/web/b")] == [b"B"]
    await store.commit(commit({1: 1}, logs=[("mail/t/web/a", b"4", LATER)]))
    assert [e.data for e in await store.read_log("mail/t/web/a", after=entries[3].id)] == [b"4"]


async def test_expired_log_entries_are_not_read(store):
    await store.claim({1: 1})
    now = time.time()
    await store.commit(commit({1: 1}, logs=[("mail/t/web/a", b"old", now - 1), ("mail/t/web/a", b"new", now + 3600)]))
    assert [e.data for e in await store.read_log("mail/t/web/a")] == [b"new"]
    assert [e.data for e in await store.tail_log("mail/t/web/a", 5)] == [b"new"]
    await store.sweep(now)
    assert [e.data for e in await store.read_log("mail/t/web/a")] == [b"new"]


async def test_a_log_keeps_its_newest_entries_only(store):
    store.log_keep = 3
    await store.claim({1: 1})
    for n in range(5):
        await store.commit(commit({1: 1}, logs=[("mail/t/web/a", str(n).encode(), LATER)]))
    await store.sweep(time.time())
    assert [e.data for e in await store.read_log("mail/t/web/a")] == [b"2", b"3", b"4"]


@pytest.mark.parametrize("cursor", ["x", "-1", "1" * 21, "9" * 20, "1.5", "١٢"])
async def test_a_cursor_that_is_no_cursor_is_refused(store, cursor):
    with pytest.raises(BadCursor, match="not a log cursor"):
        await store.read_log("mail/t/web/a", after=cursor)
    with pytest.raises(BadCursor, match="not a log cursor"):
        await store.trim_log("mail/t/web/a", cursor)


# ---------------------------------------------------------------- tickets


def ticket(tenant, ticket_id, status="open", queue="", expires_at=LATER, data=b"D", key="t/web/a"):
    return Ticket(tenant, ticket_id, key, status, queue, 100.0, data, expires_at)


async def test_tickets_are_found_by_tenant_status_and_queue_in_id_order(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, tickets=[
        ticket("t", "h3", queue="billing"), ticket("t", "h1"), ticket("t", "h2", status="closed"),
        ticket("u", "h1", data=b"other tenant")]))
    assert [t.id for t in await store.tickets("t")] == ["h1", "h2", "h3"]
    assert [t.id for t in await store.tickets("t", status="open")] == ["h1", "h3"]
    assert [t.id for t in await store.tickets("t", queue="billing")] == ["h3"]
    assert [t.id for t in await store.tickets("t", after="h1", limit=1)] == ["h2"]
    assert await store.tickets("t", status="assigned") == []
    assert await store.ticket("t", "h1") == ticket("t", "h1")
    assert (await store.ticket("u", "h1")).data == b"other tenant"
    assert await store.ticket("v", "h1") is None


async def test_a_ticket_written_again_is_replaced_and_an_expired_one_is_gone(store):
    await store.claim({1: 1})
    await store.commit(commit({1: 1}, tickets=[ticket("t", "h1"), ticket("t", "h2", expires_at=time.time() - 1)]))
    await store.commit(commit({1: 1}, tickets=[ticket("t", "h1", status="assigned", data=b"D2")]))
    assert await store.ticket("t", "h1") == ticket("t", "h1", status="assigned", data=b"D2")
    assert await store.ticket("t", "h2") is None
    assert [t.id for t in await store.tickets("t")] == ["h1"]
    assert await store.sweep(time.time()) >= 1
    assert [t.id for t in await store.tickets("t")] == ["h1"]
