"""WhatsApp Cloud API (Meta): webhooks in, ``POST /{phone_number_id}/messages`` out.

Meta checks the webhook URL with a GET (``hub.mode=subscribe``, ``hub.verify_token``; the answer
is ``hub.challenge``), then POSTs changes signed ``X-Hub-Signature-256: sha256=<HMAC-SHA256(app
secret, raw body)>``. One POST may carry several ``entry[]``, each several ``changes[]``, each
several ``messages[]`` or ``statuses[]``: they are taken in that order.

Limits, in characters, from Meta's OpenAPI extract (tests/conformance/channels/specs/whatsapp/,
by schema) or its docs (developers.facebook.com/documentation/business-messaging/whatsapp/
messages/<page>): text 4096 (text-messages; the schema has none); caption 1024 (image-, video-,
document-messages; audio and stickers take none); reply buttons 3, title 20, id 256
(ActionObject.buttons), body 1024 (BodyObject); list rows 10 for all sections together
(interactive-list-messages; SectionObject.rows says 10 per section), row title 24, id 200,
description 72 (SectionObject.rows), button label 20 (ActionObject.button), body 4096
(interactive-list-messages; BodyObject, shared by every interactive type, says 1024).

Options go as reply buttons (1 to 3), else as a list message in one section (4 to 10, or
whenever the flow asked for a list), else as numbered text (:func:`~.base.numbered`). Ids come
back when pressed, so they are never cut: options whose ids do not fit take the next form.
An id carries its prompt (``p3|quit``, :func:`~.base.tagged`) when that fits a row id.
Titles too long are cut at a word and end in "…" (:func:`_fit`); a cut row title is shown whole
in the row's description line. Text longer than a body goes first as text messages; media go
first, with the text as caption when it fits and no options follow.

>>> bot = WhatsAppBot(phone_number_id="106540352242922", access_token="EAAB", app_secret="s",
...                   verify_token="v")
>>> [call.json["type"] for call in ADAPTER.render(bot, "16505551234", Reply(text="Hi"))]
['text']
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NoReturn

from pydantic import Field, SecretStr

from parlour.flow import Button, Reply, UserMessage

from .base import (
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

TEXT_MAX = 4096
CAPTION_MAX = 1024
BUTTONS_MAX, BUTTON_TITLE_MAX, BUTTON_ID_MAX, BUTTON_BODY_MAX = 3, 20, 256, 1024
ROWS_MAX, ROW_TITLE_MAX, ROW_ID_MAX, ROW_DESCRIPTION_MAX = 10, 24, 200, 72
LIST_LABEL_MAX, LIST_BODY_MAX = 20, 4096
LIST_LABEL = "Options"  # the flow language's default list button (docs/flows.md)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
OBJECT = "whatsapp_business_account"
STATUSES = frozenset({"sent", "delivered", "read", "failed"})
MEDIA_TYPES = frozenset({"image", "video", "audio", "voice", "document", "sticker"})
_CAPTIONED = frozenset({"image", "video", "document"})
_SENDABLE = frozenset({"image", "video", "audio", "document", "sticker"})
# Meta's error codes (cloud-api/support/error-codes) that mean "later", though most come with
# HTTP 400: 4 app call limit, 80007 account rate limit, 130429 throughput, 131048 spam rate
# limit, 131056 too many messages to one user; 2 and 131016 are the service being down.
RETRY_CODES = frozenset({2, 4, 80007, 130429, 131016, 131048, 131056})
_ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual"}
# A business-scoped user id (BSUID): an ISO 3166 alpha-2 country code, a period, up to 128
# letters and digits ("US.13491208655302741918"); a parent BSUID has "ENT." after the country
# (Meta, "Business-scoped user IDs", 2026).
BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}")


class WhatsAppBot(BotSettings):
    """One WhatsApp business number: its ``phone_number_id`` (the Graph API node that sends),
    the ``access_token`` that sends, the app's ``app_secret`` that signs webhooks, and the
    ``verify_token`` the operator typed into the app's webhook settings."""

    api_base: str = "https://graph.facebook.com/v23.0"
    # One URL path segment: it is put in the path of every call.
    phone_number_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    access_token: SecretStr
    app_secret: SecretStr
    verify_token: SecretStr


