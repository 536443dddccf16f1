"""Conversation state as msgpack bytes, and what happens to bytes that are not."""

import msgpack
import pytest

from parlour.codec import Record, pack_record, pack_state, unpack_record, unpack_state
from parlour.errors import StateError
from parlour.flow import State
from parlour.flow.state import Frame


def test_a_full_state_round_trips():
    state = State(flow="f", version="v1", node="n", status="waiting", wait_for="reply",
                  vars={"a": 1, "b": [1, "x", None], "c": {"d": 2.5}}, attempts=2, timer="t3", request=None,
                  stack=(Frame("g", "v2", "back"),), inbox=({"text": "hi", "button": None},), seq=3,
                  user={"id": "u", "name": None}, channel="web")
    assert unpack_state(pack_state(state)) == state


@pytest.mark.parametrize("data, reason", [
    (b"\xc1\xc1garbage", "not msgpack"),
    (msgpack.packb([1, 2]), "is a list"),
    (msgpack.packb({"schema": 1}), "unreadable conversation state"),
    (msgpack.packb({**State().to_data(), "schema": 99}), "newer than this parlour"),
])
def test_unreadable_bytes_raise_state_error(data, reason):
    with pytest.raises(StateError, match=reason):
        unpack_state(data)


def test_an_older_schema_is_migrated(monkeypatch):
    from parlour.flow import state as state_module

    monkeypatch.setattr(state_module, "SCHEMA", 3)

    def migrate(data: dict) -> dict:
        return {**data, "schema": 3, "vars": {**data["vars"], "migrated": True}}
    monkeypatch.setitem(state_module.MIGRATIONS, 2, migrate)
    old = {**State(vars={"x": 1}).to_data(), "schema": 2}
    assert unpack_state(msgpack.packb(old)).vars == {"x": 1, "migrated": True}


def test_a_schema_1_state_reads_with_no_prompt_and_no_ticket():
    old = State(vars={"x": 1}, status="handoff").to_data()
    del old["prompt"], old["ticket"]
    state = unpack_state(msgpack.packb({**old, "schema": 1}))
    assert (state.vars, state.status, state.prompt, state.ticket) == ({"x": 1}, "handoff", None, None)


# ---------------------------------------------------------------- prompt ids on replies and presses


def test_a_reply_keeps_its_prompt_in_the_store_and_a_reply_stored_before_prompts_reads():
    from parlour.codec import pack_outbound, pack_replies, unpack_outbound, unpack_replies
    from parlour.flow import Button, Reply

    reply = Reply(text="Pick", buttons=(Button("a", "A"),), prompt="p7")
    assert unpack_replies(pack_replies([reply])) == (reply,)
    assert unpack_outbound(pack_outbound("k", 1, "m-1", reply, 0.0))["reply"] == reply
    old = msgpack.packb([{"text": "Pick", "buttons": [["a", "A", None]]}])
    assert unpack_replies(old) == (Reply(text="Pick", buttons=(Button("a", "A"),)),)


def test_a_press_keeps_its_prompt_on_the_wire_and_a_batch_without_prompts_reads():
    from parlour.flow import UserMessage
    from parlour.messages import ConversationKey, Inbound
    from parlour.wire import decode_batch, encode_batch

    key = ConversationKey("t", "web", "u1")
    batch = [Inbound(key, "m-1", UserMessage("", button="quit", kind="button", prompt="p1")),
             Inbound(key, "m-2", UserMessage("hi"))]
    assert decode_batch(encode_batch(batch)) == batch
    old = msgpack.packb([["t", "web", "u1", "m-3", ["u", "", "quit", "button", None, None, None, None], None, None]])
    assert decode_batch(old)[0].event == UserMessage("", button="quit", kind="button")


def test_a_schema_1_record_reads_with_its_last_turn_unknown_and_keeps_its_window():
    state = State(flow="registration", node="ask_email", status="waiting", vars={"name": "Ann"})
    old = msgpack.packb([1, state.to_data(), b"\x01" * 8, 3, [1700000000.5, 1699999999.0]], use_bin_type=True)
    record = unpack_record(old)
    assert (record.state, record.seen, record.replies, record.at) == (state, b"\x01" * 8, 3, 0)
    assert (record.latest_at, record.evicted_at) == (1700000000.5, 1699999999.0)
    again = Record(state, record.seen, 3, at=1700000123)
    assert unpack_record(pack_record(again)) == again
