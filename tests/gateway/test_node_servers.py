"""What only several node servers on one port show: a push reaches a chat socket on whichever
server holds it, a tenant made on one server is known to all, and every server's figures are
in one scrape. One ``parlour serve --servers 2`` for the module; each client below opens
connections of its own, which the kernel spreads over both servers."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from tests.gateway.conftest import TEST_FLOWS, ServeProcess

USERS = 8
"""Each user's socket lands on either server, and its conversation is owned by either: with
eight, the chance that no push has to cross from its owner to another server is 1 in 256."""


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("node")
    (folder / "parlour.yaml").write_text("tenants:\n  demo: {rate_limit: null, user_rate_limit: null}\n")
    serve = ServeProcess(folder, "--config", "parlour.yaml", "--flows", str(TEST_FLOWS), "--servers", "2",
                         "--log-level", "warning").start()
    yield serve
    assert serve.stop() == 0, serve.output()[-3000:]


def fresh() -> aiohttp.ClientSession:
    """A client whose every request opens a connection of its own (no keep-alive)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def test_a_timers_message_reaches_the_users_socket_whichever_server_holds_it(two_servers):
    async with fresh() as http:
        async def converse(user: str) -> list[dict]:
            async with http.ws_connect(f"{two_servers.url}/v1/demo/web/ws?user={user}") as ws:
                await ws.send_json({"id": f"{user}-1", "text": "timer"})
                frames = []
                while not any(f.get("type") == "push" for f in frames):
                    frames.append(await asyncio.wait_for(ws.receive_json(), 20))
                return frames

        talks = await asyncio.gather(*(converse(f"socket-{n}") for n in range(USERS)))
    for frames in talks:
        answer, push = frames[0], frames[-1]
        assert answer["type"] == "replies" and [r["text"] for r in answer["replies"]] == ["waiting"]
        assert [r["text"] for r in push["replies"]] == ["fired"]


async def test_a_tenant_made_on_one_server_is_known_to_every_server_at_once(two_servers):
    operator = {"Authorization": f"Bearer {two_servers.admin_token}"}
    async with fresh() as http:
        async with http.put(f"{two_servers.url}/v1/tenants/newco", headers=operator) as answer:
            assert answer.status == 201
            token = (await answer.json())["token"]
        for _ in range(10):  # ten connections: both servers answer some
            async with http.get(f"{two_servers.url}/v1/newco/flows",
                                headers={"Authorization": f"Bearer {token}"}) as got:
                assert got.status == 200, await got.text()


async def test_one_scrape_shows_every_servers_figures_and_readyz_names_each(two_servers):
    operator = {"Authorization": f"Bearer {two_servers.admin_token}"}
    async with fresh() as http:
        for n in range(10):
            async with http.post(f"{two_servers.url}/v1/demo/web/messages",
                                 json={"user": f"scrape-{n}", "id": "1", "text": "hi"}) as answer:
                assert answer.status == 200
        async with http.get(f"{two_servers.url}/readyz") as ready:
            servers = (await ready.json())["servers"]
        async with http.get(f"{two_servers.url}/metrics", headers=operator) as scrape:
            text = await scrape.text()
    assert sorted(s["name"] for s in servers) == ["parlour-server-0", "parlour-server-1"]
    turns = dict(re.findall(r'^parlour_host_turns_total\{host="([^"]+)"\} (\S+)$', text, re.M))
    assert sorted(turns) == ["parlour-server-0", "parlour-server-1"]
    answered = [line for line in text.splitlines() if line.startswith("parlour_http_requests_total{")]
    hosts = [re.search(r'host="([^"]+)"', line) for line in answered]
    assert all(hosts)  # each gateway's figures come labelled with its server, none unlabelled
    assert {h.group(1) for h in hosts} == {"parlour-server-0", "parlour-server-1"}  # and both gateways answered
    assert json.loads(json.dumps(servers))  # plain data
