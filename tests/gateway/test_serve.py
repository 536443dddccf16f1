"""``parlour serve`` as a process: defaults, bad settings, and restarts that lose nothing.

The restart tests run a channel-like sender: many users, each sending its messages one after
another and sending again whatever was not acknowledged (a 5xx, a refused or cut connection).
The server is stopped under that load (SIGTERM: gracefully; SIGKILL: not at all) and started
again on the same data folder. Afterwards every user's transcript, kept by the flow, must hold
each message exactly once and in order: nothing acknowledged lost, nothing applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.conftest import TEST_FLOWS, ServeProcess, descendants

USERS, MESSAGES = 30, 30
NO_LIMIT = "tenants:\n  demo:\n    rate_limit: null\n    user_rate_limit: null\n"


SHOW_ENV = "flow: show_env\ntriggers: [{keyword: [showenv]}]\nstart: a\nnodes:\n  a: {say: '{{ env }}', end: true}\n"


def test_serve_runs_on_defaults_and_stops_cleanly_on_sigterm(tmp_path):
    serve = ServeProcess(tmp_path, "--env", "MEMBERS_API=http://127.0.0.1:9/members").start()  # as the README says
    try:
        token_file = tmp_path / ".parlour" / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        out = serve.output()
        assert f"{serve.url}/chat/demo" in out and str(Path(".parlour") / "admin-token") in out
        with urllib.request.urlopen(urllib.request.Request(
                f"{serve.url}/v1/demo/flows", headers={"Authorization": f"Bearer {serve.admin_token}"})) as answer:
            assert {f["flow"] for f in json.load(answer)["flows"]} == {"registration", "booking", "support"}
        assert stat.S_IMODE((tmp_path / ".parlour" / "parlour.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / ".parlour").stat().st_mode) == 0o700
        # --env is the one tenant's; the bundled support flow starts without its ORDERS_TOKEN, and says so
        auth = {"Authorization": f"Bearer {serve.admin_token}"}
        upload = urllib.request.Request(f"{serve.url}/v1/demo/flows/show_env", data=SHOW_ENV.encode(),
                                        method="PUT", headers=auth)
        with urllib.request.urlopen(upload) as answer:
            assert answer.status == 201
        with urllib.request.urlopen(urllib.request.Request(
                f"{serve.url}/v1/demo/web/messages", data=b'{"user": "u", "id": "m1", "text": "showenv"}')) as answer:
            assert "http://127.0.0.1:9/members" in json.load(answer)["replies"][0]["text"]
        assert "secret 'ORDERS_TOKEN' is not set for tenant 'demo'" in serve.output()
    finally:
        code = serve.stop(signal.SIGTERM)
    assert code == 0 and "parlour: stopped" in serve.output()
    assert "SIGTERM received" not in serve.output()  # Ray's own handler (a stack dump, then death) did not run


def test_bad_settings_and_broken_flows_stop_it_before_it_starts(tmp_path):
    (tmp_path / "bad.yaml").write_text("hosts: 0\nbogus: 1\n")
    run = subprocess.run([sys.executable, "-m", "parlour.cli", "serve", "--config", "bad.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "bad.yaml: hosts:" in run.stderr and "bogus: Extra inputs" in run.stderr
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "x.yaml").write_text("flow: x\nstart: a\nnodes:\n  a: {say: hi, next: b}\n")
    run = subprocess.run([sys.executable, "-m", "parlour.cli", "serve", "--flows", "flows"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "x.yaml:4:22: no node 'b'" in run.stderr, run.stderr
    (tmp_path / "two.yaml").write_text("tenants: {alpha: {}, beta: {}}\n")
    run = subprocess.run([sys.executable, "-m", "parlour.cli", "serve", "--config", "two.yaml", "--env", "API=x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "tenants.<tenant>.env" in run.stderr, run.stderr


class Sender:
    """Users sending numbered messages in order, each resent until acknowledged."""

    def __init__(self, url: str):
        self.url = url
        self.acked: dict[str, list[str]] = {f"u{n}": [] for n in range(USERS)}
        self.refused = 0

    async def user(self, http: aiohttp.ClientSession, user: str, stop_at: int) -> None:
        for n in range(len(self.acked[user]), stop_at):
            while True:
                try:
                    async with http.post(f"{self.url}/v1/demo/web/messages", json={
                            "user": user, "id": f"{user}-{n}", "text": f"{user}-{n}"},
                            timeout=aiohttp.ClientTimeout(total=30)) as response:
                        if response.status == 200:
                            self.acked[user].append(f"{user}-{n}")
                            break
                        assert response.status == 503, await response.text()
                except (TimeoutError, aiohttp.ClientError):
                    pass
                self.refused += 1
                if self.refused > 50_000:
                    raise AssertionError("the server never came back")
                await asyncio.sleep(0.05)

    async def run(self, stop_at: int) -> None:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(self.user(http, user, stop_at) for user in self.acked))


async def transcripts(url: str, token: str) -> dict[str, list[str]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        found = {}
        for n in range(USERS):
            async with http.get(f"{url}/v1/demo/conversations/web/u{n}") as response:
                found[f"u{n}"] = (await response.json())["vars"]["log"]
        return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_restart_under_load_loses_nothing_acknowledged(tmp_path, sig):
    (tmp_path / "parlour.yaml").write_text(NO_LIMIT)
    args = ("--config", "parlour.yaml", "--flows", str(TEST_FLOWS), "--log-level", "warning")
    serve = await asyncio.to_thread(ServeProcess(tmp_path, *args).start)
    sender = Sender(serve.url)
    load = asyncio.create_task(sender.run(MESSAGES))
    while sum(map(len, sender.acked.values())) < USERS * MESSAGES // 3:
        await asyncio.sleep(0.05)
    code = await asyncio.to_thread(serve.stop, sig)
    before = sum(map(len, sender.acked.values()))
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), serve.output()[-3000:]
    restarted = ServeProcess(tmp_path, *args)
    restarted.port, restarted.url = serve.port, serve.url  # the channels know one address
    await asyncio.to_thread(restarted.start)
    try:
        await asyncio.wait_for(load, 300)
        found = await transcripts(restarted.url, restarted.admin_token)
    finally:
        await asyncio.to_thread(restarted.stop)
    assert before < USERS * MESSAGES and sender.refused > 0  # the stop did land under load
    for user, acked in sender.acked.items():
        assert found[user] == acked == [f"{user}-{n}" for n in range(MESSAGES)], user


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_node_server_killed_under_load_loses_nothing_and_the_others_keep_serving(tmp_path, store, request):
    """Two node servers on one port; one is SIGKILLed under load. Ray starts it again, it
    claims its partitions under a new epoch; the other keeps accepting all along (its own
    users' messages are answered, the killed one's refused until it is back, then resent)."""
    (tmp_path / "parlour.yaml").write_text(NO_LIMIT)
    args = ["--config", "parlour.yaml", "--flows", str(TEST_FLOWS), "--log-level", "warning", "--servers", "2"]
    if store == "redis":
        args += ["--store", f"{request.getfixturevalue('redis_server').url}?prefix=kill{tmp_path.name[-8:]}:"]
    serve = await asyncio.to_thread(ServeProcess(tmp_path, *args).start)
    try:
        servers = [pid for pid in descendants(serve.process.pid) if process_name(pid).startswith("ray::NodeServer")]
        assert len(servers) == 2, servers
        sender = Sender(serve.url)
        load = asyncio.create_task(sender.run(MESSAGES))
        while sum(map(len, sender.acked.values())) < USERS * MESSAGES // 3:
            await asyncio.sleep(0.05)
        os.kill(servers[0], signal.SIGKILL)
        before = sum(map(len, sender.acked.values()))
        await asyncio.wait_for(load, 300)
        found = await transcripts(serve.url, serve.admin_token)
        with urllib.request.urlopen(f"{serve.url}/readyz") as answer:
            ready = json.load(answer)
    finally:
        code = await asyncio.to_thread(serve.stop)
    assert before < USERS * MESSAGES and sender.refused > 0  # the kill did land under load
    assert code == 0, serve.output()[-3000:]
    assert len(ready["servers"]) == 2 and max(s["epoch"] for s in ready["servers"]) > 3  # the new one claimed anew
    for user, acked in sender.acked.items():
        assert found[user] == acked == [f"{user}-{n}" for n in range(MESSAGES)], user


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""
