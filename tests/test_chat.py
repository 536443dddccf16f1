"""`parlour chat` in-process: real HTTP to a loopback API, an injected clock for timers."""

import asyncio
import io
from pathlib import Path

from parlour.chat import Chat
from parlour.flow import load_catalog, load_text
from parlour.flow.compiled import Catalog
from parlour.http import HttpCaller

from .conftest import REMINDER
from .servers import Recorder, loopback_egress, members_app, serve

FLOWS = Path(__file__).resolve().parent.parent / "flows"

EGRESS = loopback_egress()  # the test APIs listen on loopback


async def talk(chat: Chat, *lines: str) -> str:
    queue: asyncio.Queue = asyncio.Queue()
    for line in (*lines, None):
        queue.put_nowait(line)
    await chat.run(queue)
    return chat.out.getvalue()


async def test_a_whole_registration_over_real_http():
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller(egress=EGRESS) as http:
        catalog = load_catalog([FLOWS / "registration.yaml"], env={"MEMBERS_API": base})
        chat = Chat(catalog, http, io.StringIO(), user_name="Ada")
        out = await talk(chat, "hi", "1", "Ada Lovelace", "ada@example.org", "36", "1")
    assert "bot › Hi Ada! Welcome to the club." in out
    assert "bot › Register Ada Lovelace <ada@example.org>, 36?" in out
    assert "bot › You're in, member #1." in out
    assert "■ the conversation ended" in out
    assert recorder.requests[0]["path"] == "/members"
    assert recorder.requests[0]["body"] == '{"name": "Ada Lovelace", "email": "ada@example.org", "age": 36}'


async def test_typed_numbers_press_the_buttons_shown_last():
    async with HttpCaller(egress=EGRESS) as http:
        catalog = load_catalog([FLOWS / "registration.yaml"])
        chat = Chat(catalog, http, io.StringIO())
        out = await talk(chat, "hi", "2", "3")
    assert "bot › We are a book club" in out and "bot › Bye for now." in out




async def test_slash_wait_moves_the_clock_and_fires_due_timers():
    clock = [1_000.0]
    async with HttpCaller(egress=EGRESS) as http:
        chat = Chat(Catalog([load_text(REMINDER)]), http, io.StringIO(), clock=lambda: clock[0])
        out = await talk(chat, "hi", "/wait 3599", "/state", "/wait 1")
    assert out.index("See you in an hour.") < out.index('"timers"') < out.index("It has been an hour.")


async def test_timers_fire_in_real_time_while_the_user_is_idle():
    clock = [1_000.0]
    async with HttpCaller(egress=EGRESS) as http:
        chat = Chat(Catalog([load_text(REMINDER)]), http, io.StringIO(), clock=lambda: clock[0], tick_s=0.001)
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait("hi")
        task = asyncio.create_task(chat.run(queue))
        while "See you" not in chat.out.getvalue():
            await asyncio.sleep(0)
        clock[0] += 3600  # the injected clock passes the due time: the chat must notice on its own
        for _ in range(200):
            if "It has been an hour." in chat.out.getvalue():
                break
            await asyncio.sleep(0.005)
        queue.put_nowait(None)
        await task
    assert "It has been an hour." in chat.out.getvalue()


GUESTS = """\
flow: guests
triggers: [{default: true}]
commands: {help: helped}
start: pick
nodes:
  pick:
    menu:
      text: "Table or help?"
      options: [{id: table, title: Table, next: count}, {id: h, title: Help, next: option}]
  option: {say: "This is the Help option.", next: pick}
  helped: {say: "This is the help command.", next: pick}
  count: {ask: "How many guests?", validate: {type: integer}, save: n, next: done}
  done: {say: "A table for {{ n }}.", end: true}
"""


async def test_numbers_refer_only_to_the_buttons_of_the_last_message():
    async with HttpCaller(egress=EGRESS) as http:
        chat = Chat(Catalog([load_text(GUESTS)]), http, io.StringIO())
        out = await talk(chat, "hi", "2", "1", "2")
    # "2" presses Help (an option, not the `help` command); later "2" is an answer, not a button
    assert "This is the Help option." in out and "This is the help command." not in out
    assert "bot › A table for 2." in out


async def test_slash_wait_wants_a_positive_number():
    async with HttpCaller(egress=EGRESS) as http:
        chat = Chat(Catalog([load_text(REMINDER)]), http, io.StringIO())
        out = await talk(chat, "hi", "/wait nan", "/wait -5", "/wait soon", "/state")
    assert out.count("usage: /wait SECONDS (a positive number)") == 3 and '"status": "waiting"' in out


async def test_chat_reaches_loopback_only_when_allowed():
    """`parlour chat` applies serve's default egress policy; ``--allow-egress`` widens it."""
    from parlour.chat import chat_egress

    for allow, member in (([], False), (["127.0.0.0/8"], True)):
        recorder = Recorder()
        async with serve(members_app(recorder)) as base, HttpCaller(egress=chat_egress(allow)) as http:
            catalog = load_catalog([FLOWS / "registration.yaml"], env={"MEMBERS_API": base})
            chat = Chat(catalog, http, io.StringIO(), user_name="Ada")
            out = await talk(chat, "hi", "1", "Ada Lovelace", "ada@example.org", "36", "1")
        assert ("You're in, member #1." in out) is member and len(recorder.requests) == int(member)
        assert ("egress denied: 127.0.0.1 is a loopback address "
                "(to allow it: parlour chat --allow-egress RANGE_OR_HOST)" in out) is not member, out
