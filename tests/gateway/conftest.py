"""A real node for the gateway tests: a runtime on its own ``redis-server``, and the gateway on
a free loopback port, talked to over real HTTP.

``node`` runs in the test's process (so a test can reach the runtime and the store), without
Ray: its runtime is a :class:`~tests.gateway.local_runtime.LocalRuntime`, the node server's
in-process path. ``ray_node`` (and ``start_node(..., on_ray=True)``, with the ``ray_for_tests``
fixture) puts a real :class:`~parlour.runtime.Runtime` behind the gateway instead, for what is
about Ray's shape: a host or the delivery supervisor killed and restarted, a web turn through
the actors. :class:`ServeProcess` runs ``parlour serve`` as a separate process, for what only a
whole process shows (signals, a restart, a browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from parlour.actors.delivery import RetryPolicy
from parlour.channels.registry import Bots, Cipher
from parlour.config import EgressConfig, Settings, TenantConfig, hash_token, new_token
from parlour.flows_dir import bundled_flows
from parlour.gateway.app import Gateway
from parlour.runtime import Runtime
from parlour.store import open_store
from parlour.vault import Vault
from tests.gateway.local_runtime import LocalRuntime
from tests.ray_local import local_ray
from tests.redis_server import free_port
from tests.servers import LOOPBACK, Recorder, members_app, serve

_names = itertools.count()


@pytest.fixture(scope="package")
def ray_for_tests():
    """Ray (2 CPUs) for the tests that put a real :class:`Runtime` behind the gateway: started
    by the first of them, for the rest of the package."""
    with local_ray():
        yield


@dataclass
class Node:
    url: str
    runtime: Runtime | LocalRuntime
    gateway: Gateway
    store: Any
    operator: str
    tokens: dict[str, str]
    http: aiohttp.ClientSession
    ids: itertools.count = field(default_factory=itertools.count)

    async def say(self, user: str, text: str | None = None, *, button: str | None = None, id: str | None = None,
                  tenant: str = "demo") -> tuple[int, dict]:
        body = {"user": user, "id": id or f"m-{next(self.ids)}"}
        body.update({"button": button} if button is not None else {"text": text})
        async with self.http.post(f"{self.url}/v1/{tenant}/web/messages", json=body) as response:
            return response.status, await response.json()

    def auth(self, tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[tenant] if tenant else self.operator}"}


def texts(body: dict) -> list[str]:
    return [reply["text"] for reply in body["replies"]]


TEST_FLOWS = Path(__file__).parent.parent / "actors" / "flows"
FLOWS = {"demo": [bundled_flows()], "acme": [TEST_FLOWS]}
"""demo runs the bundled flows (registration is its default); acme the test flows (``log``,
which keeps a transcript, is its default; ``timer`` speaks a second after ``timer``)."""


async def start_node(store_url: str, *, env: dict[str, dict[str, str]] | None = None, rate_limit: str | None = None,
                     secrets_key: str | None = None, delivery: RetryPolicy | None = None,
                     user_rate_limit: str | None = None, secrets: dict[str, dict[str, str]] | None = None,
                     webhooks: dict[str, tuple[str, str]] | None = None, on_ray: bool = False, **settings: Any):
    """A node (runtime, gateway, HTTP) on ``store_url``; stop it with :func:`stop_node`. ``env``
    and ``secrets`` are each tenant's, ``webhooks`` each tenant's hand-off webhook (url, secret
    name). With ``secrets_key``, it runs the delivery supervisor too. Its tenants' egress
    policy allows loopback, where the members API and the fake channel APIs listen. No
    rate limits, and no throttle on wrong tokens, unless given (tests send wrong tokens on
    purpose, from one address). Its runtime runs in this process, unless ``on_ray`` (the
    test asks for the ``ray_for_tests`` fixture): a :class:`Runtime` with one host actor."""
    settings["limits"] = {"auth_failures": None, **settings.get("limits", {})}
    tokens = {name: new_token() for name in FLOWS}
    egress = EgressConfig(allow=list(LOOPBACK))
    tenants = {name: TenantConfig(tokens=[hash_token(token)], rate_limit=rate_limit, user_rate_limit=user_rate_limit,
                                  egress=egress)
               for name, token in tokens.items()}
    config = Settings(store=store_url, tenants=tenants, **settings)
    name, allows = f"gw{os.getpid()}-{next(_names)}", config.egress_allows()
    runtime: Runtime | LocalRuntime
    if on_ray:
        runtime = await Runtime.start(store=store_url, hosts=1, name=name, env=env, secrets_key=secrets_key,
                                      delivery=delivery, egress=allows, secrets=secrets, webhooks=webhooks)
    else:
        runtime = await LocalRuntime.start(store_url, name=name, env=env, secrets_key=secrets_key,
                                           delivery=delivery, egress=allows, secrets=secrets, webhooks=webhooks)
    for name, paths in FLOWS.items():
        await runtime.deploy(name, paths)
    store = open_store(store_url)
    await store.open()
    operator = new_token()
    key = secrets_key or Cipher.new_key()  # without one, the hosts cannot open what the gateway seals
    bots = Bots(store, Cipher.from_keys(key))  # as serve has
    vault = Vault(store, Cipher.from_keys(key), unseal=False)
    gateway = Gateway(config, runtime, store, operator_hash=hash_token(operator), bots=bots, vault=vault)
    runner = gateway.runner(shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    node = Node(f"http://127.0.0.1:{port}", runtime, gateway, store, operator, tokens, http)
    node.runner = runner  # type: ignore[attr-defined]
    return node


async def stop_node(node: Node) -> None:
    """Stop every part, each within a bound: a part that hangs fails the test, naming itself."""
    parts = {"client": node.http.close, "gateway": node.runner.cleanup,  # type: ignore[attr-defined]
             "runtime": node.runtime.stop, "store": node.store.aclose}
    for part, stop in parts.items():
        try:
            await asyncio.wait_for(stop(), 60)
        except TimeoutError:
            raise AssertionError(f"stopping the node's {part} took over 60 s; the tasks still pending:\n"
                                 + pending_tasks()) from None


def pending_tasks() -> str:
    """Where each task of the loop is waiting: what a hang in a stop shows of itself."""
    shown = []
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        shown.append(f"{task.get_name()}: {task.get_coro()!r}\n{out.getvalue()}")
    return "\n".join(shown)


@pytest.fixture
async def members():
    """The members API the registration flow registers people with."""
    recorder = Recorder()
    async with serve(members_app(recorder)) as url:
        recorder.url = url  # type: ignore[attr-defined]
        yield recorder


def members_env(url: str) -> dict[str, dict[str, str]]:
    """Each test tenant's env: the members API its flows call."""
    return {tenant: {"MEMBERS_API": url} for tenant in FLOWS}