class WhatsApp:
    """The WhatsApp Cloud API adapter; stateless, one instance serves every bot."""

    name: ClassVar[str] = "whatsapp"
    settings: ClassVar[type[BotSettings]] = WhatsAppBot

    def handshake(self, bot: BotSettings, webhook: Webhook) -> str | None:
        """``hub.challenge`` when ``hub.verify_token`` is the bot's and ``hub.mode`` subscribes."""
        token = webhook.query.get("hub.verify_token")
        if not token:
            raise SignatureError("missing", "no hub.verify_token in the query")
        if not hmac.compare_digest(token.encode(), secret(_bot(bot).verify_token)):
            raise SignatureError("mismatch", "hub.verify_token is not the bot's verify token")
        if webhook.query.get("hub.mode") != "subscribe":
            raise SignatureError("mismatch", "hub.mode is not 'subscribe'")
        challenge = webhook.query.get("hub.challenge")
        if not challenge:
            raise SignatureError("missing", "no hub.challenge in the query")
        return challenge

    def verify(self, bot: BotSettings, webhook: Webhook) -> None:
        header = webhook.headers.get(SIGNATURE_HEADER)  # case-insensitive (Webhook's contract)
        if not header:
            raise SignatureError("missing", f"no {SIGNATURE_HEADER} header")
        match = _SIGNATURE.fullmatch(header.strip())
        if match is None:
            raise SignatureError("malformed", f"{SIGNATURE_HEADER} is not sha256=<64 hex digits>")
        expected = hmac.new(secret(_bot(bot).app_secret), webhook.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match[1].lower()):
            raise SignatureError("mismatch", f"{SIGNATURE_HEADER} does not match the body and the app secret")

    def parse(self, bot: BotSettings, webhook: Webhook) -> Parsed:
        items = list(_items(_load(webhook.body), _bot(bot).phone_number_id))
        return Parsed(messages=tuple(i for i in items if isinstance(i, Received)),
                      events=tuple(i for i in items if isinstance(i, Event)))

    def render(self, bot: BotSettings, user: str, reply: Reply) -> list[Call]:
        bot = _bot(bot)
        headers = {"Authorization": f"Bearer {bot.access_token.get_secret_value()}",
                   "Content-Type": "application/json"}
        path = f"/{bot.phone_number_id}/messages"
        return [Call("POST", path, json={**_ENVELOPE, **_address(user), **content}, headers=headers)
                for content in _contents(tagged(reply, lambda id_: len(id_) <= ROW_ID_MAX))]

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        if 200 <= status < 300:
            return Verdict("sent")
        code, reason = _error(body)
        if code in RETRY_CODES:  # read as the 429 it means, Retry-After included
            return standard_judge(429, headers, reason)
        return standard_judge(status, headers, reason)


ADAPTER = WhatsApp()


def _bot(bot: BotSettings) -> WhatsAppBot:
    if not isinstance(bot, WhatsAppBot):
        raise TypeError(f"the whatsapp adapter needs WhatsAppBot settings, got {type(bot).__name__}")
    return bot


# ------------------------------------------------------------------ inbound


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body: not JSON ({exc.msg} at byte {exc.pos})") from None
    except (ValueError, RecursionError):  # not UTF-8, or nested deeper than Python recurses
        raise PayloadError("body: not JSON (not UTF-8, or nested too deep)") from None


def _items(payload: Any, number_id: str) -> Iterator[Received | Event]:
    payload = _obj(payload, "body")
    if payload.get("object") != OBJECT:
        raise PayloadError(f"object: expected {OBJECT!r}, got {_show(payload.get('object'))}")
    for entry, where in _each(payload, "entry", "", required=True):
        for change, at in _each(entry, "changes", where, required=True):
            yield from _change(change, at, number_id)


def _change(change: dict, where: str, number_id: str) -> Iterator[Received | Event]:
    field = _str(change, "field", where)
    value = _at(change, "value", where)
    where = f"{where}.value"
    if field != "messages":  # group and account updates: recorded, nothing to answer
        yield Event(kind=field, data=value)
        return
    # Meta posts every phone number of an app to the app's one webhook URL: a message to
    # another number is that number's bot's, and answering it from this one would be wrong.
    metadata = _obj(value["metadata"], f"{where}.metadata") if "metadata" in value else {}
    to = _maybe_str(metadata, "phone_number_id", f"{where}.metadata")
    if to is not None and to != number_id:
        yield Event(kind="other_number", data={"phone_number_id": to})
        return
    contacts = _contacts(value, where)
    for message, at in _each(value, "messages", where):
        yield _message(message, at, contacts)
    for status, at in _each(value, "statuses", where):
        yield _status(status, at)
    for error, _ in _each(value, "errors", where):
        yield Event(kind="error", data=error)


