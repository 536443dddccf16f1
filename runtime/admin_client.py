"""A small client of a running node's admin API, for the CLI's commands (``parlour dlq``,
``handoffs``, ``conversations``).

The token is the one given, else ``PARLOUR_ADMIN_TOKEN``, else the one ``parlour serve`` wrote
into its data folder. An answer that is not 2xx raises :class:`AdminError` with the API's own
message.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ParlourError


class AdminError(ParlourError):
    pass


class AdminClient:
    def __init__(self, url: str, token: str | None = None, data_dir: Path = Path(".parlour"), timeout_s: float = 30):
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.token = token or os.environ.get("PARLOUR_ADMIN_TOKEN") or self._token_file(data_dir)

    @staticmethod
    def _token_file(data_dir: Path) -> str:
        try:
            return (data_dir / "admin-token").read_text().strip()
        except OSError:
            raise AdminError(f"no admin token: give --token, set PARLOUR_ADMIN_TOKEN, or run where {data_dir} "
                             "holds the token `parlour serve` wrote") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as answer:
            return json.loads(answer.read() or b"null")

    def lines(self, path: str) -> Iterator[bytes]:
        """The lines of a streamed answer (JSON lines), as they arrive."""
        with self._open("GET", path) as answer:
            yield from answer

    @contextlib.contextmanager
    def _open(self, method: str, path: str, body: Any = None) -> Iterator[Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                yield answer
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                message = f"{error['message']} ({exc.code} {error['code']})"
            except (ValueError, KeyError, TypeError):
                message = f"{exc.code} {exc.reason}"
            raise AdminError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(f"no node answers at {self.url} (is `parlour serve` running?): {exc}") from None
