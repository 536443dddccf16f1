"""The Signal adapter against signal-cli's own notification lines, the REST API's request examples
and a fake /v2/send that checks requests against the REST API's swagger."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from parlour.channels.base import (
    Call,
    Event,
    PayloadError,
    SignatureError,
    Webhook,
)
from parlour.channels.signal import ADAPTER, TEXT_LIMIT, SignalBot
from parlour.flow import Button, Reply
from tests.channels.fake_api import FakeAPI, FakeRequest
from tests.channels.fake_signal import SPEC, check
from tests.servers import serve

FIXTURES = Path(__file__).parents[1] / "conformance/channels/fixtures"
SECRET = "kq3bT9vZr2YwX8pL"
BOT = SignalBot(api_base="http://127.0.0.1:8080", number="+431212131491291", url_secret=SECRET)
# the account of the sync fixture
SELF = SignalBot(api_base="http://127.0.0.1:8080", number="+33123456789", url_secret=SECRET)
SENDER = "+33123456789"  # who sent the data message fixture
GROUP_ID = "Ilbj2LzhqIL2r/+gvGKXKzcn8XH4cDm1dzaBf6ugy+c="  # a groupInfo.groupId as signal-cli gives it
GROUP = "group.SWxiajJMemhxSUwyci8rZ3ZHS1hLemNuOFhINGNEbTFkemFCZjZ1Z3krYz0="  # group. + base64(GROUP_ID)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def webhook(body: bytes | dict, query: dict | None = None) -> Webhook:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Webhook("POST", "https://example.org/signal", {"Content-Type": "application/json"}, raw,
                   {"token": SECRET} if query is None else query)


def note(envelope: dict, account: str | None = None) -> dict:
    """A receive notification as the REST API forwards it, with ``envelope``."""
    params = {"envelope": {"source": SENDER, "sourceNumber": SENDER, "sourceUuid": "uuid", "sourceName": "name",
                           "sourceDevice": 1, "timestamp": 1631458508784} | envelope}
    return {"jsonrpc": "2.0", "method": "receive", "params": params | ({"account": account} if account else {})}


def data_message(**fields) -> dict:
    return note({"dataMessage": {"timestamp": 1631458508784, "message": "foobar", "expiresInSeconds": 0,
                                 "viewOnce": False, "attachments": []} | fields})


def as_request(call: Call) -> FakeRequest:
    """The request an HTTP client makes of ``call``."""
    headers = {**call.headers, "Content-Type": "application/json"}
    return FakeRequest(call.method, call.path, headers, json.dumps(call.json).encode(), {})


# ---------------------------------------------------------------- settings and verify


def test_a_url_secret_must_be_long_enough_to_be_a_secret():
    with pytest.raises(ValidationError, match="at least 16"):
        SignalBot(api_base="http://127.0.0.1:8080", number="+1", url_secret="short")
    assert BOT.api_base == "http://127.0.0.1:8080"


def test_the_url_secret_verifies():
    ADAPTER.verify(BOT, webhook(fixture("signal_jsonrpc_receive_datamessage.json")))


@pytest.mark.parametrize("query, reason", [
    ({}, "missing"),
    ({"token": ""}, "missing"),
    ({"secret": SECRET}, "missing"),
    ({"token": SECRET[:-1]}, "mismatch"),
    ({"token": SECRET + "x"}, "mismatch"),
    ({"token": SECRET.upper()}, "mismatch"),
    ({"token": "é" * 16}, "mismatch"),
])
def test_a_wrong_or_missing_secret_fails_with_its_reason(query, reason):
    with pytest.raises(SignatureError) as caught:
        ADAPTER.verify(BOT, webhook(b"{}", query))
    assert caught.value.reason == reason


# ---------------------------------------------------------------- parse


def parse(body: bytes | dict, bot: SignalBot = BOT):
    return ADAPTER.parse(bot, webhook(body))


def test_the_data_message_fixture_is_a_turn():
    parsed = parse(fixture("signal_jsonrpc_receive_datamessage.json"))
    (received,) = parsed.messages
    assert parsed.events == ()
    assert (received.user, received.message_id) == (SENDER, f"1631458508784:{SENDER}")
    message = received.message
    assert (message.text, message.kind, message.user_id, message.user_name, message.channel) == \
        ("foobar", "text", SENDER, "name", "signal")


def test_the_same_message_from_the_bots_own_number_is_not_a_turn():
    parsed = parse(fixture("signal_jsonrpc_receive_datamessage.json"), SELF)
    assert parsed.messages == ()
    assert parsed.events == (Event("own", user=SENDER, message_id=f"1631458508784:{SENDER}"),)


def test_the_sync_message_fixture_is_an_event():
    # A message the account sent from its phone: signal-cli's subscription form (params.result).
    parsed = parse(fixture("signal_jsonrpc_receive_syncmessage_subscription.json"), SELF)
    assert parsed.messages == ()
    assert parsed.events == (Event("sync", user=SENDER),)


def test_a_notification_for_another_account_on_the_same_rest_api_is_not_this_bots():
    parsed = parse(fixture("signal_jsonrpc_receive_syncmessage_subscription.json"))
    assert parsed.events == (Event("other_account", data={"account": "+33123456789"}),)
    mine = note({"dataMessage": {"timestamp": 1631458508784, "message": "hi"}}, account=BOT.number)
    assert [received.message.text for received in parse(mine).messages] == ["hi"]


def test_a_group_message_is_addressed_to_the_group_as_the_rest_api_names_it():
    body = data_message(groupInfo={"groupId": GROUP_ID, "groupName": "Book club", "revision": 3, "type": "DELIVER"})
    (received,) = parse(body).messages
    assert received.user == GROUP
    assert received.message.user_id == SENDER  # who in the group said it
    assert received.message_id == f"1631458508784:{SENDER}"
    (call,) = ADAPTER.render(BOT, received.user, Reply(text="Welcome"))
    assert call.json["recipients"] == [GROUP]
    assert check(as_request(call)) == []


def test_a_sender_without_a_number_is_known_by_uuid():
    body = note({"source": "b3c2a1d0-0000-4000-8000-000000000001", "sourceNumber": None,
                 "sourceUuid": "b3c2a1d0-0000-4000-8000-000000000001",
                 "dataMessage": {"timestamp": 1631458508784, "message": "hi"}})
    (received,) = parse(body).messages
    assert received.user == received.message.user_id == "b3c2a1d0-0000-4000-8000-000000000001"


def test_attachments_are_media_served_by_the_rest_api():
    body = data_message(message=None, attachments=[
        {"contentType": "image/jpeg", "filename": "cat.jpg", "id": "A7kd9.jpg", "size": 53311},
        {"contentType": "application/pdf", "id": "Zx 1.pdf", "size": 10},
    ])
    message = parse(body).messages[0].message
    assert (message.kind, message.text) == ("media", "")
    assert message.data["url"] == "http://127.0.0.1:8080/v1/attachments/A7kd9.jpg"
    assert (message.data["content_type"], message.data["filename"]) == ("image/jpeg", "cat.jpg")
    assert [a["url"] for a in message.data["attachments"]][1] == "http://127.0.0.1:8080/v1/attachments/Zx%201.pdf"


@pytest.mark.parametrize("fields, kind", [
    ({"message": None, "reaction": {"emoji": "👍", "targetAuthor": BOT.number, "targetSentTimestamp": 1,
                                     "isRemove": False}}, "reaction"),
    ({"message": None, "remoteDelete": {"timestamp": 1}}, "delete"),
    ({"message": None, "sticker": {"packId": "p", "stickerId": 2}}, "sticker"),
    ({"message": None, "groupInfo": {"groupId": GROUP_ID, "type": "UPDATE", "revision": 4}}, "group"),
    ({"message": None}, "other"),
])
def test_a_data_message_without_text_is_an_event(fields, kind):
    parsed = parse(data_message(**fields))
    assert parsed.messages == ()
    assert [event.kind for event in parsed.events] == [kind]


def test_a_receipt_is_a_status_for_each_message_it_covers():
    receipt = {"when": 1631458600000, "isDelivery": False, "isRead": True, "isViewed": False,
               "timestamps": [1631458508001, 1631458508002]}
    parsed = parse(note({"receiptMessage": receipt}))
    assert parsed.events == (Event("status", user=SENDER, message_id="1631458508001", status="read"),
                             Event("status", user=SENDER, message_id="1631458508002", status="read"))
    delivered = parse(note({"receiptMessage": receipt | {"isDelivery": True, "isRead": False}}))
    assert {event.status for event in delivered.events} == {"delivered"}


def test_typing_is_an_event():
    # gabrc52/6.515-messaging-bridge doc/platforms/signal.md: a typing line read from signal-cli.
    parsed = parse(note({"typingMessage": {"action": "STARTED", "timestamp": 1745372297238}}))
    assert parsed.events == (Event("typing", user=SENDER),)


@pytest.mark.parametrize("body, says", [
    (b"", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[]", "not a json-rpc 'receive'"),
    (json.dumps({"jsonrpc": "2.0", "method": "send", "params": {}}).encode(), "not a json-rpc 'receive'"),
    (json.dumps({"jsonrpc": "2.0", "method": "receive"}).encode(), "has no params"),
    (json.dumps({"jsonrpc": "2.0", "method": "receive", "params": []}).encode(), "params is a list"),
    (json.dumps({"jsonrpc": "2.0", "method": "receive", "params": {"account": "+1"}}).encode(), "envelope"),
    ({"jsonrpc": "2.0", "method": "receive", "params": {"envelope": "x"}}, "params.envelope is a str"),
    (note({"dataMessage": "hi"}), "envelope.dataMessage is a str"),
    (note({"timestamp": None, "dataMessage": {"message": "hi"}}), "no timestamp"),
    (note({"timestamp": "1631458508784", "dataMessage": {"message": "hi"}}), "timestamp is a str"),
    (note({"timestamp": True, "dataMessage": {"message": "hi"}}), "timestamp is a bool"),
    (note({"source": None, "sourceNumber": None, "sourceUuid": None, "dataMessage": {"message": "hi"}}),
     "no sourceNumber"),
    (note({"sourceNumber": 43, "dataMessage": {"message": "hi"}}), "sourceNumber is a int"),
    (data_message(message=42), "message is a int"),
    (data_message(attachments={"id": "a"}), "attachments is a dict"),
    (data_message(attachments=[{"contentType": "image/png"}]), r"attachments\[0\] is not an attachment"),
    (data_message(groupInfo={"groupId": 7}), "groupId is a int"),
    (note({"receiptMessage": []}), "receiptMessage is a list"),
])
def test_bad_bodies_say_what_is_wrong(body, says):
    with pytest.raises(PayloadError, match=says):
        parse(body if isinstance(body, bytes) else json.dumps(body).encode())


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
DATA = st.fixed_dictionaries({}, optional={key: JSON for key in (
    "message", "attachments", "groupInfo", "reaction", "sticker", "timestamp")})
ENVELOPE = st.fixed_dictionaries({}, optional={
    "source": JSON, "sourceNumber": st.sampled_from([SENDER, BOT.number]) | JSON, "sourceUuid": JSON,
    "sourceName": JSON, "timestamp": st.integers() | JSON, "dataMessage": DATA | JSON,
    "syncMessage": JSON, "receiptMessage": st.fixed_dictionaries({}, optional={"timestamps": JSON}) | JSON,
    "typingMessage": JSON})
NOTES = st.builds(lambda envelope, account, wrap: {"jsonrpc": "2.0", "method": "receive", "params": (
    {"subscription": 0, "result": {"envelope": envelope, "account": account}} if wrap
    else {"envelope": envelope, "account": account})}, ENVELOPE | JSON, st.sampled_from([BOT.number, None]) | JSON,
    st.booleans())


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                 NOTES.map(lambda v: json.dumps(v).encode())))
def test_garbage_is_a_payload_error_never_a_crash(body):
    try:
        ADAPTER.parse(BOT, webhook(body))
    except PayloadError:
        pass


# ---------------------------------------------------------------- render


def test_a_text_reply_has_the_rest_api_examples_shape():
    (call,) = ADAPTER.render(BOT, "+4354546464654", Reply(text="Hello World!"))
    assert (call.method, call.path, call.form, call.headers) == ("POST", "/v2/send", None, {})
    example = json.loads(fixture("signal_rest_v2_send_request.json"))
    assert {k: type(v) for k, v in call.json.items() if k in example} == {k: type(v) for k, v in example.items()}
    assert call.json == {"message": "Hello World!", "number": BOT.number, "recipients": ["+4354546464654"],
                         "text_mode": "normal"}


def test_buttons_and_list_rows_are_numbered_lines():
    buttons = Reply(text="Pick one", buttons=(Button("yes", "Yes"), Button("no", "No")))
    assert [c.json["message"] for c in ADAPTER.render(BOT, SENDER, buttons)] == ["Pick one\n1. Yes\n2. No"]
    rows = Reply(list_button="Shops", list=(Button("a", "Paris", "rue X"), Button("b", "Rome")))
    assert [c.json["message"] for c in ADAPTER.render(BOT, SENDER, rows)] == ["1. Paris\n2. Rome"]


def test_a_long_text_is_split_within_the_limit():
    text = "\n".join(f"line {n} " + "x" * 40 for n in range(150))  # about 7,500 characters
    messages = [c.json["message"] for c in ADAPTER.render(BOT, SENDER, Reply(text=text))]
    assert len(messages) == 4
    assert all(len(m) <= TEXT_LIMIT for m in messages)
    assert " ".join(messages).split() == text.split()


def test_media_goes_as_a_link_in_the_text():
    url = "https://example.org/hours.png"
    assert ADAPTER.render(BOT, SENDER, Reply(text="Our hours", media_url=url))[0].json["message"] == \
        f"{url}\nOur hours"
    assert ADAPTER.render(BOT, SENDER, Reply(media_url=url))[0].json["message"] == url


def test_an_empty_reply_sends_nothing():
    assert ADAPTER.render(BOT, SENDER, Reply()) == []


REPLIES = [
    Reply(text="Hello"),
    Reply(text="Pick", buttons=(Button("a", "A"), Button("b", "B"))),
    Reply(text="y" * 4500),
    Reply(text="Look", media_url="https://example.org/a.jpg", media_kind="image"),
]


@pytest.mark.parametrize("user", [SENDER, GROUP, "b3c2a1d0-0000-4000-8000-000000000001"])
@pytest.mark.parametrize("reply", REPLIES)
def test_every_rendered_call_passes_the_fake(user, reply):
    calls = ADAPTER.render(BOT, user, reply)
    assert calls
    for call in calls:
        assert check(as_request(call)) == []


def request(body: dict | bytes, path: str = "/v2/send", method: str = "POST") -> FakeRequest:
    return FakeRequest(method, path, {}, body if isinstance(body, bytes) else json.dumps(body).encode(), {})


GOOD = {"message": "Hi", "number": BOT.number, "recipients": [SENDER]}


def test_the_rest_api_examples_pass_the_fake_except_a_group_mixed_with_numbers():
    assert check(request(fixture("signal_rest_v2_send_request.json"))) == []
    # doc/EXAMPLES.md's group example sends to a group and a number at once, which SendV2
    # (src/client/client.go) refuses: "Groups and phone numbers cannot be specified together".
    (problem,) = check(request(fixture("signal_rest_v2_send_group_request.json")))
    assert "groups and phone numbers together" in problem
    group_only = json.loads(fixture("signal_rest_v2_send_group_request.json"))
    assert check(request(group_only | {"recipients": group_only["recipients"][:1]})) == []


@pytest.mark.parametrize("request_, says", [
    (request(GOOD, method="PUT"), "is not POST /v2/send"),
    (request(GOOD, path="/v1/send"), "is not POST /v2/send"),
    (request(b"message=Hi"), "not JSON"),
    (request([GOOD]), "body is"),
    (request({k: v for k, v in GOOD.items() if k != "message"}), "body.message is required"),
    (request({k: v for k, v in GOOD.items() if k != "number"}), "body.number is required"),
    (request({k: v for k, v in GOOD.items() if k != "recipients"}), "body.recipients is required"),
    (request(GOOD | {"recipients": SENDER}), "body.recipients is"),
    (request(GOOD | {"recipients": [4912812812121]}), "body.recipients[0] is"),
    (request(GOOD | {"message": 5}), "body.message is"),
    (request(GOOD | {"recipient": SENDER}), "body.recipient is not a field"),
    (request(GOOD | {"buttons": ["a"]}), "body.buttons is not a field"),
    (request(GOOD | {"text_mode": "fancy"}), "not one of"),
    (request(GOOD | {"notify_self": "yes"}), "body.notify_self is"),
    (request(GOOD | {"base64_attachments": "AAAA"}), "body.base64_attachments is"),
    (request(GOOD | {"mentions": [{"start": 0, "length": 1}]}), "body.mentions[0].author is required"),
    (request(GOOD | {"recipients": []}), "at least one recipient"),
    (request(GOOD | {"number": ""}), "valid number"),
    (request(GOOD | {"recipients": [GROUP, "group.YWJj"]}), "more than one group"),
    (request(GOOD | {"recipients": ["group.not base64!"]}), "Invalid group id"),
])
def test_the_fake_rejects_broken_requests(request_, says):
    problems = check(request_)
    assert any(says in problem for problem in problems), problems


def test_the_fake_answers_a_timestamp():
    status, body = SPEC.answer(request(GOOD), 3)
    assert status == 201 and list(body) == ["timestamp"] and body["timestamp"].isdigit()


async def test_rendered_calls_go_through_the_fake_over_http():
    api = FakeAPI(SPEC)
    async with serve(api.app()) as base, aiohttp.ClientSession() as session:
        bot = SignalBot(number=BOT.number, url_secret=SECRET, api_base=base)
        for call in ADAPTER.render(bot, GROUP, Reply(text="z" * 3000, buttons=(Button("a", "A"),))):
            async with session.request(call.method, bot.api_base + call.path, json=call.json,
                                       headers=call.headers) as response:
                verdict = ADAPTER.judge(response.status, response.headers, await response.read())
            assert verdict.outcome == "sent", verdict
    assert api.rejected == [] and len(api.delivered) == 2


# ---------------------------------------------------------------- judge

RATE_LIMITED = json.dumps({"account": BOT.number, "challenge_tokens": ["t1"],
                           "error": "Rate limit exceeded"}).encode()


@pytest.mark.parametrize("status, headers, body, outcome, after_s, reason", [
    (201, {}, b'{"timestamp": "1700000000001"}', "sent", None, ""),
    (400, {}, b'{"error": "Invalid group id"}', "failed", None, "HTTP 400: Invalid group id"),
    (400, {}, b"garbage", "failed", None, "HTTP 400"),
    (404, {}, b'{"error": 3}', "failed", None, "HTTP 404"),
    (429, {"Retry-After": "30"}, RATE_LIMITED, "retry", 30.0, "HTTP 429: Rate limit exceeded"),
    (500, {}, b"", "retry", None, "HTTP 500"),
])
def test_judge(status, headers, body, outcome, after_s, reason):
    verdict = ADAPTER.judge(status, headers, body)
    assert (verdict.outcome, verdict.after_s, verdict.reason) == (outcome, after_s, reason)
