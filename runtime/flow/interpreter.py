"""The interpreter: ``advance(flows, state, event, now) -> Turn``. Pure: no I/O, no clock.

A turn runs nodes from where the conversation waits until it waits again (for a reply, a
timer, an http result, a human) or ends. Everything the outside world must do comes back as
effects, in order; results come back in as events. ``advance`` never raises: a template that
fails, a runaway loop (``max_steps``), a missing node all become an :class:`~.events.Error`
effect routed to ``on_error`` (the node's, else the flow's), or else end the conversation as
``failed``, so that the user's next message starts afresh.

>>> turn = advance(catalog, None, UserMessage("hi"), now=1_700_000_000.0)
>>> [r.text for r in turn.replies]
['Hi there! Welcome to the club.', 'What would you like to do?']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, overload

from ..errors import FlowNotFound
from .bounds import MAX_TEXT, end_budget, start_budget
from .compiled import Catalog, Choice, Flow, Http, MessageT, Node
from .events import (
    AgentAction,
    Button,
    CancelTimer,
    Effect,
    End,
    Error,
    Event,
    Forward,
    HttpResult,
    Reply,
    Resume,
    Send,
    Start,
    StartTimer,
    TicketChanged,
    TimerFired,
    Turn,
    Unhandled,
    UserMessage,
)
from .expressions import RenderError, Template
from .regexes import RegexBudget
from .state import ENDED, FAILED, HANDOFF, IDLE, WAITING, State
from .steps import ANSWER, ENTER, stale_press
from .values import plain

MAX_TURN_TEXT = 10 * MAX_TEXT
"""The characters of replies one call of :func:`advance` may produce."""
INBOX_LIMIT = 50
"""User messages kept while an http call is out; beyond this the oldest is dropped (and an
Unhandled effect says so)."""

_NO_MESSAGE = {"text": None, "button": None, "kind": None, "data": None}


def advance(flows: Flow | Catalog, state: State | None, event: Event, now: float) -> Turn:
    """Apply ``event`` to ``state`` at time ``now`` (epoch seconds); return the new state and
    the effects. ``flows`` is the catalog (or a single flow) the conversation runs in."""
    catalog = flows if isinstance(flows, Catalog) else Catalog([flows])
    run = Run(catalog, state or State(), now)
    budget = start_budget()
    try:
        run.handle(event)
    except Exception as exc:  # noqa: BLE001 -- a defect in parlour: still a value, never an exception out
        run.crash(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        end_budget(budget)
    return run.finish()


def _storable(value: Any, name: str) -> Any:
    """``value`` as plain data, or None when the state cannot hold it (an API's error body)."""
    try:
        return plain(value, name)
    except RenderError:
        return None


class Run:
    """One call of :func:`advance`: a working copy of the state, and the effects so far.

    What each kind of node does is in :mod:`.steps`, which works on the run through its
    attributes and the effects below (``send``, ``wait``, ``arm``, ``leave``, ``run``, ...).
    """

    def __init__(self, catalog: Catalog, state: State, now: float):
        self.catalog = catalog
        self.now = now
        self.flow: Flow | None = None
        if state.flow is not None:
            try:
                self.flow = catalog.get(state.flow, state.version)
            except FlowNotFound:
                self.flow = None
        self.state = state
        self.node_id: str | None = state.node
        self.status = state.status if self.flow is not None or state.flow is None else FAILED
        self.wait_for = state.wait_for if self.status != FAILED else None
        self.vars = dict(state.vars)
        self.attempts = state.attempts
        self.timer = state.timer
        self.request = state.request
        self.stack = state.stack
        self.inbox = state.inbox
        self.seq = state.seq
        self.user = state.user
        self.channel = state.channel
        self.prompt = state.prompt
        self.ticket = state.ticket
        self.effects: list[Effect] = []
        self.sent = 0  # characters of replies in this turn
        self.message: dict[str, Any] = _NO_MESSAGE
        self.steps = 0
        self.in_error = False
        self._scope: dict[str, Any] | None = None
        self._now_dt: datetime | None = None
        self._regexes: RegexBudget | None = None
        if self.flow is None and state.active:  # its flow, or the version it is pinned to, is gone
            lost = state.flow or ""  # "" as in crash(): a state without a flow never waits
            self.effects.append(Error(lost, state.node, str(FlowNotFound(lost, state.version)), False))
            self.disarm()

    # ------------------------------------------------------------ the way in and out

    def handle(self, event: Event) -> None:
        self.steps = 0
        handler = _HANDLERS.get(type(event))
        if handler is None:
            self.effects.append(Unhandled(f"not an event: {type(event).__name__}"))
            return
        handler(self, event)
        while self.inbox and self.wait_for != "http":
            first, self.inbox = self.inbox[0], self.inbox[1:]
            self.steps, self.in_error = 0, False  # each buffered message is a turn of its own
            self.on_message(UserMessage(**first))

    def finish(self) -> Turn:
        state = State(
            flow=self.flow.id if self.flow else self.state.flow,
            version=self.flow.version if self.flow else self.state.version,
            node=self.node_id, status=self.status, wait_for=self.wait_for, vars=self.vars,
            attempts=self.attempts, timer=self.timer, request=self.request, stack=self.stack,
            inbox=self.inbox, seq=self.seq, user=self.user, channel=self.channel,
            prompt=self.prompt, ticket=self.ticket)
        return Turn(state, tuple(self.effects))

    def crash(self, reason: str) -> None:
        self.effects.append(Error(self.flow.id if self.flow else "", self.node_id, reason, False))
        self.stop(FAILED)

    # ------------------------------------------------------------ where the conversation is

    def in_flow(self) -> Flow:
        """The flow the conversation is in: asked only where it has one (it waits, or runs nodes)."""
        assert self.flow is not None, "no flow: a conversation waits and runs nodes only in one"
        return self.flow

    def here(self) -> Node:
        """The node the conversation waits on."""
        assert self.node_id is not None, "no node: a conversation waits only on one"
        return self.in_flow().nodes[self.node_id]

    def adopt(self, flow: Flow) -> None:
        """Go into ``flow`` (a goto): its variables join the conversation's, which keep their values."""
        self.flow = flow
        for name, value in flow.vars.items():
            self.vars.setdefault(name, value)
        self._scope = None

    # ------------------------------------------------------------ scope and output

    def scope(self) -> dict[str, Any]:
        if self._scope is None:
            if self._now_dt is None:
                self._now_dt = datetime.fromtimestamp(self.now, UTC)
            scope: dict[str, Any] = {"error": None}
            scope.update(self.vars)
            scope.update(user=self.user, message=self.message, channel=self.channel,
                         now=self._now_dt, env=self.catalog.env)
            self._scope = scope
        return self._scope

    def assign(self, name: str, value: Any) -> None:
        self.vars[name] = plain(value, name)
        self._scope = None

    @overload
    def render(self, template: Template) -> str: ...
    @overload
    def render(self, template: None) -> None: ...
    @overload
    def render(self, template: Template | None) -> str | None: ...

    def render(self, template: Template | None) -> str | None:
        return None if template is None else template.render(self.scope())

    def reply(self, msg: MessageT, text: str | None = None) -> Reply:
        return Reply(
            text=self.render(msg.text) if text is None else text,
            buttons=self.buttons(msg.buttons), list_button=self.render(msg.list_button),
            list=self.buttons(msg.list),
            media_url=self.render(msg.media_url), media_kind=msg.media_kind,
            media_filename=msg.media_filename)

    def send(self, reply: Reply) -> None:
        """Queue a reply, within what one turn may send. Buttons or a list open a prompt (or
        join the one open): their press is judged against it (:func:`.steps.stale_press`)."""
        size = len(reply.text or "") + sum(len(b.title) for b in reply.buttons + reply.list)
        if self.sent + size > MAX_TURN_TEXT:
            raise RenderError(f"the replies of one turn are over {MAX_TURN_TEXT:,} characters (a loop?)")
        self.sent += size
        if (reply.buttons or reply.list) and self.prompt is None:
            self.seq += 1
            self.prompt = f"p{self.seq}"
        if reply.buttons or reply.list:  # built field by field: dataclasses.replace costs 5x more, per reply
            reply = Reply(reply.text, reply.buttons, reply.list_button, reply.list, reply.media_url, reply.media_kind,
                          reply.media_filename, self.prompt)
        self.effects.append(Send(reply))

    def say(self, text: str, buttons: tuple[Button, ...] = ()) -> None:
        self.send(Reply(text=text, buttons=buttons))

    def buttons(self, choices: tuple[Choice, ...]) -> tuple[Button, ...]:
        return tuple(c.constant or Button(c.id, self.render(c.title), self.render(c.description)) for c in choices)

    # ------------------------------------------------------------ timers and waiting

    def arm(self, seconds: float) -> None:
        self.disarm()
        self.seq += 1
        self.timer = f"t{self.seq}"
        self.effects.append(StartTimer(self.timer, self.now + seconds))

    def disarm(self) -> None:
        if self.timer is not None:
            self.effects.append(CancelTimer(self.timer))
            self.timer = None

    def wait(self, node: Node, wait_for: str) -> None:
        self.status, self.wait_for, self.attempts = WAITING, wait_for, 0
        if wait_for == "reply" and node.timeout_s is not None:
            self.arm(node.timeout_s)

    def leave(self) -> None:
        self.disarm()
        self.wait_for, self.prompt = None, None
        self.attempts = 0

    def stop(self, status: str) -> None:
        self.disarm()
        self.close_ticket("closed")
        self.status, self.wait_for, self.request, self.stack, self.prompt = status, None, None, (), None

    def close_ticket(self, status: str, agent: str | None = None) -> None:
        """The open hand-off (if any) ends: ``resumed`` by an agent, or ``closed``."""
        if self.ticket is not None:
            self.effects.append(TicketChanged(self.ticket, status, agent))
            self.ticket = None

    # ------------------------------------------------------------ running nodes

    def begin(self, flow: Flow, node: str | None, extra: dict[str, Any] | None) -> None:
        self.stop(WAITING)
        self.flow = flow
        self.vars = dict(flow.vars)
        for name, value in (extra or {}).items():
            self.assign(name, value)
        self._scope = None
        self.run(node or flow.start)

    def run(self, node_id: str | None) -> None:
        self.prompt = None  # moving on: the buttons shown so far are answered or abandoned
        while node_id is not None:
            self.steps += 1
            flow = self.flow  # again at each step: a goto or an end changes it
            assert flow is not None  # as in_flow(), without a call on the hot path
            node = flow.nodes.get(node_id)
            if self.steps > flow.max_steps:
                node_id = self.fail(f"more than {flow.max_steps} steps without waiting (a loop?)", node)
                continue
            if node is None:
                node_id = self.fail(f"no node {node_id!r} in flow {flow.id!r}", None)
                continue
            self.node_id = node_id
            try:
                node_id = self.enter(node)
            except RenderError as exc:
                node_id = self.fail(str(exc), node)

    def enter(self, node: Node) -> str | None:
        for name, expression in node.sets:
            self.assign(name, expression.evaluate(self.scope()))
        for msg in node.say:
            self.send(self.reply(msg))
        if node.action is None:
            return node.next
        return ENTER[type(node.action)](self, node, node.action)

    def fail(self, reason: str, node: Node | None, **details: Any) -> str | None:
        flow = self.in_flow()
        target = (node.on_error if node else None) or flow.on_error
        routed = target is not None and not self.in_error
        self.effects.append(Error(flow.id, node.id if node else self.node_id, reason, routed))
        if not routed:
            self.stop(FAILED)
            return None
        self.in_error = True
        self.steps = 0  # the handler gets a step budget of its own
        self.leave()
        self.vars["error"] = {"node": node.id if node else None, "message": reason,
                              **{k: _storable(v, "error") for k, v in details.items()}}
        self._scope = None
        return target

    def regex_budget(self) -> RegexBudget:
        """The one budget of every author regex this event's text is searched with."""
        if self._regexes is None:
            self._regexes = RegexBudget()
        return self._regexes

    # ------------------------------------------------------------ events

    def note(self, msg: UserMessage) -> None:
        """Remember who wrote, on which channel, and what (templates see it as ``message``)."""
        self.user = {"id": msg.user_id or self.user.get("id"), "name": msg.user_name or self.user.get("name")}
        self.channel = msg.channel or self.channel
        self.message = {"text": msg.text, "button": msg.button, "kind": msg.kind, "data": msg.data}
        self._scope = None

    def on_message(self, msg: UserMessage) -> None:
        self.note(msg)
        if self.status in (IDLE, ENDED, FAILED) or self.flow is None:
            flow_id = self.catalog.match(msg.text or msg.button or "", self.channel, self.regex_budget())
            if flow_id is None:
                self.effects.append(Unhandled("no flow's trigger matches this message"))
            else:
                self.begin(self.catalog.current(flow_id), None, None)
            return
        if self.status == HANDOFF:
            self.effects.append(Forward(msg.text, msg.button))
            return
        if self.wait_for == "http":
            self.buffer(msg)
            return
        node = self.flow.nodes.get(self.node_id) if self.node_id is not None else None
        if stale_press(self, node, msg):
            return
        if msg.button is None and msg.text and self.command(msg.text):
            return
        if self.wait_for != "reply" or node is None:
            self.effects.append(Unhandled(f"not waiting for a reply (waiting for {self.wait_for})"))
            return
        try:
            ANSWER[type(node.action)](self, node, node.action, msg)
        except RenderError as exc:
            self.run(self.fail(str(exc), node))

    def buffer(self, msg: UserMessage) -> None:
        if len(self.inbox) >= INBOX_LIMIT:
            self.effects.append(Unhandled(f"more than {INBOX_LIMIT} messages during an http call: oldest dropped"))
            self.inbox = self.inbox[1:]
        self.inbox = self.inbox + (asdict(msg),)  # plain data, read back as UserMessage(**item)

    def command(self, text: str) -> bool:
        word = text.strip().casefold()
        flows = [self.in_flow()] + [self.catalog.get(f.flow, f.version) for f in reversed(self.stack)]
        for depth, flow in enumerate(flows):
            target = flow.commands.get(word)
            if target is not None:
                self.leave()
                if depth:
                    self.stack = self.stack[: len(self.stack) - depth]
                    self.flow = flow
                self.status = WAITING
                self.run(target)
                return True
        return False

    def on_timer(self, event: TimerFired) -> None:
        if event.timer_id != self.timer or self.status != WAITING:
            self.effects.append(Unhandled(f"stale timer {event.timer_id}"))
            return
        self.timer = None
        node = self.here()
        waited_for, self.wait_for = self.wait_for, None
        self.run(node.next if waited_for == "timer" else node.on_timeout)

    def on_http(self, event: HttpResult) -> None:
        if self.wait_for != "http" or event.request_id != self.request:
            self.effects.append(Unhandled(f"stale http result {event.request_id}"))
            return
        node = self.here()
        http = node.action
        assert isinstance(http, Http)  # only an http node sends a request
        self.request, self.wait_for = None, None
        if not event.ok:
            reason = event.error or f"HTTP {event.status}"
            self.run(self.fail(reason, node, status=event.status, json=event.json))
            return
        try:
            if http.save:
                self.assign(http.save, event.json if event.json is not None else event.text)
            if http.map:
                response = {"status": event.status, "json": event.json, "text": event.text, "headers": event.headers}
                for name, expression in http.map:
                    self.assign(name, expression.evaluate({**self.scope(), "response": response}))
        except RenderError as exc:
            self.run(self.fail(str(exc), node))
            return
        self.run(node.next)

    def given_vars(self, values: dict[str, Any] | None, what: str) -> dict[str, Any] | None:
        """Variables an event brings from outside, as plain data; None (and the event refused)
        when one cannot be stored."""
        try:
            return {name: plain(value, name) for name, value in (values or {}).items()}
        except RenderError as exc:
            self.effects.append(Unhandled(f"{what} refused: {exc}"))
            return None

    def on_start(self, event: Start) -> None:
        if event.flow not in self.catalog:
            self.effects.append(Unhandled(str(FlowNotFound(event.flow))))
            return
        extra = self.given_vars(event.vars, "start")
        if extra is None:
            return
        if event.message is not None:
            self.note(event.message)
        self.begin(self.catalog.current(event.flow), event.node, extra)

    def on_resume(self, event: Resume) -> None:
        if not self.holds_ticket(event.ticket):
            return
        flow, node = self.in_flow(), self.here()
        target = event.node or node.next
        if event.node is not None and event.node not in flow.nodes:
            self.effects.append(Unhandled(f"resume refused: no node {event.node!r} in flow {flow.id!r}"))
            return
        extra = self.given_vars(event.vars, "resume")
        if extra is None:
            return
        self.vars.update(extra)
        self._scope = None
        self.close_ticket("resumed", event.agent)
        self.status, self.wait_for = WAITING, None
        if target is None:
            self.effects.append(End(flow.id, node.id))
            self.stop(ENDED)
            return
        self.run(target)

    def on_agent(self, event: AgentAction) -> None:
        if not self.holds_ticket(event.ticket):
            return
        if event.action == "assign":
            self.effects.append(TicketChanged(event.ticket, "assigned", event.agent))
        elif event.action == "message":
            self.send(Reply(text=event.text or ""))
        elif event.action == "close":
            self.close_ticket("closed", event.agent)
            self.effects.append(End(self.in_flow().id, self.node_id or ""))
            self.stop(ENDED)
        else:
            self.effects.append(Unhandled(f"not an agent action: {event.action!r}"))

    def holds_ticket(self, ticket: str | None) -> bool:
        """Whether the conversation is in the hand-off ``ticket`` (any, for None); if not, the
        event is refused with an Unhandled effect saying why."""
        if self.status != HANDOFF or self.flow is None:
            self.effects.append(Unhandled("not in a hand-off"))
            return False
        if ticket is not None and ticket != self.ticket:
            self.effects.append(Unhandled(f"ticket {ticket!r} is not this conversation's open hand-off"))
            return False
        return True


_HANDLERS: dict[type, Callable[[Run, Any], None]] = {
    UserMessage: Run.on_message, TimerFired: Run.on_timer, HttpResult: Run.on_http,
    Start: Run.on_start, Resume: Run.on_resume, AgentAction: Run.on_agent,
}
