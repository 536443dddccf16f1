"""The bots of every tenant: each bot's settings, with its credentials encrypted at rest.

A bot is a tenant's account on a channel (``acme``'s Telegram bot ``support``). Its settings
are validated by its channel's model (:attr:`Adapter.settings`). Fields typed ``SecretStr``
are the credentials: they are kept encrypted, with Fernet (AES-128-CBC and HMAC-SHA256, from
``cryptography``), under the operator's key. They never appear in a log line or an API
answer, where a secret shows as ``"set"``.

The store holds one meta value, ``bots``: JSON ``{"tenant/channel/bot": {"settings": {...},
"secrets": "<Fernet token>", "updated_at": t}}``. Several keys may be given, comma-separated:
the first encrypts, and any of them decrypts. To rotate, put a new key first and save each
bot again.

>>> bots = Bots(store, Cipher.from_keys(os.environ["PARLOUR_SECRETS_KEY"]))
>>> await bots.put("acme", "telegram", "support", {"token": "123:abc", "secret_token": "s3cret"})
>>> (await bots.get("acme", "telegram", "support")).token.get_secret_value()
'123:abc'
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import time
import typing
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr, ValidationError

from parlour.errors import ParlourError
from parlour.store import Store

from .base import Adapter, BotSettings

log = logging.getLogger("parlour.bots")

BOTS_META = "bots"
CHANNELS = ("whatsapp", "telegram", "slack", "twilio", "signal")
BOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class BotError(ParlourError):
    """A bot that cannot be saved or read; ``problems`` lists each as ``field: what``."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class UnknownChannel(BotError):
    """A channel parlour does not have."""


def adapter(channel: str) -> Adapter:
    """The adapter of ``channel``; :class:`UnknownChannel` for one parlour does not have."""
    if channel not in CHANNELS:
        raise UnknownChannel(f"no channel {channel!r}: the channels are {', '.join(CHANNELS)}")
    return importlib.import_module(f"parlour.channels.{channel}").ADAPTER


class Cipher:
    """Encrypts a bot's credentials under the operator's keys."""

    def __init__(self, keys: list[bytes]):
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError) as exc:
            raise BotError("a secrets key is 32 url-safe base64-encoded bytes "
                           "(`parlour token new --secrets-key` makes one)") from exc

    @classmethod
    def from_keys(cls, text: str) -> Cipher:
        return cls([key.strip().encode() for key in text.split(",") if key.strip()])

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, token: str, what: str) -> dict[str, str]:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise BotError(f"{what}: its credentials do not decrypt with the secrets key given "
                           "(was the key changed without keeping the old one after it?)") from None


def _secret_fields(model: type[BotSettings]) -> set[str]:
    """The credentials: fields typed ``SecretStr`` (or optionally so)."""
    return {name for name, info in model.model_fields.items()
            if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)}


def public(settings: BotSettings) -> dict[str, Any]:
    """The settings as the API shows them: every credential as ``"set"`` (or null)."""
    secret = _secret_fields(type(settings))
    return {name: ("set" if value is not None else None) if name in secret else value
            for name, value in settings.model_dump(mode="json").items()}


class Bots:
    """Every tenant's bots, read from the store and kept for ``ttl_s`` (so that a bot saved on
    another gateway is seen within that time). ``get(..., fresh=True)`` reads the store again
    first, for a caller that cannot wait for ``ttl_s`` (the delivery supervisor, given a reply
    for a bot added a moment ago)."""

    def __init__(self, store: Store, cipher: Cipher, *, ttl_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.cipher, self.ttl_s, self.clock = store, cipher, ttl_s, clock
        self._bots: dict[str, BotSettings] = {}
        self.broken: dict[str, str] = {}  # bots that cannot be read: name -> why
        self._loaded_at = -float("inf")  # when the read that gave _bots started
        self._lock = asyncio.Lock()
        self._reading = asyncio.Lock()

    async def get(self, tenant: str, channel: str, bot: str, *, fresh: bool = False) -> BotSettings | None:
        if fresh:
            await self._read_since(self.clock())
        elif self.clock() - self._loaded_at > self.ttl_s:
            await self.reload()
        return self._bots.get(f"{tenant}/{channel}/{bot}")

    async def _read_since(self, asked_at: float) -> None:
        """Make sure the bots in hand were read at or after ``asked_at``. Callers that ask at
        once share one read (a deleted bot's many conversations do not read the store each)."""
        async with self._reading:
            if self._loaded_at <= asked_at:
                await self.reload()

    async def list(self, tenant: str) -> list[tuple[str, str, BotSettings]]:
        await self.reload()
        found = [(name.split("/")[1], name.split("/")[2], s) for name, s in self._bots.items()
                 if name.split("/")[0] == tenant]
        return sorted(found, key=lambda item: item[:2])

    async def reload(self) -> None:
        """Read every bot again. One that cannot be read (its credentials do not decrypt with
        the keys given) is left out and logged, so that it does not take the others down."""
        started_at = self.clock()
        raw = await self._saved()
        bots, broken = {}, {}
        for name, saved in raw.items():
            try:
                values = saved["settings"] | self.cipher.open(saved["secrets"], f"bot {name}")
                bots[name] = adapter(name.split("/")[1]).settings.model_validate(values)
            except (BotError, ValidationError) as exc:
                broken[name] = str(exc).splitlines()[0]
        if started_at < self._loaded_at:  # a read that started later has finished first: it stands
            return
        for name in broken.keys() - self.broken.keys():
            log.error("bot %s cannot be read, and is left out: %s", name, broken[name])
        self._bots, self.broken, self._loaded_at = bots, broken, started_at

    async def put(self, tenant: str, channel: str, bot: str, values: dict[str, Any]) -> tuple[BotSettings, bool]:
        """Validate and save a bot; (its settings, whether it is new). A credential left out
        of ``values`` keeps its saved value, so settings can change without resending them."""
        if not BOT_NAME.fullmatch(bot):
            raise BotError(f"a bot's name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or "
                           f"digit, got {bot!r}")
        model = adapter(channel).settings
        name = f"{tenant}/{channel}/{bot}"
        async with self._lock:  # one writer per gateway: the meta value is read, changed and written
            raw = await self._saved()
            old = raw.get(name)
            if old is not None:
                values = self.cipher.open(old["secrets"], f"bot {name}") | old["settings"] | values
            try:
                settings = model.model_validate(values)
            except ValidationError as exc:
                problems = [f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in exc.errors()]
                raise BotError(f"the {channel} bot {bot!r} has {len(problems)} problem(s)", problems) from None
            dumped = settings.model_dump(mode="json")
            secret = _secret_fields(model)
            raw[name] = {"settings": {k: v for k, v in dumped.items() if k not in secret},
                         "secrets": self.cipher.seal({k: getattr(settings, k).get_secret_value()
                                                      for k in secret if getattr(settings, k) is not None}),
                         "updated_at": time.time()}
            await self.store.put_meta(BOTS_META, json.dumps(raw).encode())
            self._bots[name] = settings
        return settings, old is None

    async def delete(self, tenant: str, channel: str, bot: str) -> bool:
        async with self._lock:
            raw = await self._saved()
            if raw.pop(f"{tenant}/{channel}/{bot}", None) is None:
                return False
            await self.store.put_meta(BOTS_META, json.dumps(raw).encode())
            self._bots.pop(f"{tenant}/{channel}/{bot}", None)
            return True

    async def _saved(self) -> dict[str, dict]:
        raw = await self.store.get_meta(BOTS_META)
        return json.loads(raw) if raw else {}
