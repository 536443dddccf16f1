"""Twilio Programmable Messaging (SMS, MMS and WhatsApp through Twilio) as a channel.

Twilio posts each inbound message, and each status callback of a message the bot sent, as a
form to the webhook URL, signed with the account's auth token in ``X-Twilio-Signature``.
Replies are created with ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (CreateMessage
in Twilio's OpenAPI; see ``tests/conformance/channels/specs/twilio/``). Plain SMS has no
buttons, so a reply's buttons and list rows go out as numbered lines.

>>> bot = TwilioBot(account_sid="AC" + "0" * 32, auth_token="...", from_number="+14155550100")
>>> [call.form["Body"] for call in ADAPTER.render(bot, "+14155550199", Reply(text="Hi"))]
['Hi']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator

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
)

BODY_LIMIT = 1600
"""CreateMessage's ``Body`` "can be up to 1,600 characters in length" (Twilio's OpenAPI,
specs/twilio/EXTRACT_Messages-create.json); a longer reply is sent as several messages."""

MAX_FORM_FIELDS = 500
"""An inbound webhook has a few dozen parameters (two per media item, at most 10 media);
a body with more is not Twilio's, and is refused before it costs anything."""

# Twilio's message statuses (message_enum_status in the OpenAPI) that are delivery outcomes, in
# parlour's words; the others (accepted, scheduled, queued, sending, partially_delivered) are
# steps on the way, reported as kind "status_other" (as the WhatsApp adapter names its own).
STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read",
            "failed": "failed", "undelivered": "failed", "canceled": "failed"}

INBOUND = ("received", "receiving")  # the SmsStatus an inbound message carries

MEDIA_COUNTS = tuple(str(n) for n in range(11))  # "up to ten media_url" per message (OpenAPI)

EMPTY_TWIML = Answer("text/xml", '<?xml version="1.0" encoding="UTF-8"?><Response />')
"""What an accepted webhook is answered: TwiML that asks Twilio for nothing, exactly what
twilio-python's ``MessagingResponse()`` renders. Twilio reads the answer to an inbound message
as TwiML, and logs error 11200 for one that is not (an empty body, JSON); the replies go
through the API instead, after the turn. Status callbacks get it too (Twilio ignores it)."""


class TwilioBot(BotSettings):
    """A Twilio account's sender. ``public_url`` is the webhook URL exactly as registered at
    Twilio, for when parlour sits behind a proxy that changes the scheme, host or path:
    Twilio signs the URL it called, not the one parlour sees."""

    api_base: str = "https://api.twilio.com"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    from_number: str | None = None
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    public_url: str | None = None

    @model_validator(mode="after")
    def _has_a_sender(self) -> TwilioBot:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("set from_number or messaging_service_sid: a Twilio message needs a sender")
        return self


class Twilio:
    name: ClassVar[str] = "twilio"
    settings: ClassVar[type[BotSettings]] = TwilioBot

    def handshake(self, bot: TwilioBot, webhook: Webhook) -> str | None:
        return None

    def verify(self, bot: TwilioBot, webhook: Webhook) -> None:
        """``X-Twilio-Signature`` is base64(HMAC-SHA1(auth_token, url + the form's parameters
        sorted, each as key + value)); a JSON body is signed through ``bodySHA256`` in the URL
        instead, and the signature then covers the URL alone."""
        given = webhook.headers.get("X-Twilio-Signature")
        if not given:
            raise SignatureError("missing", "no X-Twilio-Signature header")
        if not _is_sha1_base64(given):
            raise SignatureError("malformed", "X-Twilio-Signature is not a base64 HMAC-SHA1")
        url = _signed_url(bot, webhook)
        body_hash = parse_qs(urlsplit(url).query).get("bodySHA256")
        if body_hash:
            actual = hashlib.sha256(webhook.body).hexdigest().encode()
            if not hmac.compare_digest(actual, body_hash[0].encode()):
                raise SignatureError("mismatch", "the body does not match the URL's bodySHA256")
            pairs: list[tuple[str, str]] = []
        else:
            pairs = parse_qsl(webhook.body.decode("utf-8", "replace"), keep_blank_values=True)
        key = secret(bot.auth_token)
        # Every candidate is compared (a list, not any() over a generator): no early exit.
        matches = [hmac.compare_digest(_signature(key, candidate, pairs), given.encode())
                   for candidate in _port_variants(url)]
        if not any(matches):
            raise SignatureError("mismatch", f"X-Twilio-Signature does not sign {url} and this body")

    def parse(self, bot: TwilioBot, webhook: Webhook) -> Parsed:
        form = _form(webhook.body)
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid")
        if not sid:
            raise PayloadError("no MessageSid: not a Twilio message or status callback")
        status = form.get("MessageStatus") or form.get("SmsStatus")
        if status and status not in INBOUND:
            return Parsed(events=(_status_event(form, sid, status),), answer=EMPTY_TWIML)
        if "Body" not in form and "NumMedia" not in form:
            raise PayloadError(f"message {sid} has neither Body nor NumMedia, nor a MessageStatus")
        sender = form.get("From")
        if not sender:
            raise PayloadError(f"inbound message {sid} has no From")
        return Parsed(messages=(Received(sender, sid, _message(form, sender)),), answer=EMPTY_TWIML)

    def render(self, bot: TwilioBot, user: str, reply: Reply) -> list[Call]:
        # The media goes as MediaUrl, so it is not also written into the text.
        text = numbered(replace(reply, media_url=None))
        forms: list[dict[str, str]] = [{"Body": part} for part in _parts(text)] if text else []
        if reply.media_url:
            # With the first part: an MMS or WhatsApp caption shows the media above its text.
            forms = forms or [{}]
            forms[0]["MediaUrl"] = reply.media_url
        return [_create(bot, user, form) for form in forms]

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        return standard_judge(status, headers, _error(status, body) if status >= 300 else "")