@dataclass(frozen=True, slots=True)
class _Contacts:
    """What ``contacts[]`` says of the senders: profile names by phone number (``wa_id``) and
    by BSUID (``user_id``), and the BSUID of each phone number given with one."""

    names: dict[str, str]
    bsuids: dict[str, str]


def _contacts(value: dict, where: str) -> _Contacts:
    names: dict[str, str] = {}
    bsuids: dict[str, str] = {}
    for contact, at in _each(value, "contacts", where):
        profile = _obj(contact["profile"], f"{at}.profile") if "profile" in contact else {}
        wa_id, user_id = _maybe_str(contact, "wa_id", at), _bsuid(contact, "user_id", at)
        name = _maybe_str(profile, "name", f"{at}.profile")
        names |= {key: name for key in (wa_id, user_id) if key and name}
        if wa_id and user_id:
            bsuids[wa_id] = user_id
    return _Contacts(names, bsuids)


def _message(message: dict, where: str, contacts: _Contacts) -> Received | Event:
    """A message's sender is its phone number (``from``) or, for a user who hides it, its
    BSUID (``from_user_id``); either may be missing, not both. The BSUID, given here or in
    ``contacts[]``, goes along as the scoped id that keeps one conversation per person."""
    message_id, kind = _str(message, "id", where), _str(message, "type", where)
    phone = _maybe_str(message, "from", where)
    bsuid = _bsuid(message, "from_user_id", where) or contacts.bsuids.get(phone or "")
    user = phone or bsuid
    if user is None:
        raise PayloadError(f"{where}: no 'from' or 'from_user_id'")
    turn = _turn(message, kind, where)
    if turn is None:  # a reaction, contacts, an order, a system notice...: not a turn
        rest = {k: v for k, v in message.items() if k not in ("from", "id", "type")}
        return Event(kind=kind, user=user, message_id=message_id, data=rest)
    name = contacts.names.get(phone or "") or contacts.names.get(bsuid or "")
    turn = replace(turn, user_id=user, user_name=name, channel="whatsapp")
    return Received(user, message_id, turn, _sent_at(message, where), scoped_id=bsuid)


def _bsuid(obj: dict, key: str, where: str) -> str | None:
    value = _maybe_str(obj, key, where)
    if value is not None and not BSUID.fullmatch(value):
        raise PayloadError(f"{where}.{key}: expected a business-scoped user id (CC.digits), got {_show(value)}")
    return value


def _sent_at(message: dict, where: str) -> float | None:
    """The message's ``timestamp`` (epoch seconds as a string): what makes a replay known for
    the 7 days WhatsApp retries (docs/channels/whatsapp.md, "Replays")."""
    stamp = _maybe_str(message, "timestamp", where)
    if stamp is None:
        return None
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise PayloadError(f"{where}.timestamp: expected epoch seconds, got {_show(stamp)}")
    return float(stamp)


def _turn(message: dict, kind: str, where: str) -> UserMessage | None:
    if kind == "text":
        return UserMessage(text=_str(_at(message, "text", where), "body", f"{where}.text"))
    if kind == "interactive":
        return _interactive(_at(message, "interactive", where), f"{where}.interactive")
    if kind == "button":  # a template's quick-reply button
        button = _at(message, "button", where)
        return UserMessage(text=_str(button, "text", f"{where}.button"),
                           button=_str(button, "payload", f"{where}.button"), kind="button")
    if kind == "location":
        return _location(_at(message, "location", where), f"{where}.location")
    if kind in MEDIA_TYPES:
        return _media_in(_at(message, kind, where), kind, f"{where}.{kind}")
    return None


