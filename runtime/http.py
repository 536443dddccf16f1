"""Carrying out a flow's :class:`~parlour.flow.HttpRequest` effects over real HTTP (aiohttp).

Secrets are filled in here, at the last moment, from the secrets of the tenant whose flow made
the request (a :class:`SecretSource`: another tenant's are never in reach); they never pass
through the interpreter, the state or the effects. Every form of each secret a request used
(as written, URL-, JSON- or base64-encoded) is masked as ``***`` in what comes back (the
response's text, its JSON, keys and strings alike, its headers, the error text) before the
result leaves this module, so an API that echoes a secret cannot put it in a conversation's
variables, the store, a reply or a log line. A request that carries a secret does not follow redirects, so
a secret cannot travel to a host the flow did not name. Every connection, redirect hops
included, goes through the tenant's egress policy (:mod:`parlour.egress`); a denied one is an
error result, never retried. Timeouts, connection errors, 408, 425,
429 and 5xx are retried ``request.retries`` times with exponential backoff and jitter. The
outcome is always an :class:`~parlour.flow.HttpResult`, never an exception.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import html
import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import aiohttp

from .egress import Egress, EgressDenied, EgressSessions
from .flow.events import HttpRequest, HttpResult, Secret

MAX_BODY_BYTES = 1 << 20
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class MissingSecret(LookupError):
    """A request names a secret its tenant does not have (never leaves this module)."""


class SecretSource(Protocol):
    """Where the caller finds a tenant's secrets (:class:`parlour.vault.Vault` is one)."""

    def secrets_of(self, tenant: str | None) -> Mapping[str, str]: ...


class OneTenant:
    """The secrets of a caller that serves one tenant it does not name (``parlour chat``, flow
    tests): served for ``tenant=None`` only, so that a named tenant never gets them."""

    def __init__(self, secrets: Mapping[str, str] | None = None):
        self.secrets = dict(secrets or {})

    def secrets_of(self, tenant: str | None) -> Mapping[str, str]:
        return self.secrets if tenant is None else {}


def _fill(pairs, secrets: Mapping[str, str], used: list[str]) -> dict[str, str]:
    out = {}
    for key, value in pairs:
        if isinstance(value, Secret):
            if value.name not in secrets:
                raise MissingSecret(value.name)
            used.append(secrets[value.name])
            value = value.prefix + secrets[value.name]
        out[key] = value
    return out


def _forms(secret: str) -> set[str]:
    """The ways a secret may come back: as written, in a URL, escaped in JSON, Python (its
    bytes too: an HTTP parser's error quotes them) or HTML, in base64 (an echoed ``Authorization: Basic``)."""
    raw = secret.encode("utf-8", errors="replace")
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), repr(secret)[1:-1], repr(raw)[2:-1],
            json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret),
            raw.decode("latin-1"),
            base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def _masker(secrets: list[str]) -> Callable[[str], str]:
    """What replaces every form of every secret in a text with ***: one compiled pattern, the
    longest forms first (so that a form inside a longer one does not leave the rest behind)."""
    forms = sorted({form for secret in secrets if secret for form in _forms(secret) if form}, key=len, reverse=True)
    if not forms:
        return lambda text: text
    pattern = re.compile("|".join(map(re.escape, forms)))
    return lambda text: pattern.sub("***", text)


def _mask(text: str, secrets: list[str]) -> str:
    """``text`` with every form of every secret replaced by ***."""
    return _masker(secrets)(text)


def _mask_json(value: Any, mask: Callable[[str], str]) -> Any:
    """A parsed JSON body with every string, keys included, masked (RecursionError if too deep)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_mask_json(item, mask) for item in value]
    if isinstance(value, dict):
        return {mask(key): _mask_json(item, mask) for key, item in value.items()}
    return value


def _mask_result(result: HttpResult, secrets: list[str]) -> HttpResult:
    """``result`` as the flow may see it when its request carried ``secrets``: masked everywhere.
    A body nested too deeply to mask is kept as (masked) text only."""
    if not secrets:
        return result
    mask = _masker(secrets)
    try:
        body = _mask_json(result.json, mask)
    except RecursionError:
        body = None
    return HttpResult(result.request_id, status=result.status, json=body,
                      text=mask(result.text) if result.text is not None else None,
                      headers={mask(k): mask(v) for k, v in result.headers.items()},
                      error=mask(result.error) if result.error is not None else None)


def _describe(exc: BaseException) -> str:
    """An error for the flow, without the URL (whose query may carry secrets)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status} {exc.message}".strip()
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: cannot connect to {exc.host}:{exc.port}"
    return f"{type(exc).__name__}: {exc}"


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        if not codecs.lookup(charset or "utf-8")._is_text_encoding:  # rot13, base64, hex...
            charset = "utf-8"
    except LookupError:
        charset = "utf-8"
    return raw.decode(charset or "utf-8", errors="replace")


