"""``parlour handoffs list|show|assign|reply|resume|close``: the agent inbox from a terminal,
through a running node's hand-off API (``/v1/{tenant}/handoffs``, gateway/handoffs.py).

    parlour handoffs list acme --status open --queue support
    parlour handoffs show acme 0194f...                 the ticket and its transcript
    parlour handoffs reply acme 0194f... "Hello, I'm Kim." --agent kim
    parlour handoffs resume acme 0194f... --node after_agent --var order_id=123456
    parlour handoffs close acme 0194f...

The token is the tenant's or the operator's (``--token``, ``PARLOUR_ADMIN_TOKEN``, else the
data folder's), as for ``parlour dlq``. A reply carries an idempotency id (``--id``, else a new
one): the same command run again with the same ``--id`` is said once.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from .admin_client import AdminClient, AdminError

MAX_LIST = 10_000  # tickets `list --all` reads before it stops


def add_commands(sub, node_options: Callable[[argparse.ArgumentParser], None]) -> None:
    handoffs = sub.add_parser("handoffs", help="the agent inbox: list, show, assign, reply, resume, close hand-offs "
                                               "(through a running node)")
    handoffs_sub = handoffs.add_subparsers(dest="handoffs_command", required=True)
    commands = {
        "list": "the tenant's tickets, oldest first", "show": "one ticket and its transcript",
        "assign": "take a ticket (as --agent)", "reply": "say something to the ticket's user",
        "resume": "hand the conversation back to its flow", "close": "end the hand-off, and the conversation"}
    for name, text in commands.items():
        command = handoffs_sub.add_parser(name, help=text, description=text)
        command.add_argument("tenant")
        if name == "list":
            command.add_argument("--status", choices=("open", "assigned", "closed"), help="default: every status")
            command.add_argument("--queue", help="only this queue's tickets")
            command.add_argument("--limit", type=int, default=50, help="tickets per page (default 50, at most 200)")
            command.add_argument("--all", action="store_true", help=f"every page (at most {MAX_LIST:,} tickets)")
        else:
            command.add_argument("id", help="the ticket's id (from `parlour handoffs list`)")
        if name in ("assign", "reply", "resume", "close"):
            command.add_argument("--agent", help="who acts (an agent's token: itself)")
        if name == "show":
            command.add_argument("--json", action="store_true", help="the API's answer as it is")
        if name == "reply":
            command.add_argument("text", help="what the user is told")
            command.add_argument("--id", dest="message_id", help="idempotency id: run again with it, said once")
        if name == "resume":
            command.add_argument("--node", help="the node to go on from (default: the handoff node's next)")
            command.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                                 help="a variable set before the flow goes on, as text (repeatable)")
            command.add_argument("--vars", help="variables as a JSON object, for values that are not text")
        node_options(command)
        command.set_defaults(run=cmd_handoffs)


def cmd_handoffs(args: argparse.Namespace) -> int:
    try:
        client = AdminClient(args.url, args.token, args.data_dir)
        base = f"/v1/{quote(args.tenant, safe='')}/handoffs"
        if args.handoffs_command == "list":
            return _list(client, base, args)
        one = f"{base}/{quote(args.id, safe='')}"
        if args.handoffs_command == "show":
            found = client.call("GET", one)
            print(json.dumps(found, indent=2, ensure_ascii=False) if args.json else _shown(found))
            return 0
        body = _action_body(args)
        action = {"reply": "messages"}.get(args.handoffs_command, args.handoffs_command)
        done = client.call("POST", f"{one}/{action}", body)
        print(f"{args.handoffs_command}: {_line(done['ticket'])}")
        for reply in done.get("replies") or []:
            print(f"  bot: {_reply_text(reply)}")
        return 0
    except AdminError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A command line the API would refuse anyway: said before any request."""


def _list(client: AdminClient, base: str, args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"limit": max(1, min(args.limit, 200))}
    query.update({k: v for k, v in (("status", args.status), ("queue", args.queue)) if v})
    shown, after = 0, None
    while True:
        page = client.call("GET", f"{base}?{urlencode({**query, **({'after': after} if after else {})})}")
        for ticket in page["tickets"]:
            print(_line(ticket))
        shown += len(page["tickets"])
        after = page.get("next")
        if not args.all or not after or shown >= MAX_LIST:
            break
    more = f" (more: --all, or the API's after={after})" if after else ""
    print(f"{shown} ticket(s){more}")
    return 0


def _action_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"agent": args.agent} if args.agent else {}
    if args.handoffs_command == "reply":
        if not args.text.strip():
            raise UsageError("the reply is empty: nothing was said")
        body.update(text=args.text, id=args.message_id or secrets.token_hex(8))
    if args.handoffs_command == "resume":
        variables = _json_vars(args.vars) if args.vars else {}
        for item in args.var:
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise UsageError(f"--var {item!r}: give NAME=VALUE")
            variables[name] = value
        body.update({"node": args.node} if args.node else {})
        body.update({"vars": variables} if variables else {})
    return body


def _json_vars(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--vars is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError('--vars is a JSON object, such as {"order_id": "123456"}')
    return value


def _line(ticket: dict[str, Any]) -> str:
    user = (ticket.get("user") or {}).get("name") or (ticket.get("user") or {}).get("id")
    agent = f" ({ticket['agent']})" if ticket.get("agent") else ""
    return (f"{ticket['id']}  {ticket['status']}{agent}  {ticket.get('queue') or '-'}  {ticket['key']}"
            f"  {when(ticket.get('created_at'))}  {user or ''}: {(ticket.get('reason') or '')[:60]}")


def _shown(found: dict[str, Any]) -> str:
    ticket = found["ticket"]
    lines = [_line(ticket), f"  flow {ticket.get('flow')} at {ticket.get('node')}; "
                            f"{ticket.get('messages', 0)} message(s) from the user", ""]
    for turn in found.get("transcript", []):
        marker = " " if turn.get("ticket") == ticket["id"] else "·"  # a turn before the hand-off
        for who, text in turn_lines(turn):
            lines.append(f"{marker} {when(turn.get('at'))}  {who}: {text}")
    return "\n".join(lines)


def turn_lines(turn: dict[str, Any]) -> list[tuple[str, str]]:
    came = turn.get("in") or {}
    kind, agent = came.get("kind"), came.get("agent") or "agent"
    spoke = kind == "agent" and came.get("action") == "message"
    lines: list[tuple[str, str]] = []
    if kind == "message":
        lines.append(("user", came.get("text") or f"(pressed {came.get('button')})"))
    elif kind == "agent" and not spoke:
        lines.append((agent, f"({came.get('action')})"))
    elif kind == "resume":
        lines.append((agent, f"(resumed{' at ' + came['node'] if came.get('node') else ''})"))
    elif kind:
        lines.append(("-", f"({kind})"))
    lines += [(agent if spoke else "bot", _reply_text(reply)) for reply in turn.get("out") or []]
    return lines


def _reply_text(reply: dict[str, Any]) -> str:
    options = reply.get("buttons") or (reply.get("list") or {}).get("items") or []
    text = (reply.get("text") or "").replace("\n", " ")
    return " ".join([text, *(f"[{option.get('title')}]" for option in options)]).strip()


def when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"
