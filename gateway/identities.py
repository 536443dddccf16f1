"""One conversation per person, on a channel whose messages name a person in two ways.

WhatsApp names a user by phone number (``from``) and, since 2026, by a business-scoped user id
(a BSUID, ``from_user_id``), and leaves the phone number out for a user who adopted a username
and has not talked with the business lately. Either may come alone, or both together. The
adapter gives the BSUID as :attr:`Received.scoped_id <.channels.base.Received.scoped_id>`.

The rule: **a BSUID is bound, once and for good, to the user of the first message it came
with** (its phone number when it had one, else the BSUID itself), and every later message
carrying that BSUID goes to that conversation, with or without a phone number. A message with
no BSUID (older webhooks) is keyed by its phone number, as before. So a user known by phone
keeps their conversation when the phone number goes missing, and one who first wrote with a
BSUID alone keeps theirs when it comes back. Keying by BSUID alone would have split every
conversation begun before BSUIDs; keying by phone when present would split one begun by BSUID.

The binding is a store meta value, ``user:{tenant}/{channel}:{bot}/{bsuid}`` -> the user,
written with :meth:`Store.add_meta` so that two gateways taking a new person's first messages
at once agree on one conversation. It never changes, so each gateway keeps the bindings it has
read (up to :data:`MAX_CACHED`, the least recently used dropped first). A user who changes phone
number gets a new BSUID from Meta, and a new conversation.

>>> identities = Identities(store)
>>> await identities.user("acme", "whatsapp:support", Received("16505551234", "wamid.1", msg, scoped_id="US.1"))
'16505551234'
>>> await identities.user("acme", "whatsapp:support", Received("US.1", "wamid.2", msg, scoped_id="US.1"))
'16505551234'
"""

from __future__ import annotations

from collections import OrderedDict

from parlour.channels.base import Received
from parlour.store import Store

MAX_CACHED = 100_000
"""Bindings a gateway keeps in memory; past it, one is read again (one store call) when its
person writes next."""


class Identities:
    """The conversation user of each received message (see the module's docstring)."""

    def __init__(self, store: Store, *, max_cached: int = MAX_CACHED):
        self.store, self.max_cached = store, max_cached
        self._bound: OrderedDict[str, str] = OrderedDict()

    async def user(self, tenant: str, channel: str, received: Received) -> str:
        """The user part of ``received``'s conversation key on ``channel`` (``whatsapp:bot``)."""
        if received.scoped_id is None:
            return received.user
        name = f"user:{tenant}/{channel}/{received.scoped_id}"
        user = self._bound.get(name)
        if user is None:
            user = (await self.store.add_meta(name, received.user.encode())).decode()
        self._bound[name] = user
        self._bound.move_to_end(name)
        if len(self._bound) > self.max_cached:
            self._bound.popitem(last=False)
        return user
