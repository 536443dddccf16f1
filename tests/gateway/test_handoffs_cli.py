"""``parlour handoffs``, run as a real process against a real node: a web user of the support
flow handed off, the ticket listed and shown, an agent's reply, a resume with a variable, and a
closed ticket refused."""

from __future__ import annotations

import asyncio
import itertools
import sys
from dataclasses import dataclass

import pytest

from tests.gateway.conftest import start_node, stop_node, texts

_prefixes = itertools.count()


@pytest.fixture
async def inbox(redis_server):
    node = await start_node(f"{redis_server.url}?prefix=hc{next(_prefixes)}:")
    yield node
    await stop_node(node)


async def handoffs(node, *args: str) -> Run:
    """``parlour handoffs ...`` against the node (in this process's loop, so not blocking it)."""
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parlour.cli", "handoffs", *args, "--url", node.url, "--token", node.tokens["demo"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(run.communicate(), 60)
    return Run(run.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


async def test_list_show_reply_resume_and_close(inbox):
    await inbox.say("cli-user", "help")
    _, body = await inbox.say("cli-user", "agent")
    assert "passing you to a colleague" in " ".join(texts(body))
    await inbox.say("cli-user", "my card is blocked")

    listed = await handoffs(inbox, "list", "demo", "--status", "open", "--queue", "support")
    assert listed.returncode == 0, listed.stderr
    [line, total] = listed.stdout.splitlines()
    ticket = line.split()[0]
    assert "open  support  demo/web/cli-user" in line and "Customer asked for a person" in line
    assert total == "1 ticket(s)"
    assert (await handoffs(inbox, "list", "demo", "--status", "closed")).stdout.strip() == "0 ticket(s)"

    replied = await handoffs(inbox, "reply", "demo", ticket, "Hello, I'm Kim.", "--agent", "kim", "--id", "r-1")
    assert replied.returncode == 0 and replied.stdout.startswith(f"reply: {ticket}  open"), replied.stderr
    again = await handoffs(inbox, "reply", "demo", ticket, "Hello, I'm Kim.", "--agent", "kim", "--id", "r-1")
    assert again.returncode == 0, again.stderr
    shown = await handoffs(inbox, "show", "demo", ticket)
    assert shown.returncode == 0, shown.stderr
    assert "user: my card is blocked" in shown.stdout
    assert shown.stdout.count("kim: Hello, I'm Kim.") == 1  # the same --id: said once

    bad = await handoffs(inbox, "resume", "demo", ticket, "--vars", "[1]")
    assert bad.returncode == 2 and "--vars is a JSON object" in bad.stderr
    resumed = await handoffs(inbox, "resume", "demo", ticket, "--var", "handoff_reason=done", "--agent", "kim")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: {ticket}  closed (kim)" in resumed.stdout
    assert "bot: You're back with the Acme bot." in resumed.stdout

    closed = await handoffs(inbox, "close", "demo", ticket)
    assert closed.returncode == 1 and "ticket_closed" in closed.stderr
    missing = await handoffs(inbox, "show", "demo", "no-such-ticket")
    assert missing.returncode == 1 and "404" in missing.stderr
