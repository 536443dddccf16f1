"""The WhatsApp adapter against Meta's own data: a real signed delivery, the webhook payloads of
pywa's and heyoo's test suites and of Meta's OpenAPI, and Meta's send examples (through the fake
API's check, which must also refuse what Meta would refuse)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from pydantic import SecretStr

from parlour.channels.base import (
    Event,
    Parsed,
    PayloadError,
    Received,
    SignatureError,
    Verdict,
    Webhook,
)
from parlour.channels.whatsapp import ADAPTER, WhatsApp, WhatsAppBot
from parlour.flow import Button, Reply, UserMessage
from tests.channels.fake_api import FakeAPI, FakeRequest
from tests.channels.fake_whatsapp import SPEC, SPEC_JSON, check, examples

FIXTURES = Path(__file__).resolve().parents[1] / "conformance" / "channels" / "fixtures"
RAW = (FIXTURES / "whatsapp_signed_text_raw_body.json").read_bytes()
VECTOR = json.loads((FIXTURES / "whatsapp_signed_text_vector.json").read_text())
SIGNED = CIMultiDict({VECTOR["header_name"]: VECTOR["x_hub_signature_256"]})
BOT = WhatsAppBot(phone_number_id="1122334455667", access_token="EAAB-test.token",
                  app_secret=VECTOR["app_secret"], verify_token="verify-me")
USER = "16505551234"
URL = "https://bots.example/v1/acme/whatsapp/support/webhook"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def parse(payload: Any) -> Parsed:
    """``payload`` parsed by the bot of the phone number it was sent to (Meta's examples and the
    fixtures each name their own)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ADAPTER.parse(bot_of(body), Webhook("POST", URL, {}, body))


def bot_of(body: bytes) -> WhatsAppBot:
    try:
        number = json.loads(body)["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return BOT
    return BOT.model_copy(update={"phone_number_id": number}) if isinstance(number, str) else BOT


def turn(user: str, message_id: str, name: str | None = "Test Name", scoped_id: str | None = None,
         **message: Any) -> Received:
    return Received(user, message_id, UserMessage(**message, user_id=user, user_name=name, channel="whatsapp"),
                    scoped_id=scoped_id)


def envelope(*messages: dict, statuses: tuple[dict, ...] = (), name: str = "Test Name") -> dict:
    """One delivery holding ``messages`` from 972987654321, shaped as pywa's samples are."""
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}}
    if messages:
        value |= {"contacts": [{"profile": {"name": name}, "wa_id": "972987654321"}], "messages": list(messages)}
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "1234567890987654321", "changes": [{"value": value, "field": "messages"}]}]}


def text(body: str, message_id: str = "wamid.xyzxyz", sender: str = "972987654321") -> dict:
    return {"from": sender, "id": message_id, "timestamp": "1697043223", "text": {"body": body}, "type": "text"}


def test_a_message_to_another_number_of_the_same_app_is_not_this_bots_turn():
    payload = envelope(text("hi"))
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999000"
    assert parse(envelope(text("hi"))).messages and ADAPTER.parse(BOT, Webhook(
        "POST", URL, {}, json.dumps(payload).encode())) == Parsed(events=(
            Event(kind="other_number", data={"phone_number_id": "999000"}),))


# ------------------------------------------------------------------ signature and handshake


def test_the_signed_vector_verifies_and_parses():
    assert len(RAW) == 511 and not RAW.endswith(b"\n")  # the exact bytes Meta signed
    webhook = Webhook("POST", URL, SIGNED, RAW)
    ADAPTER.verify(BOT, webhook)
    assert ADAPTER.parse(bot_of(RAW), webhook) == Parsed(messages=(turn(
        "972544401243", "wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4QzM4ODAxM0YA",
        name="PyWa Tests", text="Hey there! I am using PyWa."),))


@pytest.mark.parametrize("headers", [
    {"x-hub-signature-256": VECTOR["x_hub_signature_256"]},
    {VECTOR["header_name"]: VECTOR["x_hub_signature_256"].upper().replace("SHA256=", "sha256=")},
    {VECTOR["header_name"]: f" {VECTOR['x_hub_signature_256']} "},
])
def test_the_signature_header_is_read_leniently(headers):
    ADAPTER.verify(BOT, Webhook("POST", URL, CIMultiDict(headers), RAW))


def altered(position: int) -> bytes:
    return RAW[:position] + bytes([RAW[position] ^ 1]) + RAW[position + 1:]


HEX = VECTOR["x_hub_signature_256"].removeprefix("sha256=")
WRONG_SECRET = BOT.model_copy(update={"app_secret": SecretStr("0" * 32)})


@pytest.mark.parametrize("bot, headers, body, reason", [
    (WRONG_SECRET, SIGNED, RAW, "mismatch"),
    (BOT, {}, RAW, "missing"),
    (BOT, {VECTOR["header_name"]: ""}, RAW, "missing"),
    (BOT, {"X-Hub-Signature": "sha1=" + "0" * 40}, RAW, "missing"),  # the older SHA-1 header only
    *[(BOT, SIGNED, altered(position), "mismatch") for position in (0, 100, 255, 510)],
    (BOT, SIGNED, RAW + b" ", "mismatch"),
    (BOT, SIGNED, RAW[:-1], "mismatch"),
    (BOT, {VECTOR["header_name"]: HEX}, RAW, "malformed"),
    (BOT, {VECTOR["header_name"]: "sha1=" + HEX[:40]}, RAW, "malformed"),
    (BOT, {VECTOR["header_name"]: "sha256=" + HEX[:-1]}, RAW, "malformed"),
    (BOT, {VECTOR["header_name"]: "sha256=" + HEX + "0"}, RAW, "malformed"),
    (BOT, {VECTOR["header_name"]: "sha256=" + "g" * 64}, RAW, "malformed"),
    (BOT, {VECTOR["header_name"]: "sha256:" + HEX}, RAW, "malformed"),
])
def test_every_bad_signature_is_refused_with_its_reason(bot, headers, body, reason):
    with pytest.raises(SignatureError) as refused:
        ADAPTER.verify(bot, Webhook("POST", URL, CIMultiDict(headers), body))
    assert refused.value.reason == reason


def handshake(**query: str) -> str | None:
    return ADAPTER.handshake(BOT, Webhook("GET", URL, {}, b"", {f"hub.{k}": v for k, v in query.items()}))


def test_the_handshake_answers_the_challenge():
    assert handshake(mode="subscribe", verify_token="verify-me", challenge="1158201444") == "1158201444"


