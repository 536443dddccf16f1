"""Every tenant's secrets: those its config declares, and those set through the admin API,
sealed at rest in the store. A tenant's flows reach only its own.

A secret set through the API is sealed with Fernet under the operator's secrets key(s) (the
bots' :class:`~parlour.channels.registry.Cipher`: the first key seals, any of them
opens, so a rotation is ``PARLOUR_SECRETS_KEY=new,old``). What is sealed names its tenant and
its name too, so a sealed value moved to another tenant's entry in the store does not open
there. The store holds one meta value, ``secrets``: JSON ``{"tenant/NAME": {"sealed": "<Fernet
token>", "set_at": t}}``; names and times are not secret (the API lists them), values are.

The gateway writes (:meth:`Vault.put`, :meth:`Vault.delete`) and each host reads
(:meth:`Vault.reload` at start and whenever the gateway says the secrets changed), so an
:class:`~parlour.http.HttpCaller` fills a request from :meth:`Vault.secrets_of` its tenant.

>>> vault = Vault(store, Cipher.from_keys(key), config={"acme": {"CRM_KEY": "from-the-file"}})
>>> await vault.put("acme", "MEMBERS_KEY", "s3cret")
>>> vault.secrets_of("acme")["MEMBERS_KEY"], vault.secrets_of("beta")
('s3cret', {})
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from parlour.config import check_value_name
from parlour.errors import ParlourError
from parlour.store import Store

from .channels.registry import BotError, Cipher

log = logging.getLogger("parlour.secrets")

SECRETS_META = "secrets"


class SecretError(ParlourError):
    """A secret that cannot be set: a bad name or value, over a limit."""


class DeclaredInConfig(SecretError):
    """The secret is the config file's: it changes there, not through the API."""


class NoKey(SecretError):
    """This process has no secrets key, so it can neither seal nor open a secret."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What anyone may know of a secret: its name, where it is declared, when it was set."""

    name: str
    source: Literal["config", "api"]
    set_at: float | None = None


async def saved_names(store: Store) -> dict[str, set[str]]:
    """The names of the secrets set through the API, by tenant (no key needed: names are not secret)."""
    raw = await store.get_meta(SECRETS_META)
    names: dict[str, set[str]] = {}
    for entry in json.loads(raw) if raw else {}:
        tenant, _, name = entry.partition("/")
        names.setdefault(tenant, set()).add(name)
    return names


