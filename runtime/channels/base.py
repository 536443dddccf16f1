"""What a channel adapter is: pure functions between a channel's bytes and parlour's turns.

An adapter never does I/O. The gateway hands it a :class:`Webhook` (the request exactly as
received) and gets back the user messages and other events in it (:meth:`Adapter.parse`), after
:meth:`Adapter.verify` has checked its signature. The delivery supervisor hands it a reply and
gets back the :class:`Call` requests to make to the channel's API (:meth:`Adapter.render`), then
asks it what the API's answer means (:meth:`Adapter.judge`).

Errors, under :class:`~parlour.errors.ParlourError`::

    ChannelError
    ├── SignatureError   the webhook is not from the channel (401)
    └── PayloadError     the webhook's body is not what the channel sends (400)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, SecretStr

from parlour.errors import ParlourError
from parlour.flow import Reply, UserMessage


class ChannelError(ParlourError):
    """A webhook that cannot be taken in."""


class SignatureError(ChannelError):
    """The request is not signed by the channel. ``reason`` is a stable code: ``missing`` (no
    signature or secret token), ``mismatch`` (wrong secret or altered body), ``stale`` (a
    timestamp outside the channel's window) or ``malformed`` (a signature of the wrong shape)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class PayloadError(ChannelError):
    """The body is not a payload this channel sends; ``message`` says what and where."""


class BotSettings(BaseModel):
    """One bot on one channel, as an operator configures it. Fields typed ``SecretStr`` are
    credentials: encrypted at rest, never logged, never returned by the API. ``api_base`` is
    the channel API's base URL, changed in tests to point at a local fake."""

    # hide_input_in_errors: a failed validation must not echo a credential it was given.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_base: str


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook request as received. ``url`` is the public URL the channel called (what
    Twilio signs; behind a proxy, rebuilt from the bot's settings). ``headers`` match names
    case-insensitively (aiohttp's ``CIMultiDictProxy``). ``now`` is the gateway's clock, for
    timestamp windows."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Received:
    """One user message: it runs a turn. ``user`` is the conversation's user part (unless
    ``scoped_id`` binds it to another) and also where its replies go (a phone number, a chat
    id, ``channel:user`` on Slack). ``message_id`` is the channel's own id for this message,
    the dedup key: a channel's retry carries the same. ``sent_at`` is the channel's own time
    for it (epoch seconds), given by a channel that retries for long, so that a replay is known
    for the channel's whole retry horizon."""

    user: str
    message_id: str
    message: UserMessage
    sent_at: float | None = field(default=None, compare=False)  # about the message, not what it says
    scoped_id: str | None = None
    """A second id of the same person, given by a channel whose messages may carry either
    (WhatsApp's business-scoped user id, which stays when the phone number is hidden). The
    gateway keeps one conversation per scoped id: the one of the ``user`` it was first seen
    with (:mod:`parlour.gateway.identities`)."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that is not a user message (a delivery status, an edit, a reaction, a message
    the bot itself sent): recorded for analytics, never a turn. ``kind`` is ``status`` for
    delivery statuses, whose ``status`` is ``sent``, ``delivered``, ``read`` or ``failed``."""

    kind: str
    user: str | None = None
    message_id: str | None = None
    status: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """The body of a webhook's 200, for a channel that reads it: Slack's ``url_verification``
    challenge, a Telegram method such as ``answerCallbackQuery``, the empty TwiML that Twilio
    wants (else it logs error 11200 for every message). Only a webhook whose turns are all
    committed gets it; a refused one gets the gateway's JSON error body, whatever the channel.

    >>> Answer.json({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).content_type
    'application/json'
    """

    content_type: str
    text: str

    @classmethod
    def json(cls, value: Mapping[str, Any]) -> Answer:
        return cls("application/json", json.dumps(dict(value)))


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one webhook carried, in the order the channel sent it, and the :class:`Answer` the
    channel wants for it, if any (else the gateway answers 200 without a body)."""

    messages: tuple[Received, ...] = ()
    events: tuple[Event, ...] = ()
    answer: Answer | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the channel's API: ``path`` is appended to the bot's ``api_base``; the
    body is ``json``, ``form`` or the exact bytes ``content`` (one of them; ``content`` when
    the body is signed). ``headers`` carry the credentials. Every call
    also carries ``Idempotency-Key`` (the delivery supervisor sets it), which a channel or a
    fake that honours it uses to drop a repeat."""

    method: str
    path: str
    json: Mapping[str, Any] | None = None
    form: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an API's answer means: ``sent``; or ``retry`` (a timeout, 429, 5xx), after
    ``after_s`` if the channel said when (Retry-After, Telegram's ``retry_after``); or ``failed``
    for good (another 4xx). ``reason`` is kept in the dead-letter queue."""

    outcome: str  # "sent", "retry" or "failed"
    after_s: float | None = None
    reason: str = ""


class Adapter(Protocol):
    """A channel. Implementations are stateless; one instance serves every bot."""

    name: ClassVar[str]  # "whatsapp", "telegram", "slack", "twilio", "signal"
    settings: ClassVar[type[BotSettings]]

    def handshake(self, bot: BotSettings, webhook: Webhook) -> str | None:
        """The answer to a GET on the webhook URL (WhatsApp's ``hub.challenge``), or None if
        the channel has no GET handshake. Raises :class:`SignatureError` on a wrong token."""

    def verify(self, bot: BotSettings, webhook: Webhook) -> None:
        """Raise :class:`SignatureError` unless the channel signed this exact request. Compares
        in constant time (``hmac.compare_digest``)."""

    def parse(self, bot: BotSettings, webhook: Webhook) -> Parsed:
        """The messages and events in a verified webhook; :class:`PayloadError` if it is not a
        payload of this channel."""

    def render(self, bot: BotSettings, user: str, reply: Reply) -> list[Call]:
        """The API calls that deliver ``reply`` to ``user``, within the channel's limits."""

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        """What the API's answer to a call means."""


def secret(value: SecretStr) -> bytes:
    """A credential's bytes, for an HMAC key."""
    return value.get_secret_value().encode()


def numbered(reply: Reply) -> str:
    """A reply as plain text for channels without buttons: its text, then its buttons or list
    rows as ``1. Title`` lines (the interpreter takes a number as the pick)."""
    options = reply.buttons or reply.list
    lines = [reply.text] if reply.text else []
    lines += [f"{n}. {option.title}" for n, option in enumerate(options, 1)]
    if reply.media_url and not reply.text:
        lines.insert(0, reply.media_url)
    return "\n".join(lines)


PROMPT_MARK = "|"
"""Between a prompt's id and an option's id in a button's payload: ``p3|quit``."""
_TAGGED = re.compile(r"(p[0-9]{1,19})\|(.+)", re.DOTALL)  # the interpreter's ids are p<n>


def tagged(reply: Reply, fits: Callable[[str], bool]) -> Reply:
    """``reply`` with each option's id as ``"<prompt>|<id>"``, so that a press says which
    question it answers (:func:`untagged` reads it back), if every such payload ``fits`` the
    channel; else unchanged (a press of it then names no prompt, and is judged as before
    prompts had ids)."""
    if reply.prompt is None:
        return reply
    buttons, rows = ([replace(o, id=f"{reply.prompt}{PROMPT_MARK}{o.id}") for o in options]
                     for options in (reply.buttons, reply.list))
    if not all(fits(option.id) for option in buttons + rows):
        return reply
    return replace(reply, buttons=tuple(buttons), list=tuple(rows))


def untagged(payload: str) -> tuple[str, str | None]:
    """The option's id and its prompt's in a pressed button's payload; a payload from before
    prompts (a bare id) has none."""
    match = _TAGGED.fullmatch(payload)
    return (match.group(2), match.group(1)) if match else (payload, None)


def split(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut at a line break where there is one
    in the second half of a part, else at a space there, else at the limit."""
    parts = []
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        cut = cut if cut > 0 else text.rfind(" ", limit // 2, limit)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n ") if cut < limit else text[cut:]
    return [*parts, text] if text or not parts else parts


def standard_judge(status: int, headers: Mapping[str, str], reason: str = "") -> Verdict:
    """The common reading of an HTTP answer: 2xx sent; 429 and 5xx retried (after Retry-After
    seconds if given); other 4xx failed for good."""
    if 200 <= status < 300:
        return Verdict("sent")
    if status == 429 or status >= 500:
        after = headers.get("Retry-After")
        try:
            after_s = float(after) if after is not None else None
        except ValueError:
            after_s = None
        return Verdict("retry", after_s, reason or f"HTTP {status}")
    return Verdict("failed", None, reason or f"HTTP {status}")
