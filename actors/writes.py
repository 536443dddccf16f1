"""What a conversation's turns write to the store, put into a batch's commit.

A batch (:meth:`Host.run_locked <parlour.actors.host.Host.run_locked>`) or a dedicated lane
(:mod:`parlour.actors.lanes`) runs a conversation's events, then :class:`Writes` adds to the
commit everything those turns did: the record (with its time to live), the replies kept for a
retry, the outbox entries and the web mailbox, the timers started and cancelled (an HTTP call's
guard among them), the transcript, and the hand-off tickets they move, returned as
:class:`~parlour.actors.tickets.Pending` for :func:`~parlour.actors.tickets.settle` before the
commit. The HTTP calls to start once committed are collected for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parlour.codec import pack_outbound, pack_replies, reply_data
from parlour.flow import CancelTimer, HttpRequest, HttpResult, Send, StartTimer, Unhandled, UserMessage
from parlour.flow.state import ENDED, IDLE
from parlour.flow.state import FAILED as STATE_FAILED
from parlour.messages import mailbox_log
from parlour.store import Commit, Timer

from .background import HTTP_GUARD, Work, guard_s
from .conversation import Step
from .tickets import Pending, transcript_log, turn_entry

if TYPE_CHECKING:
    from .host import HostConfig

Call = tuple[str, int, HttpRequest]
"""An HTTP call to start once committed: the conversation's key, its partition, the request."""


@dataclass(slots=True)
class Written:
    """What turns write: one commit, the tickets they move, the HTTP calls to start once
    committed, and each conversation's record as committed."""

    commit: Commit = field(default_factory=Commit)
    pending: Pending = field(default_factory=Pending)
    calls: list[Call] = field(default_factory=list)
    results: dict[str, bytes | None] = field(default_factory=dict)


class Writes:
    """Puts turns into commits, by a host's configuration (time to live, channels)."""

    def __init__(self, config: HostConfig):
        self.config = config

    def turns(self, commit: Commit, calls: list[Call], key: str, group: list[Work], steps: list[Step],
              record: bytes | None, now: float, epoch: int) -> Pending:
        """Add what ``key``'s turns (``group`` and their ``steps``) changed to ``commit``, fenced
        at ``epoch``; HTTP calls to start go to ``calls``; the tickets they move are returned."""
        partition = group[0].partition
        timers: dict[str, float | None] = {}
        status, pending = IDLE, Pending()
        channel = key.split("/", 2)[1]
        answered = channel in self.config.answered_channels
        mailbox = channel in self.config.mailbox_channels
        for work, step in zip(group, steps, strict=True):
            # a user's message on an answered channel gets its replies in the answer; anything
            # else (a timer, an API result, an agent's action, a start) reaches the user via the outbox
            to_outbox = work.index is None or not answered or not isinstance(work.event, UserMessage)
            said = self._effects(commit, calls, key, work, step, timers, to_outbox, mailbox, now)
            self._kept(commit, pending, key, work, step, said, now)
            status = step.status or status
        for timer_id, due_at in timers.items():
            if due_at is None:
                commit.cancels.append((key, partition, timer_id))
            else:
                commit.timers.append(Timer(key, partition, timer_id, due_at))
        if record is not None:
            commit.records.append((key, partition, record, self._expires(status, timers, now)))
        if commit:
            commit.fences[partition] = epoch
        return pending

    def _effects(self, commit: Commit, calls: list[Call], key: str, work: Work, step: Step,
                 timers: dict[str, float | None], to_outbox: bool, mailbox: bool, now: float) -> list[dict]:
        """The step's replies (as sent), its timers, its calls; a consumed timer is cancelled."""
        if work.timer is not None:
            timers[work.timer] = None
        if isinstance(work.event, HttpResult):
            timers[HTTP_GUARD + work.event.request_id] = None
        seq, said = step.reply_seq, []
        for effect in step.effects:
            if isinstance(effect, Send):
                seq += 1
                said.append(reply_data(effect.reply))
                if to_outbox:
                    outbound = pack_outbound(key, seq, work.message_id, said[-1], now)
                    self._send_out(commit, key, seq, outbound, mailbox, now)
            elif isinstance(effect, StartTimer):
                timers[effect.timer_id] = effect.due_at
            elif isinstance(effect, CancelTimer):
                timers[effect.timer_id] = None
            elif isinstance(effect, HttpRequest):
                timers[HTTP_GUARD + effect.request_id] = now + guard_s(effect)
                calls.append((key, work.partition, effect))
        return said

    def _kept(self, commit: Commit, pending: Pending, key: str, work: Work, step: Step, said: list[dict],
              now: float) -> None:
        """A caller's message keeps its replies for a retry; a turn that did something is written
        in the transcript, and its ticket changes noted."""
        if step.duplicate:
            return
        config = self.config
        if work.index is not None and work.message_id is not None:
            kept_s = config.reply_ttl_s if work.sent_at is None else max(config.reply_ttl_s, config.replay_horizon_s)
            commit.replies.append((key, work.message_id, pack_replies(said), now + kept_s))
        if work.index is not None or any(not isinstance(e, Unhandled) for e in step.effects):
            entry = turn_entry(work.event, work.message_id, step.effects, said, step.ticket, step.status, step.flow,
                               step.node, now)
            commit.logs.append((transcript_log(key), entry, now + config.transcript_ttl_s))
            pending.note(key, work.event, step.effects, step.ticket, step.flow, step.node, step.user or {})

    def _expires(self, status: str, timers: dict[str, float | None], now: float) -> float:
        """A record lives ``ended_ttl_s`` when at rest, ``abandoned_ttl_s`` mid-flow, and past its last timer."""
        ttl = self.config.ended_ttl_s if status in (IDLE, ENDED, STATE_FAILED) else self.config.abandoned_ttl_s
        latest = max((d for d in timers.values() if d is not None), default=now)
        return max(now + ttl, latest + self.config.ended_ttl_s)

    def _send_out(self, commit: Commit, key: str, seq: int, outbound: bytes, mailbox: bool, now: float) -> None:
        """Put a reply in the outbox (the channel's delivery, or the web's push to open sockets)
        and, for a channel with a mailbox (``mailbox``), in the user's mailbox too, in the same commit: a web
        user with no socket open reads it there later (:mod:`parlour.gateway.mailbox`)."""
        commit.outbox.append((key, seq, outbound))
        if mailbox:
            commit.logs.append((mailbox_log(key), outbound, now + self.config.mailbox_ttl_s))