@pytest.mark.parametrize("query, reason", [
    ({"mode": "subscribe", "verify_token": "verify-you", "challenge": "1"}, "mismatch"),
    ({"mode": "subscribe", "verify_token": "verify-m", "challenge": "1"}, "mismatch"),
    ({"mode": "subscribe", "verify_token": "verify-me!", "challenge": "1"}, "mismatch"),
    ({"mode": "subscribe", "challenge": "1"}, "missing"),
    ({"mode": "subscribe", "verify_token": "", "challenge": "1"}, "missing"),
    ({"mode": "unsubscribe", "verify_token": "verify-me", "challenge": "1"}, "mismatch"),
    ({"verify_token": "verify-me", "challenge": "1"}, "mismatch"),
    ({"mode": "subscribe", "verify_token": "verify-me"}, "missing"),
])
def test_a_wrong_handshake_is_refused(query, reason):
    with pytest.raises(SignatureError) as refused:
        handshake(**query)
    assert refused.value.reason == reason


# ------------------------------------------------------------------ inbound fixtures


PYWA_BSUID = "US.13491208655302741918"  # contacts[].user_id in pywa's newer samples


@pytest.mark.parametrize("name, key, expected", [
    ("whatsapp_inbound_text_pywa.json", None, turn("972987654321", "wamid.xyzxyz", text="Body Text")),
    ("whatsapp_inbound_text_heyoo.json", None, turn(
        "255757294146", "wamid.HBgMMjU1NzU3Mjk0MTQ2FQIAEhggMEFCRkVCRDlEQzdDQzAwQjNDOTI0QUY5OTk0RTkxNTMA",
        name="Jordan Kalebu", text="Hi")),
    ("whatsapp_inbound_button_reply_pywa.json", "button",
     turn("972987654321", "wamid.xyzxyz", text="title", button="callback_data", kind="button",
          scoped_id=PYWA_BSUID)),
    ("whatsapp_inbound_button_reply_pywa.json", "quick_reply",
     turn("972987654321", "wamid.xsidjw", text="title", button="callback_data", kind="button",
          scoped_id=PYWA_BSUID)),
    ("whatsapp_inbound_list_reply_pywa.json", "callback",
     turn("972987654321", "wamid.zyzxyz", text="title", button="callback_data", kind="button",
          scoped_id=PYWA_BSUID)),
    ("whatsapp_inbound_list_reply_pywa.json", "description",
     turn("972987654321", "wamid.zyzxyz", text="title", button="callback_data", kind="button",
          scoped_id=PYWA_BSUID)),
])
def test_each_inbound_fixture_is_one_turn(name, key, expected):
    payload = fixture(name) if key is None else fixture(name)[key]
    assert parse(payload) == Parsed(messages=(expected,))


@pytest.mark.parametrize("key", ["sent", "delivered", "read", "failed", "with_tracker"])
def test_each_status_fixture_is_one_status_event(key):
    status = fixture("whatsapp_status_updates_pywa.json")[key]["entry"][0]["changes"][0]["value"]["statuses"][0]
    parsed = parse(fixture("whatsapp_status_updates_pywa.json")[key])
    assert parsed.messages == ()
    [event] = parsed.events
    assert (event.kind, event.status, event.message_id, event.user) == (
        "status", status["status"], "wamid.xyzxyz", "972987654321")
    assert event.data["timestamp"] == status["timestamp"]
    assert event.data.get("errors") == status.get("errors")
    assert event.data.get("biz_opaque_callback_data") == status.get("biz_opaque_callback_data")


def test_a_failed_status_keeps_its_errors():
    [event] = parse(fixture("whatsapp_status_updates_pywa.json")["failed"]).events
    assert event.data["errors"][0]["code"] == 130472


META = "16505551234"
# Meta's own webhook examples (paths./whatsapp/webhooks.post): what each becomes.
WEBHOOK_EXAMPLES: dict[str, tuple] = {
    "Text Message": ("turn", "text", "Does it come in another color?", None),
    "Text Message with Context (Product Inquiry)": ("turn", "text", "Is this still available?", None),
    "Text Message from Click to WhatsApp Ad": ("turn", "text", "Hello! Can I get more info on this?", None),
    "Image Message": ("turn", "media", "Taj Mahal", None),
    "Location Message": ("turn", "location", "", None),
    "Button Message": ("turn", "button", "Unsubscribe", "Unsubscribe"),
    "Interactive List Reply Message": ("turn", "button", "Priority Mail Express", "priority_express"),
    "Interactive Button Reply Message": ("turn", "button", "Cancel", "cancel-button"),
    "Reaction Message": ("event", "reaction"),
    "Contact Sharing Message": ("event", "contacts"),
    "Unsupported Message": ("event", "unsupported"),
    "Order Message": ("event", "order"),
    "System Message": ("event", "system"),
    "Group Create Message": ("event", "group_lifecycle_update"),
    "Group Settings Update": ("event", "group_settings_update"),
    "Group Remove Participants": ("event", "group_participants_update"),
}


def webhook_examples() -> dict[str, Any]:
    content = SPEC_JSON["paths"]["/whatsapp/webhooks"]["post"]["requestBody"]["content"]["application/json"]
    return {name: example["value"] for name, example in content["examples"].items()}


def test_every_meta_webhook_example_is_covered():
    assert set(webhook_examples()) == set(WEBHOOK_EXAMPLES)


@pytest.mark.parametrize("name", sorted(WEBHOOK_EXAMPLES))
def test_each_meta_webhook_example_parses(name):
    parsed, expected = parse(webhook_examples()[name]), WEBHOOK_EXAMPLES[name]
    if expected[0] == "turn":
        [received] = parsed.messages
        assert parsed.events == ()
        message = received.message
        assert (message.kind, message.text, message.button) == expected[1:]
        assert (received.user, message.user_id, message.user_name, message.channel) == (
            META, META, "Sheena Nelson", "whatsapp")
        assert received.message_id.startswith("wamid.")
    else:
        [event] = parsed.events
        assert parsed.messages == () and event.kind == expected[1]


def test_meta_media_and_location_examples_carry_their_data():
    [image] = parse(webhook_examples()["Image Message"]).messages
    assert image.message.data == {"media_type": "image", "id": "1003383421387256", "mime_type": "image/jpeg",
                                  "sha256": "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=", "caption": "Taj Mahal",
                                  "filename": None}
    [place] = parse(webhook_examples()["Location Message"]).messages
    assert place.message.data == {"latitude": 37.44221496582, "longitude": -122.16165924072,
                                  "name": "Philz Coffee", "address": "101 Forest Ave, Palo Alto, CA 94301"}
    [unsupported] = parse(webhook_examples()["Unsupported Message"]).events
    assert unsupported.data["errors"][0]["code"] == 131051


