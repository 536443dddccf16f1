"""The Telegram Bot API for :mod:`tests.channels.fake_api`: requests checked against the Bot API
extract in tests/conformance/channels/specs/telegram/, answered as Telegram answers.

A request must be a POST of a JSON object to ``/bot<token>/<method>`` for a method the extract
lists (sendMessage, answerCallbackQuery, setWebhook, getUpdates, editMessageText,
editMessageReplyMarkup) or a media method. Its parameters must be the method's own, of the
types the extract gives, with the required ones present, and within the lengths the
descriptions state ("1-4096 characters", "1-64 bytes"). An inline keyboard's buttons are
checked against InlineKeyboardButton.

The extract has no media methods. sendPhoto, sendVideo, sendAudio, sendDocument and
sendSticker are taken as sendMessage's parameters without the text ones, plus the file (a
String: parlour passes URLs, never uploads) and, but for a sticker, the caption
(core.telegram.org/bots/api#sendphoto: "0-1024 characters after entities parsing"). Their
rarer own parameters (duration, has_spoiler...) are not known here; parlour sends none.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from tests.channels.fake_api import FakeRequest, Spec

EXTRACT = (Path(__file__).parents[1] / "conformance" / "channels" / "specs" / "telegram"
           / "EXTRACT_update_message_callback_sendMessage.json")
_API = json.loads(EXTRACT.read_text())
_PATH = re.compile(r"/bot([0-9]+:[A-Za-z0-9_-]+)/([A-Za-z]+)")
_LENGTH = re.compile(r"(\d+)-(\d+) (characters|bytes)")
_EPOCH = 1_767_225_600  # 2026-01-01 UTC: answers carry a fixed date, never the clock

Field = dict[str, Any]  # {name, types, required, description}, as in the extract


def _fields(entry: dict[str, Any]) -> dict[str, Field]:
    return {field["name"]: field for field in entry.get("fields", [])}


def _media(parameter: str) -> dict[str, Field]:
    fields = {name: field for name, field in _fields(_API["methods"]["sendMessage"]).items()
              if name not in {"text", "parse_mode", "entities", "link_preview_options"}}
    fields[parameter] = {"name": parameter, "types": ["InputFile", "String"], "required": True,
                         "description": "the file: a file_id or an HTTP URL"}
    if parameter != "sticker":
        fields["caption"] = {"name": "caption", "types": ["String"], "required": False,
                             "description": "Caption, 0-1024 characters after entities parsing"}
        fields["parse_mode"] = {"name": "parse_mode", "types": ["String"], "required": False,
                                "description": "Mode for parsing entities in the caption"}
        fields["caption_entities"] = {"name": "caption_entities", "types": ["Array of MessageEntity"],
                                      "required": False, "description": "entities in the caption"}
    return fields


METHODS: dict[str, dict[str, Field]] = {
    name: _fields(entry) for name, entry in _API["methods"].items()
} | {
    method: _media(parameter) for method, parameter in [
        ("sendPhoto", "photo"), ("sendVideo", "video"), ("sendAudio", "audio"),
        ("sendDocument", "document"), ("sendSticker", "sticker"),
    ]
}
RETURNS = {name: entry["returns"] for name, entry in _API["methods"].items()}
BUTTON = _fields(_API["types"]["InlineKeyboardButton"])
# "Exactly one of the fields other than text, icon_custom_emoji_id, and style must be used."
_BUTTON_ACTIONS = set(BUTTON) - {"text", "icon_custom_emoji_id", "style"}

# ---------------------------------------------------------------- check


def check(request: FakeRequest, token: str | None = None) -> list[str]:
    """What is wrong with ``request`` as a Bot API call; ``token``, when given, must be in the path."""
    matched = _PATH.fullmatch(request.path)
    if matched is None:
        return [f"path {request.path!r} is not /bot<token>/<method>"]
    if token is not None and matched[1] != token:
        return ["401 Unauthorized: not this bot's token"]
    method = matched[2]
    if method not in METHODS:
        return [f"404 Not Found: unknown method {method}"]
    if request.method != "POST":
        return [f"{method}: sent with {request.method}, parlour posts JSON"]
    try:
        body = request.json
    except ValueError:
        return [f"{method}: the body is not JSON"]
    if not isinstance(body, dict):
        return [f"{method}: the body is not a JSON object"]
    return _parameters(method, METHODS[method], body)


def for_token(token: str) -> Spec:
    """A spec that also insists on one bot's token, as Telegram does."""
    return Spec(functools.partial(check, token=token), answer)