@pytest.fixture
async def node(redis_server, members):
    """A node whose runtime runs in the test's process."""
    started = await start_node(f"{redis_server.url}?prefix=gw{next(_names)}:", env=members_env(members.url))
    yield started
    await stop_node(started)


@pytest.fixture
async def ray_node(ray_for_tests, redis_server, members):
    """A node whose runtime is on Ray: a host actor (and a router actor) behind the gateway."""
    started = await start_node(f"{redis_server.url}?prefix=gw{next(_names)}:", env=members_env(members.url),
                               on_ray=True)
    yield started
    await stop_node(started)


@pytest.fixture(params=[False, True], ids=["in_process", "on_ray"])
async def each_node(request, redis_server, members):
    """``node``, then ``ray_node``: for a test whose path through the gateway is worth running
    both ways (on Ray, each message goes through the dispatcher's lanes to the host's process)."""
    if request.param:
        request.getfixturevalue("ray_for_tests")
    started = await start_node(f"{redis_server.url}?prefix=gw{next(_names)}:", env=members_env(members.url),
                               on_ray=request.param)
    yield started
    await stop_node(started)


class ServeProcess:
    """``parlour serve`` in a process of its own, in ``folder`` (its data folder is
    ``folder/.parlour``), on a free port."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None):
        self.folder, self.args = folder, list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log = folder / f"serve-{self.port}.log"

    def start(self, timeout_s: float = 90.0) -> ServeProcess:
        out = self.log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "parlour.cli", "serve", "--port", str(self.port),
                                         *self.args], cwd=self.folder, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"parlour serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    # the node servers answer as soon as they listen; the driver prints a moment later
                    if response.status == 200 and "parlour: serving on" in self.output():
                        return self
                    time.sleep(0.1)
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"parlour serve was not ready in {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def admin_token(self) -> str:
        return (self.folder / ".parlour" / "admin-token").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` to the driver; its exit status. SIGKILL kills every process of the node
        at once (the driver, its Ray, its node servers), as a machine or container that dies:
        a driver killed alone leaves its node servers serving until Ray's own processes,
        which die with it, take them down a second or two later."""
        assert self.process is not None
        if sig == signal.SIGKILL:
            for pid in [*descendants(self.process.pid), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        return self.process.wait(timeout_s)


def descendants(root: int) -> list[int]:
    """Every process under ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval_s)
