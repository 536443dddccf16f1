"""How each kind of node runs: what entering it does, and how it takes an answer.

A mixin of the interpreter's run (:class:`~.interpreter._Run`): it works on the run's working
state (``self.vars``, ``self.effects``, ...) and its helpers (``render``, ``wait``, ``arm``,
``leave``, ``run``). An ``enter_*`` method returns the next node, or None when the turn waits.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from .compiled import Ask, Branch, EndA, Goto, HandoffA, Http, Menu, Node, SecretT, Wait
from .events import Button, End, Handoff, HttpRequest, Reply, Secret, Unhandled, UserMessage
from .expressions import Expression, RenderError, Template
from .regexes import RegexTimeout
from .state import ENDED, HANDOFF, WAITING, Frame
from .validators import Invalid, check, match_option
from .values import plain

STALE = "That choice belongs to an earlier question."
"""The refusal of a press on an old prompt's button, when the node has no text of its own."""


def ticket_id(now: float, channel: str | None, user: str | None, seq: int) -> str:
    """A hand-off ticket's id: the time in milliseconds (11 hex digits, so a tenant's tickets
    sort by when they opened), then 10 hex digits of the conversation and its counter."""
    mark = hashlib.blake2b(f"{channel}/{user}#{seq}".encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()
    return f"{int(now * 1000):011x}{mark}"


class NodeSteps:
    def enter_ask(self, node: Node, ask: Ask) -> None:
        self.send(self.reply(ask.prompt))
        self.wait(node, "reply")

    def enter_menu(self, node: Node, menu: Menu) -> None:
        self.say(self.render(menu.text), self.buttons(menu.options))
        self.wait(node, "reply")

    def enter_branch(self, node: Node, branch: Branch) -> str:
        for condition, target in branch.cases:
            if condition.evaluate(self.scope()):
                return target
        if branch.otherwise is None:
            raise RenderError("no condition of the branch holds, and it has no `else`")
        return branch.otherwise

    def enter_http(self, node: Node, http: Http) -> None:
        self.seq += 1
        request_id = f"r{self.seq}"
        self.effects.append(HttpRequest(
            request_id=request_id, method=http.method, url=self.render(http.url),
            headers=self.pairs(http.headers), query=self.pairs(http.query),
            json=self.json_body(http.json), body=self.render(http.body), timeout_s=http.timeout_s,
            form=tuple((k, self.render(v)) for k, v in http.form) if http.form is not None else None,
            retries=http.retries))
        self.status, self.wait_for, self.request = WAITING, "http", request_id

    def pairs(self, items: tuple[tuple[str, Template | SecretT], ...]) -> tuple[tuple[str, str | Secret], ...]:
        return tuple((k, Secret(v.name, v.prefix) if isinstance(v, SecretT) else self.render(v)) for k, v in items)

    def json_body(self, value: Any) -> Any:
        if isinstance(value, Template):
            return self.render(value)
        if isinstance(value, Expression):
            return plain(value.evaluate(self.scope()), "json")
        if isinstance(value, dict):
            return {k: self.json_body(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_body(v) for v in value]
        return value

    def enter_handoff(self, node: Node, handoff: HandoffA) -> None:
        self.seq += 1
        self.ticket = ticket_id(self.now, self.channel, self.user.get("id"), self.seq)
        self.effects.append(Handoff(self.render(handoff.reason) or "", handoff.queue, self.ticket))
        self.status, self.wait_for = HANDOFF, "agent"

    def enter_wait(self, node: Node, wait: Wait) -> str | None:
        if wait.reply:
            self.wait(node, "reply")
            return None
        seconds = wait.seconds
        if wait.at is not None:
            text = self.render(wait.at).strip()
            try:
                due = datetime.fromisoformat(text)
            except ValueError:
                raise RenderError(f"wait `at` gave {text!r}, not an ISO date-time") from None
            due = due if due.tzinfo else due.replace(tzinfo=UTC)
            seconds = due.timestamp() - self.now
            if seconds <= 0:
                return node.next
        self.wait(node, "timer")
        self.arm(seconds)
        return None

    def enter_goto(self, node: Node, goto: Goto) -> str | None:
        if goto.flow is None:
            return goto.node
        target = self.catalog.current(goto.flow) if goto.flow in self.catalog else None
        if target is None:
            raise RenderError(f"no flow {goto.flow!r} is loaded")
        if goto.returns:
            self.stack = self.stack + (Frame(self.flow.id, self.flow.version, node.next),)
        self.flow = target  # without `return`, a tail call: the caller's frames stay
        for name, value in target.vars.items():
            self.vars.setdefault(name, value)
        self._scope = None
        return goto.node or target.start

    def enter_end(self, node: Node, end: EndA) -> str | None:
        if self.stack:
            frame, self.stack = self.stack[-1], self.stack[:-1]
            self.flow = self.catalog.get(frame.flow, frame.version)
            return frame.node
        self.effects.append(End(self.flow.id, node.id))
        self.stop(ENDED)
        return None

    def refuse(self, node: Node, retries: int | None, on_fail: str | None, reason: str,
               buttons: tuple[Button, ...] = ()) -> None:
        self.attempts += 1
        if retries is not None and self.attempts > retries:
            self.leave()
            self.run(on_fail)
            return
        self.say(reason, buttons)
        if node.timeout_s is not None:
            self.arm(node.timeout_s)

    def stale_press(self, node: Node | None, msg: UserMessage) -> bool:
        """Refuse a pressed button that does not answer the open prompt; True if refused.

        A press naming a prompt answers it only if it is the one open (``self.prompt``). A press
        naming none (a client from before prompt ids) answers any open prompt, and a node with
        buttons of its own (a conversation stored before prompts had ids has none open). Else
        the press belongs to an earlier question, or to none: the node's refusal is sent with
        its buttons again, the conversation stays where it was, and no retry is counted.
        """
        if msg.button is None or self.wait_for != "reply" or node is None:
            return False
        if msg.prompt is not None:
            if msg.prompt == self.prompt:
                return False
        elif self.prompt is not None or _offers(node):
            return False
        self.effects.append(Unhandled(f"a press of {msg.button!r} for prompt {msg.prompt or '(none)'}, "
                                      f"while the open prompt is {self.prompt or '(none)'}"))
        try:
            self.send(self.refusal(node))
        except RenderError as exc:
            self.run(self.fail(str(exc), node))
        return True

    def refusal(self, node: Node) -> Reply:
        """A stale press's answer at ``node``: the node's own refusal text (a menu's
        ``invalid``, an ask's ``error``), else :data:`STALE`, with the node's choices again."""
        action = node.action
        if isinstance(action, Menu):
            return Reply(text=self.render(action.invalid) or STALE, buttons=self.buttons(action.options))
        if isinstance(action, Ask):
            prompt = action.prompt
            return Reply(text=self.render(action.error) or STALE, buttons=self.buttons(prompt.buttons),
                         list_button=self.render(prompt.list_button), list=self.buttons(prompt.list))
        return Reply(text=STALE)

    def answer_ask(self, node: Node, ask: Ask, msg: UserMessage) -> None:
        text = msg.text or msg.button or ""
        try:
            value = check(ask.rule, text, datetime.fromtimestamp(self.now, UTC).date(), self.regex_budget())
        except RegexTimeout:
            raise RenderError("the `validate` regex took too long on this answer") from None
        except Invalid as exc:
            reason = self.render(ask.error) if ask.error is not None else str(exc)
            self.refuse(node, ask.retries, ask.on_fail, reason, self.reply(ask.prompt).buttons)
            return
        self.leave()
        if ask.save:
            self.assign(ask.save, value)
        self.run(node.next)

    def answer_menu(self, node: Node, menu: Menu, msg: UserMessage) -> None:
        buttons = self.buttons(menu.options)
        picked = match_option([(b.id, b.title) for b in buttons], msg.text or "", msg.button)
        if picked is None:
            reason = self.render(menu.invalid) or "Please choose one of the options."
            self.refuse(node, menu.retries, menu.on_fail, reason, buttons)
            return
        self.leave()
        if menu.save:
            self.assign(menu.save, picked)
        option = next(o for o in menu.options if o.id == picked)
        self.run(option.next or node.next)

    def answer_wait(self, node: Node, wait: Wait, msg: UserMessage) -> None:
        self.leave()
        if wait.save:
            self.assign(wait.save, msg.text or msg.button or "")
        self.run(node.next)


def _offers(node: Node) -> bool:
    """Whether ``node`` shows buttons or a list of its own (a menu; an ask whose prompt has)."""
    action = node.action
    return isinstance(action, Menu) or (isinstance(action, Ask) and bool(action.prompt.buttons or action.prompt.list))
