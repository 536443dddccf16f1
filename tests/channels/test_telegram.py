"""The Telegram adapter against the Bot API's own samples and the fake API's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from pydantic import ValidationError

from parlour.channels.base import (
    Answer,
    Call,
    Event,
    PayloadError,
    SignatureError,
    Verdict,
    Webhook,
)
from parlour.channels.telegram import ADAPTER, HEADER, TelegramBot
from parlour.flow import Button, Reply, UserMessage
from tests.channels.fake_api import FakeRequest
from tests.channels.fake_telegram import SPEC, check, for_token

FIXTURES = Path(__file__).parents[1] / "conformance" / "channels" / "fixtures"
TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"  # the token in the Bot API docs' examples
BOT = TelegramBot(token=TOKEN, secret_token="Sec_ret-42", bot_id=777)


def webhook(body: bytes | dict[str, Any], headers: Any = None) -> Webhook:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {HEADER: "Sec_ret-42"} if headers is None else headers
    return Webhook("POST", "https://bots.example/telegram", headers, raw)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def update(**fields: Any) -> dict[str, Any]:
    return {"update_id": 5001, **fields}


def message(**fields: Any) -> dict[str, Any]:
    sender = {"id": 42, "is_bot": False, "first_name": "Ada", "last_name": "L", "username": "ada"}
    return {"message_id": 9, "date": 1700000000, "chat": {"id": 42, "type": "private"},
            "from": sender} | fields


def request(call: Call) -> FakeRequest:
    """The request an HTTP client makes of a Call (aiohttp's ``json=``)."""
    assert call.form is None
    return FakeRequest(call.method, call.path, {"Content-Type": "application/json"},
                       json.dumps(call.json).encode(), {})


def render(reply: Reply, user: str = "42") -> list[Call]:
    calls = ADAPTER.render(BOT, user, reply)
    for call in calls:
        assert check(request(call)) == [], call
    return calls


def buttons(*ids: str) -> tuple[Button, ...]:
    return tuple(Button(i, f"Option {i}") for i in ids)

# ---------------------------------------------------------------- settings and verify


def test_handshake_is_none():
    assert ADAPTER.handshake(BOT, webhook(b"")) is None


def test_the_secret_token_verifies():
    ADAPTER.verify(BOT, webhook(b"{}"))
    ADAPTER.verify(BOT, webhook(b"{}", CIMultiDict({HEADER.lower(): "Sec_ret-42"})))


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing"),
    ({"X-Other": "Sec_ret-42"}, "missing"),
    ({HEADER: "Sec_ret-43"}, "mismatch"),  # same length
    ({HEADER: "Sec_ret-42x"}, "mismatch"),  # one longer
    ({HEADER: "Sec"}, "mismatch"),
    ({HEADER: ""}, "mismatch"),
    ({HEADER: "Séc_ret-42"}, "mismatch"),
    ({HEADER: "\udc80"}, "mismatch"),  # a lone surrogate: still a mismatch, not a crash
])
def test_every_signature_failure_has_its_reason(headers, reason):
    with pytest.raises(SignatureError) as failed:
        ADAPTER.verify(BOT, webhook(b"{}", headers))
    assert failed.value.reason == reason


@pytest.mark.parametrize("secret_token", ["", "has space", "x" * 257, "ünï"])
def test_a_secret_token_setwebhook_refuses_is_refused_without_echoing_it(secret_token):
    with pytest.raises(ValidationError) as refused:
        TelegramBot(token=TOKEN, secret_token=secret_token)
    assert "1-256" in str(refused.value)
    assert secret_token not in str(refused.value) or not secret_token
    assert TOKEN not in str(refused.value)


def test_settings_are_the_adapters():
    assert ADAPTER.name == "telegram" and ADAPTER.settings is TelegramBot
    assert TelegramBot(token=TOKEN, secret_token="a").api_base == "https://api.telegram.org"
    with pytest.raises(ValidationError):
        TelegramBot(token=TOKEN, secret_token="a", chat="extra")

