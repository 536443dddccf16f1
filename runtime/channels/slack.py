"""Slack: the Events API and interactivity in, ``chat.postMessage`` out.

Slack signs every request it sends, the ``url_verification`` challenge included (a signed POST:
Slack has no GET handshake)::

    X-Slack-Signature: v0=hex(HMAC-SHA256(signing_secret, "v0:" + X-Slack-Request-Timestamp + ":" + body))

Events arrive as JSON (``event_callback``); interactions (a button pressed) as a form whose
``payload`` field is JSON. A user's message in a channel is a turn of the conversation
``"<channel>:<user>"``: replies go back to that channel, and each user has their own
conversation there. A message's id is ``"<channel>:<ts>"``, Slack's own identity of a message:
a redelivery (Slack resends an event it saw no 200 for within 3 s, with ``X-Slack-Retry-Num``)
carries the same, and so do the two events of one post that mentions the bot (``message`` and
``app_mention``, which have different ``event_id``s), so each runs one turn only.

>>> ADAPTER.verify(bot, webhook)
>>> ADAPTER.parse(bot, webhook).messages[0].user
'C111:W111'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from pydantic import SecretStr

from parlour.flow import Button, Reply, UserMessage

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
    secret,
    split,
    standard_judge,
    tagged,
    untagged,
)

# "Verifying requests from Slack" (docs.slack.dev/authentication/verifying-requests-from-slack):
# refuse a timestamp more than five minutes from local time, against replays.
WINDOW_S = 5 * 60

# Block Kit reference (docs.slack.dev/reference/block-kit); the Web API spec extract predates
# Block Kit and types `blocks` as a loose array, so the limits come from there:
MAX_BLOCKS = 50              # "Blocks": up to 50 blocks in each message
SECTION_TEXT_CHARS = 3000    # section block: text, at most 3000 characters
ACTIONS_ELEMENTS = 25        # actions block: at most 25 elements (older references say 5)
BUTTON_TEXT_CHARS = 75       # button element: text (plain_text), at most 75 characters
BUTTON_VALUE_CHARS = 2000    # button element: value, at most 2000 characters
ACTION_ID_CHARS = 255        # button element: action_id, at most 255, unique in the message
IMAGE_URL_CHARS = 3000       # image block: image_url, at most 3000 characters
ALT_TEXT_CHARS = 2000        # image block: alt_text, at most 2000 characters
# chat.postMessage reference, "Truncating content" (and the 2018-04 changelog "truncating really
# long messages"): Slack cuts `text` after 40,000 characters.
MAX_TEXT_CHARS = 40_000

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# Slack's ids and timestamps (C0123, W111, Ev111, 1596530385.194939) are short and never hold
# ':', which separates channel and user in a conversation's user part.
_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")
# Subtypes that are still a person writing (a file shared, "also send to channel", /me).
_USER_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}
# Errors of an `ok: false` answer that a later attempt may not meet.
_TRANSIENT = {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
              "request_timeout"}
# Kept out of analytics: the legacy verification token is a credential, and a response_url
# lets whoever holds it post to the channel for 30 minutes.
_PRIVATE = {"token", "response_url", "response_urls"}
_FILE_FIELDS = {"id": "id", "name": "filename", "mimetype": "mime_type", "url_private": "url"}


class SlackBot(BotSettings):
    """One Slack app in one workspace. ``bot_user_id`` (the bot's own ``U...``) lets its own
    messages and its mentions be recognised; without it, only ``bot_id`` marks them."""

    api_base: str = "https://slack.com/api"
    bot_token: SecretStr  # xoxb-...
    signing_secret: SecretStr
    bot_user_id: str | None = None


class Slack:
    """The Slack adapter; stateless, one instance serves every Slack bot."""

    name: ClassVar[str] = "slack"
    settings: ClassVar[type[BotSettings]] = SlackBot

    def handshake(self, bot: BotSettings, webhook: Webhook) -> str | None:
        return None  # url_verification comes as a signed POST: parse answers it

    def verify(self, bot: BotSettings, webhook: Webhook) -> None:
        signature = webhook.headers.get("X-Slack-Signature")
        timestamp = webhook.headers.get("X-Slack-Request-Timestamp")
        if signature is None or timestamp is None:
            raise SignatureError("missing", "no X-Slack-Signature or no X-Slack-Request-Timestamp header")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureError("malformed", "X-Slack-Request-Timestamp is not whole seconds")
        if not _SIGNATURE.fullmatch(signature):
            raise SignatureError("malformed", "X-Slack-Signature is not v0= and 64 hex digits")
        age_s = webhook.now - int(timestamp)
        if abs(age_s) > WINDOW_S:
            raise SignatureError("stale", f"the timestamp is {age_s:+.0f} s off the gateway's clock; Slack "
                                          f"allows {WINDOW_S} s either way")
        signed = b"v0:" + timestamp.encode() + b":" + webhook.body
        expected = "v0=" + hmac.new(secret(_slack(bot).signing_secret), signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("mismatch", "X-Slack-Signature does not match the body and signing secret")

    def parse(self, bot: BotSettings, webhook: Webhook) -> Parsed:
        settings = _slack(bot)
        if "x-www-form-urlencoded" in webhook.headers.get("Content-Type", "").lower():
            return _form(webhook.body, settings)
        return _callback(_json(webhook.body, "the body"), settings)

    def render(self, bot: BotSettings, user: str, reply: Reply) -> list[Call]:
        token = _slack(bot).bot_token.get_secret_value()
        # Slack reads a JSON body only with the token in the header; without a charset it
        # answers with a "missing_charset" warning.
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
        channel = user.partition(":")[0]  # "C111:W111": the reply goes to the channel
        return [Call("POST", "/chat.postMessage", json={"channel": channel, "text": _fallback(blocks),
                                                        "blocks": blocks}, headers=headers)
                for blocks in _messages(_blocks(reply))]

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        answer = _answer(body)
        reason = _reason(answer)
        if not 200 <= status < 300:
            return standard_judge(status, headers, reason)
        if answer is None:
            # Not Slack's JSON (a proxy's page?): whether the message went out is unknown.
            return Verdict("retry", None, "the answer is not a Slack JSON object")
        if answer.get("ok") is True:
            return Verdict("sent")
        if answer.get("error") in _TRANSIENT:
            return standard_judge(429, headers, reason)  # read as a 429: retried, after Retry-After if given
        return Verdict("failed", None, reason or "ok is false, with no error")


ADAPTER = Slack()


def _slack(bot: BotSettings) -> SlackBot:
    if not isinstance(bot, SlackBot):
        raise TypeError(f"the Slack adapter needs SlackBot settings, got {type(bot).__name__}")
    return bot


# ---------------------------------------------------------------- inbound


def _callback(body: dict[str, Any], bot: SlackBot) -> Parsed:
    """An Events API body: the url_verification challenge, an event, or another notice."""
    kind = _field(body, "type", str, "body")
    if kind == "url_verification":
        return Parsed(answer=Answer.json({"challenge": _field(body, "challenge", str, "body")}))
    if kind == "event_callback":
        event = _field(body, "event", dict, "body")
        return _event(event, _id(body, "event_id", "body"), bot)
    return Parsed(events=(Event(kind, data=_public(body)),))  # app_rate_limited and the like


def _event(event: dict[str, Any], event_id: str, bot: SlackBot) -> Parsed:
    kind = _field(event, "type", str, "event")
    if kind not in ("message", "app_mention"):
        return _noted(kind, event, event_id)
    subtype = _optional(event, "subtype", str, "event")
    if _from_bot(event, subtype, bot):
        return _noted("own", event, event_id)
    if subtype not in _USER_SUBTYPES:
        return _noted(subtype or kind, event, event_id)  # message_changed, message_deleted, ...
    return Parsed(messages=(_message(event, event_id, bot),))


def _from_bot(event: dict[str, Any], subtype: str | None, bot: SlackBot) -> bool:
    """A bot's message: the bot's own, which comes back to it as an event (answering it would
    loop), or another app's (two bots answering each other would loop too)."""
    own = bot.bot_user_id is not None and event.get("user") == bot.bot_user_id
    return own or bool(event.get("bot_id")) or subtype == "bot_message"


def _message(event: dict[str, Any], event_id: str, bot: SlackBot) -> Received:
    channel, user = _id(event, "channel", "event"), _id(event, "user", "event")
    text = _unmentioned(_optional(event, "text", str, "event") or "", bot.bot_user_id)
    shared = _optional(event, "files", list, "event") or ()
    files = [_file(f, f"event.files[{n}]") for n, f in enumerate(shared)]
    data = {**files[0], "files": files} if files else None
    name = _name(event.get("user_profile"), "display_name", "real_name")
    message = UserMessage(text, kind="media" if files and not text else "text", data=data, user_id=user,
                          user_name=name, channel="slack")
    ts = _optional(event, "ts", str, "event")
    return Received(f"{channel}:{user}", f"{channel}:{ts}" if ts else event_id, message)


def _file(value: Any, where: str) -> dict[str, str]:
    """What a turn needs of a shared file; ``url`` is url_private, fetched with the bot token."""
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object, got {_shape(value)}")
    return {ours: value[theirs] for theirs, ours in _FILE_FIELDS.items() if isinstance(value.get(theirs), str)}


def _unmentioned(text: str, bot_user_id: str | None) -> str:
    """The text without the bot's own @-mention, which every app_mention starts with."""
    mention = f"<@{bot_user_id}>"
    return text.replace(mention, "").strip() if bot_user_id and mention in text else text


def _form(body: bytes, bot: SlackBot) -> Parsed:
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
    except ValueError as exc:
        raise PayloadError(f"the form body does not decode: {exc}") from None
    if "payload" in form:
        return _interaction(_json(form["payload"], "the form's payload"))
    if "command" in form:  # a slash command: recorded, not a turn
        who = _member(form.get("channel_id"), form.get("user_id"))
        data = {"command": form["command"], "text": form.get("text", "")}
        return Parsed(events=(Event("command", who, data=data),))
    raise PayloadError("the form body has no `payload` field: not a Slack interaction")


def _interaction(payload: dict[str, Any]) -> Parsed:
    kind = _field(payload, "type", str, "payload")
    channel = payload.get("channel")
    if kind != "block_actions" or channel is None:  # a modal, a shortcut, a Home tab: no channel to answer in
        return Parsed(events=(Event(kind, data=_public(payload)),))
    user = _field(payload, "user", dict, "payload")
    user_id = _id(user, "id", "payload.user")
    who = f"{_id(_field(payload, 'channel', dict, 'payload'), 'id', 'payload.channel')}:{user_id}"
    container = _optional(payload, "container", dict, "payload") or {}
    message_ts = _optional(container, "message_ts", str, "payload.container") or ""
    name = _name(user, "username", "name")
    actions = _field(payload, "actions", list, "payload")
    return Parsed(messages=tuple(_action(action, f"payload.actions[{n}]", who, message_ts, user_id, name)
                                 for n, action in enumerate(actions)))


def _action(action: Any, where: str, who: str, message_ts: str, user_id: str, name: str | None) -> Received:
    """One pressed button (or picked select option) as a turn.

    Its id is the message's ts and Slack's action_ts: Slack stamps the click when it happens,
    so a redelivery of this payload (Slack resends one not acknowledged in 3 s; a proxy may
    replay it) carries the same pair, while two clicks, even on the same button, differ in
    action_ts. trigger_id would not do: it is one per payload, which can hold several actions.
    """
    if not isinstance(action, dict):
        raise PayloadError(f"{where} must be an object, got {_shape(action)}")
    action_id = _field(action, "action_id", str, where)
    action_ts = _id(action, "action_ts", where)
    option = _optional(action, "selected_option", dict, where)
    source = option if option is not None else action
    value = _optional(source, "value", str, where)
    label = source.get("text")
    text = label.get("text") if isinstance(label, dict) else None
    button, prompt = untagged(value or action_id)
    message = UserMessage(text if isinstance(text, str) else "", button=button, kind="button",
                          user_id=user_id, user_name=name, channel="slack", prompt=prompt)
    return Received(who, f"{message_ts}:{action_ts}", message)


def _noted(kind: str, event: dict[str, Any], event_id: str) -> Parsed:
    return Parsed(events=(Event(kind, _member(event.get("channel"), event.get("user")), event_id, data=event),))


def _member(channel: Any, user: Any) -> str | None:
    """The conversation's user part, when both ids are there."""
    known = all(isinstance(i, str) and _ID.fullmatch(i) for i in (channel, user))
    return f"{channel}:{user}" if known else None


def _name(profile: Any, *keys: str) -> str | None:
    if isinstance(profile, dict):
        return next((profile[k] for k in keys if isinstance(profile.get(k), str) and profile[k]), None)
    return None


def _public(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _PRIVATE}


def _json(raw: bytes | str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise PayloadError(f"{where} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object, got {_shape(value)}")
    return value


_KINDS: dict[type, str] = {str: "text", dict: "an object", list: "a list"}


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """``obj[key]``, which must be a ``kind`` (non-empty text for ``str``)."""
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise PayloadError(f"{where}.{key} must be {_KINDS[kind]}, got {_shape(value)}")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if obj.get(key) is None:
        return None
    if not isinstance(obj[key], kind):
        raise PayloadError(f"{where}.{key} must be {_KINDS[kind]} or absent, got {_shape(obj[key])}")
    return obj[key]


def _id(obj: dict[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, str, where)
    if not _ID.fullmatch(value):
        raise PayloadError(f"{where}.{key} is not a Slack id: {value[:40]!r}")
    return value


def _shape(value: Any) -> str:
    return "nothing" if value is None else _KINDS.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- outbound


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    """The reply as Block Kit: an image, the text in sections, then the buttons in actions."""
    text = reply.text or ""
    blocks: list[dict[str, Any]] = []
    if reply.media_url and reply.media_kind == "image" and len(reply.media_url) <= IMAGE_URL_CHARS:
        alt = _cut(reply.media_filename or "image", ALT_TEXT_CHARS)
        blocks.append({"type": "image", "image_url": reply.media_url, "alt_text": alt})
    elif reply.media_url:  # Block Kit shows images only: anything else is a link
        text = f"{text}\n{reply.media_url}" if text else reply.media_url
    # Slack refuses a text object of nothing but spaces; split() can leave such a part.
    blocks += [{"type": "section", "text": _plain(part)} for part in split(text, SECTION_TEXT_CHARS)
               if part.strip()]
    reply = tagged(reply, lambda value: len(value) <= BUTTON_VALUE_CHARS)  # the value says its prompt
    buttons = [_button(n, option) for n, option in enumerate(reply.buttons or reply.list)]
    blocks += [{"type": "actions", "elements": buttons[i:i + ACTIONS_ELEMENTS]}
               for i in range(0, len(buttons), ACTIONS_ELEMENTS)]
    return blocks


def _button(n: int, option: Button) -> dict[str, Any]:
    # A list row's description has no place on a button. The value carries the id (flow ids
    # are at most 256 characters) after its prompt; action_id only has to be unique in the message.
    return {"type": "button", "text": _plain(_cut(option.title or option.id, BUTTON_TEXT_CHARS)),
            "value": option.id[:BUTTON_VALUE_CHARS], "action_id": f"parlour-{n}"[:ACTION_ID_CHARS]}


def _messages(blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The blocks in messages of at most MAX_BLOCKS, whose fallback text fits MAX_TEXT_CHARS."""
    messages: list[list[dict[str, Any]]] = []
    size = 0
    for block in blocks:
        length = len(_escape(block["text"]["text"])) + 1 if block["type"] == "section" else 0
        if not messages or len(messages[-1]) == MAX_BLOCKS or size + length > MAX_TEXT_CHARS:
            messages.append([])
            size = 0
        messages[-1].append(block)
        size += length
    return messages


def _fallback(blocks: list[dict[str, Any]]) -> str:
    """The `text` shown in notifications: the sections' text, else the image's or the buttons'."""
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    if sections:
        return _escape("\n".join(sections))
    labels = [b["alt_text"] for b in blocks if b["type"] == "image"]
    labels = labels or [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    return _escape(", ".join(labels)[:MAX_TEXT_CHARS // 5])  # escaped, '&' becomes five characters


def _escape(text: str) -> str:
    # `text` is mrkdwn: "<!channel>" would notify everyone, "<url|x>" make a link. Slack's
    # "Formatting text" asks for these three escaped when they are meant literally.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}  # plain, not mrkdwn: a flow's text shows as written


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _answer(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return answer if isinstance(answer, dict) else None


def _reason(answer: dict[str, Any] | None) -> str:
    """Slack's error code, with the details it gives for invalid_blocks and the like."""
    if answer is None or not isinstance(answer.get("error"), str):
        return ""
    meta = answer.get("response_metadata")
    notes = meta.get("messages") if isinstance(meta, dict) else None
    notes = [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []
    return "; ".join([answer["error"], *notes])