def media(kind: str, **fields: Any) -> dict:
    return {"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043379", "type": kind, kind: fields}


# Shapes from pywa tests/data/updates/message.json @1af30edd (the samples beside the text one).
@pytest.mark.parametrize("message, kind, text, data", [
    (media("video", caption="caption", mime_type="video/mp4", sha256="Jh+2", id="765756756"), "media", "caption",
     {"media_type": "video", "id": "765756756", "mime_type": "video/mp4", "sha256": "Jh+2", "caption": "caption",
      "filename": None}),
    (media("document", caption="caption", filename="filename.pdf", mime_type="application/pdf", sha256="grwf",
           id="1234567890987654321"), "media", "caption",
     {"media_type": "document", "id": "1234567890987654321", "mime_type": "application/pdf", "sha256": "grwf",
      "caption": "caption", "filename": "filename.pdf"}),
    (media("audio", mime_type="audio/ogg; codecs=opus", sha256="E3dx", id="1", voice=False), "media", "",
     {"media_type": "audio", "id": "1", "mime_type": "audio/ogg; codecs=opus", "sha256": "E3dx", "caption": None,
      "filename": None}),
    (media("audio", mime_type="audio/ogg; codecs=opus", sha256="m04p", id="2", voice=True), "media", "",
     {"media_type": "voice", "id": "2", "mime_type": "audio/ogg; codecs=opus", "sha256": "m04p", "caption": None,
      "filename": None}),
    (media("voice", mime_type="audio/ogg; codecs=opus", id="3"), "media", "",
     {"media_type": "voice", "id": "3", "mime_type": "audio/ogg; codecs=opus", "sha256": None, "caption": None,
      "filename": None}),
    (media("sticker", mime_type="image/webp", sha256="OmT4", id="4", animated=False), "media", "",
     {"media_type": "sticker", "id": "4", "mime_type": "image/webp", "sha256": "OmT4", "caption": None,
      "filename": None}),
    (media("location", latitude=12.25089, longitude=43.90539), "location", "",
     {"latitude": 12.25089, "longitude": 43.90539, "name": None, "address": None}),
    (media("location", latitude=37, longitude=-122, name="Facebook HQ", address="1 Hacker Way"), "location", "",
     {"latitude": 37, "longitude": -122, "name": "Facebook HQ", "address": "1 Hacker Way"}),
])
def test_media_and_locations_are_turns_with_their_data(message, kind, text, data):
    [received] = parse(envelope(message)).messages
    assert received.message == UserMessage(text=text, kind=kind, data=data, user_id="972987654321",
                                           user_name="Test Name", channel="whatsapp")


@pytest.mark.parametrize("message, kind", [
    (media("reaction", message_id="wamid.yzxyzx=", emoji="\U0001f62e"), "reaction"),
    (media("reaction", message_id="wamid.yzxyzx="), "reaction"),  # a reaction taken back
    (media("interactive", type="nfm_reply", nfm_reply={"response_json": "{}"}), "interactive"),
    (media("ephemeral", anything=1), "ephemeral"),  # a type Meta may add: recorded, never a turn
])
def test_other_messages_are_events_not_turns(message, kind):
    parsed = parse(envelope(message))
    assert parsed.messages == ()
    [event] = parsed.events
    assert (event.kind, event.user, event.message_id) == (kind, "972987654321", "wamid.xyzxyz")
    assert event.data[message["type"]] == message[message["type"]]


def test_a_sender_without_a_profile_has_no_name():
    payload = envelope(text("hi", sender="4915112345678"))
    assert parse(payload).messages[0].message.user_name is None


def test_errors_and_unknown_statuses_are_events():
    payload = envelope(statuses=({"id": "wamid.1", "status": "deleted", "timestamp": "1", "recipient_id": "49"},))
    payload["entry"][0]["changes"][0]["value"]["errors"] = [{"code": 130429, "title": "Rate limit hit"}]
    other, error = parse(payload).events
    assert (other.kind, other.status, other.data["status"]) == ("status_other", None, "deleted")
    assert (error.kind, error.data["code"]) == ("error", 130429)


# Business-scoped user ids (BSUIDs), as Meta's "Business-scoped user IDs" page has them: in
# contacts[].user_id and messages[].from_user_id; a user with a username may come without a
# phone number (no wa_id, no from), and a status then names them by recipient_user_id.
BSUID = "US.13491208655302741918"


def from_bsuid(body: str, phone: str | None = None, message_id: str = "wamid.b1") -> dict:
    message = {**text(body, message_id), "from_user_id": BSUID}
    contact = {"profile": {"name": "Ada"}, "user_id": BSUID}
    if phone is None:
        del message["from"]
    else:
        message["from"] = contact["wa_id"] = phone
    payload = envelope(message)
    payload["entry"][0]["changes"][0]["value"]["contacts"] = [contact]
    return payload


def test_a_user_known_by_bsuid_alone_is_a_turn_keyed_by_it():
    [received] = parse(from_bsuid("hi")).messages
    assert received == turn(BSUID, "wamid.b1", name="Ada", scoped_id=BSUID, text="hi")


def test_a_phone_number_is_the_user_and_its_bsuid_goes_along():
    [received] = parse(from_bsuid("hi", phone="16505551234")).messages
    assert received == turn("16505551234", "wamid.b1", name="Ada", scoped_id=BSUID, text="hi")


def test_a_bsuid_only_in_contacts_goes_along_with_its_phone_number():
    [received] = parse(fixture("whatsapp_inbound_button_reply_pywa.json")["button"]).messages
    assert (received.user, received.scoped_id) == ("972987654321", PYWA_BSUID)  # contacts[].user_id


def test_a_status_for_a_user_known_by_bsuid_alone_names_them_by_it():
    status = {"id": "wamid.out", "status": "read", "timestamp": "1", "recipient_user_id": "US.ENT.11815799212886844830"}
    [event] = parse(envelope(statuses=(status,))).events
    assert (event.kind, event.status, event.user) == ("status", "read", "US.ENT.11815799212886844830")
    assert "recipient_user_id" not in event.data


