"""The agent console: a plain page at ``/agent/{tenant}`` where a person answers hand-offs.

The page holds no data and needs no token to load: everything it shows it reads from the
hand-off API (:mod:`parlour.gateway.handoffs`) with the token the agent types in, which it keeps
in the tab's ``sessionStorage`` only (gone when the tab closes, never sent anywhere but this
origin's API). It follows the chat page's discipline: its script and style are files of
``static/`` under the gateway's CSP (``script-src 'self'; style-src 'self'``: no inline script
or style), no framework, no build step; every text from the API goes in with ``textContent``.
"""

from __future__ import annotations

from aiohttp import web

from .errors import not_found
from .web import STATIC

FILES = ("agent.js", "agent.css")


class Console:
    def __init__(self, gateway):
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/agent/{tenant}", self.page),
                *(web.get(f"/static/{name}", self.static) for name in FILES)]

    async def page(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        if tenant not in self.gateway.tenants:
            raise not_found(f"tenant {tenant!r}")
        return web.FileResponse(str(STATIC / "agent.html"), headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[1]
        return web.FileResponse(str(STATIC / name), headers={"Cache-Control": "no-cache"})