def _parse_json(text: str):
    try:
        return json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        return None


class HttpCaller:
    """Sends flow HTTP requests, each with its tenant's secrets and under its tenant's egress
    policy: ``async with HttpCaller(vault, egress=Egress.from_allows({"acme": ["10.0.0.0/8"]})) as
    call``, then ``await call(request, tenant)``. A plain mapping of secrets is :class:`OneTenant`'s;
    without ``egress`` every tenant gets the default policy (public addresses only)."""

    def __init__(self, secrets: SecretSource | Mapping[str, str] | None = None, *, backoff_s: float = 0.2,
                 rng: random.Random | None = None, egress: Egress | None = None):
        self.secrets: SecretSource = (secrets if secrets is not None and hasattr(secrets, "secrets_of")
                                      else OneTenant(secrets))
        self.backoff_s = backoff_s
        self.rng = rng or random.Random()
        self.egress = egress or Egress()
        self._sessions: EgressSessions | None = None

    async def __aenter__(self) -> HttpCaller:
        # One slow API must not take every connection: 100 at most per host, 1000 in all (per policy).
        self._sessions = EgressSessions(limit=1000, limit_per_host=100)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._sessions is not None:
            await self._sessions.aclose()
            self._sessions = None

    async def __call__(self, request: HttpRequest, tenant: str | None = None) -> HttpResult:
        """Send ``request`` for a flow of ``tenant`` (None: the one tenant of `parlour chat` and tests)."""
        used: list[str] = []
        try:
            mine = self.secrets.secrets_of(tenant)
            headers = _fill(request.headers, mine, used)
            query = _fill(request.query, mine, used)
        except MissingSecret as exc:
            return HttpResult(request.request_id, error=f"secret {exc.args[0]!r} is not set")
        result = HttpResult(request.request_id, error="not sent")
        for attempt in range(request.retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(delay + self.rng.uniform(0, delay))
            try:
                result = await self._once(request, headers, query, follow=not used, tenant=tenant)
            except EgressDenied as exc:  # the same answer however often it is asked: not retried
                result = HttpResult(request.request_id, error=self.egress.message(tenant, exc))
                break
            except Exception as exc:  # noqa: BLE001 - the boundary: whatever else aiohttp or a codec raises is a result
                result = HttpResult(request.request_id, error=_describe(exc))
            if result.error is None and result.status not in RETRY_STATUSES:
                break
        return _mask_result(result, used)

    async def _once(self, request: HttpRequest, headers: dict[str, str], query: dict[str, str],
                    follow: bool, tenant: str | None = None) -> HttpResult:
        if self._sessions is None:
            raise RuntimeError("HttpCaller is used outside `async with`")
        session = self._sessions.get(self.egress.policy(tenant))
        body = {}
        if request.json is not None:
            body["json"] = request.json
        elif request.form is not None:
            body["data"] = dict(request.form)
        elif request.body is not None:
            body["data"] = request.body.encode("utf-8", errors="replace")
        try:
            async with session.request(
                    request.method, request.url, headers=headers, params=query or None, allow_redirects=follow,
                    timeout=aiohttp.ClientTimeout(total=request.timeout_s), **body) as response:
                raw = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        return HttpResult(request.request_id, status=response.status,
                                          error=f"the response body is over {MAX_BODY_BYTES:,} bytes")
                if not follow and 300 <= response.status < 400:
                    return HttpResult(request.request_id, status=response.status,
                                      error=f"HTTP {response.status}: a request carrying secrets does not "
                                            "follow redirects")
                text = _decode(bytes(raw), response.charset)
                return HttpResult(request.request_id, status=response.status, json=_parse_json(text), text=text,
                                  headers={k: v for k, v in response.headers.items()})
        except TimeoutError:
            return HttpResult(request.request_id, error=f"timed out after {request.timeout_s:g} s")
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            return HttpResult(request.request_id, error=_describe(exc))