@pytest.mark.parametrize("user, address", [
    (BSUID, {"recipient": BSUID}), ("US.ENT.11815799212886844830", {"recipient": "US.ENT.11815799212886844830"}),
    ("16505551234", {"to": "16505551234"}),
])
def test_a_reply_to_a_bsuid_goes_in_recipient_and_to_a_phone_number_in_to(user, address):
    for reply in (Reply(text="Hello"), Reply(text="Pick", buttons=options(3))):
        [call] = ADAPTER.render(BOT, user, reply)
        assert {k: call.json[k] for k in ("to", "recipient") if k in call.json} == address
        assert call.json["recipient_type"] == "individual" and check(as_request(call)) == []


def test_several_entries_changes_and_messages_keep_their_order():
    first, second = envelope(text("one", "wamid.1"), text("two", "wamid.2")), envelope(text("four", "wamid.4"))
    status = {"id": "wamid.out", "status": "read", "timestamp": "1", "recipient_id": "972987654321"}
    changes = first["entry"][0]["changes"]
    changes.append({"field": "messages", "value": {**changes[0]["value"], "messages": [text("three", "wamid.3")]}})
    changes.append(envelope(statuses=(status,))["entry"][0]["changes"][0])
    payload = {"object": "whatsapp_business_account", "entry": first["entry"] + second["entry"]}
    parsed = parse(payload)
    assert [(r.message_id, r.message.text) for r in parsed.messages] == [
        ("wamid.1", "one"), ("wamid.2", "two"), ("wamid.3", "three"), ("wamid.4", "four")]
    assert [(e.kind, e.status, e.message_id) for e in parsed.events] == [("status", "read", "wamid.out")]


# ------------------------------------------------------------------ inbound garbage


def changed(body: dict, where: str, value: Any) -> dict:
    """A copy of ``body`` with the node at ``where`` (keys and indexes, "/"-separated) replaced
    by ``value``, or removed when ``value`` is ``...``."""
    body = json.loads(json.dumps(body))
    *path, last = [int(p) if p.isdigit() else p for p in where.split("/")]
    node = body
    for step in path:
        node = node[step]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def broken(where: str, value: Any) -> dict:
    """Pywa's text delivery with the node at ``where`` replaced by ``value`` (see :func:`changed`)."""
    return changed(envelope(text("Body Text")), where, value)


def three_changes() -> dict:
    payload = envelope(text("a"))
    change = payload["entry"][0]["changes"][0]
    value = {**change["value"], "messages": [text("a"), text("b"), {"id": "wamid.3", "type": "text"}]}
    payload["entry"][0]["changes"].append({"field": "messages", "value": value})
    return payload


M = "entry[0].changes[0].value.messages[0]"
MESSAGE = "entry/0/changes/0/value/messages/0"


@pytest.mark.parametrize("payload, error", [
    (b"", "body: not JSON (Expecting value at byte 0)"),
    (b"{\"object\":", "body: not JSON (Expecting value at byte 10)"),
    (b"\xff\xfe\x00", "body: not JSON (not UTF-8, or nested too deep)"),
    (b"[" * 100_000, "body: not JSON (not UTF-8, or nested too deep)"),
    (b"[]", "body: expected an object, got an array"),
    (b"null", "body: expected an object, got null"),
    ({"object": "page", "entry": []}, "object: expected 'whatsapp_business_account', got \"page\""),
    ({"object": "whatsapp_business_account"}, "body: no 'entry'"),
    ({"object": "whatsapp_business_account", "entry": {}}, "entry: expected an array, got an object"),
    ({"object": "whatsapp_business_account", "entry": [5]}, "entry[0]: expected an object, got 5"),
    (broken("entry/0/changes", ...), "entry[0]: no 'changes'"),
    (broken("entry/0/changes/0/value", ...), "entry[0].changes[0]: no 'value'"),
    (broken("entry/0/changes/0/field", ...), "entry[0].changes[0]: no 'field'"),
    (broken("entry/0/changes/0/value", "x"), "entry[0].changes[0].value: expected an object, got \"x\""),
    (broken("entry/0/changes/0/value/messages", {}),
     "entry[0].changes[0].value.messages: expected an array, got an object"),
    (three_changes(), "entry[0].changes[1].value.messages[2]: no 'from' or 'from_user_id'"),
    (broken(f"{MESSAGE}/from_user_id", "13491208655302741918"),
     f"{M}.from_user_id: expected a business-scoped user id (CC.digits), got \"13491208655302741918\""),
    (broken("entry/0/changes/0/value/contacts/0/user_id", "US." + "1" * 129),
     "entry[0].changes[0].value.contacts[0].user_id: expected a business-scoped user id (CC.digits), got "
     + json.dumps("US." + "1" * 129)[:40]),
    (broken(f"{MESSAGE}/id", 7), f"{M}.id: expected a string, got 7"),
    (broken(f"{MESSAGE}/type", ...), f"{M}: no 'type'"),
    (broken(f"{MESSAGE}/text", ...), f"{M}: no 'text'"),
    (broken(f"{MESSAGE}/text/body", 5), f"{M}.text.body: expected a string, got 5"),
    (broken(f"{MESSAGE}/text", ["Body Text"]), f"{M}.text: expected an object, got an array"),
    (broken(MESSAGE, {**text("x"), "type": "interactive", "interactive": {"type": "button_reply",
                                                                          "button_reply": {"title": "Yes"}}}),
     f"{M}.interactive.button_reply: no 'id'"),
    (broken(MESSAGE, {**text("x"), "type": "button", "button": {"text": "Stop"}}), f"{M}.button: no 'payload'"),
    (broken(MESSAGE, media("location", latitude="north", longitude=1.0)),
     f"{M}.location.latitude: expected a number, got \"north\""),
    (broken(MESSAGE, media("location", latitude=True, longitude=1.0)),
     f"{M}.location.latitude: expected a number, got true"),
    (broken(MESSAGE, media("image", mime_type="image/jpeg")), f"{M}.image: no 'id'"),
    (broken("entry/0/changes/0/value/contacts/0/profile", "Test Name"),
     "entry[0].changes[0].value.contacts[0].profile: expected an object, got \"Test Name\""),
    (envelope(statuses=({"id": "wamid.1", "status": "sent"},)),
     "entry[0].changes[0].value.statuses[0]: no 'recipient_id'"),
    (envelope(statuses=({"id": "wamid.1", "status": "sent", "recipient_user_id": "+1"},)),
     "entry[0].changes[0].value.statuses[0].recipient_user_id: expected a business-scoped user id (CC.digits), "
     "got \"+1\""),
    (envelope(statuses=({"id": "wamid.1", "status": "failed", "recipient_id": "1", "errors": "boom"},)),
     "entry[0].changes[0].value.statuses[0].errors: expected an array, got \"boom\""),
])
def test_a_payload_of_the_wrong_shape_says_what_and_where(payload, error):
    with pytest.raises(PayloadError) as refused:
        parse(payload)
    assert str(refused.value) == error


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
KEYS = st.sampled_from(["object", "entry", "changes", "value", "field", "messages", "statuses", "contacts", "from",
                        "id", "type", "text", "body", "interactive", "button_reply", "location", "image", "profile",
                        "name", "wa_id", "status", "recipient_id", "errors", "latitude"]) | st.text(max_size=6)
