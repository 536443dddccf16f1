"""Real HTTP servers on loopback for tests: an aiohttp app that records what it was sent."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


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
async def serve(app: web.Application):
    """Run ``app`` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
