"""The Twilio adapter against twilio-python's signing vectors, Twilio's webhook parameters and a
fake Messages API that checks requests against Twilio's OpenAPI."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

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
from parlour.channels.twilio import ADAPTER, BODY_LIMIT, TwilioBot
from parlour.flow import Button, Reply
from tests.channels.fake_api import FakeAPI, FakeRequest
from tests.channels.fake_twilio import SPEC, check
from tests.servers import serve

FIXTURES = Path(__file__).parents[1] / "conformance/channels/fixtures"
VECTOR = json.loads((FIXTURES / "twilio_signature_vector.json").read_text())
ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2
BOT = TwilioBot(account_sid=ACCOUNT, auth_token=VECTOR["auth_token"], from_number="+14155550100")
USER = "+14155550199"


def bot_with(**changes) -> TwilioBot:
    """BOT with some settings changed, validated (model_copy would not turn a str into a SecretStr)."""
    return TwilioBot.model_validate(BOT.model_dump() | changes)


def signed(url: str, body: bytes, signature: str, **headers: str) -> Webhook:
    return Webhook("POST", url, {"X-Twilio-Signature": signature, **headers}, body)


def form_vector(**changed: str) -> Webhook:
    return signed(VECTOR["url"], urlencode(VECTOR["params"] | changed).encode(), VECTOR["x_twilio_signature"])


def json_vector(body: str | None = None) -> Webhook:
    variant = VECTOR["json_body_variant"]
    return signed(variant["url"], (body or variant["body"]).encode(), variant["x_twilio_signature"],
                  **{"Content-Type": "application/json"})


def as_request(call: Call) -> FakeRequest:
    """The request an HTTP client makes of ``call``."""
    headers = {**call.headers, "Content-Type": "application/x-www-form-urlencoded"}
    return FakeRequest(call.method, call.path, headers, urlencode(call.form or {}).encode(), {})


# ---------------------------------------------------------------- settings


def test_a_bot_needs_a_sender_and_real_sids():
    with pytest.raises(ValidationError, match="from_number or messaging_service_sid"):
        TwilioBot(account_sid=ACCOUNT, auth_token="t")
    with pytest.raises(ValidationError, match="account_sid"):
        TwilioBot(account_sid="AC123", auth_token="t", from_number="+1")
    with pytest.raises(ValidationError, match="messaging_service_sid"):
        TwilioBot(account_sid=ACCOUNT, auth_token="t", messaging_service_sid="MG123")
    assert TwilioBot(account_sid=ACCOUNT, auth_token="t", messaging_service_sid=SERVICE).api_base == \
        "https://api.twilio.com"


# ---------------------------------------------------------------- verify


def test_the_form_vector_verifies():
    ADAPTER.verify(BOT, form_vector())


def test_the_json_body_vector_verifies():
    ADAPTER.verify(BOT, json_vector())


def test_repeated_keys_sign_each_value_in_order():
    # twilio-python tests/unit/test_request_validator.py @30368b08:
    # test_compute_signature_duplicate_query_dict ("Digits" twice, given out of order).
    body = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234"
    ADAPTER.verify(BOT, signed(VECTOR["url"], body, "IK+Dwps556ElfBT0I3Rgjkr1wJU="))


@pytest.mark.parametrize("url, signature", [
    # The same file's port tests: Twilio signs with or without the port, inconsistently.
    ("https://mycompany.com/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", VECTOR["x_twilio_signature"]),  # signed without
])
def test_a_url_verifies_with_or_without_its_port(url, signature):
    ADAPTER.verify(BOT, signed(url, urlencode(VECTOR["params"]).encode(), signature))


def failure(bot: TwilioBot, webhook: Webhook) -> str:
    with pytest.raises(SignatureError) as caught:
        ADAPTER.verify(bot, webhook)
    return caught.value.reason


PROXIED = "http://10.0.0.7:8080/myapp.php?foo=1&bar=2"  # what parlour sees behind a proxy


@pytest.mark.parametrize("bot, webhook, reason", [
    (bot_with(auth_token="54321"), form_vector(), "mismatch"),
    (BOT, Webhook("POST", VECTOR["url"], {}, urlencode(VECTOR["params"]).encode()), "missing"),
    (BOT, signed(VECTOR["url"], b"", ""), "missing"),
    (BOT, signed(VECTOR["url"], b"", "not base64!"), "malformed"),
    (BOT, signed(VECTOR["url"], b"", base64.b64encode(b"short").decode()), "malformed"),
    (BOT, signed(VECTOR["url"], b"", "é" * 28), "malformed"),
    (BOT, form_vector(Digits="9999"), "mismatch"),  # a parameter altered after signing
    (BOT, form_vector(Extra=""), "mismatch"),  # a parameter added
    (BOT, signed(PROXIED, urlencode(VECTOR["params"]).encode(), VECTOR["x_twilio_signature"]), "mismatch"),
    (BOT, json_vector('{"property": "value", "boolean": false}'), "mismatch"),  # not the body bodySHA256 names
])
def test_every_failure_has_its_reason(bot, webhook, reason):
    assert failure(bot, webhook) == reason


def test_behind_a_proxy_the_registered_public_url_is_what_twilio_signed():
    bot = bot_with(public_url="https://mycompany.com/myapp.php")
    ADAPTER.verify(bot, signed(PROXIED, urlencode(VECTOR["params"]).encode(), VECTOR["x_twilio_signature"]))
    variant = VECTOR["json_body_variant"]
    proxied_json = variant["url"].replace("https://mycompany.com", "http://10.0.0.7:8080")
    ADAPTER.verify(bot, signed(proxied_json, variant["body"].encode(), variant["x_twilio_signature"]))
    # The public URL does not make a bad signature good.
    assert failure(bot, signed(PROXIED, urlencode(VECTOR["params"] | {"Digits": "0"}).encode(),
                               VECTOR["x_twilio_signature"])) == "mismatch"


# ---------------------------------------------------------------- parse

# Twilio's inbound message parameters (docs: "Twilio's request to your incoming message Webhook URL").
SMS = {
    "ToCountry": "US", "ToState": "CA", "SmsMessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "NumMedia": "0", "ToCity": "SAN FRANCISCO", "FromZip": "94105", "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "FromState": "CA", "SmsStatus": "received", "FromCity": "SAN FRANCISCO", "Body": "Hello there",
    "FromCountry": "US", "To": "+14155550100", "ToZip": "94105", "NumSegments": "1",
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "AccountSid": ACCOUNT, "From": USER,
    "ApiVersion": "2010-04-01",
}
WHATSAPP = SMS | {"From": "whatsapp:+14155550199", "To": "whatsapp:+14155550100", "ProfileName": "Ada",
                  "WaId": "14155550199", "MessageType": "text"}


def parse(form: dict[str, str]):
    return ADAPTER.parse(BOT, Webhook("POST", "https://example.org/twilio", {}, urlencode(form).encode()))


def test_an_sms_is_a_turn():
    parsed = parse(SMS)
    (received,) = parsed.messages
    assert parsed.events == ()
    assert (received.user, received.message_id) == (USER, SMS["MessageSid"])
    message = received.message
    assert (message.text, message.kind, message.user_id, message.channel) == ("Hello there", "text", USER, "twilio")
    assert message.user_name is None


def test_a_whatsapp_message_carries_the_profile_name():
    (received,) = parse(WHATSAPP).messages
    assert received.user == "whatsapp:+14155550199"
    assert received.message.user_name == "Ada"


def test_media_items_are_listed():
    form = WHATSAPP | {"Body": "", "NumMedia": "2", "MessageType": "image",
                       "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME0",
                       "MediaContentType0": "image/jpeg",
                       "MediaUrl1": "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
                       "MediaContentType1": "application/pdf"}
    message = parse(form).messages[0].message
    assert message.kind == "media"
    assert message.data["url"] == form["MediaUrl0"]
    assert message.data["content_type"] == "image/jpeg"
    assert [m["content_type"] for m in message.data["media"]] == ["image/jpeg", "application/pdf"]


def test_a_shared_location():
    form = WHATSAPP | {"Body": "", "Latitude": "37.7879277", "Longitude": "-122.3937508",
                       "Address": "375 Beale St, San Francisco", "Label": "Twilio HQ", "MessageType": "location"}
    message = parse(form).messages[0].message
    assert message.kind == "location"
    assert message.data == {"latitude": 37.7879277, "longitude": -122.3937508,
                            "address": "375 Beale St, San Francisco", "label": "Twilio HQ"}


def test_a_whatsapp_quick_reply_is_a_button():
    form = WHATSAPP | {"Body": "Yes please", "ButtonText": "Yes please", "ButtonPayload": "yes",
                       "MessageType": "button"}
    message = parse(form).messages[0].message
    assert (message.kind, message.button, message.text) == ("button", "yes", "Yes please")


# A status callback (docs: "Twilio's request to the StatusCallback URL"): no Body; To is the user.
STATUS = {"MessageSid": "SM" + "ab" * 16, "SmsSid": "SM" + "ab" * 16, "AccountSid": ACCOUNT,
          "From": "+14155550100", "To": USER, "ApiVersion": "2010-04-01"}


@pytest.mark.parametrize("twilio, kind, status", [
    ("queued", "status_other", None), ("sent", "status", "sent"), ("delivered", "status", "delivered"),
    ("read", "status", "read"), ("undelivered", "status", "failed"), ("failed", "status", "failed"),
])
def test_a_status_callback_is_an_event(twilio, kind, status):
    parsed = parse(STATUS | {"MessageStatus": twilio, "SmsStatus": twilio})
    assert parsed.messages == ()
    assert parsed.events == (Event(kind, user=USER, message_id=STATUS["MessageSid"], status=status,
                                   data={"twilio_status": twilio}),)


def test_a_failed_status_keeps_the_error_code():
    (event,) = parse(STATUS | {"MessageStatus": "undelivered", "ErrorCode": "30003"}).events
    assert event.data == {"twilio_status": "undelivered", "error_code": "30003"}


@pytest.mark.parametrize("form", [SMS, WHATSAPP, STATUS | {"MessageStatus": "delivered"}], ids=["sms", "wa", "status"])
def test_every_webhook_is_answered_with_empty_twiml(form):
    """Twilio reads the answer to an inbound message as TwiML and logs error 11200 for one that
    is not. The text is twilio-python's ``MessagingResponse()`` (its tests/unit/twiml:
    testEmptyResponse): a Response without verbs, so Twilio sends nothing itself."""
    answer = parse(form).answer
    assert answer.content_type == "text/xml"
    assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    root = ElementTree.fromstring(answer.text.encode())
    assert (root.tag, list(root), root.attrib, root.text) == ("Response", [], {}, None)


@pytest.mark.parametrize("body, says", [
    (b"", "no MessageSid"),
    (b'{"MessageSid": "SM1"}', "not a UTF-8 form"),
    (b"Body=\xff", "not a UTF-8 form"),
    (urlencode({"MessageSid": "SM1", "From": USER}).encode(), "neither Body nor NumMedia"),
    (urlencode(SMS | {"From": ""}).encode(), "has no From"),
    (urlencode(SMS | {"NumMedia": "many"}).encode(), "NumMedia 'many'"),
    (urlencode(SMS | {"NumMedia": "11"}).encode(), "NumMedia '11'"),
    (urlencode(SMS | {"NumMedia": "9" * 5000}).encode(), "NumMedia '9999"),  # past int()'s digit limit
    (urlencode(SMS | {"NumMedia": "2", "MediaUrl0": "https://x/0"}).encode(), "MediaUrl1 is missing"),
    (urlencode(SMS | {"Latitude": "north", "Longitude": "1"}).encode(), "numeric Latitude"),
    (urlencode(SMS | {"Latitude": "1"}).encode(), "numeric Latitude"),
    (urlencode(SMS | {"Latitude": "91", "Longitude": "0"}).encode(), "not a place on Earth"),
    ("&".join(["a=b"] * 600).encode(), "not a UTF-8 form"),
])
def test_bad_bodies_say_what_is_wrong(body, says):
    with pytest.raises(PayloadError, match=says):
        ADAPTER.parse(BOT, Webhook("POST", "https://example.org/twilio", {}, body))


KEYS = st.sampled_from([*SMS, "MessageStatus", "NumMedia", "MediaUrl0", "Latitude", "Longitude", "ButtonPayload"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), st.text(max_size=12), max_size=12)
                 .map(lambda form: urlencode(form).encode())))
def test_garbage_is_a_payload_error_never_a_crash(body):
    webhook = Webhook("POST", "https://example.org/twilio", {"X-Twilio-Signature": "x"}, body)
    try:
        ADAPTER.parse(BOT, webhook)
    except PayloadError:
        pass
    with pytest.raises(SignatureError):
        ADAPTER.verify(BOT, webhook)


# ---------------------------------------------------------------- render


def test_a_text_reply():
    (call,) = ADAPTER.render(BOT, USER, Reply(text="Hello"))
    assert (call.method, call.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    assert call.form == {"To": USER, "From": "+14155550100", "Body": "Hello"}
    assert call.json is None
    scheme, encoded = call.headers["Authorization"].split(" ")
    assert (scheme, base64.b64decode(encoded).decode()) == ("Basic", f"{ACCOUNT}:{VECTOR['auth_token']}")


def test_a_messaging_service_sends_instead_of_a_number_or_picks_it():
    service = bot_with(from_number=None, messaging_service_sid=SERVICE)
    assert ADAPTER.render(service, USER, Reply(text="x"))[0].form == {"To": USER, "MessagingServiceSid": SERVICE,
                                                                      "Body": "x"}
    both = bot_with(messaging_service_sid=SERVICE)
    assert ADAPTER.render(both, USER, Reply(text="x"))[0].form["From"] == "+14155550100"


def test_buttons_and_list_rows_are_numbered_lines():
    buttons = Reply(text="Pick one", buttons=(Button("yes", "Yes"), Button("no", "No")))
    assert [c.form["Body"] for c in ADAPTER.render(BOT, USER, buttons)] == ["Pick one\n1. Yes\n2. No"]
    rows = Reply(text="Where?", list_button="Shops", list=(Button("a", "Paris", "rue X"), Button("b", "Rome")))
    assert [c.form["Body"] for c in ADAPTER.render(BOT, USER, rows)] == ["Where?\n1. Paris\n2. Rome"]


def test_a_long_text_is_split_within_the_limit():
    text = " ".join(f"word{n}" for n in range(800))  # about 5,500 characters
    calls = ADAPTER.render(BOT, USER, Reply(text=text))
    bodies = [c.form["Body"] for c in calls]
    assert len(bodies) == 4
    assert all(len(body) <= BODY_LIMIT for body in bodies)
    assert " ".join(bodies).split() == text.split()


def test_emoji_are_split_so_that_even_utf16_counting_fits():
    calls = ADAPTER.render(BOT, USER, Reply(text="👍" * 1500))
    assert all(len(c.form["Body"].encode("utf-16-le")) // 2 <= BODY_LIMIT for c in calls)
    assert "".join(c.form["Body"] for c in calls) == "👍" * 1500


def test_media_rides_with_the_first_part_and_is_not_repeated_in_the_text():
    (call,) = ADAPTER.render(BOT, USER, Reply(text="Our hours", media_url="https://example.org/hours.png"))
    assert call.form["MediaUrl"] == "https://example.org/hours.png"
    assert call.form["Body"] == "Our hours"
    (alone,) = ADAPTER.render(BOT, USER, Reply(media_url="https://example.org/hours.png"))
    assert "Body" not in alone.form and alone.form["MediaUrl"] == "https://example.org/hours.png"


def test_an_empty_reply_sends_nothing():
    assert ADAPTER.render(BOT, USER, Reply()) == []


REPLIES = [
    Reply(text="Hello"),
    Reply(text="Pick", buttons=(Button("a", "A"), Button("b", "B"), Button("c", "C"))),
    Reply(list_button="Menu", list=(Button("a", "A", "first"),)),
    Reply(text="x" * 5000),
    Reply(text="Look", media_url="https://example.org/a.jpg", media_kind="image"),
    Reply(media_url="https://example.org/a.pdf", media_kind="document", media_filename="a.pdf"),
]
BOTS = [BOT, bot_with(from_number=None, messaging_service_sid=SERVICE),
        bot_with(from_number="whatsapp:+14155550100")]


@pytest.mark.parametrize("bot", BOTS)
@pytest.mark.parametrize("reply", REPLIES)
def test_every_rendered_call_passes_the_fake(bot, reply):
    calls = ADAPTER.render(bot, "whatsapp:+14155550199" if bot.from_number and ":" in bot.from_number else USER,
                           reply)
    assert calls
    for call in calls:
        assert check(as_request(call)) == []


GOOD = as_request(ADAPTER.render(BOT, USER, Reply(text="Hello"))[0])


def broken(path: str | None = None, method: str = "POST", headers: dict | None = None, body: str | None = None):
    return FakeRequest(method, path or GOOD.path, GOOD.headers if headers is None else headers,
                       GOOD.body if body is None else body.encode(), {})


def credentials(user: str, token: str = "t") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("request_, says", [
    (broken(method="GET"), "is not POST"),
    (broken(path=f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"), "is not POST"),
    (broken(path="/2010-04-01/Accounts/AC123/Messages.json", headers=credentials("AC123")), "AC + 32 hex"),
    (broken(headers={"Content-Type": "application/x-www-form-urlencoded"}), "no HTTP Basic"),
    (broken(headers=credentials("AC" + "f" * 32)), "not the account in the path"),
    (broken(headers=credentials(ACCOUNT, "")), "without an auth token"),
    (broken(headers={**GOOD.headers, "Content-Type": "application/json"}), "not application/x-www-form"),
    (broken(body="From=%2B14155550100&Body=Hi"), "missing required parameter To"),
    (broken(body="To=%2B14155550199&Body=Hi"), "no sender"),
    (broken(body="To=%2B14155550199&From=%2B14155550100"), "no Body, MediaUrl or ContentSid"),
    (broken(body=GOOD.body.decode() + "&Buttons=yes"), "unknown parameter Buttons"),
    (broken(body=GOOD.body.decode() + "&To=%2B14155550198"), "To is given 2 times"),
    (broken(body="To=%2B14155550199&From=%2B14155550100&Body=" + "x" * 1601), "over 1600"),
    (broken(body="To=%2B14155550199&MessagingServiceSid=MG1&Body=Hi"), "does not match"),
    (broken(body=GOOD.body.decode() + "&SmartEncoded=yes"), "not a boolean"),
    (broken(body=GOOD.body.decode() + "&ValidityPeriod=soon"), "not an integer"),
    (broken(body=GOOD.body.decode() + "&ContentRetention=forever"), "not one of"),
    (broken(body=GOOD.body.decode() + "&MediaUrl=hours.png"), "not an http(s) URL"),
    (broken(body="To=call+me%21&From=%2B14155550100&Body=Hi"), "not a phone number"),
    (broken(body="&".join([GOOD.body.decode()] + ["MediaUrl=https://x/a"] * 11)), "over 10"),
])
def test_the_fake_rejects_broken_requests(request_, says):
    problems = check(request_)
    assert any(says in problem for problem in problems), problems


def test_the_fake_answers_like_the_example():
    status, body = SPEC.answer(GOOD, 7)
    example = json.loads((Path(__file__).parents[1] / "conformance/channels/specs/twilio/EXTRACT_Messages-create.json")
                         .read_text())["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"]
    keys = example["responses"]["201"]["content"]["application/json"]["examples"]["create"]["value"].keys()
    assert status == 201 and body.keys() == keys
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert (body["status"], body["to"], body["body"], body["account_sid"]) == ("queued", USER, "Hello", ACCOUNT)


async def test_rendered_calls_go_through_the_fake_over_http():
    api = FakeAPI(SPEC)
    async with serve(api.app()) as base, aiohttp.ClientSession() as session:
        bot = bot_with(api_base=base)
        for call in ADAPTER.render(bot, USER, Reply(text="y" * 3000, media_url="https://example.org/a.png")):
            async with session.request(call.method, bot.api_base + call.path, data=call.form,
                                       headers=call.headers) as response:
                verdict = ADAPTER.judge(response.status, response.headers, await response.read())
            assert verdict.outcome == "sent", verdict
    assert api.rejected == [] and len(api.delivered) == 2


# ---------------------------------------------------------------- judge

ERROR = json.dumps({"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}).encode()


@pytest.mark.parametrize("status, headers, body, outcome, after_s, reason", [
    (201, {}, b"{}", "sent", None, ""),
    (429, {"Retry-After": "3"}, b'{"code": 20429, "message": "Too Many Requests"}', "retry", 3.0,
     "HTTP 429: Twilio 20429: Too Many Requests"),
    (503, {}, b"<html>", "retry", None, "HTTP 503"),
    (400, {}, ERROR, "failed", None, "HTTP 400: Twilio 21211: The 'To' number +1555 is not a valid phone number."),
    (401, {}, b"not json", "failed", None, "HTTP 401"),
    (404, {}, b"[1, 2]", "failed", None, "HTTP 404"),
])
def test_judge(status, headers, body, outcome, after_s, reason):
    verdict = ADAPTER.judge(status, headers, body)
    assert (verdict.outcome, verdict.after_s, verdict.reason) == (outcome, after_s, reason)