# ---------------------------------------------------------------- parse: the fixtures


def test_official_text_message():
    parsed = ADAPTER.parse(BOT, webhook(fixture("telegram_update_text_message_official.json")))
    [got] = parsed.messages
    assert (got.user, got.message_id) == ("1111111", "10000")
    said = got.message
    assert (said.text, said.kind, said.button) == ("/start", "text", None)
    assert (said.user_id, said.user_name, said.channel) == ("1111111", "Test Firstname Test Lastname", "telegram")
    assert parsed.events == () and parsed.answer is None


def test_official_callback_query_old_style_goes_to_the_user():
    parsed = ADAPTER.parse(BOT, webhook(fixture("telegram_update_callback_query_official.json")))
    [got] = parsed.messages
    assert (got.user, got.message_id) == ("1111111", "10000")  # no message: the sender's chat
    data = "Data from button callback"
    assert (got.message.button, got.message.text, got.message.kind) == (data, data, "button")
    assert parsed.answer == Answer.json({"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2d9"})


def test_real_callback_query_goes_to_the_chat_and_is_answered():
    parsed = ADAPTER.parse(BOT, webhook(fixture("telegram_update_callback_query_real.json")))
    [got] = parsed.messages
    assert (got.user, got.message_id) == ("259760855", "226394498")
    assert (got.message.button, got.message.user_id, got.message.user_name) == (
        "tasks-settings", "259760855", "Shahrad Elahi")
    answer = json.loads(parsed.answer.text)
    assert answer == {"method": "answerCallbackQuery", "callback_query_id": "1115664380233733737"}
    assert parsed.answer.content_type == "application/json"
    # the webhook's answer is a valid answerCallbackQuery call
    body = {k: v for k, v in answer.items() if k != "method"}
    call = Call("POST", f"/bot{TOKEN}/{answer['method']}", json=body)
    assert check(request(call)) == []


def test_edited_message_is_an_event_not_a_turn():
    parsed = ADAPTER.parse(BOT, webhook(fixture("telegram_update_edited_message_rasa.json")))
    assert parsed.messages == ()
    assert parsed.events == (Event("edited_message", "1760450482", "280069275"),)

# ---------------------------------------------------------------- parse: kinds of update


def test_a_group_is_one_conversation_and_the_sender_is_the_user():
    group = message(chat={"id": -100123, "type": "supergroup", "title": "Club"}, text="hi")
    [got] = ADAPTER.parse(BOT, webhook(update(message=group))).messages
    assert (got.user, got.message.user_id, got.message.user_name) == ("-100123", "42", "Ada L")


def test_user_name_falls_back_to_username():
    sender = {"id": 7, "is_bot": False, "first_name": "", "username": "ghost"}
    [got] = ADAPTER.parse(BOT, webhook(update(message=message(text="x", **{"from": sender})))).messages
    assert got.message.user_name == "ghost"


@pytest.mark.parametrize("sender", [
    {"id": 99, "is_bot": True, "first_name": "Other bot"},
    {"id": 777, "is_bot": False, "first_name": "Parlour"},  # the bot's own id, from settings
])
def test_a_bots_message_is_ignored(sender):
    parsed = ADAPTER.parse(BOT, webhook(update(message=message(text="loop?", **{"from": sender}))))
    assert parsed.messages == ()
    assert parsed.events == (Event("own", "42", "5001"),)


def test_an_anonymous_admin_is_not_a_bot():
    # Telegram puts a fake bot user (GroupAnonymousBot) in ``from`` when a chat sends.
    sent = message(text="hello", chat={"id": -5, "type": "group"}, sender_chat={"id": -5, "title": "Club"},
                   **{"from": {"id": 1087968824, "is_bot": True, "first_name": "Group"}})
    [got] = ADAPTER.parse(BOT, webhook(update(message=sent))).messages
    assert (got.message.user_id, got.message.user_name) == ("-5", "Club")


