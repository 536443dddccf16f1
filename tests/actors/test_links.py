"""Links between node servers: a real host behind a real Unix socket, a peer forwarding to it,
and the failures a peer must see as retryable (the owner gone, the connection cut, garbage)."""

from __future__ import annotations

import asyncio
import stat

import pytest

from parlour.actors.links import HEADER, Link, LinkServer, link_folder
from parlour.errors import Unavailable
from parlour.flow import UserMessage
from parlour.messages import APPLIED, DUPLICATE, Inbound
from tests.actors.test_host import key, make_host, said


def message(user: str, n: int, text: str = "hi") -> Inbound:
    return Inbound(key(user), f"{user}-{n}", UserMessage(text))


@pytest.fixture
def folder(tmp_path):
    return link_folder(str(tmp_path))


async def test_a_forwarded_batch_runs_on_the_owners_host_and_its_outcomes_come_back_in_order(folder):
    host = await make_host()
    server = LinkServer(folder / "owner.sock", host.deliver)
    await server.start()
    link = Link(folder / "owner.sock", "owner")
    try:
        batch = [message("a", 0), message("b", 0), message("a", 0)]
        outcomes = await link.deliver(batch)
        assert [o.message_id for o in outcomes] == ["a-0", "b-0", "a-0"]
        assert [o.status for o in outcomes] == [APPLIED, APPLIED, DUPLICATE]
        assert said(outcomes[0]) == said(outcomes[1]) and said(outcomes[0])
        # concurrent calls on one connection each get their own answer
        many = await asyncio.gather(*(link.deliver([message(f"u{i}", 0)]) for i in range(50)))
        assert [o[0].message_id for o in many] == [f"u{i}-0" for i in range(50)]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "owner.sock").stat().st_mode) == 0o600
    finally:
        await link.aclose()
        await server.close()
        await host.stop()


async def test_an_owner_that_is_gone_or_goes_fails_the_call_as_unavailable_and_a_new_one_is_reached(folder):
    link = Link(folder / "owner.sock", "owner")
    with pytest.raises(Unavailable, match="owner is unavailable: its link cannot be reached"):
        await link.deliver([message("a", 0)])
    host = await make_host()
    gate = asyncio.Event()

    async def held(batch):  # the owner dies with this batch in hand
        await gate.wait()
        return await host.deliver(batch)

    server = LinkServer(folder / "owner.sock", held)
    await server.start()
    call = asyncio.create_task(link.deliver([message("a", 0)]))
    await asyncio.sleep(0.05)
    for writer in list(server._writers):  # the process dies: its connections close
        writer.transport.abort()
    with pytest.raises(Unavailable, match="owner is unavailable"):
        await call
    gate.set()
    await server.close()
    again = LinkServer(folder / "owner.sock", host.deliver)  # started again by Ray, on the same path
    await again.start()
    try:
        assert [o.status for o in await link.deliver([message("a", 0)])] in ([APPLIED], [DUPLICATE])
    finally:
        await link.aclose()
        await again.close()
        await host.stop()


async def test_garbage_on_a_link_closes_that_connection_and_nothing_else(folder):
    host = await make_host()
    server = LinkServer(folder / "owner.sock", host.deliver)
    await server.start()
    link = Link(folder / "owner.sock", "owner")
    try:
        for garbage in (HEADER.pack(2**31) + b"x", HEADER.pack(3) + b"\xc1\xc1\xc1", HEADER.pack(2) + b"\x92\x01"):
            reader, writer = await asyncio.open_unix_connection(str(folder / "owner.sock"))
            writer.write(garbage)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
            writer.close()
        assert [o.status for o in await link.deliver([message("a", 0)])] == [APPLIED]
    finally:
        await link.aclose()
        await server.close()
        await host.stop()
