"""The dispatcher against a scripted host: a plain coroutine that answers batches the way a
host does, so that failures land exactly where a test wants them."""

from __future__ import annotations

import asyncio

import pytest

from parlour.actors.dispatch import Dispatcher
from parlour.flow import UserMessage
from parlour.messages import (
    APPLIED,
    FAILED,
    MOVED,
    ConversationKey,
    Inbound,
    Outcome,
    PartitionTable,
)


def inbound(user: str, n: int) -> Inbound:
    return Inbound(ConversationKey("t", "web", user), f"{user}-{n}", UserMessage(f"m{n}"))


class ScriptedHosts:
    """Two hosts; each batch is recorded; ``fail`` names message ids whose batch fails."""

    def __init__(self, epoch: int = 1):
        self.table = PartitionTable(epoch, ("h0", "h1"), tuple(p % 2 for p in range(8)))
        self.batches: list[tuple[str, list[str]]] = []
        self.fail: set[str] = set()
        self.moved_until_epoch: int | None = None
        self.gate: asyncio.Event | None = None
        self.in_flight: set[str] = set()

    async def fetch_table(self) -> PartitionTable:
        return self.table

    async def deliver(self, host: str, batch: list[Inbound]) -> list[Outcome]:
        self.batches.append((host, [i.message_id for i in batch]))
        keys = {i.key.id for i in batch}
        assert not keys & self.in_flight, f"{keys & self.in_flight} in two batches in flight"
        self.in_flight |= keys
        try:
            return await self._answer(batch)
        finally:
            self.in_flight -= keys

    async def _answer(self, batch: list[Inbound]) -> list[Outcome]:
        if self.gate is not None:
            await self.gate.wait()
        if any(i.message_id in self.fail for i in batch):
            self.fail -= {i.message_id for i in batch}
            raise ConnectionError("the host died")
        if self.moved_until_epoch is not None and self.table.epoch < self.moved_until_epoch:
            self.table = PartitionTable(self.table.epoch + 1, self.table.hosts, self.table.owners)
            return [Outcome(i.message_id, MOVED, epoch=self.table.epoch) for i in batch]
        return [Outcome(i.message_id, APPLIED) for i in batch]


async def test_events_of_one_conversation_never_ride_two_batches_in_flight():
    hosts = ScriptedHosts()
    hosts.gate = asyncio.Event()
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver, max_batch=2)
    sends = [asyncio.ensure_future(dispatcher.send(inbound(u, n))) for n in range(3) for u in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    hosts.gate.set()
    assert {o.status for o in await asyncio.gather(*sends)} == {APPLIED}
    assert len(hosts.batches) >= 4  # several batches, two in flight at a time (checked in deliver)
    order = {u: [i for _, ids in hosts.batches for i in ids if i.startswith(u)] for u in "abc"}
    assert order == {u: [f"{u}-0", f"{u}-1", f"{u}-2"] for u in "abc"}


async def test_when_a_batch_fails_the_conversations_later_events_fail_with_it():
    hosts = ScriptedHosts()
    hosts.fail = {"a-0"}
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver, max_batch=1)
    outcomes = await asyncio.gather(*(dispatcher.send(inbound("a", n)) for n in range(3)))
    assert [o.status for o in outcomes] == [FAILED, FAILED, FAILED]
    assert all(o.retryable for o in outcomes)
    assert "earlier message" in outcomes[1].error
    assert [ids for _, ids in hosts.batches] == [["a-0"]]  # a-1 and a-2 never overtook it
    again = await asyncio.gather(*(dispatcher.send(inbound("a", n)) for n in range(3)))
    assert {o.status for o in again} == {APPLIED}


async def test_a_moved_answer_fetches_the_table_again_and_the_event_goes_through():
    hosts = ScriptedHosts()
    hosts.moved_until_epoch = 3
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver)
    assert (await dispatcher.send(inbound("a", 0))).status == APPLIED
    assert dispatcher.table.epoch == 3


async def test_a_host_that_keeps_moving_gives_a_retryable_failure_not_a_hang():
    hosts = ScriptedHosts()
    hosts.moved_until_epoch = 100
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver, max_moves=3)
    outcome = await dispatcher.send(inbound("a", 0))
    assert (outcome.status, outcome.retryable) == (FAILED, True)


async def test_a_router_that_cannot_be_reached_fails_the_waiting_events():
    async def no_router():
        raise ConnectionError("router down")

    async def never(host, batch):
        raise AssertionError("nothing can be routed without a table")

    dispatcher = Dispatcher(no_router, never)
    outcomes = await asyncio.gather(*(dispatcher.send(inbound("a", n)) for n in range(2)))
    assert [(o.status, o.retryable) for o in outcomes] == [(FAILED, True), (FAILED, True)]


async def test_closing_the_dispatcher_rejects_what_waits_instead_of_leaving_it_hanging():
    hosts = ScriptedHosts()
    hosts.gate = asyncio.Event()
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver, max_batch=1)
    sends = [asyncio.ensure_future(dispatcher.send(inbound("a", n))) for n in range(3)]
    await asyncio.sleep(0.01)
    await dispatcher.aclose()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(r, (ConnectionError, asyncio.CancelledError)) for r in results), results


@pytest.mark.parametrize("make", [
    lambda: ConversationKey("t", "web", "\ud800"),
    lambda: Inbound(ConversationKey("t", "web", "u"), "id-\udfff", UserMessage("x")),
    lambda: Inbound(ConversationKey("t", "web", "u"), "x" * 5000, UserMessage("x")),
    lambda: ConversationKey("t/x", "web", "u"),
    lambda: Inbound(ConversationKey("t", "web", "u"), "", UserMessage("x")),
])
def test_ids_that_could_not_be_stored_are_refused_where_they_are_made(make):
    with pytest.raises(ValueError):
        make()


async def test_a_host_that_never_answers_gives_a_retryable_failure_after_the_timeout():
    hosts = ScriptedHosts()
    hosts.gate = asyncio.Event()  # never opened
    dispatcher = Dispatcher(hosts.fetch_table, hosts.deliver, timeout_s=0.05)
    outcome = await dispatcher.send(inbound("a", 0))
    assert (outcome.status, outcome.retryable) == (FAILED, True)
    hosts.gate.set()  # the host answers again: the lane was not left stuck behind the lost call
    assert (await dispatcher.send(inbound("a", 0))).status == APPLIED
    await dispatcher.aclose()


async def test_sending_nothing_answers_nothing():
    hosts = ScriptedHosts()
    assert await Dispatcher(hosts.fetch_table, hosts.deliver).send_many([]) == []
