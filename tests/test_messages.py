"""Keys and ids taken from outside are refused where they are built, as :class:`InvalidId`: a
ParlourError, which every HTTP handler answers 400 (a ValueError escaping to one was a 500)."""

from __future__ import annotations

import pytest

from parlour.errors import InvalidId, ParlourError
from parlour.flow.events import UserMessage
from parlour.messages import MAX_ID_CHARS, ConversationKey, Inbound

KEY = ConversationKey("alpha", "web", "bob")


@pytest.mark.parametrize("make", [
    lambda: ConversationKey("alpha", "../beta", "bob"),  # GET /v1/alpha/conversations/..%2Fbeta/bob
    lambda: ConversationKey("alpha/x", "web", "bob"),
    lambda: ConversationKey("alpha", "", "bob"),
    lambda: ConversationKey("alpha", "web", ""),
    lambda: ConversationKey("alpha", "web", "u" * 5000),
    lambda: ConversationKey("alpha", "web", "\ud800"),
    lambda: Inbound(KEY, "", UserMessage("hi")),
    lambda: Inbound(KEY, "m" * (MAX_ID_CHARS + 1), UserMessage("hi")),
], ids=["encoded-slash", "slash-in-tenant", "empty-channel", "empty-user", "long-user", "surrogate", "no-id",
        "long-id"])
def test_a_key_or_id_that_cannot_name_anything_is_an_invalid_id(make):
    with pytest.raises(InvalidId) as refused:
        make()
    assert isinstance(refused.value, ParlourError) and len(str(refused.value)) < 200  # never echoes 5,000 characters


def test_a_user_may_hold_a_slash_and_a_key_up_to_the_bound():
    assert ConversationKey("alpha", "signal:bot", "group/abc=").user == "group/abc="
    longest = "u" * (MAX_ID_CHARS - len("alpha/web/"))
    assert ConversationKey("alpha", "web", longest).id == f"alpha/web/{longest}"
