"""``parlour handoffs``, run as a real process against a real node: a web user of the support
flow handed off, the ticket listed and shown, an agent's reply, a resume with a variable, and a
closed ticket refused."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from tests.gateway.conftest import start_node, stop_node, texts

_prefixes = itertools.count()


@pytest.fixture
async def inbox(redis_server):
    node = await start_node(f"{redis_server.url}?prefix=hc{next(_prefixes)}:")
    yield node
    await stop_node(node)


def handoffs(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parlour.cli", "handoffs", *args, "--url", node.url,
                           "--token", node.tokens["demo"]], capture_output=True, text=True, timeout=60)


async def test_list_show_reply_resume_and_close(inbox):
    await inbox.say("cli-user", "help")
    _, body = await inbox.say("cli-user", "agent")
    assert "passing you to a colleague" in " ".join(texts(body))
    await inbox.say("cli-user", "my card is blocked")

    listed = handoffs(inbox, "list", "demo", "--status", "open", "--queue", "support")
    assert listed.returncode == 0, listed.stderr
    [line, total] = listed.stdout.splitlines()
    ticket = line.split()[0]
    assert "open  support  demo/web/cli-user" in line and "Customer asked for a person" in line
    assert total == "1 ticket(s)"
    assert handoffs(inbox, "list", "demo", "--status", "closed").stdout.strip() == "0 ticket(s)"

    replied = handoffs(inbox, "reply", "demo", ticket, "Hello, I'm Kim.", "--agent", "kim", "--id", "r-1")
    assert replied.returncode == 0 and replied.stdout.startswith(f"reply: {ticket}  open"), replied.stderr
    again = handoffs(inbox, "reply", "demo", ticket, "Hello, I'm Kim.", "--agent", "kim", "--id", "r-1")
    assert again.returncode == 0, again.stderr
    shown = handoffs(inbox, "show", "demo", ticket)
    assert shown.returncode == 0, shown.stderr
    assert "user: my card is blocked" in shown.stdout
    assert shown.stdout.count("kim: Hello, I'm Kim.") == 1  # the same --id: said once

    bad = handoffs(inbox, "resume", "demo", ticket, "--vars", "[1]")
    assert bad.returncode == 2 and "--vars is a JSON object" in bad.stderr
    resumed = handoffs(inbox, "resume", "demo", ticket, "--var", "handoff_reason=done", "--agent", "kim")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: {ticket}  closed (kim)" in resumed.stdout and "bot: You're back with the Acme bot." in resumed.stdout

    closed = handoffs(inbox, "close", "demo", ticket)
    assert closed.returncode == 1 and "ticket_closed" in closed.stderr
    missing = handoffs(inbox, "show", "demo", "no-such-ticket")
    assert missing.returncode == 1 and "404" in missing.stderr
