"""``parlour conversations list|transcript|reset``: find and inspect a tenant's conversations
from a terminal, through a running node (``/v1/{tenant}/conversations``, gateway/conversations.py).

    parlour conversations list acme --status waiting --before 2026-12-03T00:00:00Z --all
    parlour conversations transcript acme web ann > ann.jsonl    every turn, as JSON lines
    parlour conversations reset acme web ann                     start it afresh

The token is the tenant's or the operator's (``--token``, ``PARLOUR_ADMIN_TOKEN``, else the
data folder's), as for ``parlour dlq``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from .admin_client import AdminClient, AdminError
from .handoffs_cli import turn_lines, when

MAX_LIST = 100_000  # conversations `list --all` reads before it stops
STATUSES = ("idle", "waiting", "handoff", "ended", "failed")


def add_commands(sub, node_options: Callable[[argparse.ArgumentParser], None]) -> None:
    conversations = sub.add_parser("conversations", help="find a tenant's conversations, export a transcript, "
                                                         "reset one (through a running node)")
    conversations_sub = conversations.add_subparsers(dest="conversations_command", required=True)
    commands = {"list": "the tenant's conversations, by flow, status and last turn",
                "transcript": "one conversation's turns, oldest first", "reset": "start one conversation afresh"}
    for name, text in commands.items():
        command = conversations_sub.add_parser(name, help=text, description=text)
        command.add_argument("tenant")
        if name == "list":
            command.add_argument("--flow", help="only conversations in this flow")
            command.add_argument("--status", choices=STATUSES, help="default: every status")
            command.add_argument("--since", help="last turn at or after this time (ISO 8601, or epoch seconds)")
            command.add_argument("--before", help="last turn before this time: --status waiting --before "
                                                  "<a day ago> finds those stuck for a day")
            command.add_argument("--limit", type=int, default=50, help="per page (default 50, at most 200)")
            command.add_argument("--all", action="store_true", help=f"every page (at most {MAX_LIST:,})")
            command.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            command.add_argument("channel", help="web, telegram, whatsapp, ...")
            command.add_argument("user", help="the user's id on that channel")
        if name == "transcript":
            command.add_argument("--json", action="store_true", help="the API's JSON lines as they are")
        node_options(command)
        command.set_defaults(run=cmd_conversations)


def cmd_conversations(args: argparse.Namespace) -> int:
    try:
        client = AdminClient(args.url, args.token, args.data_dir)
        base = f"/v1/{quote(args.tenant, safe='')}/conversations"
        if args.conversations_command == "list":
            return _list(client, base, args)
        one = f"{base}/{quote(args.channel, safe='')}/{quote(args.user, safe='')}"
        if args.conversations_command == "reset":
            client.call("DELETE", one)
            print(f"reset: {args.tenant}/{args.channel}/{args.user}")
            return 0
        turns = 0
        for line in client.lines(f"{one}/transcript"):
            turns += 1
            if args.json:
                sys.stdout.write(line.decode())
            else:
                _print_turn(json.loads(line))
        print(f"{turns} turn(s)", file=sys.stderr)
        return 0
    except AdminError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 1


def _list(client: AdminClient, base: str, args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"limit": max(1, min(args.limit, 200))}
    query.update({name: value for name in ("flow", "status", "since", "before") if (value := getattr(args, name))})
    shown, after = 0, None
    while True:
        page = client.call("GET", f"{base}?{urlencode({**query, **({'after': after} if after else {})})}")
        for conversation in page["conversations"]:
            print(json.dumps(conversation, ensure_ascii=False) if args.json else _line(conversation))
        shown += len(page["conversations"])
        after = page.get("next")
        if not args.all or not after or shown >= MAX_LIST:
            break
        if not args.json:
            print(f"  ... {shown:,} so far", file=sys.stderr)
    more = f" (more: --all, or the API's after={after})" if after else ""
    print(f"{shown} conversation(s){more}", file=sys.stderr)
    return 0


def _line(conversation: dict[str, Any]) -> str:
    where = f"{conversation['flow']} at {conversation['node']}" if conversation.get("flow") else "-"
    ticket = f"  ticket {conversation['ticket']}" if conversation.get("ticket") else ""
    return (f"{conversation['key']}  {conversation['status']}  {where}  "
            f"last turn {when(conversation.get('last_turn_at'))}{ticket}")


def _print_turn(turn: dict[str, Any]) -> None:
    if "error" in turn:
        print(f"{turn.get('cursor')}  (unreadable: {turn['error']})")
        return
    for who, text in turn_lines(turn):
        print(f"{when(turn.get('at'))}  {who}: {text}")
