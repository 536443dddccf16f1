"""Logging for ``parlour serve`` and its hosts: readable lines, or JSON lines when asked
(``--log-format json``), each with the fields a record carries in ``extra`` (the request id).

No line carries a credential: the code that logs never passes one (the gateway's HTTP server
logs a malformed request's kind, never its bytes), and :class:`Redact`, on the handler, blanks
what still looks like one as a last line of defence.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    handler.addFilter(Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# A bearer token, parlour's own tokens wherever they appear, and a secret in a URL's query.
CREDENTIAL = re.compile(r"(?i)(bearer\s+|authorization:\s*\S+\s+|[?&](?:token|secret|key|signature|sig)=)[^\s&'\"]+"
                        r"|plr_[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    return CREDENTIAL.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class Redact(logging.Filter):
    """Blank credentials in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
