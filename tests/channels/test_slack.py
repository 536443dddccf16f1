"""The Slack adapter against Slack's own data: signing vectors, Events API and interactivity
payloads from Slack's docs and SDKs, Block Kit limits, and the fake chat.postMessage."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from parlour.channels.base import (
    Answer,
    BotSettings,
    Call,
    Parsed,
    PayloadError,
    Received,
    SignatureError,
    Verdict,
    Webhook,
)
from parlour.channels.slack import ADAPTER, Slack, SlackBot
from parlour.flow import Button, Reply, UserMessage
from tests.channels.fake_api import FakeAPI, FakeRequest
from tests.channels.fake_slack import EXTRACT, SPEC
from tests.servers import serve

FIXTURES = Path(__file__).parent.parent / "conformance/channels/fixtures"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT = SlackBot(bot_token="xoxb-test-token", signing_secret=SECRET, bot_user_id="U0BOT0001")
NOW = 1_700_000_000
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
CHANNEL = "C0123456789"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def signed(body: bytes, content_type: str = JSON, *, key: str = SECRET, timestamp: int = NOW,
           now: float = NOW) -> Webhook:
    """A webhook as Slack sends it, signed with ``key`` at ``timestamp``."""
    digest = hmac.new(key.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = CIMultiDict({"Content-Type": content_type, "X-Slack-Signature": f"v0={digest}",
                           "X-Slack-Request-Timestamp": str(timestamp)})
    return Webhook("POST", "https://bot.example/slack", CIMultiDictProxy(headers), body, now=now)


def headed(webhook: Webhook, **changes: str | None) -> Webhook:
    """The webhook with headers replaced (``X_Slack_Signature=...``) or removed (None)."""
    headers = CIMultiDict(webhook.headers)
    for name, value in changes.items():
        headers.popall(name.replace("_", "-"), None)
        if value is not None:
            headers[name.replace("_", "-")] = value
    return dataclasses.replace(webhook, headers=CIMultiDictProxy(headers))


def received(payload: dict[str, Any]) -> Parsed:
    """What a verified Events API body carries."""
    webhook = signed(json.dumps(payload).encode())
    ADAPTER.verify(BOT, webhook)
    return ADAPTER.parse(BOT, webhook)


def clicked(payload: dict[str, Any]) -> Parsed:
    """What a verified interaction carries, on the wire as SOURCES.txt describes it."""
    webhook = signed(b"payload=" + quote(json.dumps(payload)).encode(), FORM)
    ADAPTER.verify(BOT, webhook)
    return ADAPTER.parse(BOT, webhook)


def event(**fields: Any) -> dict[str, Any]:
    body = fixture("slack_event_callback_message_channels_official.json")
    body["event"].update(fields)
    return {**body, "event": {k: v for k, v in body["event"].items() if v is not None}}


def request(call: Call) -> FakeRequest:
    """The request the delivery supervisor makes of a Call, as the fake receives it."""
    body = json.dumps(call.json).encode() if call.json is not None else b""
    return FakeRequest(call.method, call.path, dict(call.headers), body, {})


# ---------------------------------------------------------------- the adapter and its settings


def test_the_adapter_is_slack_with_its_settings():
    assert (ADAPTER.name, ADAPTER.settings, type(ADAPTER)) == ("slack", SlackBot, Slack)
    bot = SlackBot(bot_token="xoxb-1", signing_secret="s")
    assert bot.api_base == "https://slack.com/api" and bot.bot_user_id is None
    assert "xoxb-1" not in repr(bot)


def test_there_is_no_get_handshake():
    assert ADAPTER.handshake(BOT, Webhook("GET", "https://bot.example/slack", {}, b"")) is None


def test_other_channels_settings_are_refused():
    with pytest.raises(TypeError, match="SlackBot"):
        ADAPTER.parse(BotSettings(api_base="http://x"), signed(b"{}"))


# ---------------------------------------------------------------- verify


@pytest.mark.parametrize("name", ["slack_sdk_official_docs_vector", "rasa_vector"])
def test_slacks_signature_vectors_verify(name):
    vector = fixture("slack_signature_vectors.json")[name]
    headers = CIMultiDictProxy(CIMultiDict({"X-Slack-Signature": vector["x_slack_signature"],
                                            "X-Slack-Request-Timestamp": vector["x_slack_request_timestamp"]}))
    bot = SlackBot(bot_token="xoxb-1", signing_secret=vector["signing_secret"])
    webhook = Webhook("POST", "https://bot.example/slack", headers, vector["raw_body"].encode(),
                      now=float(vector["x_slack_request_timestamp"]))
    ADAPTER.verify(bot, webhook)
    with pytest.raises(SignatureError) as caught:
        ADAPTER.verify(bot, dataclasses.replace(webhook, body=webhook.body + b"&x=1"))
    assert caught.value.reason == "mismatch"


BODY = json.dumps(fixture("slack_event_callback_message_bolt.json")).encode()
GOOD = signed(BODY)


@pytest.mark.parametrize("webhook, reason", [
    (signed(BODY, key="another-secret"), "mismatch"),
    (dataclasses.replace(GOOD, body=BODY.replace(b"Hello", b"Hallo")), "mismatch"),
    (headed(GOOD, X_Slack_Signature="v0=" + "0" * 64), "mismatch"),
    (signed(BODY, timestamp=NOW - 360), "stale"),
    (signed(BODY, timestamp=NOW + 360), "stale"),
    (headed(GOOD, X_Slack_Signature=None), "missing"),
    (headed(GOOD, X_Slack_Request_Timestamp=None), "missing"),
    (headed(GOOD, X_Slack_Request_Timestamp="soon"), "malformed"),
    (headed(GOOD, X_Slack_Request_Timestamp="1700000000.5"), "malformed"),
    (headed(GOOD, X_Slack_Request_Timestamp=""), "malformed"),
    (headed(GOOD, X_Slack_Signature="v1=" + "0" * 64), "malformed"),
    (headed(GOOD, X_Slack_Signature="v0=" + "0" * 63), "malformed"),
    (headed(GOOD, X_Slack_Signature=GOOD.headers["X-Slack-Signature"].upper()), "malformed"),
    (headed(GOOD, X_Slack_Signature="v0=" + "é" * 64), "malformed"),
], ids=["wrong secret", "body altered", "wrong signature", "6 min old", "6 min ahead", "no signature",
        "no timestamp", "word timestamp", "fraction timestamp", "empty timestamp", "v1", "short",
        "upper case", "not hex"])
def test_a_request_slack_did_not_sign_fails_with_its_reason(webhook, reason):
    with pytest.raises(SignatureError) as caught:
        ADAPTER.verify(BOT, webhook)
    assert caught.value.reason == reason


@pytest.mark.parametrize("skew_s", [-300, 0, 300])
def test_a_timestamp_within_five_minutes_either_way_is_fresh(skew_s):
    ADAPTER.verify(BOT, signed(BODY, timestamp=NOW + skew_s))


# ---------------------------------------------------------------- parse: Events API


def test_url_verification_answers_the_challenge():
    body = fixture("slack_url_verification.json")
    assert received(body) == Parsed(answer=Answer.json({"challenge": body["challenge"]}))


@pytest.mark.parametrize("name, user, message_id, text", [
    ("slack_event_callback_message_bolt.json", "C111:W111", "C111:1596183880.004200", "Hello World!"),
    ("slack_event_callback_message_channels_official.json", "C123ABC456:U123ABC456", "C123ABC456:1355517523.000005",
     "Live long and prospect."),
])
def test_a_users_message_is_a_turn_of_that_user_in_that_channel(name, user, message_id, text):
    parsed = received(fixture(name))
    user_id = user.partition(":")[2]
    assert parsed == Parsed(messages=(Received(user, message_id, UserMessage(text, user_id=user_id, channel="slack")),))


def test_a_post_that_mentions_the_bot_is_one_turn_though_slack_sends_two_events():
    body = fixture("slack_event_callback_message_bolt.json")
    mention = {**body, "event_id": "Ev222", "event": {**body["event"], "type": "app_mention"}}
    first, second = received(body), received(mention)
    assert first.messages[0].message_id == second.messages[0].message_id == "C111:1596183880.004200"


def test_a_redelivery_has_the_same_message_id():
    first = received(fixture("slack_event_callback_message_bolt.json"))
    webhook = headed(signed(BODY), X_Slack_Retry_Num="1", X_Slack_Retry_Reason="http_timeout")
    ADAPTER.verify(BOT, webhook)
    assert ADAPTER.parse(BOT, webhook).messages[0].message_id == first.messages[0].message_id


def test_an_app_mention_is_a_turn_without_the_mention():
    body = event(type="app_mention", text="<@U0BOT0001> book a table")
    (message,) = received(body).messages
    assert (message.user, message.message.text) == ("C123ABC456:U123ABC456", "book a table")


@pytest.mark.parametrize("fields", [
    {"bot_id": "B0123456789"},
    {"subtype": "bot_message", "user": None, "bot_id": "B0123456789"},
    {"user": "U0BOT0001"},
], ids=["bot_id", "bot_message", "bot_user_id"])
def test_the_bots_own_message_is_no_turn(fields):
    parsed = received(event(**fields))
    assert parsed.messages == () and [e.kind for e in parsed.events] == ["own"]
    assert parsed.events[0].message_id == "Ev123ABC456"


@pytest.mark.parametrize("fields, kind", [
    ({"subtype": "message_changed", "user": None, "message": {"text": "edited"}}, "message_changed"),
    ({"subtype": "message_deleted", "user": None, "deleted_ts": "1355517523.000005"}, "message_deleted"),
    ({"subtype": "channel_join"}, "channel_join"),
    ({"type": "reaction_added", "reaction": "thumbsup"}, "reaction_added"),
])
def test_edits_deletions_and_other_events_are_events(fields, kind):
    parsed = received(event(**fields))
    assert parsed.messages == () and [e.kind for e in parsed.events] == [kind]


def test_a_shared_file_without_text_is_media():
    file = {"id": "F0123", "name": "menu.pdf", "mimetype": "application/pdf",
            "url_private": "https://files.slack.com/files-pri/T1-F0123/menu.pdf"}
    (message,) = received(event(subtype="file_share", text="", files=[file])).messages
    assert message.message.kind == "media"
    summary = {"id": "F0123", "filename": "menu.pdf", "mime_type": "application/pdf", "url": file["url_private"]}
    assert message.message.data == {**summary, "files": [summary]}
    (captioned,) = received(event(subtype="file_share", text="our menu", files=[file])).messages
    assert (captioned.message.kind, captioned.message.data["url"]) == ("text", file["url_private"])


def test_app_rate_limited_is_an_event():
    parsed = received({"token": "t", "type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1})
    assert [(e.kind, "token" in e.data) for e in parsed.events] == [("app_rate_limited", False)]


# ---------------------------------------------------------------- parse: interactivity


def test_a_pressed_button_is_a_turn_with_its_value():
    assert clicked(fixture("slack_block_actions_payload_bolt.json")) == Parsed(messages=(Received(
        "C111:W111", "111.222:1596530385.194939",
        UserMessage("Button", button="click_me_123", kind="button", user_id="W111", user_name="primary-owner",
                    channel="slack")),))


def test_each_action_is_a_turn_and_a_button_without_value_is_its_action_id():
    payload = fixture("slack_block_actions_payload_bolt.json")
    second = {"action_id": "parlour-1", "type": "button", "action_ts": "1596530386.000001",
              "text": {"type": "plain_text", "text": "No"}}
    select = {"action_id": "pick", "type": "static_select", "action_ts": "1596530387.000001",
              "selected_option": {"text": {"type": "plain_text", "text": "Tea"}, "value": "tea"}}
    payload["actions"] += [second, select]
    messages = clicked(payload).messages
    assert [(m.message.button, m.message.text) for m in messages] == [
        ("click_me_123", "Button"), ("parlour-1", "No"), ("tea", "Tea")]
    assert len({m.message_id for m in messages}) == 3


def test_a_button_pressed_outside_a_channel_is_an_event():
    payload = fixture("slack_block_actions_payload_bolt.json")
    del payload["channel"]
    payload["container"] = {"type": "view", "view_id": "V111"}
    parsed = clicked(payload)
    assert parsed.messages == () and [e.kind for e in parsed.events] == ["block_actions"]
    assert "token" not in parsed.events[0].data and "response_url" not in parsed.events[0].data


def test_other_interactions_and_slash_commands_are_events():
    parsed = clicked({"type": "view_submission", "token": "t", "user": {"id": "W111"}, "view": {}})
    assert [(e.kind, sorted(e.data)) for e in parsed.events] == [("view_submission", ["type", "user", "view"])]
    vector = fixture("slack_signature_vectors.json")["slack_sdk_official_docs_vector"]
    parsed = ADAPTER.parse(BOT, signed(vector["raw_body"].encode(), FORM))
    assert [(e.kind, e.user, e.data["command"]) for e in parsed.events] == [
        ("command", "G8PSS9T3V:U2CERLKJA", "/webhook-collect")]


# ---------------------------------------------------------------- parse: what is not Slack's


ACTIONS = fixture("slack_block_actions_payload_bolt.json")


def form(payload: Any) -> bytes:
    return b"payload=" + quote(json.dumps(payload)).encode()


@pytest.mark.parametrize("content_type, body, where", [
    (JSON, b"{not json", "the body is not JSON"),
    (JSON, b"\xff\xfe", "the body is not JSON"),
    (JSON, b"[" * 100_000, "the body is not JSON"),
    (JSON, b"[1, 2]", "the body must be a JSON object, got a list"),
    (JSON, b"{}", "body.type must be text, got nothing"),
    (JSON, b'{"type": "url_verification"}', "body.challenge"),
    (JSON, b'{"type": "event_callback", "event_id": "Ev1"}', "body.event must be an object"),
    (JSON, json.dumps({**event(), "event_id": None}).encode(), "body.event_id"),
    (JSON, json.dumps({**event(), "event_id": "Ev:1"}).encode(), "body.event_id is not a Slack id"),
    (JSON, json.dumps(event(channel=None)).encode(), "event.channel must be text"),
    (JSON, json.dumps(event(user=7)).encode(), "event.user must be text, got int"),
    (JSON, json.dumps(event(text=["hi"])).encode(), "event.text must be text or absent"),
    (JSON, json.dumps(event(files="F1")).encode(), "event.files must be a list"),
    (JSON, json.dumps(event(files=["F1"])).encode(), "event.files[0] must be an object"),
    (FORM, b"payload=%7B&&", "the form body does not decode"),
    (FORM, b"text=hello", "no `payload` field"),
    (FORM, b"payload=%7Bnot", "the form's payload is not JSON"),
    (FORM, form({**ACTIONS, "actions": {}}), "payload.actions must be a list"),
    (FORM, form({**ACTIONS, "actions": [1]}), "payload.actions[0] must be an object, got int"),
    (FORM, form({**ACTIONS, "actions": [{"action_id": "a"}]}), "payload.actions[0].action_ts"),
    (FORM, form({**ACTIONS, "user": None}), "payload.user must be an object"),
    (FORM, form({**ACTIONS, "channel": "C111"}), "payload.channel must be an object"),
    (FORM, form({**ACTIONS, "container": []}), "payload.container must be an object or absent"),
])
def test_what_slack_does_not_send_is_a_payload_error_saying_where(content_type, body, where):
    with pytest.raises(PayloadError, match=re.escape(where)):
        ADAPTER.parse(BOT, signed(body, content_type))


SLACK_KEYS = ["type", "event", "event_id", "channel", "user", "text", "subtype", "bot_id", "files", "challenge",
              "actions", "action_id", "action_ts", "value", "container", "message_ts", "selected_option", "id",
              "url_private", "name", "user_profile", "display_name"]
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.sampled_from(
    ["event_callback", "message", "app_mention", "block_actions", "url_verification", "file_share", "C1", "U1",
     "Ev1", "1.2", "bot_message", "U0BOT0001"])
SHAPES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(SLACK_KEYS), inner, max_size=6), max_leaves=25)


def outcome(body: bytes, content_type: str) -> Parsed | None:
    try:
        return ADAPTER.parse(BOT, signed(body, content_type))
    except PayloadError:
        return None


def well_formed(parsed: Parsed | None) -> bool:
    return parsed is None or all(":" in m.user and m.message_id and m.message.channel == "slack"
                                 for m in parsed.messages)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), content_type=st.sampled_from([JSON, FORM, ""]))
def test_garbage_bytes_never_crash_parse(body, content_type):
    assert well_formed(outcome(body, content_type))


@settings(max_examples=500, deadline=None)
@given(shape=st.dictionaries(st.sampled_from(SLACK_KEYS), SHAPES, max_size=8))
def test_slack_shaped_garbage_is_a_payload_or_a_payload_error(shape):
    assert well_formed(outcome(json.dumps(shape).encode(), JSON))
    assert well_formed(outcome(form(shape), FORM))
    callback = {"type": "event_callback", "event_id": "Ev1", "event": shape}
    assert well_formed(outcome(json.dumps(callback).encode(), JSON))


@settings(max_examples=200, deadline=None)
@given(signature=st.text(max_size=80), timestamp=st.text(max_size=20))
def test_garbage_headers_never_crash_verify(signature, timestamp):
    webhook = headed(GOOD, X_Slack_Signature=signature, X_Slack_Request_Timestamp=timestamp)
    with pytest.raises(SignatureError):
        ADAPTER.verify(BOT, webhook)


# ---------------------------------------------------------------- render


def render(reply: Reply, user: str = f"{CHANNEL}:U0123456789") -> list[Call]:
    return ADAPTER.render(BOT, user, reply)


def texts(call: Call, kind: str = "section") -> list[str]:
    return [b["text"]["text"] for b in call.json["blocks"] if b["type"] == kind]


def buttons(call: Call) -> list[dict[str, Any]]:
    return [e for b in call.json["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_text_is_one_post_to_the_channel_with_the_bot_token():
    (call,) = render(Reply("Hello"))
    assert (call.method, call.path, call.form) == ("POST", "/chat.postMessage", None)
    assert call.headers["Authorization"] == "Bearer xoxb-test-token"
    assert call.json == {"channel": CHANNEL, "text": "Hello",
                         "blocks": [{"type": "section", "text": {"type": "plain_text", "text": "Hello"}}]}


def test_buttons_render_as_rasa_sends_them_with_a_unique_action_id():
    expected = fixture("slack_chat_postMessage_buttons_rasa.json")["request"]
    (call,) = render(Reply("my message", buttons=(Button("payload", "title"),)), "General:U1")
    for element in buttons(call):
        assert element.pop("action_id") == "parlour-0"
    assert {k: v for k, v in expected.items() if k != "as_user"} == call.json


@pytest.mark.parametrize("count", [1, 2, 3])
def test_buttons_are_an_actions_block_under_the_text(count):
    options = tuple(Button(f"id-{n}", f"Option {n}") for n in range(count))
    (call,) = render(Reply("Pick one", buttons=options))
    assert [b["type"] for b in call.json["blocks"]] == ["section", "actions"]
    assert [(e["value"], e["text"]["text"]) for e in buttons(call)] == [(o.id, o.title) for o in options]
    assert len({e["action_id"] for e in buttons(call)}) == count


def test_thirty_list_rows_are_two_actions_blocks_of_25_and_5():
    rows = tuple(Button(f"row-{n}", f"Row {n}", "a description") for n in range(30))
    (call,) = render(Reply("Choose", list_button="Options", list=rows))
    assert [len(b.get("elements", ())) for b in call.json["blocks"]] == [0, 25, 5]
    assert [e["value"] for e in buttons(call)] == [r.id for r in rows]
    assert len({e["action_id"] for e in buttons(call)}) == 30


def test_long_text_is_split_in_sections_and_messages_with_the_buttons_last():
    text = " ".join(f"word{n}" for n in range(20_000))  # about 128,000 characters
    calls = render(Reply(text, buttons=(Button("yes", "Yes"),)))
    assert len(calls) > 1
    for call in calls:
        assert len(call.json["text"]) <= 40_000 and len(call.json["blocks"]) <= 50
        assert all(len(part) <= 3000 for part in texts(call))
    assert " ".join(part for call in calls for part in texts(call)).split() == text.split()
    assert [buttons(call) != [] for call in calls] == [False] * (len(calls) - 1) + [True]
    assert calls[-1].json["blocks"][-1]["type"] == "actions"


def test_more_buttons_than_a_message_holds_go_on_in_another_message():
    options = tuple(Button(str(n), f"Option {n}") for n in range(1300))  # 52 actions blocks
    calls = render(Reply("Pick", buttons=options))
    assert [len(c.json["blocks"]) for c in calls] == [50, 3]
    assert [e["value"] for c in calls for e in buttons(c)] == [o.id for o in options]
    assert calls[1].json["text"].startswith("Option 1225, Option 1226")


def test_button_text_is_cut_to_75_characters_but_the_value_keeps_the_id():
    (call,) = render(Reply("Pick", buttons=(Button("long", "x" * 100),)))
    (element,) = buttons(call)
    assert (element["text"]["text"], element["value"]) == ("x" * 74 + "…", "long")


def test_the_fallback_text_is_escaped_but_the_section_shows_text_as_written():
    (call,) = render(Reply("Fish & chips <!channel> > 3"))
    assert call.json["text"] == "Fish &amp; chips &lt;!channel&gt; &gt; 3"
    assert texts(call) == ["Fish & chips <!channel> > 3"]


def test_an_image_is_an_image_block_and_other_media_a_link():
    url = "https://cdn.example/cat.png"
    (call,) = render(Reply("A cat", media_url=url, media_kind="image", media_filename="cat.png"))
    assert call.json["blocks"][0] == {"type": "image", "image_url": url, "alt_text": "cat.png"}
    assert texts(call) == ["A cat"]
    (bare,) = render(Reply(media_url=url, media_kind="image"))
    assert (bare.json["text"], [b["type"] for b in bare.json["blocks"]]) == ("image", ["image"])
    (document,) = render(Reply("The menu", media_url="https://cdn.example/menu.pdf", media_kind="document"))
    assert texts(document) == ["The menu\nhttps://cdn.example/menu.pdf"]


def test_buttons_without_text_have_their_titles_as_the_fallback():
    (call,) = render(Reply(buttons=(Button("y", "Yes"), Button("n", "No"))))
    assert call.json["text"] == "Yes, No" and [b["type"] for b in call.json["blocks"]] == ["actions"]


def test_an_empty_reply_sends_nothing():
    assert render(Reply()) == []


REPLIES = [
    Reply("Hello"),
    Reply("Pick one", buttons=(Button("a", "A"), Button("b", "B"), Button("c", "C"))),
    Reply("Choose", list_button="Options", list=tuple(Button(f"r{n}", f"Row {n}") for n in range(30))),
    Reply(" ".join(f"word{n}" for n in range(20_000)), buttons=(Button("yes", "Yes"),)),
    Reply("&" * 45_000),
    Reply("Pick", buttons=tuple(Button(str(n), "é" * 90) for n in range(1300))),
    Reply("A cat", media_url="https://cdn.example/cat.png", media_kind="image"),
    Reply(media_url="https://cdn.example/menu.pdf", media_kind="document", media_filename="menu.pdf"),
    Reply(buttons=(Button("y", ""),)),
]


@pytest.mark.parametrize("reply", REPLIES, ids=range(len(REPLIES)))
def test_every_rendered_call_passes_the_fakes_check(reply):
    calls = render(reply)
    assert calls
    for call in calls:
        assert SPEC.check(request(call)) == []


# ---------------------------------------------------------------- the fake can fail


def good() -> dict[str, Any]:
    (call,) = render(Reply("Pick one", buttons=(Button("a", "A"), Button("b", "B"))))
    return json.loads(json.dumps(call.json))


def broken(**changes: Any) -> dict[str, Any]:
    body = good()
    body.update(changes)
    return body


def with_button(**fields: Any) -> dict[str, Any]:
    body = good()
    body["blocks"][1]["elements"][0].update(fields)
    return body


HEADERS = {"Authorization": "Bearer xoxb-test-token", "Content-Type": "application/json"}


@pytest.mark.parametrize("method, path, headers, body, problem", [
    ("GET", "/chat.postMessage", HEADERS, good(), "only POST /chat.postMessage"),
    ("POST", "/chat.update", HEADERS, good(), "only POST /chat.postMessage"),
    ("POST", "/chat.postMessage", {"Content-Type": "application/json"}, good(), "Authorization"),
    ("POST", "/chat.postMessage", {**HEADERS, "Authorization": "Bearer xoxp-user"}, good(), "Authorization"),
    ("POST", "/chat.postMessage", {**HEADERS, "Content-Type": "application/x-www-form-urlencoded"}, good(),
     "Content-Type"),
    ("POST", "/chat.postMessage", HEADERS, "channel=C1&text=hi", "not JSON"),
    ("POST", "/chat.postMessage", HEADERS, [good()], "not a JSON object"),
    ("POST", "/chat.postMessage", HEADERS, broken(channel=""), "channel is required"),
    ("POST", "/chat.postMessage", HEADERS, broken(channel=None), "channel is required"),
    ("POST", "/chat.postMessage", HEADERS, broken(recipient="C1"), "recipient is not a chat.postMessage parameter"),
    ("POST", "/chat.postMessage", HEADERS, broken(unfurl_links="yes"), "unfurl_links must be bool"),
    ("POST", "/chat.postMessage", HEADERS, broken(text=None), "text is missing"),
    ("POST", "/chat.postMessage", HEADERS, broken(text="x" * 40_001), "msg_too_long"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[]), "non-empty list"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks="[]"), "blocks must be list"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "header"}]), "not a section, actions or image"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=good()["blocks"] * 26), "52 blocks, over 50"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "section", "text": {"type": "plain_text",
                                                                                       "text": "x" * 3001}}]),
     "1 to 3000 characters"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "section", "text": "hi"}]), "text object"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "section", "text": {"type": "plain_text",
                                                                                       "text": "hi"}, "x": 1}]),
     "blocks[0].x is not a field"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "b"}, "action_id": str(n)} for n in range(26)]}]),
     "1 to 25 elements"),
    ("POST", "/chat.postMessage", HEADERS, with_button(text={"type": "plain_text", "text": "x" * 76}),
     "1 to 75 characters"),
    ("POST", "/chat.postMessage", HEADERS, with_button(text={"type": "mrkdwn", "text": "*b*"}), "plain_text"),
    ("POST", "/chat.postMessage", HEADERS, with_button(value="v" * 2001), "value must be text of 1 to 2000"),
    ("POST", "/chat.postMessage", HEADERS, with_button(action_id="parlour-1"), "used 2 times"),
    ("POST", "/chat.postMessage", HEADERS, with_button(action_id="a" * 256), "action_id must be text of 1 to 255"),
    ("POST", "/chat.postMessage", HEADERS, with_button(type="static_select"), "is not a button"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "image", "image_url": "cat.png",
                                                           "alt_text": "cat"}]), "image_url"),
    ("POST", "/chat.postMessage", HEADERS, broken(blocks=[{"type": "image", "image_url": "https://x/c.png"}]),
     "alt_text"),
])
def test_the_fake_rejects_what_slack_would_not_take(method, path, headers, body, problem):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    problems = SPEC.check(FakeRequest(method, path, headers, raw, {}))
    assert any(problem in p for p in problems), problems


def test_the_fakes_answer_is_slacks_success_schema_and_judged_sent():
    spec = json.loads(EXTRACT.read_text())
    schema = {**spec["paths"]["/chat.postMessage"]["post"]["responses"]["200"]["schema"],
              "definitions": spec["definitions"]}
    (call,) = render(Reply("Hello"))
    status, body = SPEC.answer(request(call), 7)
    jsonschema.Draft4Validator(schema).validate(body)  # Swagger 2.0 schemas are draft 4
    assert (status, body["ts"], body["channel"]) == (200, "0000000007.000100", CHANNEL)
    assert ADAPTER.judge(status, {}, json.dumps(body).encode()) == Verdict("sent")


async def test_rendered_calls_go_through_the_fake_over_http():
    api = FakeAPI(SPEC)
    api.script.append((429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}))
    verdicts = []
    async with serve(api.app()) as base, aiohttp.ClientSession() as session:
        bot = SlackBot(bot_token="xoxb-test-token", signing_secret=SECRET, api_base=base)
        calls = ADAPTER.render(bot, f"{CHANNEL}:U1", REPLIES[3])
        for call in [calls[0], *calls]:  # the first is rate-limited once, then sent again
            async with session.request(call.method, bot.api_base + call.path, json=call.json,
                                       headers=call.headers) as response:
                verdicts.append(ADAPTER.judge(response.status, response.headers, await response.read()))
    assert verdicts == [Verdict("retry", 1.0, "ratelimited"), *[Verdict("sent")] * len(calls)]
    assert api.rejected == [] and len(api.delivered) == len(calls) > 1


# ---------------------------------------------------------------- judge


def answer(**body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize("status, headers, body, verdict", [
    (200, {}, answer(ok=True, channel=CHANNEL, ts="1.2"), Verdict("sent")),
    (200, {}, answer(ok=False, error="ratelimited"), Verdict("retry", None, "ratelimited")),
    (200, {"Retry-After": "3"}, answer(ok=False, error="ratelimited"), Verdict("retry", 3.0, "ratelimited")),
    (200, {}, answer(ok=False, error="internal_error"), Verdict("retry", None, "internal_error")),
    (200, {}, answer(ok=False, error="invalid_auth"), Verdict("failed", None, "invalid_auth")),
    (200, {}, answer(ok=False, error="channel_not_found"), Verdict("failed", None, "channel_not_found")),
    (200, {}, answer(ok=False, error="not_in_channel"), Verdict("failed", None, "not_in_channel")),
    (200, {}, answer(ok=False, error="invalid_blocks",
                     response_metadata={"messages": ["[ERROR] must be less than 76 characters"]}),
     Verdict("failed", None, "invalid_blocks; [ERROR] must be less than 76 characters")),
    (200, {}, answer(ok=False), Verdict("failed", None, "ok is false, with no error")),
    (200, {}, b"<html>gateway</html>", Verdict("retry", None, "the answer is not a Slack JSON object")),
    (429, {"Retry-After": "30"}, answer(ok=False, error="ratelimited"), Verdict("retry", 30.0, "ratelimited")),
    (500, {}, b"", Verdict("retry", None, "HTTP 500")),
    (503, {}, answer(ok=False, error="service_unavailable"), Verdict("retry", None, "service_unavailable")),
    (404, {}, b"", Verdict("failed", None, "HTTP 404")),
])
def test_judge_reads_slacks_answer(status, headers, body, verdict):
    assert ADAPTER.judge(status, CIMultiDictProxy(CIMultiDict(headers)), body) == verdict


@settings(max_examples=200, deadline=None)
@given(status=st.integers(100, 599), body=st.binary(max_size=100) | SHAPES.map(lambda s: json.dumps(s).encode()))
def test_judge_never_crashes(status, body):
    assert ADAPTER.judge(status, {}, body).outcome in ("sent", "retry", "failed")


# ---------------------------------------------------------------- prompts in the values


def test_a_buttons_value_carries_its_prompt_and_a_press_gives_it_back():
    (call,) = render(Reply("Pick one", buttons=(Button("tea", "Tea"), Button("a|b", "Both")), prompt="p7"))
    assert [e["value"] for e in buttons(call)] == ["p7|tea", "p7|a|b"]
    payload = fixture("slack_block_actions_payload_bolt.json")
    payload["actions"][0]["value"] = "p7|a|b"
    (pressed,) = clicked(payload).messages
    assert (pressed.message.button, pressed.message.prompt) == ("a|b", "p7")
    payload["actions"][0]["value"] = "tea"  # a button posted before prompts had ids
    (pressed,) = clicked(payload).messages
    assert (pressed.message.button, pressed.message.prompt) == ("tea", None)
