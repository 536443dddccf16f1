"""Which conversation a message goes to when the channel names its sender two ways (WhatsApp's
phone number and business-scoped user id): the binding rule, shared by gateways through the
store, and the bounded memory of bindings."""

from __future__ import annotations

import asyncio

from parlour.channels.base import Received
from parlour.flow import UserMessage
from parlour.gateway.identities import Identities
from parlour.store.memory import MemoryStore

CHANNEL = "whatsapp:support"


def received(user: str, scoped_id: str | None, n: int = 1) -> Received:
    return Received(user, f"wamid.{n}", UserMessage("hi"), scoped_id=scoped_id)


async def test_a_bsuid_stays_with_the_user_it_came_with_first():
    identities = Identities(MemoryStore())
    assert await identities.user("acme", CHANNEL, received("16505551234", "US.1")) == "16505551234"
    assert await identities.user("acme", CHANNEL, received("US.1", "US.1")) == "16505551234"  # phone hidden
    assert await identities.user("acme", CHANNEL, received("US.2", "US.2")) == "US.2"  # a BSUID first...
    assert await identities.user("acme", CHANNEL, received("447700900123", "US.2")) == "US.2"  # ...stays
    assert await identities.user("acme", CHANNEL, received("447700900123", None)) == "447700900123"  # no BSUID
    assert await identities.user("beta", CHANNEL, received("US.1", "US.1")) == "US.1"  # another tenant's


async def test_gateways_racing_on_a_new_person_agree_through_the_store():
    store = MemoryStore()
    gateways = [Identities(store) for _ in range(4)]
    spellings = ["US.9", "16505551234", "US.9", "16505551234"]
    users = await asyncio.gather(*(g.user("acme", CHANNEL, received(user, "US.9"))
                                   for g, user in zip(gateways, spellings, strict=True)))
    assert len(set(users)) == 1


async def test_the_bindings_kept_in_memory_are_bounded():
    store = MemoryStore()
    identities = Identities(store, max_cached=2)
    for n in range(5):
        await identities.user("acme", CHANNEL, received(f"1650555000{n}", f"US.{n}"))
    assert list(identities._bound) == [f"user:acme/{CHANNEL}/US.3", f"user:acme/{CHANNEL}/US.4"]
    assert await identities.user("acme", CHANNEL, received("US.0", "US.0")) == "16505550000"  # read again