GARBAGE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                       max_leaves=24)
SAMPLES = [envelope(text("hi")), three_changes(), fixture("whatsapp_status_updates_pywa.json")["failed"],
           *(fixture("whatsapp_inbound_button_reply_pywa.json").values()), *webhook_examples().values()]


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of every node in ``value``, the root included."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return [path] + [p for key, child in children for p in nodes(child, (*path, key))]


def graft(sample: Any, path: tuple, value: Any) -> Any:
    sample = json.loads(json.dumps(sample))
    if not path:
        return value
    node = sample
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return sample


@st.composite
def mutated(draw) -> bytes:
    sample = draw(st.sampled_from(SAMPLES))
    path = draw(st.sampled_from(nodes(sample)))
    return json.dumps(graft(sample, path, draw(GARBAGE))).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | GARBAGE.map(lambda v: json.dumps(v).encode()) | mutated())
def test_garbage_is_parsed_or_refused_never_a_crash(body):
    try:
        parsed = parse(body)
    except PayloadError as exc:
        assert str(exc).split(":")[0].split(".")[0].split("[")[0] in ("body", "object", "entry")
        return
    for received in parsed.messages:
        assert isinstance(received.user, str) and isinstance(received.message_id, str)
        assert isinstance(received.message.text, str) and received.message.channel == "whatsapp"
    assert all(isinstance(event, Event) and isinstance(event.kind, str) for event in parsed.events)


# ------------------------------------------------------------------ render


def render(reply: Reply) -> list[dict[str, Any]]:
    return [call.json for call in ADAPTER.render(BOT, USER, reply)]


def options(n: int, title: str = "Option {}") -> tuple[Button, ...]:
    return tuple(Button(f"o{i}", title.format(i)) for i in range(1, n + 1))


def interactive(body: dict) -> dict:
    assert body["type"] == "interactive"
    return body["interactive"]


def test_a_call_posts_to_the_number_with_the_token():
    [call] = ADAPTER.render(BOT, USER, Reply(text="Hello"))
    assert (call.method, call.path, call.form) == ("POST", "/1122334455667/messages", None)
    assert call.headers == {"Authorization": "Bearer EAAB-test.token", "Content-Type": "application/json"}
    assert call.json == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
                         "type": "text", "text": {"body": "Hello"}}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_to_three_buttons_are_reply_buttons(n):
    [body] = render(Reply(text="Pick one", buttons=options(n)))
    assert interactive(body) == {"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": f"o{i}", "title": f"Option {i}"}} for i in range(1, n + 1)]}}


def test_four_buttons_are_a_list():
    [body] = render(Reply(text="Pick one", buttons=options(4)))
    assert interactive(body) == {"type": "list", "body": {"text": "Pick one"}, "action": {
        "button": "Options", "sections": [{"rows": [{"id": f"o{i}", "title": f"Option {i}"} for i in range(1, 5)]}]}}


def test_a_list_stays_a_list_with_its_label_and_descriptions():
    rows = (Button("std", "Standard", "3 to 5 days"), Button("exp", "Express"))
    [body] = render(Reply(text="Shipping?", list=rows, list_button="Shipping options"))
    assert interactive(body)["action"] == {"button": "Shipping options", "sections": [{"rows": [
        {"id": "std", "title": "Standard", "description": "3 to 5 days"}, {"id": "exp", "title": "Express"}]}]}


def test_ten_options_are_a_list_and_eleven_numbered_text():
    [ten] = render(Reply(text="Pick one", list=options(10)))
    assert len(interactive(ten)["action"]["sections"][0]["rows"]) == 10
    [eleven] = render(Reply(text="Pick one", list=options(11)))
    assert eleven["text"]["body"] == "Pick one\n" + "\n".join(f"{i}. Option {i}" for i in range(1, 12))


def test_options_without_text_are_numbered_text():
    [body] = render(Reply(buttons=options(2)))
    assert body["text"] == {"body": "1. Option 1\n2. Option 2"}


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


def test_long_text_is_split_at_spaces_into_messages_of_4096():
    long = words(3000)
    bodies = [body["text"]["body"] for body in render(Reply(text=long))]
    assert len(bodies) == 7 and all(2048 < len(b) <= 4096 for b in bodies[:-1])
    assert " ".join(bodies) == long


@pytest.mark.parametrize("length, parts", [(4096, [4096]), (4097, [4096, 1]), (8193, [4096, 4096, 1])])
def test_text_without_spaces_is_cut_at_exactly_4096(length, parts):
    assert [len(body["text"]["body"]) for body in render(Reply(text="x" * length))] == parts


@pytest.mark.parametrize("reply, lead, body", [
    (Reply(text="y" * 1024, buttons=options(2)), [], 1024),
    (Reply(text="y" * 1025, buttons=options(2)), [1024], 1),
    (Reply(text="y" * 4096, list=options(5)), [], 4096),
    (Reply(text="y" * 4500, list=options(5)), [4096], 404),
])
def test_a_body_is_filled_to_its_limit(reply, lead, body):
    *first, last = render(reply)
    assert ([len(b["text"]["body"]) for b in first], len(interactive(last)["body"]["text"])) == (lead, body)


@pytest.mark.parametrize("reply, body_max", [
    (Reply(text=words(400), buttons=options(2)), 1024),
    (Reply(text=words(1000), list=options(5)), 4096),
])
def test_text_longer_than_a_body_goes_first(reply, body_max):
    *lead, last = render(reply)
    body = interactive(last)["body"]["text"]
    assert lead and len(body) <= body_max and all(b["type"] == "text" for b in lead)
    assert " ".join([*(b["text"]["body"] for b in lead), body]).split() == reply.text.split()


