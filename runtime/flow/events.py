"""What goes into the interpreter (events) and what comes out (effects, in a :class:`Turn`).

All are frozen dataclasses of plain values, so they can cross a process boundary and be
stored (the outbox holds :class:`Send` effects). ``to_data`` gives msgpack-ready dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .state import State

# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class UserMessage:
    """A message from the user. ``button`` is the id of a pressed button or picked list row.

    ``kind`` is ``text``, ``button``, ``location``, ``media`` or another channel kind; ``data``
    holds what the kind carries (coordinates, a media URL). ``prompt`` is the id of the prompt
    whose button was pressed (:attr:`Reply.prompt`), so that a press on an old message is not
    taken as the answer to a newer question; None from a client that does not say (judged as
    before prompts had ids).
    """

    text: str = ""
    button: str | None = None
    kind: str = "text"
    data: dict[str, Any] | None = None
    user_id: str | None = None
    user_name: str | None = None
    channel: str | None = None
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer_id: str


@dataclass(frozen=True, slots=True)
class HttpResult:
    """The outcome of an :class:`HttpRequest`: a status and body, or ``error`` when none came."""

    request_id: str
    status: int | None = None
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Start:
    """Start ``flow`` (at ``node``, or its start) by trigger or campaign, with extra ``vars``.

    ``message`` is the message that triggered it, visible to templates as ``message``.
    """

    flow: str
    node: str | None = None
    vars: dict[str, Any] | None = None
    message: UserMessage | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """A human agent hands the conversation back: ``node`` runs (the handoff node's ``next``
    when None), with ``vars`` set. ``ticket`` names the hand-off it ends: a resume of another
    (an old ticket's) is refused; None resumes whatever hand-off is open (``parlour chat``)."""

    vars: dict[str, Any] | None = None
    ticket: str | None = None
    node: str | None = None
    agent: str | None = None


AGENT_ACTIONS = ("assign", "message", "close")


@dataclass(frozen=True, slots=True)
class AgentAction:
    """What a human agent does on the hand-off ``ticket``: ``assign`` (take it, as ``agent``),
    ``message`` (say ``text`` to the user, through the conversation's channel, in order with
    everything else) or ``close`` (end the hand-off, and the conversation with it)."""

    ticket: str
    action: str
    agent: str | None = None
    text: str | None = None


Event = UserMessage | TimerFired | HttpResult | Start | Resume | AgentAction

# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Button:
    """A button, list row or menu option; ``description`` is the smaller line under a title."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One message to the user, channel-neutral; the channel adapters render it.

    ``prompt`` is the id of the prompt its buttons or list belong to (unique in the
    conversation); a channel sends it back with a press, as :attr:`UserMessage.prompt`.
    """

    text: str | None = None
    buttons: tuple[Button, ...] = ()
    list_button: str | None = None
    list: tuple[Button, ...] = ()
    media_url: str | None = None
    media_kind: str | None = None
    media_filename: str | None = None
    prompt: str | None = None


class Effect:
    kind: ClassVar[str]

    def to_data(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]  # each subclass is a dataclass


@dataclass(frozen=True, slots=True)
class Send(Effect):
    kind: ClassVar[str] = "send"
    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTimer(Effect):
    kind: ClassVar[str] = "start_timer"
    timer_id: str
    due_at: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Effect):
    kind: ClassVar[str] = "cancel_timer"
    timer_id: str


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a secret goes in a request; the runtime puts ``prefix + value`` there."""

    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class HttpRequest(Effect):
    """Call an API; answer with an :class:`HttpResult` carrying the same ``request_id``.

    Header and query values may be :class:`Secret` placeholders: secrets never pass through
    templates, state or effects, so a user's text can never reach them.
    """

    kind: ClassVar[str] = "http"
    request_id: str
    method: str
    url: str
    headers: tuple[tuple[str, str | Secret], ...] = ()
    query: tuple[tuple[str, str | Secret], ...] = ()
    json: Any = None
    form: tuple[tuple[str, str], ...] | None = None
    body: str | None = None
    timeout_s: float = 10.0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Handoff(Effect):
    """A human takes the conversation: the host opens ``ticket`` in the turn's commit."""

    kind: ClassVar[str] = "handoff"
    reason: str
    queue: str | None = None
    ticket: str | None = None


@dataclass(frozen=True, slots=True)
class TicketChanged(Effect):
    """The hand-off ``ticket`` moved: ``assigned`` (to ``agent``), ``resumed`` or ``closed``."""

    kind: ClassVar[str] = "ticket"
    ticket: str
    status: str
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Forward(Effect):
    """A user message during a hand-off, for the human agent."""

    kind: ClassVar[str] = "forward"
    text: str
    button: str | None = None


@dataclass(frozen=True, slots=True)
class End(Effect):
    kind: ClassVar[str] = "end"
    flow: str
    node: str


@dataclass(frozen=True, slots=True)
class Error(Effect):
    """A run-time error in the flow (routed to ``on_error`` when ``routed``, else fatal to the
    conversation, which is then ``failed`` and restarts on the user's next message)."""

    kind: ClassVar[str] = "error"
    flow: str
    node: str | None
    reason: str
    routed: bool


@dataclass(frozen=True, slots=True)
class Unhandled(Effect):
    """An event the conversation had no use for (no trigger matched, a stale timer...)."""

    kind: ClassVar[str] = "unhandled"
    reason: str


@dataclass(frozen=True, slots=True)
class Turn:
    """What :func:`advance` returns: the new state and the effects to carry out, in order."""

    state: State
    effects: tuple[Effect, ...]

    @property
    def replies(self) -> list[Reply]:
        return [e.reply for e in self.effects if isinstance(e, Send)]
