"""``parlour chat``: talk to a flow in the terminal, in-process.

Buttons show as numbered choices (type the number, the title, or the text); timers fire in
real time, and ``/wait SECONDS`` moves the clock to fire them now. HTTP nodes call real URLs,
under the same egress policy as ``parlour serve``: public addresses only, unless
``--allow-egress`` names a range or a host (``--allow-egress 127.0.0.0/8`` for an API on this
machine).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from .egress import Egress
from .flow import Catalog, Effect, End, Error, Forward, Handoff, Reply, Resume, Send, Start, Unhandled, UserMessage
from .http import HttpCaller
from .session import Session

HELP = """commands: /state  show where the conversation is and its variables
          /wait SECONDS  move the clock (fires due timers)
          /resume  hand the conversation back from the human agent
          /restart  forget the conversation      /quit  leave (or Ctrl-D)"""


class Chat:
    def __init__(self, catalog: Catalog, http: HttpCaller, out: TextIO, *, flow: str | None = None,
                 user_id: str = "cli-user", user_name: str | None = None, channel: str = "cli",
                 clock: Callable[[], float] = time.time, tick_s: float = 1.0):
        self.catalog, self.http, self.out, self.flow = catalog, http, out, flow
        # Every message the user types is this one with its text (or its button) filled in.
        self.sender = UserMessage(user_id=user_id, user_name=user_name, channel=channel)
        self.clock = clock
        self.tick_s = tick_s  # the longest the loop sleeps before reading the clock again
        self.offset = 0.0  # how far /wait has moved this chat's clock ahead of the real one
        self.session = Session(catalog, http, now=clock())
        self.buttons: list[tuple[str, str]] = []
        self.prompt: str | None = None  # the prompt ``buttons`` belong to

    def show(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.show_reply(effect.reply)
            elif (line := _notice(effect)) is not None:
                self.print(line)

    def show_reply(self, reply: Reply) -> None:
        if reply.media_url:
            self.print(f"bot › [{reply.media_kind}: {reply.media_url}]")
        if reply.text:
            self.print("bot › " + reply.text.replace("\n", "\n      "))
        choices = reply.buttons or reply.list
        self.buttons = [(b.id, b.title) for b in choices]  # numbers refer to the last message
        self.prompt = reply.prompt
        if choices:
            self.print("      " + "   ".join(f"{i}. {title}" for i, (_, title) in enumerate(self.buttons, 1)))

    def print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def now(self) -> float:
        return self.clock() + self.offset

    def message(self, text: str) -> UserMessage:
        typed = text.strip()
        if typed.isascii() and typed.isdigit() and 1 <= int(typed) <= len(self.buttons):
            button, _ = self.buttons[int(typed) - 1]  # a press, as a channel sends it
            return replace(self.sender, button=button, kind="button", prompt=self.prompt)
        return replace(self.sender, text=text)

    async def command(self, line: str) -> bool:
        """Handle a /command; False when the chat should end."""
        name, _, arg = line.strip().partition(" ")
        if name in ("/quit", "/exit"):
            return False
        if name == "/state":
            state = self.session.state
            self.print(json.dumps({"flow": state.flow, "version": state.version, "node": state.node,
                                   "status": state.status, "waiting_for": state.wait_for, "vars": state.vars,
                                   "timers": self.session.timers}, indent=2, default=str))
        elif name == "/wait":
            try:
                seconds = float(arg)
            except ValueError:
                seconds = 0.0
            if not 0 < seconds < float("inf"):
                self.print("usage: /wait SECONDS (a positive number)")
                return True
            self.session.now = self.now()
            self.offset += seconds
            self.show(await self.session.wait(seconds))
        elif name == "/resume":
            self.show(await self.session.send(Resume()))
        elif name == "/restart":
            self.session = Session(self.catalog, self.http, now=self.now())
            self.buttons = []
            self.print("  (a new conversation)")
        else:
            self.print(HELP)
        return True

    async def say(self, text: str) -> None:
        self.session.now = self.now()
        msg = self.message(text)
        if self.flow and self.session.state.status in ("idle", "ended", "failed"):
            self.show(await self.session.send(Start(self.flow, message=msg)))
        else:
            self.show(await self.session.send(msg))

    async def fire_due(self) -> None:
        due = self.session.next_due()
        if due is not None and due <= self.now():
            self.show(await self.session.wait(max(0.0, self.now() - self.session.now)))

    async def run(self, lines: asyncio.Queue[str | None]) -> None:
        flows = ", ".join(f.id for f in self.catalog)
        self.print(f"parlour chat: flows {flows}. Say something (e.g. hi); /help for commands.")
        while True:
            due = self.session.next_due()
            timeout = None if due is None else min(self.tick_s, max(0.0, due - self.now()))
            try:
                line = await asyncio.wait_for(lines.get(), timeout)
            except TimeoutError:
                await self.fire_due()
                continue
            if line is None:
                return
            if line.startswith("/"):
                if not await self.command(line):
                    return
            elif line.strip():
                await self.say(line)


def _notice(effect: Effect) -> str | None:
    """The line that tells of an effect other than a reply; None for one the chat does not show."""
    if isinstance(effect, Handoff):
        return f"  ⤷ handed to a human ({effect.reason or 'no reason given'}); /resume hands it back"
    if isinstance(effect, Forward):
        return "  ⤷ (forwarded to the human agent)"
    if isinstance(effect, Error):
        return f"  ! {effect.reason}" + (" (routed to on_error)" if effect.routed else "")
    if isinstance(effect, Unhandled):
        return f"  · {effect.reason}"
    if isinstance(effect, End):
        return "  ■ the conversation ended"
    return None


def _read_lines(stream: TextIO, lines: asyncio.Queue[str | None], loop: asyncio.AbstractEventLoop) -> None:
    """Feed ``stream``'s lines to ``lines`` from a daemon thread (a blocked read must not keep
    the process alive after /quit), then None at end of input."""
    for line in iter(stream.readline, ""):
        loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
    loop.call_soon_threadsafe(lines.put_nowait, None)


def chat_egress(allow: list[str]) -> Egress:
    """The policy of ``parlour chat --allow-egress ALLOW...`` (ValueError for a bad entry)."""
    return Egress.from_allows({}, default=allow, hint="parlour chat --allow-egress RANGE_OR_HOST")


async def chat(catalog: Catalog, *, secrets: dict[str, str], flow: str | None = None,
               user_name: str | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
               egress: Egress | None = None) -> None:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(stdin, lines, asyncio.get_running_loop()), daemon=True).start()
    async with HttpCaller(secrets, egress=egress or chat_egress([])) as http:
        await Chat(catalog, http, stdout, flow=flow, user_name=user_name).run(lines)
