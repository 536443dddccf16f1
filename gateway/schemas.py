"""The bodies the HTTP API takes and gives, as pydantic models: they validate what comes in
and describe both directions in ``/openapi.json``."""

from __future__ import annotations

import builtins
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")


class SocketMessage(BaseModel):
    """A message sent over the chat WebSocket (the user is the socket's): ``text`` typed, or
    the ``button`` pressed (its id) with the ``prompt`` of the reply it was on."""

    model_config = ConfigDict(extra="forbid")

    id: str = ID
    text: str | None = Field(None, max_length=4096)
    button: str | None = Field(None, min_length=1, max_length=256)
    prompt: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$", description=(
        "with `button`: the `prompt` of the reply the button was on; a press for an older prompt than the "
        "one the conversation waits on is refused by the flow (without it, the press is taken as before)"))

    @model_validator(mode="after")
    def _one_input(self):
        if (self.text is None) == (self.button is None):
            raise ValueError("a message has exactly one of `text` or `button`")
        if self.prompt is not None and self.button is None:
            raise ValueError("`prompt` goes with a `button`: it names the question the button answers")
        return self


class WebMessage(SocketMessage):
    """A message from a web chat user, posted over HTTP."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"user": "u1", "id": "m-1", "text": "hi"},
                     {"user": "u1", "id": "m-2", "button": "register", "prompt": "p1"}]})

    user: str = ID
    name: str | None = Field(None, max_length=256, description="the user's display name, as flows see it")


class ButtonOut(BaseModel):
    id: str
    title: str
    description: str | None = None


class ListOut(BaseModel):
    button: str | None = None
    items: list[ButtonOut]


class MediaOut(BaseModel):
    url: str
    kind: str | None = None
    filename: str | None = None


class ReplyOut(BaseModel):
    text: str | None = None
    buttons: builtins.list[ButtonOut] = Field(default_factory=builtins.list)
    list: ListOut | None = None
    media: MediaOut | None = None
    prompt: str | None = Field(None, description=(
        "the id of the question the buttons or list belong to (absent without them): send it back with a press"))


class WebReplies(BaseModel):
    replies: list[ReplyOut] = Field(description="the turn's replies; then, when the tenant sets `web_answer_wait_s` "
                                    "and the turn started an HTTP call, the replies its result made within that wait, "
                                    "each with its mailbox `cursor`, `seq` and `at` (as MailReplyOut)")
    duplicate: bool = Field(description="this message id was handled before: these are the replies it got then")
    next: str | None = Field(None, description="with replies from the mailbox: the cursor of the last, for a client "
                             "that also reads the mailbox to read `after` (it skips them)")


class MailReplyOut(ReplyOut):
    """A reply from a web user's mailbox: what a timer or an API result made the flow say."""

    cursor: str = Field(description="its place in the mailbox: read `after` it, acknowledge `upto` it")
    seq: int = Field(description="its number in the conversation, which a socket's push carries too: show each once")
    at: float = Field(description="when the flow said it, epoch seconds")


class MailboxOut(BaseModel):
    replies: list[MailReplyOut] = Field(description="oldest first, at most `limit`")
    next: str | None = Field(description="the cursor to read `after` next time: the last reply's, else the `after` "
                             "given (null: none given and the mailbox is empty)")
    more: bool = Field(description="the read was cut at `limit`: read again at once for the rest")


class Acknowledged(BaseModel):
    acknowledged: int = Field(description="how many replies were deleted from the mailbox")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class FlowVersionOut(BaseModel):
    flow: str
    version: str
    created_at: float
    current: bool


class FlowOut(BaseModel):
    flow: str
    current: str | None
    versions: list[FlowVersionOut]
    source: str | None = Field(None, description="the source of the version asked for (default: the current one)")


class FlowsOut(BaseModel):
    flows: list[FlowOut]


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=128)


class TurnOut(BaseModel):
    message_id: str
    replies: list[ReplyOut]
    kept_until: float


class ConversationOut(BaseModel):
    tenant: str
    channel: str
    user: str
    flow: str | None
    version: str | None
    node: str | None
    status: str
    waiting_for: str | None
    vars: dict[str, Any]
    replies_sent: int
    recent_turns: list[TurnOut]


class ConversationSummaryOut(BaseModel):
    """A conversation as a listing shows it."""

    key: str = Field(description="tenant/channel/user")
    channel: str
    user: str
    flow: str | None
    version: str | None
    node: str | None
    status: Literal["idle", "waiting", "handoff", "ended", "failed", "unreadable"] = Field(
        description="`unreadable`: a record this parlour cannot read (listed only without filters)")
    ticket: str | None = Field(description="the open hand-off ticket, while a human has it")
    last_turn_at: int | None = Field(description="its last turn, in seconds since the epoch (null: before this was "
                                                 "recorded)")
    replies_sent: int | None