@pytest.mark.parametrize("reply, expected", [
    (Reply(text="Our menu", media_url="https://img.example/m.png", media_kind="image"),
     [{"type": "image", "image": {"link": "https://img.example/m.png", "caption": "Our menu"}}]),
    (Reply(media_url="https://img.example/m.png"), [{"type": "image", "image": {"link": "https://img.example/m.png"}}]),
    (Reply(text="Watch", media_url="https://v.example/a.mp4", media_kind="video"),
     [{"type": "video", "video": {"link": "https://v.example/a.mp4", "caption": "Watch"}}]),
    (Reply(text="Your invoice", media_url="https://f.example/i.pdf", media_kind="document", media_filename="i.pdf"),
     [{"type": "document", "document": {"link": "https://f.example/i.pdf", "caption": "Your invoice",
                                        "filename": "i.pdf"}}]),
    (Reply(text="Listen", media_url="https://a.example/s.ogg", media_kind="audio"),
     [{"type": "audio", "audio": {"link": "https://a.example/s.ogg"}}, {"type": "text", "text": {"body": "Listen"}}]),
    (Reply(media_url="https://s.example/s.webp", media_kind="sticker"),
     [{"type": "sticker", "sticker": {"link": "https://s.example/s.webp"}}]),
    (Reply(media_url="https://f.example/data.csv", media_kind="spreadsheet"),
     [{"type": "document", "document": {"link": "https://f.example/data.csv"}}]),
    (Reply(text="x" * 1024, media_url="https://img.example/m.png"),
     [{"type": "image", "image": {"link": "https://img.example/m.png", "caption": "x" * 1024}}]),
    (Reply(text="x" * 1025, media_url="https://img.example/m.png"),
     [{"type": "image", "image": {"link": "https://img.example/m.png"}},
      {"type": "text", "text": {"body": "x" * 1025}}]),
])
def test_media_go_by_link_with_the_text_as_caption_when_it_fits(reply, expected):
    assert [{k: v for k, v in body.items() if k not in ("messaging_product", "recipient_type", "to")}
            for body in render(reply)] == expected


def test_media_with_buttons_go_first_then_the_buttons():
    image, choice = render(Reply(text="Like it?", media_url="https://img.example/m.png", buttons=options(2)))
    assert image["image"] == {"link": "https://img.example/m.png"}
    assert interactive(choice)["body"] == {"text": "Like it?"}


def test_titles_too_long_are_cut_at_a_word():
    buttons = (Button("am", "Tomorrow in the morning, early"), Button("x", "x" * 30))
    [body] = render(Reply(text="When?", buttons=buttons))
    titles = [b["reply"]["title"] for b in interactive(body)["action"]["buttons"]]
    assert titles == ["Tomorrow in the…", "x" * 19 + "…"]


def test_a_cut_row_title_is_shown_whole_in_its_description():
    rows = (Button("a", "A rather long row title, longer than 24"), Button("b", "Another long row title here", "own"),
            Button("c", "Short"))
    [body] = render(Reply(text="Pick", list=rows, list_button="Choose one of these options"))
    action = interactive(body)["action"]
    assert action["button"] == "Choose one of these…"
    assert action["sections"][0]["rows"] == [
        {"id": "a", "title": "A rather long row title…", "description": "A rather long row title, longer than 24"},
        {"id": "b", "title": "Another long row title…", "description": "own"},
        {"id": "c", "title": "Short"}]


def test_labels_and_descriptions_without_spaces_are_cut_hard():
    rows = (Button("a", "a" * 30, "d" * 100), Button("b", "b" * 24, "e" * 72))
    [body] = render(Reply(text="Pick", list=rows, list_button="L" * 30))
    action = interactive(body)["action"]
    assert action["button"] == "L" * 19 + "…"
    assert action["sections"][0]["rows"] == [{"id": "a", "title": "a" * 23 + "…", "description": "d" * 71 + "…"},
                                             {"id": "b", "title": "b" * 24, "description": "e" * 72}]


def test_buttons_whose_cut_titles_collide_become_a_list():
    [body] = render(Reply(text="When?", buttons=(Button("m", "Appointment on Monday morning"),
                                                 Button("e", "Appointment on Monday evening"))))
    rows = interactive(body)["action"]["sections"][0]["rows"]
    assert [r["description"] for r in rows] == ["Appointment on Monday morning", "Appointment on Monday evening"]


@pytest.mark.parametrize("reply, form", [
    (Reply(text="Pick", buttons=(Button("i" * 256, "Yes"), Button("n", "No"))), "button"),
    (Reply(text="Pick", buttons=(Button("i" * 257, "Yes"), Button("n", "No"))), "text"),
    (Reply(text="Pick", buttons=(Button("i" * 201, "Yes"),) + options(3)), "text"),
    (Reply(text="Pick", buttons=(Button("i" * 200, "Yes"),) + options(3)), "list"),
    (Reply(text="Pick", buttons=(Button(" yes", "Yes"), Button("no", "No"))), "text"),
    (Reply(text="Pick", buttons=(Button("same", "Yes"), Button("same", "No"))), "text"),
    (Reply(text="Pick", buttons=(Button("y", " "), Button("n", "No"))), "text"),
])
def test_ids_are_never_cut_options_that_do_not_fit_take_the_next_form(reply, form):
    [body] = render(reply)
    assert (body["interactive"]["type"] if body["type"] == "interactive" else body["type"]) == form


def test_nothing_to_say_is_no_call():
    assert render(Reply()) == [] and render(Reply(text="  \n")) == []


RENDERED = [Reply(text="Hello"), Reply(text=words(3000)), Reply(text="Pick", buttons=options(1)),
            Reply(text="Pick", buttons=options(3)), Reply(text="Pick", buttons=options(4)),
            Reply(text="Pick", list=options(10), list_button="A label that is too long"),
            Reply(text="Pick", list=options(11)), Reply(buttons=options(2)),
            Reply(text=words(400), buttons=options(2)), Reply(text=words(1000), list=options(5)),
            Reply(text="Pick", buttons=options(3, "A title much too long for a button {}")),
            Reply(text="Pick", list=options(5, "A title much too long for a list row {}")),
            Reply(text="y" * 4500, list=(Button("a", "a" * 30, "d" * 100),), list_button="L" * 30),
            Reply(text="y" * 1025, buttons=(Button("a", "a" * 30),)), Reply(text="x" * 8193),
            *(Reply(text="Look", media_url="https://m.example/f", media_kind=kind, media_filename="f.bin")
              for kind in (None, "image", "video", "audio", "document", "sticker")),
            Reply(text="x" * 2000, media_url="https://m.example/f.png", buttons=options(3))]


