"""Carrying out a flow's :class:`~parlour.flow.HttpRequest` effects over real HTTP (aiohttp).

Secrets are filled in here, at the last moment, from a mapping the operator provides; they
never pass through the interpreter, the state or the effects, and they are masked in any error
text that goes back to the flow. A request that carries a secret does not follow redirects, so
a secret cannot travel to a host the flow did not name. Every connection, redirect hops
included, goes through the tenant's egress policy (:mod:`parlour.egress`); a denied one is an
error result, never retried. Timeouts, connection errors, 408, 425,
429 and 5xx are retried ``request.retries`` times with exponential backoff and jitter. The
outcome is always an :class:`~parlour.flow.HttpResult`, never an exception.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import random
from collections.abc import Mapping

from urllib.parse import quote, quote_plus

import aiohttp

from .egress import Egress, EgressDenied, EgressSessions
from .flow.events import HttpRequest, HttpResult, Secret

MAX_BODY_BYTES = 1 << 20
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class MissingSecret(LookupError):
    """A request names a secret the operator did not provide (never leaves this module)."""


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


def _mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret, as written or as a URL would carry it, replaced by ***."""
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), repr(secret)[1:-1]}:
            if form:
                text = text.replace(form, "***")
    return text


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
    """Sends flow HTTP requests, each under its tenant's egress policy:
    ``async with HttpCaller(secrets, egress=Egress.from_allows({"acme": ["10.0.0.0/8"]})) as call``.
    Without ``egress`` every tenant gets the default policy (public addresses only)."""

    def __init__(self, secrets: Mapping[str, str] | None = None, *, backoff_s: float = 0.2,
                 rng: random.Random | None = None, egress: Egress | None = None):
        self.secrets = dict(secrets or {})
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
            headers = _fill(request.headers, self.secrets, used)
            query = _fill(request.query, self.secrets, used)
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
            except Exception as exc:  # the boundary: whatever aiohttp or a codec raises is a result
                result = HttpResult(request.request_id, error=_describe(exc))
            if result.error is None and result.status not in RETRY_STATUSES:
                break
        if result.error is not None:
            result = HttpResult(request.request_id, status=result.status, error=_mask(result.error, used))
        return result

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