class ConversationsOut(BaseModel):
    conversations: list[ConversationSummaryOut]
    next: str | None = Field(description="pass as `after` for the next page; null after the last. A page may be "
                                         "short, even empty, and still have a next: a request reads a bounded "
                                         "number of conversations, whatever the filters keep")


class FlowDeleted(BaseModel):
    flow: str
    versions_deleted: int
    conversations_ended: int = Field(description="conversations pinned to it that `force` reset")
    at: float


class TenantOut(BaseModel):
    tenant: str
    channels: list[str]
    rate_limit: str | None
    declared_in: str = Field(description="`config` (the config file) or `api`")


class TenantsOut(BaseModel):
    tenants: list[TenantOut]


class TenantCreated(BaseModel):
    tenant: str
    token: str = Field(description="the tenant's new token: shown once, stored only as its hash")


class FlowCreated(FlowVersionOut):
    warnings: list[str] = Field(default_factory=list, description="what looks wrong but does not stop the flow")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    hosts: int


class BotOut(BaseModel):
    channel: str
    bot: str
    settings: dict[str, Any] = Field(description="the bot's settings; each credential shows as `set` (or null)")
    webhook_url: str = Field(description="the URL to register at the channel")


class BotsOut(BaseModel):
    bots: list[BotOut]


class SecretIn(BaseModel):
    """A secret's value: text, kept sealed, never shown again."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, description="1 to limits.max_secret_bytes bytes of UTF-8, no line break or NUL")


class SecretOut(BaseModel):
    name: str
    value: str = Field(description="always `set`: a secret's value is never shown")
    source: str = Field(description="`api` (set through this API) or `config` (the config file's, changed there)")
    set_at: float | None = Field(description="when it was set through the API (Unix seconds); null for `config`")


class SecretsOut(BaseModel):
    secrets: list[SecretOut]


class DeadLetterOut(BaseModel):
    id: str
    channel: str = Field(description="`<channel>:<bot>`")
    user: str
    seq: int = Field(description="the reply's number in its conversation (its idempotency key is `key#seq`)")
    reason: str
    attempts: int
    failed_at: float
    reply: dict[str, Any]


class DeadLettersOut(BaseModel):
    dead_letters: list[DeadLetterOut]


class DeadLetterChoice(BaseModel):
    """Which dead letters: ``{"ids": [...]}`` or ``{"all": true}``."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = None
    all: bool | None = None


class Replayed(BaseModel):
    replayed: int


class Dropped(BaseModel):
    dropped: int


# ---------------------------------------------------------------- hand-offs (gateway/handoffs.py)


class TicketUserOut(BaseModel):
    id: str
    name: str | None = None


class TicketOut(BaseModel):
    """A hand-off ticket."""

    id: str = Field(description="opens in time order: a tenant's tickets sort by when they opened")
    key: str = Field(description="the conversation: tenant/channel/user")
    channel: str
    user: TicketUserOut
    flow: str | None
    node: str | None = Field(description="the handoff node")
    reason: str
    queue: str | None
    status: Literal["open", "assigned", "closed"]
    agent: str | None
    created_at: float
    updated_at: float
    closed_at: float | None
    resolution: Literal["resumed", "closed", "reset"] | None = Field(
        description="how it closed: given back to the flow, closed (by an agent, or the flow moved on), or "
                    "ended by a reset of the conversation (or the deletion of its flow)")
    messages: int = Field(description="the user's messages during the hand-off")


class TicketsOut(BaseModel):
    tickets: list[TicketOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")


class TranscriptTurnOut(BaseModel):
    cursor: str = Field(description="its place in the conversation's transcript (`after` of the events stream)")
    at: float
    in_: dict[str, Any] = Field(alias="in", description="what came in: `kind` message (text, button), agent "
                                "(action, agent, text), resume, start, timer, http or reset")
    out: list[ReplyOut] = Field(description="what the flow said")
    ticket: str | None
    status: str | None
    flow: str | None
    node: str | None


class HandoffOut(BaseModel):
    ticket: TicketOut
    transcript: list[TranscriptTurnOut] = Field(description="the turns before the hand-off (up to 20), then the "
                                                "ticket's own, oldest first")


class HandoffActed(BaseModel):
    ticket: TicketOut = Field(description="the ticket after the action")
    replies: list[ReplyOut] | None = Field(None, description="(resume) what the flow said, also sent to the user")
    duplicate: bool | None = Field(None, description="(messages) this `id` was sent before: not said again")


class AgentMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4096, description="what the agent says to the user")
    id: str | None = Field(None, min_length=1, max_length=128, description="idempotency id: sent again, said once")
    agent: str | None = Field(None, max_length=128, description="who speaks (an agent's token: itself)")


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str | None = Field(None, min_length=1, max_length=128, description="who takes it (an agent's token: itself)")


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str | None = Field(None, min_length=1, max_length=256, description="the node to go on from; "
                             "default: the handoff node's `next`")
    vars: dict[str, Any] = Field(default_factory=dict, description="variables set before the flow goes on")
    agent: str | None = Field(None, max_length=128)


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str | None = Field(None, max_length=128)