def as_request(call, api_base: str = BOT.api_base) -> FakeRequest:
    """The request the fake API sees for ``call``: the path below api_base's own."""
    return FakeRequest(call.method, urlsplit(api_base).path + call.path, dict(call.headers),
                       json.dumps(call.json).encode(), {})


@pytest.mark.parametrize("reply", RENDERED)
def test_every_rendered_call_passes_the_fake_apis_check(reply):
    calls = ADAPTER.render(BOT, USER, reply)
    assert calls
    for call in calls:
        assert check(as_request(call)) == []
        assert check(as_request(call, "http://127.0.0.1:8081")) == []


# ------------------------------------------------------------------ the fake API's check

SENT_KINDS = {"text", "image", "video", "audio", "document", "sticker"}
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer EAAB-test.token"}


def request(body: Any, path: str = "/v23.0/106540352242922/messages", method: str = "POST",
            headers: dict | None = None) -> FakeRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FakeRequest(method, path, HEADERS if headers is None else headers, raw, {})


def sent_kind(example: dict) -> bool:
    kind = example.get("type", "text")
    return kind in SENT_KINDS or kind == "interactive" and example["interactive"].get("type") in ("button", "list")


# Meta's examples without a type that are not text messages, though a message without a type
# is one (the docs: type defaults to "text").
NOT_TEXT = {"Send Reply to List Message",  # an interactive list that leaves out "type": "interactive"
            "Send typing indicator and read receipt"}  # not a message: it marks one read


def test_metas_examples_of_what_parlour_sends_pass_the_check():
    ours = {name: example for name, example in examples().items() if sent_kind(example) and name not in NOT_TEXT}
    assert len(ours) >= 25  # text, media by id and by link, replies to each, reply buttons, a list
    assert {name: check(request(example)) for name, example in ours.items()} == {name: [] for name in ours}


@pytest.mark.parametrize("name", sorted(NOT_TEXT))
def test_metas_examples_without_their_type_are_refused(name):
    assert check(request(examples()[name]))


def test_the_fixtures_of_metas_docs_pass_the_check():
    assert check(request(fixture("whatsapp_outbound_send_text_meta_docs.json")["request"])) == []
    buttons = fixture("whatsapp_outbound_send_interactive_buttons_meta_docs.json")["request"]
    assert check(request(buttons))  # its header is a placeholder string, not a HeaderObject
    del buttons["interactive"]["header"]
    assert check(request(buttons)) == []


def good() -> dict:
    return json.loads(json.dumps(examples()["Send Reply Button"]))


LIST = json.loads(json.dumps(examples()["Send List Message"]))
ROWS = "interactive/action/sections/0/rows"
BUTTONS = "interactive/action/buttons"


