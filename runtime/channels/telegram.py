"""Telegram Bot API: one ``Update`` per webhook in; ``sendMessage`` and the media methods out.

Telegram signs nothing. The ``secret_token`` given to setWebhook comes back in the
``X-Telegram-Bot-Api-Secret-Token`` header of every update, and :meth:`Telegram.verify`
compares it. A pressed inline button (a callback query) is answered in the webhook's own
response ("Making requests when getting updates" in the Bot API docs): ``answerCallbackQuery``
there stops the button's spinner without another request.

Limits, from tests/conformance/channels/specs/telegram/EXTRACT_update_message_callback_sendMessage.json
(Bot API 10.1):

- sendMessage ``text``: "1-4096 characters after entities parsing" (no ``parse_mode`` is sent,
  so the characters are the text's own);
- InlineKeyboardButton ``callback_data``: "1-64 bytes" (it holds ``<prompt>|<id>`` when that fits,
  else the id alone: :func:`~.base.tagged`);
- setWebhook ``secret_token``: "1-256 characters. Only characters A-Z, a-z, 0-9, _ and -".

The media methods are not in the extract: their ``caption`` is "0-1024 characters after
entities parsing" (core.telegram.org/bots/api#sendphoto, #sendvideo, #sendaudio,
#senddocument; the same in PaulSonOfLars/telegram-bot-api-spec api.json).

>>> bot = TelegramBot(token="123:abc", secret_token="s3cret")
>>> [call.path for call in ADAPTER.render(bot, "42", Reply(text="Hi"))]
['/bot123:abc/sendMessage']
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import ConfigDict, SecretStr, field_validator

from parlour.flow import Reply, UserMessage

from .base import (
    Answer,
    BotSettings,
    Call,
    Event,
    Parsed,
    PayloadError,
    Received,
    SignatureError,
    Verdict,
    Webhook,
    numbered,
    secret,
    split,
    standard_judge,
    tagged,
    untagged,
)

HEADER = "X-Telegram-Bot-Api-Secret-Token"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_BYTES = 64
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_CHAT_ID = re.compile(r"-?[0-9]+")
# Reply.media_kind -> (method, parameter). A URL is passed as a String: Telegram fetches it.
_MEDIA = {
    "image": ("sendPhoto", "photo"), "video": ("sendVideo", "video"),
    "audio": ("sendAudio", "audio"), "document": ("sendDocument", "document"),
    "sticker": ("sendSticker", "sticker"),
}
# Message fields that carry a file. An animation also sets ``document`` (Message docs, "for
# backward compatibility"), so it is looked for first.
_FILES = ("photo", "video", "video_note", "animation", "audio", "voice", "document", "sticker")
_FILE_DETAILS = ("file_unique_id", "file_name", "mime_type", "file_size", "duration", "width",
                 "height", "emoji")
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer",
               bool: "a boolean", float: "a number", type(None): "null"}


class TelegramBot(BotSettings):
    """A Telegram bot: its ``token`` from @BotFather (it goes in every API path), the
    ``secret_token`` it gave setWebhook, and its own user id, to drop its own messages."""

    # A failed validation must not echo the token it was given into a log.
    model_config = ConfigDict(hide_input_in_errors=True)

    api_base: str = "https://api.telegram.org"
    token: SecretStr
    secret_token: SecretStr
    bot_id: int | None = None

    @field_validator("secret_token")
    @classmethod
    def _setwebhook_accepts(cls, value: SecretStr) -> SecretStr:
        # Also rules out an empty secret, which an empty header would match.
        if not _SECRET_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("secret_token must be 1-256 of A-Z, a-z, 0-9, _ and - (setWebhook)")
        return value


class Telegram:
    """The Telegram Bot API over webhooks."""

    name: ClassVar[str] = "telegram"
    settings: ClassVar[type[BotSettings]] = TelegramBot

    def handshake(self, bot: BotSettings, webhook: Webhook) -> str | None:
        return None  # setWebhook is a call we make; Telegram sends no GET to confirm it

    def verify(self, bot: BotSettings, webhook: Webhook) -> None:
        given = webhook.headers.get(HEADER)
        if given is None:
            raise SignatureError("missing", f"no {HEADER} header")
        # surrogatepass: a header of any code points is a mismatch, never an encoding crash.
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   secret(_settings(bot).secret_token)):
            raise SignatureError("mismatch", f"{HEADER} is not this bot's secret_token")

    def parse(self, bot: BotSettings, webhook: Webhook) -> Parsed:
        update = _load(webhook.body)
        update_id = str(_field(update, "update_id", int, "update"))
        kind = next((key for key in update if key != "update_id"), None)
        if kind is None:
            raise PayloadError(f"update {update_id}: no field besides update_id")
        value = _field(update, kind, dict, "update")
        if kind == "message":
            return _message(_settings(bot), update_id, value)
        if kind == "callback_query":
            return _callback_query(update_id, value)
        return Parsed(events=(Event(kind, _whose(value), update_id),))

    def render(self, bot: BotSettings, user: str, reply: Reply) -> list[Call]:
        telegram = _settings(bot)
        chat_id: int | str = int(user) if _CHAT_ID.fullmatch(user) else user  # or "@channel"
        markup = _keyboard(tagged(reply, lambda data: len(data.encode()) <= CALLBACK_DATA_BYTES))
        if markup is None and (reply.buttons or reply.list):
            reply = replace(reply, text=numbered(replace(reply, media_url=None)))
        text = reply.text if reply.text and reply.text.strip() else ""
        if reply.media_url:
            call, rest = _media(telegram, chat_id, reply, text, markup)
            return [call, *_messages(telegram, chat_id, rest, markup)]
        if markup and not text:
            text = reply.list_button or "…"  # sendMessage needs a text for the keyboard to hang on
        return _messages(telegram, chat_id, text, markup)

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        answer = _answer(body)
        reason = _reason(answer)
        if 200 <= status < 300 and answer.get("ok") is False:
            return Verdict("failed", None, reason or "ok: false")
        verdict = standard_judge(status, headers, reason)
        retry_after = _retry_after(answer)
        if verdict.outcome == "retry" and retry_after is not None:
            return Verdict("retry", retry_after, verdict.reason)
        return verdict


ADAPTER = Telegram()

# ---------------------------------------------------------------- parse


def _settings(bot: BotSettings) -> TelegramBot:
    if not isinstance(bot, TelegramBot):
        raise TypeError(f"the telegram adapter needs TelegramBot settings, not {type(bot).__name__}")
    return bot


def _load(body: bytes) -> dict[str, Any]:
    try:
        update = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"update: the body is not JSON ({exc})") from exc
    if not isinstance(update, dict):
        raise PayloadError(f"update: expected an object, got {_json_name(update)}")
    return update


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; JSON has none


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str, required: bool = True) -> Any:
    """``obj[key]``, checked to be a ``kind``; None when it is optional and absent or null."""
    value = obj.get(key)
    if value is None and not required:
        return None
    if key not in obj:
        raise PayloadError(f"{where}.{key}: missing")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"{where}.{key}: expected {_JSON_NAMES[kind]}, got {_json_name(value)}")
    return value


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _message(bot: TelegramBot, update_id: str, message: dict[str, Any]) -> Parsed:
    where = "update.message"
    chat = str(_field(_field(message, "chat", dict, where), "id", int, f"{where}.chat"))
    sender = _field(message, "from", dict, where, required=False)
    # A message sent on behalf of a chat (``sender_chat``) carries a fake bot user in ``from``.
    if sender is not None and "sender_chat" not in message and _is_bot(bot, sender):
        return Parsed(events=(Event("own", chat, update_id),))
    content = _content(message, where)
    if content is None:  # a service message, a poll, a dice...: nothing a flow can answer
        return Parsed(events=(Event("unsupported", chat, update_id, data={"fields": sorted(message)}),))
    text, kind, data = content
    said = UserMessage(text, kind=kind, data=data, channel="telegram", **_author(message, sender))
    return Parsed(messages=(Received(chat, update_id, said),))


def _is_bot(bot: TelegramBot, sender: Mapping[str, Any]) -> bool:
    return sender.get("is_bot") is True or (bot.bot_id is not None and sender.get("id") == bot.bot_id)


def _author(message: Mapping[str, Any], sender: Mapping[str, Any] | None) -> dict[str, str | None]:
    chat = message.get("sender_chat")
    if isinstance(chat, dict) and isinstance(chat.get("id"), int):
        return {"user_id": str(chat["id"]), "user_name": _str(chat, "title")}
    if sender is None:
        return {}
    return {"user_id": str(_field(sender, "id", int, "update.message.from")), "user_name": _name(sender)}


def _name(user: Mapping[str, Any]) -> str | None:
    full = " ".join(part for part in (_str(user, "first_name"), _str(user, "last_name")) if part)
    return full or _str(user, "username")


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _content(message: dict[str, Any], where: str) -> tuple[str, str, dict[str, Any] | None] | None:
    """(text, kind, data) of a message a flow can take, or None."""
    text = _field(message, "text", str, where, required=False)
    if text is not None:
        return text, "text", None
    caption = _field(message, "caption", str, where, required=False) or ""
    for name in _FILES:
        if message.get(name) is not None:
            return caption, "media", _file(message, name, where)
    if message.get("location") is not None:
        return "", "location", _location(message, where)
    if message.get("contact") is not None:
        return "", "contact", _contact(message, where)
    return None


def _file(message: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    if name == "photo":  # PhotoSize sizes, smallest first: keep the largest
        sizes = _field(message, "photo", list, where)
        if not sizes or not isinstance(sizes[-1], dict):
            raise PayloadError(f"{where}.photo: expected a non-empty array of objects")
        found, where = sizes[-1], f"{where}.photo[{len(sizes) - 1}]"
    else:
        found, where = _field(message, name, dict, where), f"{where}.{name}"
    # A file_id, not a URL: fetching the file (getFile) is I/O, left to whoever needs it.
    data = {"type": name, "file_id": _field(found, "file_id", str, where)}
    return data | {key: found[key] for key in _FILE_DETAILS if isinstance(found.get(key), str | int)}


def _location(message: dict[str, Any], where: str) -> dict[str, Any]:
    place = _field(message, "location", dict, where)
    data = {key: _number(place, key, f"{where}.location") for key in ("latitude", "longitude")}
    venue = message.get("venue")  # a venue also sets location, which holds its coordinates
    if isinstance(venue, dict):
        data |= {key: venue[key] for key in ("title", "address") if isinstance(venue.get(key), str)}
    return data


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PayloadError(f"{where}.{key}: expected a number, got {_json_name(value)}")
    return float(value)


def _contact(message: dict[str, Any], where: str) -> dict[str, Any]:
    contact = _field(message, "contact", dict, where)
    data = {"phone_number": _field(contact, "phone_number", str, f"{where}.contact")}
    data |= {key: contact[key] for key in ("first_name", "last_name") if isinstance(contact.get(key), str)}
    if isinstance(contact.get("user_id"), int):
        data["user_id"] = str(contact["user_id"])
    return data


def _callback_query(update_id: str, query: dict[str, Any]) -> Parsed:
    where = "update.callback_query"
    answer = Answer.json({"method": "answerCallbackQuery", "callback_query_id": _field(query, "id", str, where)})
    sender = _field(query, "from", dict, where)
    user_id = str(_field(sender, "id", int, f"{where}.from"))
    # No message when the button was on a message sent in inline mode (inline_message_id, as
    # the webhook guide's sample has): the chat is unknown, so the answer goes to the user.
    message = _field(query, "message", dict, where, required=False)
    chat = user_id if message is None else str(
        _field(_field(message, "chat", dict, f"{where}.message"), "id", int, f"{where}.message.chat"))
    data = _field(query, "data", str, where, required=False)
    if data is None:  # a game's button (game_short_name): no id for a flow to pick
        return Parsed(events=(Event("callback_game", chat, update_id),), answer=answer)
    button, prompt = untagged(data)
    pressed = UserMessage(button, button=button, kind="button", user_id=user_id, user_name=_name(sender),
                          channel="telegram", prompt=prompt)
    return Parsed(messages=(Received(chat, update_id, pressed),), answer=answer)


def _whose(value: Mapping[str, Any]) -> str | None:
    """The chat (else the user) an update that is not a turn is about, for the record."""
    for key in ("chat", "from", "user"):
        holder = value.get(key)
        if isinstance(holder, dict) and isinstance(holder.get("id"), int):
            return str(holder["id"])
    return None

# ---------------------------------------------------------------- render


def _keyboard(reply: Reply) -> dict[str, Any] | None:
    """An inline keyboard, one button per row; None when there are no options or an id does
    not fit in callback_data (1-64 bytes). That needs no state (a short-id table would), and
    the reply still arrives as numbered text, which the interpreter takes as the pick."""
    options = reply.buttons or reply.list
    if not options or not all(1 <= len(o.id.encode()) <= CALLBACK_DATA_BYTES for o in options):
        return None
    rows = [[{"text": f"{o.title} – {o.description}" if o.description else o.title, "callback_data": o.id}]
            for o in options]
    return {"inline_keyboard": rows}


def _media(bot: TelegramBot, chat_id: int | str, reply: Reply, text: str,
           markup: dict[str, Any] | None) -> tuple[Call, str]:
    """The media call, and the text left to send after it: none when it fits as the caption."""
    method, parameter = _MEDIA.get(reply.media_kind or "", _MEDIA["document"])
    captioned = parameter != "sticker" and len(text) <= CAPTION_LIMIT  # a sticker has no caption
    body: dict[str, Any] = {"chat_id": chat_id, parameter: reply.media_url}
    if captioned and text:
        body["caption"] = text
    rest = "" if captioned else text
    return _call(bot, method, _with(body, None if rest else markup)), rest


def _messages(bot: TelegramBot, chat_id: int | str, text: str, markup: dict[str, Any] | None) -> list[Call]:
    """sendMessage calls for ``text`` in parts of at most TEXT_LIMIT, the keyboard on the last."""
    parts = [part for part in split(text, TEXT_LIMIT) if part.strip()] if text else []
    return [_call(bot, "sendMessage", _with({"chat_id": chat_id, "text": part},
                                            markup if n == len(parts) else None))
            for n, part in enumerate(parts, 1)]


def _with(body: dict[str, Any], markup: dict[str, Any] | None) -> dict[str, Any]:
    return body if markup is None else body | {"reply_markup": markup}


def _call(bot: TelegramBot, method: str, body: dict[str, Any]) -> Call:
    # The token is part of the path: Telegram has no credential header.
    return Call("POST", f"/bot{bot.token.get_secret_value()}/{method}", json=body)

# ---------------------------------------------------------------- judge


def _answer(body: bytes) -> dict[str, Any]:
    """The API's JSON answer ({ok, result} or {ok, error_code, description, parameters}), or {}
    when a proxy in between answered something else."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


def _reason(answer: Mapping[str, Any]) -> str:
    description = answer.get("description")
    reason = description if isinstance(description, str) else ""
    parameters = answer.get("parameters")
    if isinstance(parameters, dict) and isinstance(parameters.get("migrate_to_chat_id"), int):
        # A group became a supergroup: the operator must move the conversation to the new id.
        reason += f" (migrate_to_chat_id {parameters['migrate_to_chat_id']})"
    return reason


def _retry_after(answer: Mapping[str, Any]) -> float | None:
    """ResponseParameters.retry_after: the seconds flood control wants, in the body."""
    parameters = answer.get("parameters")
    after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    if isinstance(after, int | float) and not isinstance(after, bool) and after >= 0:
        return float(after)
    return None