def _interactive(interactive: dict, where: str) -> UserMessage | None:
    kind = _str(interactive, "type", where)
    if kind not in ("button_reply", "list_reply"):  # e.g. a Flow's nfm_reply: an event
        return None
    picked = _at(interactive, kind, where)
    button, prompt = untagged(_str(picked, "id", f"{where}.{kind}"))
    return UserMessage(text=_str(picked, "title", f"{where}.{kind}"), button=button, kind="button", prompt=prompt)


def _location(location: dict, where: str) -> UserMessage:
    data = {"latitude": _number(location, "latitude", where), "longitude": _number(location, "longitude", where),
            "name": _maybe_str(location, "name", where), "address": _maybe_str(location, "address", where)}
    return UserMessage(kind="location", data=data)


def _media_in(media: dict, kind: str, where: str) -> UserMessage:
    # A voice note arrives as audio marked voice (older versions: type "voice"); flows may
    # want to tell it from a music file, so it keeps its own media_type.
    media_type = "voice" if kind == "audio" and media.get("voice") is True else kind
    data = {"media_type": media_type, "id": _str(media, "id", where),
            **{key: _maybe_str(media, key, where) for key in ("mime_type", "sha256", "caption", "filename")}}
    return UserMessage(text=data["caption"] or "", kind="media", data=data)


def _status(status: dict, where: str) -> Event:
    state = _str(status, "status", where)
    _list(status, "errors", where, required=False)  # only to refuse errors that are not an array
    data = {k: v for k, v in status.items() if k not in ("id", "recipient_id", "recipient_user_id")}
    known = state in STATUSES  # a status outside the four is kept, under its own kind
    # A user who hides their phone number is named by BSUID alone (recipient_user_id).
    user = _maybe_str(status, "recipient_id", where) or _bsuid(status, "recipient_user_id", where)
    return Event(kind="status" if known else "status_other", user=user or _missing(where, "recipient_id"),
                 message_id=_str(status, "id", where), status=state if known else None, data=data)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return json.dumps(value)[:40]


def _missing(where: str, key: str) -> NoReturn:
    raise PayloadError(f"{where or 'body'}: no {key!r}")


def _obj(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object, got {_show(value)}")
    return value


def _at(obj: dict, key: str, where: str) -> dict:
    return _obj(obj[key], f"{where}.{key}") if key in obj else _missing(where, key)


def _each(obj: dict, key: str, where: str, required: bool = False) -> Iterator[tuple[dict, str]]:
    """The objects in the array ``obj[key]``, each with where it is."""
    at = f"{where}.{key}" if where else key
    for i, item in enumerate(_list(obj, key, where, required)):
        yield _obj(item, f"{at}[{i}]"), f"{at}[{i}]"


def _list(obj: dict, key: str, where: str, required: bool = True) -> list:
    if key not in obj:
        return _missing(where, key) if required else []
    value = obj[key]
    if not isinstance(value, list):
        raise PayloadError(f"{where + '.' if where else ''}{key}: expected an array, got {_show(value)}")
    return value


def _maybe_str(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{where}.{key}: expected a string, got {_show(value)}")
    return value


def _str(obj: dict, key: str, where: str) -> str:
    value = _maybe_str(obj, key, where)
    return _missing(where, key) if value is None else value


def _number(obj: dict, key: str, where: str) -> float:
    value = obj.get(key)
    if value is None:
        return _missing(where, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where}.{key}: expected a number, got {_show(value)}")
    return value


# ------------------------------------------------------------------ outbound


def _address(user: str) -> dict[str, str]:
    """Where a message goes: ``to`` for a phone number, ``recipient`` for a BSUID (a BSUID in
    ``to`` is read as a phone number, and the message silently lost)."""
    return {"recipient": user} if BSUID.fullmatch(user) else {"to": user}


def _contents(reply: Reply) -> list[dict[str, Any]]:
    """The message objects (without the envelope) that carry ``reply``, in order."""
    text = (reply.text or "").rstrip()
    options = reply.buttons or reply.list
    contents = []
    if reply.media_url:
        kind = _media_kind(reply)
        caption = text if not options and kind in _CAPTIONED and len(text) <= CAPTION_MAX else ""
        contents.append(_media_out(reply, kind, caption))
        text = "" if caption else text
    if options:
        return contents + _choice(reply, text)
    return contents + _texts(text)


def _texts(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"body": part}} for part in split(text, TEXT_MAX) if part.strip()]