@pytest.mark.parametrize("req, problem", [
    (request(good(), method="GET"), "method: expected POST"),
    (request(good(), path="/106540352242922/message"), "path: expected /{phone_number_id}/messages"),
    (request(good(), path="/v23.0/1/2/messages"), "path: expected"),
    (request(good(), headers={"Content-Type": "application/json"}), "Authorization"),
    (request(good(), headers={**HEADERS, "Authorization": "Basic abc"}), "Authorization"),
    (request(good(), headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"}), "Content-Type"),
    (request(b"messaging_product=whatsapp"), "body: not JSON"),
    (request([good()]), "body: not a JSON object"),
    (request(changed(good(), "messaging_product", ...)), "'messaging_product' is a required property"),
    (request(changed(good(), "messaging_product", "sms")), "messaging_product: must be 'whatsapp'"),
    (request(changed(good(), "to", ...)), "'to' (a phone number) or 'recipient' (a BSUID) is required"),
    (request(changed(good(), "to", "US.13491208655302741918")), "a BSUID goes in 'recipient'"),
    (request(changed(changed(good(), "to", ...), "recipient", "16505551234")), "does not match"),
    (request(changed(good(), "type", "carousel")), "'carousel' is not one of"),
    (request(changed(good(), "emoji", "x")), "Additional properties are not allowed"),
    (request(changed(good(), f"{BUTTONS}/0/reply/title", "t" * 21)), "is too long"),
    (request(changed(good(), f"{BUTTONS}/0/reply/id", "i" * 257)), "is too long"),
    (request(changed(good(), f"{BUTTONS}/0/reply/title", "<BUTTON_TITLE_2>")), "button titles must be unique"),
    (request(changed(good(), BUTTONS, good()["interactive"]["action"]["buttons"] * 2)), "is too long"),
    (request(changed(good(), f"{BUTTONS}/0/type", "url")), "'url' is not one of ['reply']"),
    (request(changed(good(), "interactive/body/text", "b" * 1025)), "at most 1024 characters with reply buttons"),
    (request(changed(good(), "interactive/body", ...)), "needs body text"),
    (request(changed(good(), "interactive/type", "list")), "a list message needs 'button'"),
    (request(changed(LIST, "interactive/type", "button")), "a button message needs 'buttons'"),
    (request(changed(LIST, f"{ROWS}/0/title", "t" * 25)), "is too long"),
    (request(changed(LIST, f"{ROWS}/0/id", "i" * 201)), "is too long"),
    (request(changed(LIST, f"{ROWS}/0/description", "d" * 73)), "is too long"),
    (request(changed(LIST, "interactive/action/button", "b" * 21)), "is too long"),
    (request(changed(LIST, f"{ROWS}/1/id", "<LIST_SECTION_1_ROW_1_ID>")), "row ids must be unique"),
    (request(changed(LIST, ROWS, [{"id": f"r{i}", "title": "t"} for i in range(9)])), "1 to 10 rows in all, got 11"),
    (request(changed(LIST, "interactive/action/sections/1/title", ...)), "every section needs a title"),
    (request(changed(LIST, "interactive/body/text", "b" * 4097)), "is too long"),
    (request({**examples()["Send Text Message"], "text": {"body": ""}}), "$.text.body: 1 to 4096 characters"),
    (request({**examples()["Send Text Message"], "text": {"body": "b" * 4097}}), "$.text.body: 1 to 4096 characters"),
    (request({**examples()["Send Text Message"], "text": {"bdy": "hi"}}), "Additional properties are not allowed"),
    (request({**examples()["Send Image Message by URL"], "image": {"caption": "no media"}}), "'id' is a required"),
    (request({**examples()["Send Image Message by URL"], "image": {"link": "https://x", "caption": "c" * 1025}}),
     "caption: at most 1024 characters"),
    (request({**examples()["Send Audio Message by URL"], "audio": {"link": "https://x", "caption": "c"}}),
     "only image, video and document messages have a caption"),
])
def test_the_check_refuses_what_meta_would_refuse(req, problem):
    problems = check(req)
    assert any(problem in p for p in problems), problems


def test_the_fake_answers_as_meta_does():
    status, body = SPEC.answer(request({**examples()["Send Text Message"], "to": "+16505551234"}), 7)
    assert (status, body) == (200, {"messaging_product": "whatsapp",
                                    "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
                                    "messages": [{"id": "wamid.7"}]})


async def test_rendered_calls_are_delivered_by_the_fake_api():
    fake = FakeAPI(SPEC)
    async with TestServer(fake.app()) as server, aiohttp.ClientSession() as http:
        bot = BOT.model_copy(update={"api_base": str(server.make_url("/v23.0"))})
        calls = ADAPTER.render(bot, USER, Reply(text=words(1000), list=options(5)))
        verdicts = []
        for call in calls:
            async with http.request(call.method, bot.api_base + call.path, json=call.json, headers=call.headers) as got:
                verdicts.append(ADAPTER.judge(got.status, got.headers, await got.read()))
                answer = json.loads(await got.read())
        assert (fake.rejected, len(fake.delivered), verdicts) == ([], len(calls), [Verdict("sent")] * len(calls))
        assert answer["messages"] == [{"id": f"wamid.{len(calls)}"}]
        fake.script.append((400, {}, {"error": {"message": "(#131047) Re-engagement message", "code": 131047}}))
        call = calls[0]
        async with http.request(call.method, bot.api_base + call.path, json=call.json, headers=call.headers) as got:
            assert ADAPTER.judge(got.status, got.headers, await got.read()).outcome == "failed"


# ------------------------------------------------------------------ judge


def meta_error(code: int, message: str, details: str | None = None) -> bytes:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az8or2"}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize("status, headers, body, verdict", [
    (200, {}, json.dumps(fixture("whatsapp_outbound_send_text_meta_docs.json")["response"]).encode(), Verdict("sent")),
    (429, {"Retry-After": "7"}, b"", Verdict("retry", 7.0, "HTTP 429")),
    (500, {}, b"<html>oops</html>", Verdict("retry", None, "HTTP 500")),
    (503, {}, meta_error(131016, "Service unavailable"),
     Verdict("retry", None, "WhatsApp error 131016: Service unavailable")),
    (400, {}, meta_error(130429, "(#130429) Rate limit hit", "Too many messages"),
     Verdict("retry", None, "WhatsApp error 130429: (#130429) Rate limit hit (Too many messages)")),
    (400, {"Retry-After": "30"}, meta_error(131048, "(#131048) Spam rate limit hit"),
     Verdict("retry", 30.0, "WhatsApp error 131048: (#131048) Spam rate limit hit")),
    (400, {}, meta_error(80007, "(#80007) Rate limit issues"),
     Verdict("retry", None, "WhatsApp error 80007: (#80007) Rate limit issues")),
    (400, {}, meta_error(131047, "(#131047) Re-engagement message", "More than 24 hours have passed"),
     Verdict("failed", None,
             "WhatsApp error 131047: (#131047) Re-engagement message (More than 24 hours have passed)")),
    (400, {}, meta_error(131026, "(#131026) Message Undeliverable"),
     Verdict("failed", None, "WhatsApp error 131026: (#131026) Message Undeliverable")),
    (400, {}, meta_error(100, "(#100) Invalid parameter"),
     Verdict("failed", None, "WhatsApp error 100: (#100) Invalid parameter")),
    (401, {}, meta_error(190, "Error validating access token"),
     Verdict("failed", None, "WhatsApp error 190: Error validating access token")),
    (400, {}, b"not json", Verdict("failed", None, "HTTP 400")),
    (400, {}, b'{"error": "flat"}', Verdict("failed", None, "HTTP 400")),
    (400, {}, b'{"error": {"code": true, "message": 5}}', Verdict("failed", None, "WhatsApp error None: 5")),
])
def test_judge_reads_the_status_and_metas_error_body(status, headers, body, verdict):
    assert ADAPTER.judge(status, headers, body) == verdict


def test_the_adapter_is_registered_by_name_and_settings():
    assert (WhatsApp.name, WhatsApp.settings, BOT.api_base) == ("whatsapp", WhatsAppBot, "https://graph.facebook.com/v23.0")
    with pytest.raises(ValueError):
        WhatsAppBot(phone_number_id="../me", access_token="t", app_secret="s", verify_token="v")
    assert "EAAB-test.token" not in repr(BOT)


# ------------------------------------------------------------------ prompts in the ids


def pressed(kind: str, option_id: str) -> UserMessage:
    reply = {"type": kind, kind: {"id": option_id, "title": "Quit"}}
    [received] = parse(envelope({**text("x"), "type": "interactive", "interactive": reply})).messages
    return received.message


@pytest.mark.parametrize("reply, kind", [
    (Reply(text="Pick", buttons=options(2), prompt="p3"), "button"),
    (Reply(text="Pick", buttons=options(5), prompt="p3"), "list"),
    (Reply(text="Pick", list=options(2), prompt="p3"), "list"),
])
def test_ids_carry_their_prompt_and_a_press_gives_it_back(reply, kind):
    [body] = render(reply)
    action = interactive(body)["action"]
    ids = [b["reply"]["id"] for b in action["buttons"]] if kind == "button" else \
        [row["id"] for row in action["sections"][0]["rows"]]
    assert ids == [f"p3|o{i}" for i in range(1, len(ids) + 1)]
    answer = pressed(f"{kind}_reply", ids[0])
    assert (answer.button, answer.prompt, answer.text) == ("o1", "p3", "Quit")


def test_an_id_too_long_with_its_prompt_goes_without_it_and_a_press_of_it_names_none():
    long_id = "i" * 198  # a row id holds 200: with "p3|" it would not fit
    [body] = render(Reply(text="Pick", buttons=(Button(long_id, "Yes"),) + options(3), prompt="p3"))
    assert interactive(body)["action"]["sections"][0]["rows"][1]["id"] == "o1"
    answer = pressed("list_reply", long_id)
    assert (answer.button, answer.prompt) == (long_id, None)


def test_every_rendered_call_with_a_prompt_passes_the_fake_apis_check():
    for reply in RENDERED:
        for call in ADAPTER.render(BOT, USER, replace(reply, prompt="p123456")):
            assert check(as_request(call)) == []
