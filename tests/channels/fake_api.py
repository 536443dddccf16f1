"""A fake channel API on loopback: it checks every request parlour sends against the channel's
spec, records it, and answers as the channel would, or as a test scripts it.

Each channel gives a :class:`Spec`: ``check(request) -> problems`` (an empty list when the
request is well-formed) and ``answer(request, n) -> (status, json)`` for a good request. A
request with problems is answered 400 with them and kept in ``rejected``, so a test can assert
that nothing malformed was ever sent.

``Idempotency-Key`` is honoured as a payment API honours it: a request whose key was already
answered 2xx is answered the same again and not delivered twice. ``delivered`` is what a user
would have seen, ``requests`` everything that arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class Spec:
    check: Callable[[FakeRequest], list[str]]
    answer: Callable[[FakeRequest, int], tuple[int, Any]]


@dataclass
class FakeAPI:
    spec: Spec
    requests: list[FakeRequest] = field(default_factory=list)
    delivered: list[FakeRequest] = field(default_factory=list)
    rejected: list[tuple[FakeRequest, list[str]]] = field(default_factory=list)
    # (status, headers, json) to answer next
    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, answers wait until the test opens it
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each request
    _answered: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        got = FakeRequest(request.method, request.path, dict(request.headers), await request.read(),
                          dict(request.query))
        self.requests.append(got)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            status, headers, body = self.script.pop(0)
            return web.json_response(body, status=status, headers=headers)
        problems = self.spec.check(got)
        if problems:
            self.rejected.append((got, problems))
            return web.json_response({"error": {"message": "; ".join(problems)}}, status=400)
        key = got.headers.get("Idempotency-Key")
        if key is not None and key in self._answered:
            status, body = self._answered[key]
            return web.json_response(body, status=status)
        self.delivered.append(got)
        status, body = self.spec.answer(got, len(self.delivered))
        if key is not None and 200 <= status < 300:
            self._answered[key] = (status, body)
        return web.json_response(body, status=status)