def _media_kind(reply: Reply) -> str:
    kind = reply.media_kind or "image"  # the flow language's default
    return kind if kind in _SENDABLE else "document"  # any other file goes as a document


def _media_out(reply: Reply, kind: str, caption: str) -> dict[str, Any]:
    media: dict[str, str] = {"link": reply.media_url or ""}
    if caption:
        media["caption"] = caption
    if kind == "document" and reply.media_filename:
        media["filename"] = reply.media_filename
    return {"type": kind, kind: media}


def _choice(reply: Reply, text: str) -> list[dict[str, Any]]:
    """Reply buttons if they fit, else a list, else numbered text. An interactive message
    needs body text (BodyObject), so options without text go as numbered text too."""
    if text.strip():
        for kind, build, body_max in (("button", _buttons, BUTTON_BODY_MAX), ("list", _rows, LIST_BODY_MAX)):
            action = build(reply)
            if action is not None:
                lead, body = _lead(text, body_max)
                interactive = {"type": kind, "body": {"text": body}, "action": action}
                return [*_texts(lead), {"type": "interactive", "interactive": interactive}]
    return _texts(numbered(Reply(text=text or None, buttons=reply.buttons, list=reply.list)))


def _lead(text: str, body_max: int) -> tuple[str, str]:
    """``text`` as what goes before the interactive message and its body of <= body_max."""
    if len(text) <= body_max:
        return "", text
    parts = split(text, body_max)
    return "\n".join(parts[:-1]), parts[-1]


def _buttons(reply: Reply) -> dict[str, Any] | None:
    if reply.list or len(reply.buttons) > BUTTONS_MAX or not _ids_fit(reply.buttons, BUTTON_ID_MAX):
        return None
    titles = [_fit(b.title, BUTTON_TITLE_MAX) for b in reply.buttons]
    if not all(t.strip() for t in titles) or len(set(titles)) < len(titles):  # Meta wants them unique
        return None
    return {"buttons": [{"type": "reply", "reply": {"id": b.id, "title": t}}
                        for b, t in zip(reply.buttons, titles, strict=True)]}


def _rows(reply: Reply) -> dict[str, Any] | None:
    options = reply.buttons or reply.list
    if len(options) > ROWS_MAX or not _ids_fit(options, ROW_ID_MAX) or not all(o.title.strip() for o in options):
        return None
    label = _fit((reply.list_button or "").strip() or LIST_LABEL, LIST_LABEL_MAX)
    return {"button": label, "sections": [{"rows": [_row(o) for o in options]}]}


def _row(option: Button) -> dict[str, str]:
    title = _fit(option.title, ROW_TITLE_MAX)
    # A cut title is shown whole in the description line, when the row has none of its own.
    description = option.description or (option.title if title != option.title else None)
    row = {"id": option.id, "title": title}
    if description:
        row["description"] = _fit(description, ROW_DESCRIPTION_MAX)
    return row


def _ids_fit(options: tuple[Button, ...], id_max: int) -> bool:
    """Ids are what comes back when pressed: never cut. Meta wants them unique, at most
    ``id_max`` long, without leading or trailing spaces; options whose ids do not fit fall
    back to the next form."""
    ids = [o.id for o in options]
    return len(set(ids)) == len(ids) and all(0 < len(i) <= id_max and i == i.strip() for i in ids)


def _fit(title: str, limit: int) -> str:
    """``title`` cut to ``limit`` characters, ending in "…": at a space in its second half if
    there is one, so that words stay whole."""
    if len(title) <= limit:
        return title
    cut = title[:limit - 1]
    space = cut.rfind(" ")
    if cut[-1].isalnum() and title[limit - 1].isalnum() and space > limit // 2:  # inside a word
        cut = cut[:space]
    return cut.rstrip() + "…"


def _error(body: bytes) -> tuple[int | None, str]:
    """The code and a readable reason from Meta's error body ``{"error": {"code", "message",
    "error_data": {"details"}}}``; (None, "") when the body is not one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    details = error.get("error_data", {}).get("details") if isinstance(error.get("error_data"), dict) else None
    reason = f"WhatsApp error {code}: {error.get('message') or 'no message'}"
    return code, f"{reason} ({details})" if isinstance(details, str) and details else reason
