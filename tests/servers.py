"""Real HTTP servers on loopback for tests: an aiohttp app that records what it was sent."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from parlour.egress import Egress

LOOPBACK = ("127.0.0.0/8", "::1/128")
"""What a test's ``egress.allow`` names to reach the fake APIs on loopback (the policy denies
loopback by default, as it denies every address that is not public)."""


def loopback_egress(*tenants: str) -> Egress:
    """An egress policy that lets ``tenants`` (and calls made for no tenant) reach loopback."""
    return Egress.from_allows({tenant: LOOPBACK for tenant in tenants}, default=LOOPBACK)


@dataclass
class Recorder:
    requests: list[dict] = field(default_factory=list)
    script: list[tuple[int, dict | None]] = field(default_factory=list)  # answers to give, in order
    delay_s: float = 0.0
    gate: asyncio.Event | None = None  # when set, every answer waits until the test opens it


def members_app(recorder: Recorder) -> web.Application:
    """A members API: POST /members answers from ``recorder.script``, else 201 {"id": n}."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        recorder.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "headers": dict(request.headers), "body": body})
        if recorder.delay_s:
            await asyncio.sleep(recorder.delay_s)
        if recorder.gate is not None:
            await recorder.gate.wait()
        if recorder.script:
            status, payload = recorder.script.pop(0)
            return web.json_response(payload, status=status)
        return web.json_response({"id": len(recorder.requests)}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1"):
    """Run ``app`` on a free port of loopback ``host`` (127.0.0.1 or ::1); yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        await runner.cleanup()


def helpdesk_app(recorder: Recorder, key: bytes, tolerance_s: float = 300.0) -> web.Application:
    """A helpdesk receiving hand-off webhooks: it checks ``X-Parlour-Signature`` the way
    docs/gateway.md tells a receiver to (its own code, not parlour's), answers 401 to a request
    that fails, else from ``recorder.script`` (default 204). Every request is recorded, with
    ``verified``."""

    def verified(header: str, body: bytes) -> bool:
        import hashlib
        import hmac
        import time
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        if not fields.get("t", "").isdigit() or abs(time.time() - int(fields["t"])) > tolerance_s:
            return False
        expected = hmac.new(key, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("v1", ""))

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verified(request.headers.get("X-Parlour-Signature", ""), body)
        recorder.requests.append({"path": request.path_qs, "headers": dict(request.headers), "body": body,
                                  "verified": ok})
        if not ok:
            return web.json_response({"error": "bad signature"}, status=401)
        if recorder.script:
            status, payload = recorder.script.pop(0)
            return web.json_response(payload, status=status)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    return app
