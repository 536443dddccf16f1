"""What every request goes through: a request id, the error shape, security headers, metrics,
and the access log (JSON lines when asked for)."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Mapping

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestPayloadError

from parlour.channels.registry import CHANNELS
from parlour.errors import InvalidId
from parlour.metrics import GatewayMetrics
from parlour.store import StoreError

from .errors import HTTP_CODES, ApiError, error_response

log = logging.getLogger("parlour.gateway")

REQUEST_ID_KEY = web.RequestKey("request_id", str)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' https: data:; media-src https:; frame-ancestors 'none'; "
                                "base-uri 'none'; "
                                "form-action 'none'"),
}


def route_of(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    return resource.canonical if resource is not None else "(unmatched)"


NO_CHANNEL = ""
"""The ``channel`` label of requests that belong to no channel (admin, ops, the API
description, an unmatched path): Prometheus reads an empty value as no channel."""
FROM_PATH = "{channel}"
"""A route's channel given in its own path (the webhooks'): the label is the path's
``{channel}`` when it is one parlour has, so that a hostile path cannot mint label values."""


def channel_of(request: web.Request, owners: Mapping[str, str]) -> str:
    """The channel a request counts under: its route's, from ``owners`` (route -> channel)."""
    owner = owners.get(route_of(request), NO_CHANNEL)
    if owner == FROM_PATH:
        named = request.match_info.get("channel", "")
        return named if named in CHANNELS else NO_CHANNEL
    return owner


def middlewares(metrics: GatewayMetrics, owners: Mapping[str, str] | None = None):
    """``owners`` maps each channel's own routes (as written: ``/v1/{tenant}/web/messages``) to
    the channel, or to :data:`FROM_PATH`; every other route counts under :data:`NO_CHANNEL`."""
    owners = dict(owners or {})
    prefix = uuid.uuid4().hex[:12]  # this process's; a counter after it (a uuid4 per request costs more)
    numbers = itertools.count(1)

    @web.middleware
    async def gateway(request: web.Request, handler):
        """The one middleware (a coroutine per request, not one per concern): the request id,
        the error shape, the metrics and the security headers."""
        given = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID_KEY] = given if given and REQUEST_ID.match(given) else f"{prefix}-{next(numbers):x}"
        started = time.perf_counter()

        def observe(status: int) -> None:
            metrics.observe_request(route_of(request), channel_of(request, owners), status,
                                    time.perf_counter() - started)

        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect, or a WebSocket handshake's own answer
                observe(exc.status)
                raise
            response = _http_error(exc)
        except Exception as exc:  # noqa: BLE001 - shaped, counted and logged by _error
            response = _error(request, exc, metrics)
        except BaseException:  # cancelled: the client went away
            observe(500)
            raise
        observe(response.status)
        headers = response.headers
        headers["X-Request-Id"] = request[REQUEST_ID_KEY]
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)
        if not response.prepared:
            headers.setdefault("Cache-Control", "no-store")
        return response

    return [gateway]


def _error(request: web.Request, exc: Exception, metrics: GatewayMetrics) -> web.Response:
    """An exception that a handler raised, as the error body of its kind (and logged, counted)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, InvalidId):  # a name or id from the path or the body that no handler checked first
        return error_response(400, "invalid_request", str(exc))
    if isinstance(exc, RequestPayloadError):  # the body's chunks or length were broken on the way in
        return error_response(400, "invalid_body", "the request's body could not be read (its framing is broken)")
    if isinstance(exc, StoreError):
        # Down, or unreadable (a corrupted file): nothing the caller did; a retry may work later.
        log.error("request %s %s: the store failed (request id %s): %s", request.method, request.path,
                  request[REQUEST_ID_KEY], _gist(exc))
        metrics.errors.labels("store").inc()
        return error_response(503, "store_unavailable", "the store cannot be read or written now: retry later; "
                              f"the logs have it under request id {request[REQUEST_ID_KEY]}",
                              headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    log.error("request %s %s failed (request id %s)", request.method, request.path, request[REQUEST_ID_KEY],
              exc_info=exc)
    metrics.errors.labels("internal").inc()
    return error_response(500, "internal", f"an internal error; the logs have it under request id "
                          f"{request[REQUEST_ID_KEY]}")


def _http_error(exc: web.HTTPException) -> web.Response:
    code = HTTP_CODES.get(exc.status, "error")
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return error_response(exc.status, code, exc.reason if exc.text is None else _plain(exc), None, headers)


STORE_RETRY_AFTER_S = 5


def _gist(exc: BaseException) -> str:
    """The last line of an error's text: its own message (a host's error carries the remote
    traceback before it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _plain(exc: web.HTTPException) -> str:
    text = exc.text or exc.reason
    return text.removeprefix(f"{exc.status}: ").strip()


class AccessLogger(AbstractAccessLogger):
    """One line per request, with its request id (structured fields for the JSON formatter).
    Not called at all when the log level leaves access lines out (``enabled``)."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms request_id=%s", request.method, request.path, response.status, time * 1000,
                         request.get(REQUEST_ID_KEY), extra={
            "request_id": request.get(REQUEST_ID_KEY), "method": request.method, "path": request.path,
            "status": response.status, "duration_ms": round(time * 1000, 2), "remote": request.remote})
