"""How each kind of node runs: what entering it does, and how it takes an answer.

Functions of the interpreter's run (:class:`~.interpreter.Run`), which holds the turn's
working state (``run.vars``, ``run.effects``, ...) and its effects (``render``, ``send``,
``wait``, ``arm``, ``leave``, ``run``). An ``enter_*`` function returns the next node, or None
when the turn waits; :data:`ENTER` and :data:`ANSWER` pick them by the node's kind of action.
The run is passed, not held: a turn allocates nothing for its steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .compiled import Ask, Branch, EndA, Goto, HandoffA, Http, Menu, Node, SecretT, Wait
from .events import Button, End, Handoff, HttpRequest, Reply, Secret, Unhandled, UserMessage
from .expressions import Expression, RenderError, Template
from .regexes import RegexTimeout
from .state import ENDED, HANDOFF, WAITING, Frame
from .validators import Invalid, check, match_option
from .values import plain

if TYPE_CHECKING:  # the run imports the steps; the steps need only its type
    from .interpreter import Run

STALE = "That choice belongs to an earlier question."
"""The refusal of a press on an old prompt's button, when the node has no text of its own."""


def ticket_id(now: float, channel: str | None, user: str | None, seq: int) -> str:
    """A hand-off ticket's id: the time in milliseconds (11 hex digits, so a tenant's tickets
    sort by when they opened), then 10 hex digits of the conversation and its counter."""
    mark = hashlib.blake2b(f"{channel}/{user}#{seq}".encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()
    return f"{int(now * 1000):011x}{mark}"


def enter_ask(run: Run, node: Node, ask: Ask) -> None:
    run.send(run.reply(ask.prompt))
    run.wait(node, "reply")


def enter_menu(run: Run, node: Node, menu: Menu) -> None:
    run.say(run.render(menu.text), run.buttons(menu.options))
    run.wait(node, "reply")


def enter_branch(run: Run, node: Node, branch: Branch) -> str:
    for condition, target in branch.cases:
        if condition.evaluate(run.scope()):
            return target
    if branch.otherwise is None:
        raise RenderError("no condition of the branch holds, and it has no `else`")
    return branch.otherwise


def enter_http(run: Run, node: Node, http: Http) -> None:
    run.seq += 1
    request_id = f"r{run.seq}"
    run.effects.append(HttpRequest(
        request_id=request_id, method=http.method, url=run.render(http.url),
        headers=pairs(run, http.headers), query=pairs(run, http.query),
        json=json_body(run, http.json), body=run.render(http.body), timeout_s=http.timeout_s,
        form=tuple((k, run.render(v)) for k, v in http.form) if http.form is not None else None,
        retries=http.retries))
    run.status, run.wait_for, run.request = WAITING, "http", request_id


def pairs(run: Run, items: tuple[tuple[str, Template | SecretT], ...]) -> tuple[tuple[str, str | Secret], ...]:
    return tuple((k, Secret(v.name, v.prefix) if isinstance(v, SecretT) else run.render(v)) for k, v in items)


def json_body(run: Run, value: Any) -> Any:
    if isinstance(value, Template):
        return run.render(value)
    if isinstance(value, Expression):
        return plain(value.evaluate(run.scope()), "json")
    if isinstance(value, dict):
        return {k: json_body(run, v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_body(run, v) for v in value]
    return value


def enter_handoff(run: Run, node: Node, handoff: HandoffA) -> None:
    run.seq += 1
    run.ticket = ticket_id(run.now, run.channel, run.user.get("id"), run.seq)
    run.effects.append(Handoff(run.render(handoff.reason) or "", handoff.queue, run.ticket))
    run.status, run.wait_for = HANDOFF, "agent"


def enter_wait(run: Run, node: Node, wait: Wait) -> str | None:
    if wait.reply:
        run.wait(node, "reply")
        return None
    seconds = wait.seconds
    if wait.at is None:
        assert seconds is not None  # the compiler gives a wait `reply`, `at` or `seconds`
    else:
        text = run.render(wait.at).strip()
        try:
            due = datetime.fromisoformat(text)
        except ValueError:
            raise RenderError(f"wait `at` gave {text!r}, not an ISO date-time") from None
        due = due if due.tzinfo else due.replace(tzinfo=UTC)
        seconds = due.timestamp() - run.now
        if seconds <= 0:
            return node.next
    run.wait(node, "timer")
    run.arm(seconds)
    return None


def enter_goto(run: Run, node: Node, goto: Goto) -> str | None:
    if goto.flow is None:
        return goto.node
    target = run.catalog.current(goto.flow) if goto.flow in run.catalog else None
    if target is None:
        raise RenderError(f"no flow {goto.flow!r} is loaded")
    if goto.returns:
        caller = run.in_flow()
        assert node.next is not None  # the checks refuse `return: true` without `next`
        run.stack = run.stack + (Frame(caller.id, caller.version, node.next),)
    run.adopt(target)  # without `return`, a tail call: the caller's frames stay
    return goto.node or target.start


def enter_end(run: Run, node: Node, end: EndA) -> str | None:
    if run.stack:
        frame, run.stack = run.stack[-1], run.stack[:-1]
        run.flow = run.catalog.get(frame.flow, frame.version)
        return frame.node
    run.effects.append(End(run.in_flow().id, node.id))
    run.stop(ENDED)
    return None


def refuse(run: Run, node: Node, retries: int | None, on_fail: str | None, reason: str,
           buttons: tuple[Button, ...] = ()) -> None:
    run.attempts += 1
    if retries is not None and run.attempts > retries:
        run.leave()
        run.run(on_fail)
        return
    run.say(reason, buttons)
    if node.timeout_s is not None:
        run.arm(node.timeout_s)


def stale_press(run: Run, node: Node | None, msg: UserMessage) -> bool:
    """Refuse a pressed button that does not answer the open prompt; True if refused.

    A press naming a prompt answers it only if it is the one open (``run.prompt``). A press
    naming none (a client from before prompt ids) answers any open prompt, and a node with
    buttons of its own (a conversation stored before prompts had ids has none open). Else
    the press belongs to an earlier question, or to none: the node's refusal is sent with
    its buttons again, the conversation stays where it was, and no retry is counted.
    """
    if msg.button is None or run.wait_for != "reply" or node is None:
        return False
    if msg.prompt is not None:
        if msg.prompt == run.prompt:
            return False
    elif run.prompt is not None or _offers(node):
        return False
    run.effects.append(Unhandled(f"a press of {msg.button!r} for prompt {msg.prompt or '(none)'}, "
                                  f"while the open prompt is {run.prompt or '(none)'}"))
    try:
        run.send(refusal(run, node))
    except RenderError as exc:
        run.run(run.fail(str(exc), node))
    return True


def refusal(run: Run, node: Node) -> Reply:
    """A stale press's answer at ``node``: the node's own refusal text (a menu's
    ``invalid``, an ask's ``error``), else :data:`STALE`, with the node's choices again."""
    action = node.action
    if isinstance(action, Menu):
        return Reply(text=run.render(action.invalid) or STALE, buttons=run.buttons(action.options))
    if isinstance(action, Ask):
        prompt = action.prompt
        return Reply(text=run.render(action.error) or STALE, buttons=run.buttons(prompt.buttons),
                     list_button=run.render(prompt.list_button), list=run.buttons(prompt.list))
    return Reply(text=STALE)


def answer_ask(run: Run, node: Node, ask: Ask, msg: UserMessage) -> None:
    text = msg.text or msg.button or ""
    try:
        value = check(ask.rule, text, datetime.fromtimestamp(run.now, UTC).date(), run.regex_budget())
    except RegexTimeout:
        raise RenderError("the `validate` regex took too long on this answer") from None
    except Invalid as exc:
        reason = run.render(ask.error) if ask.error is not None else str(exc)
        refuse(run, node, ask.retries, ask.on_fail, reason, run.reply(ask.prompt).buttons)
        return
    run.leave()
    if ask.save:
        run.assign(ask.save, value)
    run.run(node.next)


def answer_menu(run: Run, node: Node, menu: Menu, msg: UserMessage) -> None:
    buttons = run.buttons(menu.options)
    picked = match_option([(b.id, b.title) for b in buttons], msg.text or "", msg.button)
    if picked is None:
        reason = run.render(menu.invalid) or "Please choose one of the options."
        refuse(run, node, menu.retries, menu.on_fail, reason, buttons)
        return
    run.leave()
    if menu.save:
        run.assign(menu.save, picked)
    option = next(o for o in menu.options if o.id == picked)
    run.run(option.next or node.next)


def answer_wait(run: Run, node: Node, wait: Wait, msg: UserMessage) -> None:
    run.leave()
    if wait.save:
        run.assign(wait.save, msg.text or msg.button or "")
    run.run(node.next)


def _offers(node: Node) -> bool:
    """Whether ``node`` shows buttons or a list of its own (a menu; an ask whose prompt has)."""
    action = node.action
    return isinstance(action, Menu) or (isinstance(action, Ask) and bool(action.prompt.buttons or action.prompt.list))


ENTER: dict[type, Callable[[Run, Node, Any], str | None]] = {
    Ask: enter_ask, Menu: enter_menu, Branch: enter_branch, Http: enter_http,
    HandoffA: enter_handoff, Wait: enter_wait, Goto: enter_goto, EndA: enter_end,
}
"""What entering a node does, by its kind of action (a node without one goes on to ``next``)."""
ANSWER: dict[type, Callable[[Run, Node, Any, UserMessage], None]] = {
    Ask: answer_ask, Menu: answer_menu, Wait: answer_wait,
}
"""How a node waiting for a reply takes one, by its kind of action."""