@pytest.mark.parametrize(("fields", "kind", "text", "data"), [
    ({"photo": [{"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
                {"file_id": "big", "file_unique_id": "b", "width": 800, "height": 800}], "caption": "look"},
     "media", "look", {"type": "photo", "file_id": "big", "file_unique_id": "b", "width": 800, "height": 800}),
    ({"voice": {"file_id": "v1", "duration": 3, "mime_type": "audio/ogg"}},
     "media", "", {"type": "voice", "file_id": "v1", "duration": 3, "mime_type": "audio/ogg"}),
    ({"document": {"file_id": "d1", "file_name": "cv.pdf"}},
     "media", "", {"type": "document", "file_id": "d1", "file_name": "cv.pdf"}),
    ({"animation": {"file_id": "a1"}, "document": {"file_id": "a1"}},
     "media", "", {"type": "animation", "file_id": "a1"}),
    ({"sticker": {"file_id": "st", "emoji": "👍", "width": 512, "height": 512}},
     "media", "", {"type": "sticker", "file_id": "st", "emoji": "👍", "width": 512, "height": 512}),
    ({"location": {"latitude": 52.5, "longitude": 13}},
     "location", "", {"latitude": 52.5, "longitude": 13.0}),
    ({"location": {"latitude": 1, "longitude": 2}, "venue": {"title": "Café", "address": "1 Main St"}},
     "location", "", {"latitude": 1.0, "longitude": 2.0, "title": "Café", "address": "1 Main St"}),
    ({"contact": {"phone_number": "+4930123", "first_name": "Bo", "user_id": 8}},
     "contact", "", {"phone_number": "+4930123", "first_name": "Bo", "user_id": "8"}),
])
def test_message_kinds(fields, kind, text, data):
    [got] = ADAPTER.parse(BOT, webhook(update(message=message(**fields)))).messages
    assert (got.message.kind, got.message.text, got.message.data) == (kind, text, data)


def test_a_service_message_is_an_event():
    joined = message(new_chat_members=[{"id": 5, "is_bot": False, "first_name": "New"}])
    parsed = ADAPTER.parse(BOT, webhook(update(message=joined)))
    assert parsed.messages == ()
    [event] = parsed.events
    assert (event.kind, event.user, event.message_id) == ("unsupported", "42", "5001")
    assert "new_chat_members" in event.data["fields"]


@pytest.mark.parametrize(("kind", "value", "user"), [
    ("channel_post", {"message_id": 1, "date": 1, "chat": {"id": -1001, "type": "channel"}, "text": "news"}, "-1001"),
    ("my_chat_member", {"chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "date": 1}, "42"),
    ("poll_answer", {"poll_id": "p", "user": {"id": 42}, "option_ids": [0]}, "42"),
    ("inline_query", {"id": "q", "from": {"id": 43}, "query": "", "offset": ""}, "43"),
    ("some_future_update", {"x": 1}, None),
])
def test_other_updates_are_events(kind, value, user):
    parsed = ADAPTER.parse(BOT, webhook(update(**{kind: value})))
    assert parsed.messages == () and parsed.answer is None
    assert parsed.events == (Event(kind, user, "5001"),)


def test_a_game_button_is_answered_but_not_a_turn():
    query = {"id": "g1", "from": {"id": 42, "is_bot": False, "first_name": "Ada"}, "chat_instance": "c",
             "game_short_name": "snake"}
    parsed = ADAPTER.parse(BOT, webhook(update(callback_query=query)))
    assert parsed.messages == ()
    assert parsed.events == (Event("callback_game", "42", "5001"),)
    assert parsed.answer == Answer.json({"method": "answerCallbackQuery", "callback_query_id": "g1"})


def press(data: str) -> UserMessage:
    query = {"id": "q1", "from": {"id": 42, "is_bot": False, "first_name": "Ada"}, "chat_instance": "c",
             "message": message(), "data": data}
    [got] = ADAPTER.parse(BOT, webhook(update(callback_query=query))).messages
    return got.message


@pytest.mark.parametrize("data, button, prompt", [
    ("p3|quit", "quit", "p3"),
    ("quit", "quit", None),  # a button sent before prompts had ids
    ("p3|a|b", "a|b", "p3"),
    ("x3|quit", "x3|quit", None),
    ("p|quit", "p|quit", None),
    ("p" + "9" * 20 + "|quit", "p" + "9" * 20 + "|quit", None),
])
def test_a_press_gives_its_prompt_and_the_options_id(data, button, prompt):
    pressed = press(data)
    assert (pressed.button, pressed.text, pressed.prompt) == (button, button, prompt)

# ---------------------------------------------------------------- parse: garbage


@pytest.mark.parametrize(("body", "says"), [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\xfa", "not JSON"),
    (b'{"update_id": NaN, "message": {}}', "not JSON"),
    (b"[1, 2]", "update: expected an object, got an array"),
    (b"[" * 100_000, "not JSON"),
    (update(), "no field besides update_id"),
    ({"message": message(text="x")}, "update.update_id: missing"),
    ({"update_id": "5001", "message": message(text="x")}, "update.update_id: expected an integer, got a string"),
    ({"update_id": True, "message": message(text="x")}, "expected an integer, got a boolean"),
    (update(message="hi"), "update.message: expected an object, got a string"),
    (update(edited_message=[]), "update.edited_message: expected an object, got an array"),
    (update(message={"text": "x"}), "update.message.chat: missing"),
    (update(message=message(chat={"id": "42"}, text="x")), "update.message.chat.id: expected an integer"),
    (update(message=message(text=5)), "update.message.text: expected a string, got an integer"),
    (update(message=message(text="x", **{"from": {"id": 4.5}})), "update.message.from.id: expected an integer"),
    (update(message=message(photo=[])), "update.message.photo: expected a non-empty array"),
    (update(message=message(document={"file_name": "a"})), "update.message.document.file_id: missing"),
    (update(message=message(location={"latitude": "1", "longitude": 2})), "location.latitude: expected a number"),
    (update(message=message(contact={})), "update.message.contact.phone_number: missing"),
    (update(callback_query={"id": 1, "from": {"id": 2}}), "update.callback_query.id: expected a string"),
    (update(callback_query={"id": "1"}), "update.callback_query.from: missing"),
    (update(callback_query={"id": "1", "from": {"id": 2}, "message": {"chat": None}}),
     "update.callback_query.message.chat: expected an object, got null"),
    (update(callback_query={"id": "1", "from": {"id": 2}, "data": ["x"]}),
     "update.callback_query.data: expected a string"),
])
def test_garbage_is_a_payload_error_saying_where(body, says):
    with pytest.raises(PayloadError) as refused:
        ADAPTER.parse(BOT, webhook(body))
    assert says in str(refused.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["update_id", "message", "callback_query", "chat", "id", "from", "text", "photo",
                         "data", "message_id", "location", "latitude", "is_bot", "contact", "venue"]),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | JSON.map(lambda value: json.dumps(value).encode()))
def test_garbage_never_crashes(body):
    try:
        ADAPTER.parse(BOT, webhook(body))
    except PayloadError:
        pass

# ---------------------------------------------------------------- render


def test_text():
    [call] = render(Reply(text="Hello"))
    assert call == Call("POST", f"/bot{TOKEN}/sendMessage", json={"chat_id": 42, "text": "Hello"})


@pytest.mark.parametrize(("user", "chat_id"), [("-100123", -100123), ("@club_news", "@club_news")])
def test_chat_id_is_an_integer_when_numeric(user, chat_id):
    [call] = render(Reply(text="Hi"), user)
    assert call.json["chat_id"] == chat_id


def test_buttons_are_an_inline_keyboard_one_per_row():
    [call] = render(Reply(text="Pick", buttons=buttons("yes", "no")))
    assert call.json["reply_markup"] == {"inline_keyboard": [
        [{"text": "Option yes", "callback_data": "yes"}], [{"text": "Option no", "callback_data": "no"}]]}


def test_list_rows_are_buttons_with_their_description():
    rows = (Button("m", "Margherita", "tomato, basil"), Button("q", "Quattro"))
    [call] = render(Reply(text="Menu", list_button="See menu", list=rows))
    assert call.json["reply_markup"]["inline_keyboard"] == [
        [{"text": "Margherita – tomato, basil", "callback_data": "m"}], [{"text": "Quattro", "callback_data": "q"}]]


def test_many_buttons():
    ids = [f"b{n}" for n in range(40)]
    [call] = render(Reply(text="Pick", buttons=buttons(*ids)))
    assert [row[0]["callback_data"] for row in call.json["reply_markup"]["inline_keyboard"]] == ids


def test_a_keyboard_without_text_still_has_a_text():
    [call] = render(Reply(list_button="Choose a size", list=buttons("s", "m")))
    assert call.json["text"] == "Choose a size"
    [call] = render(Reply(buttons=buttons("s")))
    assert call.json["text"].strip()


def test_long_text_is_split_with_the_keyboard_on_the_last_part():
    text = ("word " * 2000).strip()  # 9999 characters
    calls = render(Reply(text=text, buttons=buttons("ok")))
    assert len(calls) == 3
    assert all(len(c.json["text"]) <= 4096 for c in calls)
    assert " ".join(c.json["text"] for c in calls) == text
    assert ["reply_markup" in c.json for c in calls] == [False, False, True]


def test_exactly_4096_characters_is_one_message():
    [call] = render(Reply(text="x" * 4096))
    assert len(call.json["text"]) == 4096


def test_an_empty_reply_sends_nothing():
    assert render(Reply()) == []
    assert render(Reply(text="  \n")) == []


@pytest.mark.parametrize(("kind", "method", "parameter"), [
    ("image", "sendPhoto", "photo"), ("video", "sendVideo", "video"), ("audio", "sendAudio", "audio"),
    ("document", "sendDocument", "document"), (None, "sendDocument", "document"),
])
def test_media_with_caption_and_keyboard(kind, method, parameter):
    url = "https://img.example/u7.png"
    [call] = render(Reply(text="A picture", media_url=url, media_kind=kind, buttons=buttons("more")))
    assert call.path == f"/bot{TOKEN}/{method}"
    assert call.json == {"chat_id": 42, parameter: url, "caption": "A picture",
                         "reply_markup": {"inline_keyboard": [[{"text": "Option more", "callback_data": "more"}]]}}


def test_media_alone():
    [call] = render(Reply(media_url="https://files.example/menu.pdf", media_kind="document", media_filename="menu.pdf"))
    assert call.json == {"chat_id": 42, "document": "https://files.example/menu.pdf"}


def test_a_caption_over_1024_characters_follows_as_text():
    text = "y" * 1025
    photo, message_ = render(Reply(text=text, media_url="https://img.example/a.png", media_kind="image",
                                   buttons=buttons("ok")))
    assert photo.json == {"chat_id": 42, "photo": "https://img.example/a.png"}
    assert message_.json["text"] == text and "reply_markup" in message_.json


def test_a_sticker_has_no_caption():
    sticker, said = render(Reply(text="Nice", media_url="https://img.example/s.webp", media_kind="sticker"))
    assert sticker.json == {"chat_id": 42, "sticker": "https://img.example/s.webp"}
    assert said.json == {"chat_id": 42, "text": "Nice"}


@pytest.mark.parametrize("long_id", ["x" * 65, "€" * 22])  # 65 and 66 bytes
def test_a_button_id_over_64_bytes_falls_back_to_numbered_text(long_id):
    [call] = render(Reply(text="Pick", buttons=(Button("ok", "Fine"), Button(long_id, "Too long"))))
    assert "reply_markup" not in call.json
    assert call.json["text"] == "Pick\n1. Fine\n2. Too long"


def test_a_button_id_of_64_bytes_is_a_button():
    [call] = render(Reply(text="Pick", buttons=(Button("é" * 32, "Fine"),)))
    assert call.json["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "é" * 32


def test_the_numbered_fallback_keeps_the_media_apart():
    photo, = render(Reply(media_url="https://img.example/a.png", media_kind="image", buttons=(Button("x" * 70, "A"),)))
    assert photo.json == {"chat_id": 42, "photo": "https://img.example/a.png", "caption": "1. A"}

# ---------------------------------------------------------------- the fake checks what it should


def good(**body: Any) -> FakeRequest:
    return request(Call("POST", f"/bot{TOKEN}/sendMessage", json={"chat_id": 42, "text": "hi"} | body))


def keyboard(**button: Any) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": "A"} | button]]}


def test_the_fake_takes_a_good_request_and_answers_like_telegram():
    assert check(good(reply_markup=keyboard(callback_data="a"), disable_notification=True)) == []
    status, body = SPEC.answer(good(), 3)
    assert status == 200 and body["ok"] is True
    assert body["result"]["message_id"] == 3 and body["result"]["text"] == "hi"
    assert body["result"]["chat"] == {"id": 42, "type": "private"} and isinstance(body["result"]["date"], int)
    assert ADAPTER.judge(status, {}, json.dumps(body).encode()) == Verdict("sent")


@pytest.mark.parametrize(("req", "says"), [
    (good(colour="red"), "unknown parameter colour"),
    (good(chat_id=4.2), "chat_id is not Integer or String"),
    (good(chat_id=True), "chat_id is not Integer or String"),
    (good(text=42), "text is not String"),
    (request(Call("POST", f"/bot{TOKEN}/sendMessage", json={"text": "hi"})), "chat_id is required"),
    (good(text="x" * 4097), "text is 4097 characters, not 1-4096"),
    (good(text=""), "text is 0 characters"),
    (good(text=" "), "text is empty"),
    (good(reply_markup=keyboard(callback_data="x" * 65)), "callback_data is 65 bytes, not 1-64"),
    (good(reply_markup=keyboard(callback_data="€" * 22)), "callback_data is 66 bytes"),
    (good(reply_markup=keyboard()), "needs exactly one action"),
    (good(reply_markup=keyboard(callback_data="a", url="https://x.example")), "needs exactly one action"),
    (good(reply_markup={"inline_keyboard": [[{"callback_data": "a"}]]}), "text is required"),
    (good(reply_markup={"keyboard": [["A"]]}), "not an InlineKeyboardMarkup"),
    (good(reply_markup={"inline_keyboard": ["A"]}), "not an InlineKeyboardMarkup"),
    (request(Call("POST", f"/bot{TOKEN}/sendPhoto", json={"chat_id": 1, "photo": "u", "text": "t"})),
     "unknown parameter text"),
    (request(Call("POST", f"/bot{TOKEN}/sendPhoto", json={"chat_id": 1, "photo": "u", "caption": "c" * 1025})),
     "caption is 1025 characters"),
    (request(Call("POST", f"/bot{TOKEN}/sendSticker", json={"chat_id": 1, "sticker": "u", "caption": "c"})),
     "unknown parameter caption"),
    (request(Call("POST", f"/bot{TOKEN}/sendPigeon", json={"chat_id": 1})), "unknown method sendPigeon"),
    (request(Call("POST", "/sendMessage", json={"chat_id": 1})), "is not /bot<token>/<method>"),
    (FakeRequest("GET", f"/bot{TOKEN}/sendMessage", {}, b"", {}), "sent with GET"),
    (FakeRequest("POST", f"/bot{TOKEN}/sendMessage", {}, b"chat_id=1", {}), "not JSON"),
    (FakeRequest("POST", f"/bot{TOKEN}/sendMessage", {}, b"[]", {}), "not a JSON object"),
])
def test_the_fake_rejects_broken_requests(req, says):
    problems = check(req)
    assert any(says in problem for problem in problems), problems


def test_the_fake_for_one_bot_refuses_another_token():
    assert for_token(TOKEN).check(good()) == []
    assert for_token("1:other").check(good()) == ["401 Unauthorized: not this bot's token"]

# ---------------------------------------------------------------- judge


def answer(status: int, **body: Any) -> Verdict:
    return ADAPTER.judge(status, {}, json.dumps(body).encode())


def test_judge_ok():
    assert answer(200, ok=True, result={"message_id": 1}) == Verdict("sent")


def test_judge_429_waits_what_the_body_says():
    verdict = ADAPTER.judge(429, {"Retry-After": "99"}, json.dumps({
        "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7}}).encode())
    assert verdict == Verdict("retry", 7.0, "Too Many Requests: retry after 7")


def test_judge_429_falls_back_to_retry_after_header():
    assert ADAPTER.judge(429, {"Retry-After": "3"}, b"") == Verdict("retry", 3.0, "HTTP 429")


@pytest.mark.parametrize("status", [500, 502, 504])
def test_judge_5xx_retries(status):
    verdict = ADAPTER.judge(status, {}, b"<html>Bad Gateway</html>")
    assert (verdict.outcome, verdict.after_s) == ("retry", None)


@pytest.mark.parametrize(("status", "description"), [
    (400, "Bad Request: chat not found"),
    (403, "Forbidden: bot was blocked by the user"),
    (401, "Unauthorized"),
])
def test_judge_4xx_fails_with_the_description(status, description):
    verdict = answer(status, ok=False, error_code=status, description=description)
    assert verdict == Verdict("failed", None, description)


def test_judge_a_migrated_group_names_the_new_chat():
    verdict = answer(400, ok=False, error_code=400,
                     description="Bad Request: group chat was upgraded to a supergroup chat",
                     parameters={"migrate_to_chat_id": -1001234})
    assert verdict.outcome == "failed" and "migrate_to_chat_id -1001234" in verdict.reason


def test_judge_200_with_ok_false_fails():
    assert answer(200, ok=False, description="Bad Request: message text is empty") == Verdict(
        "failed", None, "Bad Request: message text is empty")
    assert answer(200, ok=False) == Verdict("failed", None, "ok: false")


def test_judge_the_fakes_rejection_fails():
    assert ADAPTER.judge(400, {}, b'{"error": {"message": "bad"}}') == Verdict("failed", None, "HTTP 400")


@pytest.mark.parametrize("option, data", [
    ("yes", "p3|yes"),
    ("é" * 30 + "x", "p3|" + "é" * 30 + "x"),  # 61 bytes, 64 with the prompt: the whole payload
    ("é" * 31, "é" * 31),  # 62 bytes, 65 with it: the id alone, whose press is judged as before prompts
])
def test_callback_data_carries_the_prompt_when_it_fits_in_64_bytes(option, data):
    [call] = render(Reply(text="Pick", buttons=(Button(option, "Pick me"),), prompt="p3"))
    [[sent]] = call.json["reply_markup"]["inline_keyboard"]
    assert sent["callback_data"] == data
    assert press(data).button == option


def test_list_rows_carry_the_prompt_too():
    [call] = render(Reply(text="Menu", list=buttons("m", "q"), prompt="p12"))
    assert [row[0]["callback_data"] for row in call.json["reply_markup"]["inline_keyboard"]] == ["p12|m", "p12|q"]
