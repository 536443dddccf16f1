"""The anchor of T1: a bare aiohttp handler on the web channel's route, as a process.

    python -m bench.bare PORT

It parses and checks the same JSON body as parlour's web channel and answers a reply of the
same shape and size, and nothing else: the ceiling of one aiohttp process on this machine, on
the event loop parlour's node servers use (uvloop).
"""

from __future__ import annotations

import json
import sys

import uvloop
from aiohttp import web

REPLY = {"replies": [
    {"text": "We are a book club that meets every Thursday.", "buttons": []},
    {"text": "What would you like to do?", "buttons": [
        {"id": "register", "title": "Register"}, {"id": "about", "title": "About us"},
        {"id": "quit", "title": "Quit"}]},
], "duplicate": False}


async def message(request: web.Request) -> web.Response:
    try:
        data = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": {"code": "invalid_json"}}, status=400)
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in ("user", "id", "text")):
        return web.json_response({"error": {"code": "invalid_request"}}, status=400)
    return web.json_response(REPLY)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def app() -> web.Application:
    application = web.Application()
    application.add_routes([web.post("/v1/{tenant}/web/messages", message), web.get("/readyz", ready)])
    return application


if __name__ == "__main__":
    # The event loop parlour's node servers run on (Ray takes uvloop when it is installed, and
    # parlour installs it): the anchor is aiohttp on the same loop.
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())