def _parameters(where: str, fields: dict[str, Field], body: dict[str, Any]) -> list[str]:
    problems = [f"{where}: {name} is required" for name, field in fields.items()
                if field["required"] and name not in body]
    for name, value in body.items():
        field = fields.get(name)
        if field is None:
            problems.append(f"{where}: unknown parameter {name}")
        elif not any(_is(value, kind) for kind in field["types"]):
            problems.append(f"{where}: {name} is not {' or '.join(field['types'])}")
        else:
            problems += _length(f"{where}: {name}", field, value)
    if isinstance(body.get("reply_markup"), dict):
        problems += _markup(where, body["reply_markup"])
    return problems


def _is(value: Any, kind: str) -> bool:
    """Whether a JSON value is of a Bot API type; object types are only checked to be objects,
    as the extract does not resolve them (InlineKeyboardMarkup is checked by :func:`_markup`)."""
    if kind.startswith("Array of "):
        return isinstance(value, list) and all(_is(item, kind.removeprefix("Array of ")) for item in value)
    if kind == "Integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "Float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in {"String", "Boolean"}:
        return isinstance(value, str if kind == "String" else bool)
    if kind == "InputFile":
        return False  # an upload is multipart/form-data, never a JSON value
    return isinstance(value, dict)


def _length(where: str, field: Field, value: Any) -> list[str]:
    """The "N-M characters" or "N-M bytes" its description states, for a string."""
    bounds = _LENGTH.search(field.get("description", ""))
    if bounds is None or not isinstance(value, str):
        return []
    low, high, unit = int(bounds[1]), int(bounds[2]), bounds[3]
    size = len(value.encode()) if unit == "bytes" else len(value)
    if not low <= size <= high:
        return [f"{where} is {size} {unit}, not {low}-{high}"]
    if unit == "characters" and low > 0 and not value.strip():
        return [f"{where} is empty"]  # Telegram: "Bad Request: message text is empty"
    return []


def _markup(where: str, markup: dict[str, Any]) -> list[str]:
    rows = markup.get("inline_keyboard")
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return [f"{where}: reply_markup is not an InlineKeyboardMarkup (the keyboard parlour sends)"]
    problems = []
    for r, row in enumerate(rows):
        for b, button in enumerate(row):
            at = f"{where}: inline_keyboard[{r}][{b}]"
            if not isinstance(button, dict):
                problems.append(f"{at} is not an InlineKeyboardButton")
                continue
            problems += _parameters(at, BUTTON, button)
            if len(_BUTTON_ACTIONS & set(button)) != 1:
                problems.append(f"{at} needs exactly one action (callback_data, url...)")
    return problems

# ---------------------------------------------------------------- answer


def answer(request: FakeRequest, n: int) -> tuple[int, Any]:
    """Telegram's success: ``{"ok": true, "result": ...}``, the result the method returns (the
    ``n``-th delivered request's Message, True or no updates)."""
    method = _PATH.fullmatch(request.path)[2]
    returns = RETURNS.get(method, ["Message"])
    if "Message" not in returns:
        return 200, {"ok": True, "result": [] if returns == ["Array of Update"] else True}
    body = request.json
    if "chat_id" not in body:  # an edit of an inline-mode message answers True
        return 200, {"ok": True, "result": True}
    message = {"message_id": n, "date": _EPOCH + n, "chat": _chat(body.get("chat_id"))}
    message |= {key: body[key] for key in ("text", "caption", "reply_markup") if key in body}
    return 200, {"ok": True, "result": message}


def _chat(chat_id: Any) -> dict[str, Any]:
    if isinstance(chat_id, str):  # "@username" of a channel
        return {"id": -1_001_000_000_000, "type": "channel", "username": chat_id.removeprefix("@")}
    return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}


SPEC = Spec(check, answer)
