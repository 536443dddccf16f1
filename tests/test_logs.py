"""The last line of defence of the logs: what looks like a credential is blanked, in the message
and in the traceback, whoever logged it."""

from __future__ import annotations

import io
import logging

from parlour.logs import Redact

TOKEN = "plr_Zm9vYmFyYmF6cXV4cXV1eA"


def test_credentials_are_blanked_in_messages_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Redact())
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("header %r", f"Authorization: Bearer {TOKEN}")
        logger.warning("GET /v1/demo/channels/signal/bot?token=s3cr3t-url-secret&x=1")
        try:
            raise ValueError(f"bad line b'Authorization: Bearer other-{TOKEN}'")
        except ValueError:
            logger.exception("failed")
        logger.warning("nothing secret: %s", "hello")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert TOKEN not in text and "s3cr3t" not in text and "other-" not in text
    assert text.count("[redacted]") >= 3 and "nothing secret: hello" in text and "ValueError" in text
