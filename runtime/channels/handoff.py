"""The hand-off webhook as an outbound channel: each ticket event, posted to the tenant's helpdesk.

A tenant with ``handoff_webhook`` gets every event of its hand-off tickets (``opened``,
``message``, ``reply``, ``assigned``, ``resumed``, ``closed``) in the outbox, one lane per
ticket (:func:`parlour.actors.tickets.hook_key`). The delivery supervisor sends them like a
channel's replies (in order per ticket, retried with backoff, behind a breaker, dead-lettered,
through the tenant's egress policy, with ``Idempotency-Key``); this module is the pure part:
the request an event makes (:meth:`HandoffHook.render`), its signature (:meth:`HandoffHook.sign`,
made again at each attempt, so that a retry is not refused as stale), and what an answer means.

The signature is Stripe's scheme: ``X-Parlour-Signature: t=<unix seconds>,v1=<hex>``, where
``<hex>`` is HMAC-SHA256, keyed with the tenant secret the webhook names, of ``{t}.{body}`` (the
exact bytes of the body). A receiver recomputes it, compares in constant time, and refuses a
``t`` more than a few minutes from its clock (:func:`verify` does all three).

>>> hook = HookSettings.of("https://helpdesk.example/parlour", secret="k")
>>> [call] = ADAPTER.render(hook, "0194f...", {"schema": 1, "event": "opened", "ticket": {}, "at": 0})
>>> ADAPTER.sign(hook, call, 1700000000).headers["X-Parlour-Signature"][:13]
't=1700000000,'
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from parlour.errors import ParlourError

from .base import BotSettings, Call, SignatureError, Verdict, secret, standard_judge

CHANNEL = "handoff"  # the channel part of the outbox key (parlour.actors.tickets.HOOK_CHANNEL)
SIGNATURE_HEADER = "X-Parlour-Signature"
EVENT_HEADER = "X-Parlour-Event"
TOLERANCE_S = 300.0
"""How far a receiver's clock may be from the signature's time (:func:`verify`'s default)."""


class HookSettings(BotSettings):
    """A tenant's webhook as the delivery supervisor sends to it: ``api_base`` is its URL's
    scheme and host, ``path`` the rest (query included); ``secret`` the value of the tenant
    secret it names (None when that secret is not set)."""

    path: str = "/"
    secret: SecretStr | None = None

    @classmethod
    def of(cls, url: str, secret: str | None) -> HookSettings:
        parts = urlsplit(url)
        return cls(api_base=f"{parts.scheme}://{parts.netloc}", path=(parts.path or "/") + (
            f"?{parts.query}" if parts.query else ""), secret=SecretStr(secret) if secret is not None else None)


@dataclass(frozen=True, slots=True)
class HookTarget:
    """A tenant's ``handoff_webhook`` setting: where, and the *name* of the secret that signs."""

    url: str
    secret: str


class HandoffHook:
    name: ClassVar[str] = CHANNEL
    settings: ClassVar[type[BotSettings]] = HookSettings

    def render(self, hook: HookSettings, ticket: str, event: Mapping[str, Any]) -> list[Call]:
        """One POST of ``event`` as compact JSON; unsigned until :meth:`sign`."""
        if hook.secret is None:
            raise ParlourError("the hand-off webhook's signing secret is not set (tenants.<t>.handoff_webhook.secret "
                               "names a secret the tenant does not have)")
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode()
        return [Call("POST", hook.path, content=body,
                     headers={"Content-Type": "application/json", EVENT_HEADER: str(event.get("event", ""))})]

    def sign(self, hook: HookSettings, call: Call, now: float) -> Call:
        """``call`` with its signature for the time ``now`` (each attempt signs anew)."""
        assert hook.secret is not None and call.content is not None  # render refused a hook without a secret
        stamp = int(now)
        header = f"t={stamp},v1={signature(secret(hook.secret), stamp, call.content)}"
        return replace(call, headers={**call.headers, SIGNATURE_HEADER: header})

    def judge(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        return standard_judge(status, headers, "" if status < 300 else f"HTTP {status}: {_excerpt(body)}")


def signature(key: bytes, stamp: int, body: bytes) -> str:
    """HMAC-SHA256 of ``{stamp}.{body}`` under ``key``, in hex."""
    return hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(key: bytes, header: str | None, body: bytes, now: float, tolerance_s: float = TOLERANCE_S) -> int:
    """The signed time of a webhook ``body`` whose ``X-Parlour-Signature`` is ``header``;
    :class:`SignatureError` unless one of its ``v1`` values is the body's signature under
    ``key`` and its time is within ``tolerance_s`` of ``now``. What a receiver in Python runs."""
    if not header:
        raise SignatureError("missing", f"no {SIGNATURE_HEADER} header")
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in fields if name.strip() == "t"]
    given = [value.strip() for name, _, value in fields if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not given:
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} is t=<seconds>,v1=<hex>")
    stamp = int(stamps[0])
    expected = signature(key, stamp, body)
    if not any(hmac.compare_digest(expected, value) for value in given):
        raise SignatureError("mismatch", "the signature does not match the body")
    if abs(now - stamp) > tolerance_s:
        raise SignatureError("stale", f"signed {now - stamp:.0f} s from now, more than {tolerance_s:.0f} s")
    return stamp


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").replace("\n", " ")


SecretsOf = Callable[[str], Mapping[str, str]]


class HookLookup:
    """The delivery supervisor's settings lookup: a tenant's webhook for the ``handoff``
    channel (its secret read from ``secrets_of`` at each send, so a rotated secret is used at
    once), the bots' for every other."""

    def __init__(self, targets: Mapping[str, HookTarget], secrets_of: SecretsOf,
                 bots: Callable[..., Awaitable[BotSettings | None]]):
        self.targets, self.secrets_of, self.bots = dict(targets), secrets_of, bots

    async def __call__(self, tenant: str, channel: str, bot: str, *, fresh: bool = False) -> BotSettings | None:
        if channel != CHANNEL:
            return await self.bots(tenant, channel, bot, fresh=fresh)
        target = self.targets.get(tenant)
        if target is None:
            return None
        return HookSettings.of(target.url, self.secrets_of(tenant).get(target.secret))


ADAPTER = HandoffHook()
