"""Issue 12, finding 1, through a real host on a real SQLite file (no Ray): a tenant's flow
sees only its own env, and an API that echoes a secret leaves ``***`` (never the value) in the
conversation's variables, in ``error.json``, in the replies and anywhere in the database file."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from parlour.actors.host import Host, HostConfig
from parlour.channels.registry import Cipher
from parlour.codec import unpack_outbound
from parlour.flow import UserMessage, load_text
from parlour.http import HttpCaller
from parlour.messages import ConversationKey, Inbound
from parlour.store import FlowRecord, open_store
from parlour.vault import Vault
from tests.servers import loopback_egress, serve

SECRET = "alpha-s3cret-VALUE"

ECHO = """\
flow: echo
triggers: [{keyword: [echo]}]
start: call
nodes:
  call:
    http: {url: "{{ env.API }}/echo", headers: {X-Key: {secret: ALPHA_KEY}}, save: echoed, on_error: failed}
    next: again
  again:
    http: {url: "{{ env.API }}/echo?status=400", query: {key: {secret: ALPHA_KEY}}, on_error: failed}
    next: failed
  failed: {say: "echoed {{ echoed.you_sent }}, then {{ error.json.you_sent }}", end: true}
"""

SHOW_ENV = """\
flow: show_env
triggers: [{keyword: [env]}]
start: show
nodes:
  show: {say: "{{ env }}", end: true}
"""


def echo_app() -> web.Application:
    async def echo(request):
        sent = request.headers.get("X-Key") or request.query.get("key", "")
        return web.json_response({"you_sent": sent}, status=int(request.query.get("status", 200)))

    app = web.Application()
    app.router.add_get("/echo", echo)
    return app


async def _claim_all(name):
    return 1, list(range(64))


async def test_an_echoed_secret_is_stars_in_vars_error_json_replies_and_the_sqlite_file(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/parlour.db")
    await store.open()
    key = Cipher.from_keys(Cipher.new_key())
    await Vault(store, key, unseal=False).put("alpha", "ALPHA_KEY", SECRET)
    vault = Vault(store, key)
    await vault.reload()
    for tenant, text in (("alpha", ECHO), ("alpha", SHOW_ENV), ("beta", SHOW_ENV)):
        flow = load_text(text, f"{tenant}.yaml")
        await store.put_flow(FlowRecord(tenant, flow.id, flow.version, text, flow.path, time.time(), True))
    async with serve(echo_app()) as api, HttpCaller(vault, egress=loopback_egress("alpha", "beta")) as http:
        env = {"alpha": {"API": api, "ALPHA_ONLY": "alpha-env"}, "beta": {"API": api, "BETA_ONLY": "beta-env"}}
        host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, env=env), _claim_all, http=http)
        await host.start()
        alice, bob = ConversationKey("alpha", "web", "alice"), ConversationKey("beta", "web", "bob")
        await host.deliver([Inbound(alice, "m1", UserMessage("echo"))])
        deadline = time.monotonic() + 10
        while (await host.inspect(alice)).state.status != "ended" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        state = (await host.inspect(alice)).state
        shown = await host.deliver([Inbound(alice, "m2", UserMessage("env")), Inbound(bob, "m1", UserMessage("env"))])
        outbox = [unpack_outbound(e.data)["reply"].text for e in await store.read_outbox(None, 100)]
        files = _bytes(tmp_path)  # the WAL as it is while the store is open, then the file once closed
        await host.stop()
        files += _bytes(tmp_path)
    assert state.vars["echoed"] == {"you_sent": "***"} and state.vars["error"]["json"] == {"you_sent": "***"}
    assert state.vars["error"]["status"] == 400 and "echoed ***, then ***" in outbox
    assert "alpha-env" in shown[0].replies[0].text and "beta-env" not in shown[0].replies[0].text
    assert "beta-env" in shown[1].replies[0].text and "alpha-env" not in shown[1].replies[0].text
    assert SECRET.encode() not in files and b"***" in files


def _bytes(folder) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.glob("parlour.db*")))
