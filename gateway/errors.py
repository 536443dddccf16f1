"""Every HTTP error parlour answers has one shape::

    {"error": {"code": "invalid_json", "message": "the body is not JSON: ...", "details": null}}

``code`` is stable (clients branch on it), ``message`` is for people, ``details`` is
structured where there is more to say (a flow's problems with their line and column, the
fields of a body that failed validation). :class:`ApiError` is raised by handlers; the error
middleware turns it, aiohttp's own HTTP errors and anything unexpected into that shape.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from parlour.errors import ParlourError

# aiohttp's own errors (no route, wrong method, body over the limit) by status
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "timeout", 411: "length_required", 413: "payload_too_large", 414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable", 429: "rate_limited", 431: "headers_too_large", 500: "internal", 503: "unavailable",
    504: "timeout",
}


class ApiError(ParlourError):
    """An HTTP error answer: ``status``, a stable ``code``, a ``message``, optional ``details``
    and extra ``headers`` (``Retry-After``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}
        super().__init__(f"{status} {code}: {message}")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message, details), status=status, headers=headers,
                             dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # ASCII: a lone surrogate in a text stays sendable


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def unavailable(message: str, retry_after_s: int = 1, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after_s)})