def _is_sha1_base64(signature: str) -> bool:
    try:
        return len(base64.b64decode(signature, validate=True)) == hashlib.sha1().digest_size
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII header value
        return False


def _signed_url(bot: TwilioBot, webhook: Webhook) -> str:
    """The URL Twilio signed: the request's, or behind a proxy the registered ``public_url``
    with the request's query string (Twilio signs the query too; bodySHA256 rides in it)."""
    if not bot.public_url:
        return webhook.url
    query = urlsplit(webhook.url).query
    return f"{bot.public_url}?{query}" if query and "?" not in bot.public_url else bot.public_url


def _port_variants(url: str) -> list[str]:
    """``url`` as given, without its port and with its default port: Twilio's signatures use
    either form (twilio-python's RequestValidator checks both, "since sig generation on back
    end is inconsistent")."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: only the URL as given can match
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port else parts.netloc
    default = 443 if parts.scheme == "https" else 80
    variants = [url, urlunsplit(parts._replace(netloc=host)),
                urlunsplit(parts._replace(netloc=f"{host}:{port or default}"))]
    return list(dict.fromkeys(variants))


def _signature(key: bytes, url: str, pairs: list[tuple[str, str]]) -> bytes:
    # Sorting the (key, value) pairs orders by key, then a repeated key's values by value: what
    # twilio-python does (sorted names, then sorted(values) for each name).
    signed = url + "".join(k + v for k, v in sorted(pairs))
    return base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha1).digest())


def _form(body: bytes) -> dict[str, str]:
    """The form's parameters; a repeated one keeps its first value."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"the body is not a UTF-8 form (application/x-www-form-urlencoded): {exc}") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _message(form: dict[str, str], sender: str) -> UserMessage:
    """An inbound message: a WhatsApp quick-reply button, a shared location, media, or text."""
    message = partial(UserMessage, text=form.get("Body", ""), user_id=sender,
                      user_name=form.get("ProfileName") or None, channel="twilio")
    if form.get("ButtonPayload"):
        return message(text=form.get("ButtonText") or form.get("Body", ""),
                       button=form["ButtonPayload"], kind="button")
    if "Latitude" in form or "Longitude" in form:
        return message(kind="location", data=_location(form))
    media = _media(form)
    return message(kind="media", data=media) if media else message()


def _location(form: dict[str, str]) -> dict[str, Any]:
    try:
        latitude, longitude = float(form["Latitude"]), float(form["Longitude"])
    except (KeyError, ValueError) as exc:
        raise PayloadError(f"a location needs numeric Latitude and Longitude: {exc}") from exc
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise PayloadError(f"Latitude {latitude}, Longitude {longitude} is not a place on Earth")
    data: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    data |= {key.lower(): form[key] for key in ("Address", "Label") if form.get(key)}
    return data


def _media(form: dict[str, str]) -> dict[str, Any] | None:
    """``url`` and ``content_type`` of the first item, and every item in ``media``."""
    count = form.get("NumMedia", "0")
    if count not in MEDIA_COUNTS:
        raise PayloadError(f"NumMedia {count[:20]!r} is not a count from 0 to 10")
    items = []
    for n in range(int(count)):
        url = form.get(f"MediaUrl{n}")
        if not url:
            raise PayloadError(f"NumMedia is {count} but MediaUrl{n} is missing")
        items.append({"url": url, "content_type": form.get(f"MediaContentType{n}")})
    return {**items[0], "media": items} if items else None


def _status_event(form: dict[str, str], sid: str, status: str) -> Event:
    """A status callback of a message the bot sent: its ``To`` is the user."""
    data = {"twilio_status": status} | ({"error_code": form["ErrorCode"]} if form.get("ErrorCode") else {})
    outcome = STATUSES.get(status)
    return Event("status" if outcome else "status_other", user=form.get("To"), message_id=sid,
                 status=outcome, data=data)


def _parts(text: str) -> list[str]:
    """``text`` in bodies Twilio takes. Conservative about what a character is: a part that is
    over the limit in UTF-16 units (an emoji is two) is cut again at half the limit, which
    always fits, in case Twilio counts that way."""
    parts = split(text, BODY_LIMIT)
    return [piece for part in parts
            for piece in (split(part, BODY_LIMIT // 2) if _utf16_length(part) > BODY_LIMIT else [part])]


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _create(bot: TwilioBot, user: str, fields: dict[str, str]) -> Call:
    sender = {"From": bot.from_number, "MessagingServiceSid": bot.messaging_service_sid}
    form = {"To": user} | {k: v for k, v in sender.items() if v} | fields
    credentials = base64.b64encode(f"{bot.account_sid}:{bot.auth_token.get_secret_value()}".encode()).decode()
    return Call("POST", f"/2010-04-01/Accounts/{bot.account_sid}/Messages.json", form=form,
                headers={"Authorization": f"Basic {credentials}"})


def _error(status: int, body: bytes) -> str:
    """Twilio's error, e.g. ``HTTP 400: Twilio 21211: Invalid 'To' Phone Number``."""
    try:
        error = json.loads(body)
    except (ValueError, RecursionError):
        return f"HTTP {status}"
    if not isinstance(error, dict) or not ("code" in error or "message" in error):
        return f"HTTP {status}"
    return f"HTTP {status}: Twilio {error.get('code')}: {error.get('message')}"


ADAPTER = Twilio()
