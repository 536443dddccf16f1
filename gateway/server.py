"""The HTTP server under the gateway's application: what aiohttp answers before any handler runs.

A request aiohttp's parser cannot read (a bad request line, a header with a control byte, a
line over 8,190 bytes) never reaches the application or its middlewares: aiohttp answers it
from :meth:`RequestHandler.handle_error`, in plain text that quotes the offending bytes, and
logs the same bytes with a traceback. Those bytes are often a credential: an
``Authorization: Bearer`` header, or a webhook URL whose query carries a channel's secret
(Signal's ``?token=``). :class:`GatewayRequestHandler` answers in the gateway's JSON error shape
instead and logs only what kind of error it was and from where.

>>> runner = GatewayRunner(gateway.app(), access_log_class=AccessLogger)
>>> await runner.setup()
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from .errors import HTTP_CODES, error_response

log = logging.getLogger("parlour.gateway.http")

# What each parser error means, said without the bytes it quotes (most specific class first).
PARSE_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (http_exceptions.LineTooLong, "line_too_long", "the request line or a header is longer than the server reads"),
    (http_exceptions.BadHttpMethod, "bad_method", "the request line does not start with an HTTP method"),
    (http_exceptions.BadStatusLine, "bad_request_line", "the request line is not valid HTTP"),
    (http_exceptions.InvalidURLError, "bad_url", "the request's URL has characters HTTP does not allow"),
    (http_exceptions.InvalidHeader, "bad_header", "a header is not valid HTTP"),
    (http_exceptions.PayloadEncodingError, "bad_body_framing", "the body's length or encoding is not valid"),
    (http_exceptions.HttpProcessingError, "bad_http", "the request line or a header is not valid HTTP"),
)


def describe(exc: BaseException | None) -> tuple[str, str]:
    """``(reason, message)`` for a parser error, naming neither the bytes nor the header."""
    for kind, reason, message in PARSE_ERRORS:
        if isinstance(exc, kind):
            return reason, message
    return "bad_http", "the request line or a header is not valid HTTP"


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler, with its error answers in parlour's shape and its error
    logs free of request bytes."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: an answer was started, the connection is broken
            raise ConnectionError("the answer was sent already, an error cannot follow it")
        if status >= 500:
            # A handler's own failure (the error middleware answers those, so this is rare):
            # the traceback is ours; the request's path, never its query, says where.
            log.error("request %s %s failed with %d", request.method, request.path, status, exc_info=exc)
            response = error_response(status, HTTP_CODES.get(status, "internal"),
                                      "the server could not answer this request")
        else:
            reason, text = describe(exc)
            log.info("refused a malformed request from %s: %s (%s)", request.remote, reason,
                     type(exc).__name__ if exc is not None else "no exception")
            response = error_response(status, HTTP_CODES.get(status, "bad_request"), text, {"reason": reason})
        response.force_close()
        return response


class GatewayServer(web.Server):
    """:class:`web.Server` whose connections are :class:`GatewayRequestHandler` s."""

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """:class:`web.AppRunner` serving through :class:`GatewayServer`: use it wherever the
    gateway's application is served."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the application started and frozen, as aiohttp does it
        # The same server rebuilt with its own arguments (``_kwargs``: aiohttp keeps them for
        # exactly this, to make each connection's handler), only the handler class differs.
        return GatewayServer(made.request_handler, request_factory=made.request_factory,
                             handler_cancellation=made.handler_cancellation, **made._kwargs)
