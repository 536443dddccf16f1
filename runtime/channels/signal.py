"""Signal, through bbernhard/signal-cli-rest-api in json-rpc mode, as a channel.

The REST API posts each raw ``receive`` notification of signal-cli's JSON-RPC daemon to its
``RECEIVE_WEBHOOK_URL``, unsigned and without retries; parlour registers that URL with a
secret in it (``?token=<url_secret>``). Replies go out with ``POST /v2/send``
(``api.SendMessageV2`` in the REST API's swagger; see ``tests/conformance/channels/specs/signal/``).
Signal has no buttons, so a reply's buttons and list rows go out as numbered lines.

A group is addressed the REST API's way: ``group.`` + base64 of signal-cli's group id (the
``groupInfo.groupId`` a message carries, itself base64), as ``convertInternalGroupIdToGroupId``
in the REST API's src/client/client.go builds it.

>>> bot = SignalBot(api_base="http://signal-api:8080", number="+4912345", url_secret="s" * 32)
>>> [call.json["message"] for call in ADAPTER.render(bot, "+4954321", Reply(text="Hi"))]
['Hi']
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import SecretStr, field_validator

from parlour.flow import Reply, UserMessage

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
)

TEXT_LIMIT = 2000
"""signal-cli (>= 0.11.5, ManagerImpl.applyMessage) sends a text longer than 2000 characters as
a ``text/x-signal-plain`` long-text attachment with only its start inline, as Signal's apps do
(Signal-Desktop's cut is 2 KiB of UTF-8, ts/util/longAttachment.std.ts). Parts of at most 2000
characters stay plain messages; a part of non-Latin text may still pass 2 KiB, which then
arrives as a long text: still delivered whole."""

MIN_SECRET_LENGTH = 16  # the URL's token is the only thing standing in for a signature

# Envelope contents that are not a data message, as the kind of Event they make.
CONTENTS = {"syncMessage": "sync", "receiptMessage": "status", "typingMessage": "typing",
            "editMessage": "edit", "storyMessage": "story", "callMessage": "call"}

# A data message without text or attachments, by what it carries instead.
DATA_KINDS = {"reaction": "reaction", "remoteDelete": "delete", "sticker": "sticker",
              "groupInfo": "group", "pollVote": "poll", "pollCreate": "poll"}


class SignalBot(BotSettings):
    """A number registered with signal-cli, behind the REST API at ``api_base``. ``url_secret``
    is the ``token`` query parameter of the webhook URL given to the REST API."""

    api_base: str  # the REST API is self-hosted: no default (its usual port, 8080, is parlour's too)
    number: str
    url_secret: SecretStr

    @field_validator("url_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"url_secret must be at least {MIN_SECRET_LENGTH} characters: it is the only proof "
                             "that a webhook came from the REST API")
        return value


class Signal:
    name: ClassVar[str] = "signal"
    settings: ClassVar[type[BotSettings]] = SignalBot

    def handshake(self, bot: SignalBot, webhook: Webhook) -> str | None:
        return None

    def verify(self, bot: SignalBot, webhook: Webhook) -> None:
        token = webhook.query.get("token")
        if not token:
            raise SignatureError("missing", "no ?token= in the webhook URL (signal-cli-rest-api does not sign, "
                                            "so the URL carries the bot's url_secret)")
        if not hmac.compare_digest(token.encode(), secret(bot.url_secret)):
            raise SignatureError("mismatch", "the webhook URL's token is not this bot's url_secret")

    def parse(self, bot: SignalBot, webhook: Webhook) -> Parsed:
        params = _params(webhook.body)
        envelope = _field(params, "envelope", dict, "params")
        if envelope is None:
            raise PayloadError("the 'receive' notification has no params.envelope")
        account = _field(params, "account", str, "params")
        if account is not None and account != bot.number:
            # One REST API posts every account's messages to its one webhook URL.
            return Parsed(events=(Event("other_account", data={"account": account}),))
        sender = _sender(envelope)
        data = _field(envelope, "dataMessage", dict, "envelope")
        if data is None:
            return Parsed(events=_other(envelope, sender))
        if sender is None:
            raise PayloadError("envelope has a dataMessage but no sourceNumber, sourceUuid or source")
        message_id = f"{_timestamp(envelope)}:{sender}"
        if sender == bot.number:
            return Parsed(events=(Event("own", user=sender, message_id=message_id),))
        found = _data_message(bot, envelope, data, sender, message_id)
        return Parsed(messages=(found,)) if isinstance(found, Received) else Parsed(events=(found,))

    def render(self, bot: SignalBot, user: str, reply: Reply) -> list[Call]:
        text = numbered(reply)
        if reply.media_url and reply.text:
            # The REST API takes attachments only as base64 data (base64_attachments), which a
            # pure adapter cannot fetch: the media goes as a link (numbered() does this when
            # there is no text).
            text = f"{reply.media_url}\n{text}"
        return [_send(bot, user, part) for part in split(text, TEXT_LIMIT)] if text else []

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        return standard_judge(status, headers, _error(status, body) if status >= 300 else "")


def _params(body: bytes) -> dict[str, Any]:
    """The ``params`` of a json-rpc ``receive`` notification, in either of signal-cli's forms:
    ``{envelope, account}``, or since 0.12 for explicit subscriptions ``{subscription,
    result: {envelope, account}}``."""
    try:
        note = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from exc
    if not isinstance(note, dict) or note.get("method") != "receive":
        raise PayloadError("the body is not a json-rpc 'receive' notification")
    params = _field(note, "params", dict, "notification")
    if params is None:
        raise PayloadError("the 'receive' notification has no params")
    result = _field(params, "result", dict, "params")
    return result if result is not None else params


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    """``obj[key]`` if it is a ``kind`` (a bool is not an int), None if absent or null."""
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise PayloadError(f"{where}.{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _sender(envelope: Mapping[str, Any]) -> str | None:
    """The sender's number, else its UUID (a sender who hides their number has only that)."""
    for key in ("sourceNumber", "sourceUuid", "source"):
        value = _field(envelope, key, str, "envelope")
        if value:
            return value
    return None


def _timestamp(envelope: Mapping[str, Any]) -> int:
    timestamp = _field(envelope, "timestamp", int, "envelope")
    if timestamp is None:
        raise PayloadError("envelope has no timestamp")
    return timestamp


def _data_message(bot: SignalBot, envelope: Mapping[str, Any], data: Mapping[str, Any], sender: str,
                  message_id: str) -> Received | Event:
    """A message from someone: a turn if it has text or attachments, else an Event (a
    reaction, a deletion, a sticker, a group update)."""
    text = _field(data, "message", str, "dataMessage")
    attachments = _field(data, "attachments", list, "dataMessage") or []
    user = _group_address(_field(data, "groupInfo", dict, "dataMessage")) or sender
    if not text and not attachments:
        kind = next((kind for key, kind in DATA_KINDS.items() if data.get(key) is not None), "other")
        return Event(kind, user=user, message_id=message_id)
    message = partial(UserMessage, text=text or "", user_id=sender, channel="signal",
                      user_name=_field(envelope, "sourceName", str, "envelope") or None)
    if attachments:
        return Received(user, message_id, message(kind="media", data=_media(bot, attachments)))
    return Received(user, message_id, message())


def _group_address(info: Mapping[str, Any] | None) -> str | None:
    group_id = _field(info, "groupId", str, "groupInfo") if info is not None else None
    return f"group.{base64.b64encode(group_id.encode()).decode()}" if group_id else None


def _media(bot: SignalBot, attachments: list[Any]) -> dict[str, Any]:
    """``url`` (the REST API serves a received attachment at ``/v1/attachments/{id}``),
    ``content_type`` and ``filename`` of the first attachment; every one in ``attachments``."""
    items = []
    for n, attachment in enumerate(attachments):
        if not isinstance(attachment, dict) or not isinstance(attachment.get("id"), str):
            raise PayloadError(f"dataMessage.attachments[{n}] is not an attachment with an id")
        items.append({"url": f"{bot.api_base}/v1/attachments/{quote(attachment['id'], safe='')}",
                      "content_type": _field(attachment, "contentType", str, f"attachments[{n}]"),
                      "filename": _field(attachment, "filename", str, f"attachments[{n}]")})
    return {**items[0], "attachments": items}


def _other(envelope: Mapping[str, Any], sender: str | None) -> tuple[Event, ...]:
    """What an envelope without a data message carries: a read or delivery receipt (one status
    per message it covers, keyed by that message's timestamp, which /v2/send returned), a sync
    message from the account's other devices, typing, an edit..."""
    kind = next((kind for key, kind in CONTENTS.items() if envelope.get(key) is not None), "other")
    if kind != "status":
        return (Event(kind, user=sender),)
    receipt = _field(envelope, "receiptMessage", dict, "envelope")
    stamps = _field(receipt, "timestamps", list, "receiptMessage") or []
    return tuple(Event("status", user=sender, message_id=str(stamp), status=_receipt_status(receipt))
                 for stamp in stamps if isinstance(stamp, int) and not isinstance(stamp, bool))


def _receipt_status(receipt: Mapping[str, Any]) -> str:
    # A viewed receipt (a view-once or a story seen) is a read, as far as delivery goes.
    if receipt.get("isRead") is True or receipt.get("isViewed") is True:
        return "read"
    return "delivered"


def _send(bot: SignalBot, user: str, text: str) -> Call:
    # text_mode "normal": a server whose DEFAULT_SIGNAL_TEXT_MODE is "styled" would otherwise
    # take a user's *asterisks* or ~tildes~ in the text for formatting.
    return Call("POST", "/v2/send", json={"message": text, "number": bot.number, "recipients": [user],
                                          "text_mode": "normal"})


def _error(status: int, body: bytes) -> str:
    """The REST API's ``{"error": "..."}``, e.g. ``HTTP 400: Invalid group id``."""
    try:
        error = json.loads(body)
    except (ValueError, RecursionError):
        return f"HTTP {status}"
    if isinstance(error, dict) and isinstance(error.get("error"), str):
        return f"HTTP {status}: {error['error']}"
    return f"HTTP {status}"


ADAPTER = Signal()