class Vault:
    """The secrets of every tenant: ``config`` (tenant -> name -> value) and the store's. A host
    opens them (``unseal``); a gateway seals new ones and knows the others by name only."""

    def __init__(self, store: Store, cipher: Cipher | None, config: Mapping[str, Mapping[str, str]] | None = None, *,
                 max_secrets: int = 100, max_secret_bytes: int = 4096, unseal: bool = True,
                 clock: Callable[[], float] = time.time):
        self.store, self.cipher, self.clock, self.unseal = store, cipher, clock, unseal
        self.config = {tenant: dict(values) for tenant, values in (config or {}).items()}
        self.max_secrets, self.max_secret_bytes = max_secrets, max_secret_bytes
        self._api: dict[str, dict[str, str]] = {}
        self._set_at: dict[str, dict[str, float]] = {}
        self.broken: dict[str, str] = {}  # "tenant/NAME" -> why it cannot be opened
        self._lock = asyncio.Lock()

    def secrets_of(self, tenant: str | None) -> Mapping[str, str]:
        """``tenant``'s secrets by name (the config file's win over the API's); none for None."""
        if tenant is None:
            return {}
        return {**self._api.get(tenant, {}), **self.config.get(tenant, {})}

    def infos(self, tenant: str) -> list[SecretInfo]:
        """Every secret of ``tenant``, by name, without its value."""
        found = {name: SecretInfo(name, "api", at) for name, at in self._set_at.get(tenant, {}).items()}
        found.update({name: SecretInfo(name, "config") for name in self.config.get(tenant, {})})
        return [found[name] for name in sorted(found)]

    async def reload(self) -> int:
        """Read the store's secrets again; how many there are. With ``unseal`` (a host), open
        each: one that does not open (a key dropped from the list, a value moved to another
        entry) is left out and logged, by name, so that it does not take the others down. A
        gateway reads only names and times: it never holds a value it does not need."""
        raw = await self._saved()
        if self.unseal and self.cipher is None:  # a runtime started without a key (tests, embedding)
            if raw and not self.broken:
                log.warning("%d secret(s) set through the API are not used: this process has no secrets key", len(raw))
            self.broken = dict.fromkeys(raw, "no secrets key")
            return 0
        api: dict[str, dict[str, str]] = {}
        set_at: dict[str, dict[str, float]] = {}
        broken: dict[str, str] = {}
        for entry, saved in raw.items():
            tenant, _, name = entry.partition("/")
            try:
                if self.unseal:
                    api.setdefault(tenant, {})[name] = self._open(tenant, name, saved["sealed"])
                set_at.setdefault(tenant, {})[name] = float(saved["set_at"])
            except (SecretError, KeyError, TypeError, ValueError) as exc:
                broken[entry] = str(exc)
        for entry in broken.keys() - self.broken.keys():
            log.error("secret %s cannot be read, and is left out: %s", entry, broken[entry])
        self._api, self._set_at, self.broken = api, set_at, broken
        return sum(len(names) for names in set_at.values())

    def names(self, tenant: str) -> set[str]:
        """The names of ``tenant``'s secrets, whether or not this process can open them."""
        return set(self._set_at.get(tenant, {})) | set(self.config.get(tenant, {}))

    async def put(self, tenant: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Seal and save ``tenant``'s secret ``name``; (what is known of it, whether it is new)."""
        self._check(tenant, name, value)
        async with self._lock:  # one writer per gateway: the meta value is read, changed and written
            raw = await self._saved()
            entry = f"{tenant}/{name}"
            new = entry not in raw
            if new and sum(1 for e in raw if e.partition("/")[0] == tenant) >= self.max_secrets:
                raise SecretError(f"tenant {tenant!r} has {self.max_secrets} secrets already, the most it may "
                                  "have (limits.max_secrets): delete one first")
            at = self.clock()
            raw[entry] = {"sealed": self._seal(tenant, name, value), "set_at": at}
            await self.store.put_meta(SECRETS_META, json.dumps(raw).encode())
            if self.unseal:
                self._api.setdefault(tenant, {})[name] = value
            self._set_at.setdefault(tenant, {})[name] = at
        return SecretInfo(name, "api", at), new

    async def delete(self, tenant: str, name: str) -> bool:
        if name in self.config.get(tenant, {}):
            raise DeclaredInConfig(f"secret {name!r} of tenant {tenant!r} is declared in the config file: "
                                   "remove it there")
        async with self._lock:
            raw = await self._saved()
            if raw.pop(f"{tenant}/{name}", None) is None:
                return False
            await self.store.put_meta(SECRETS_META, json.dumps(raw).encode())
            self._api.get(tenant, {}).pop(name, None)
            self._set_at.get(tenant, {}).pop(name, None)
            return True

    def _check(self, tenant: str, name: str, value: str) -> None:
        try:
            check_value_name(name)
        except ValueError as exc:
            raise SecretError(f"a secret's {exc}") from None
        if name in self.config.get(tenant, {}):
            raise DeclaredInConfig(f"secret {name!r} of tenant {tenant!r} is declared in the config file: "
                                   "change it there")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise SecretError("a secret's value is text (this one has a lone surrogate)") from None
        if not 0 < size <= self.max_secret_bytes:
            raise SecretError(f"a secret's value is 1 to {self.max_secret_bytes:,} bytes of UTF-8 "
                              f"(limits.max_secret_bytes), this one is {size:,}")
        if any(c in value for c in "\r\n\0"):
            raise SecretError("a secret's value goes into a header or a query: it has no line break or NUL")

    def _seal(self, tenant: str, name: str, value: str) -> str:
        if self.cipher is None:
            raise NoKey("this node has no secrets key, so it cannot seal a secret")
        return self.cipher.seal({"tenant": tenant, "name": name, "value": value})

    def _open(self, tenant: str, name: str, sealed: str) -> str:
        if self.cipher is None:
            raise NoKey("no secrets key to open it with")
        try:
            opened = self.cipher.open(sealed, f"secret {tenant}/{name}")
        except BotError as exc:
            raise SecretError(str(exc)) from None
        if opened.get("tenant") != tenant or opened.get("name") != name or not isinstance(opened.get("value"), str):
            raise SecretError("its sealed value belongs to another entry")
        return opened["value"]

    async def _saved(self) -> dict[str, dict]:
        raw = await self.store.get_meta(SECRETS_META)
        return json.loads(raw) if raw else {}
