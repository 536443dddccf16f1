"""The conversation host: many conversations in one process, committed a batch at a time.

A host owns a set of partitions, each at the epoch its claim was granted. :meth:`Host.deliver`
takes a batch of :class:`~parlour.messages.Inbound` events and answers each with an
:class:`~parlour.messages.Outcome`, once the batch is committed. Inside, batches run one at a
time (so each conversation sees its events in arrival order, one turn at a time), and each
is written with one store commit: the changed records, the outbox entries, the timers and the
replies for deduplication, fenced by the partitions' epochs.

Slow work never holds a batch: an HTTP effect runs as a task after the commit that records
the conversation waiting on it, and its result comes back as an event of a later batch. A
conversation of an ``isolation: dedicated`` flow is handed out of the batch to a lane of its
own (:mod:`parlour.actors.lanes`), whose turns run in its process and commit on their own.
Timers, HTTP calls, passivation and expiry are the host's background work
(:mod:`parlour.actors.background`).

This module knows nothing of Ray: :mod:`parlour.actors.remote` wraps a host in a Ray actor.

>>> host = Host("host-0", store, HostConfig(), claim=router_claim)
>>> await host.start()
>>> outcomes = await host.deliver([Inbound(ConversationKey("demo", "web", "u1"), "m-1", UserMessage("hi"))])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from parlour.codec import (
    Record,
    pack_record,
    unpack_record,
    unpack_replies,
)
from parlour.errors import ParlourError, StateError
from parlour.flow import (
    Catalog,
    HttpRequest,
    HttpResult,
)
from parlour.flow.regexes import overruns as regex_overruns
from parlour.flow.state import State
from parlour.messages import (
    APPLIED,
    DUPLICATE,
    FAILED,
    MOVED,
    ConversationKey,
    Inbound,
    Outcome,
    partition_of,
)
from parlour.metrics import HostMetrics, host_gauges
from parlour.store import Commit, Fenced, Store, StoreError, StoreUnavailable

from .background import HTTP_GUARD, Background, Work
from .conversation import DEFAULT_WINDOW, Conversation, Step, Working
from .dedicated import DedicatedCaps, DedicatedPool
from .flows import Flows
from .lanes import Lanes, settled
from .tickets import Pending, TicketPolicy, reset_entry, settle, transcript_log
from .watchdog import TurnWatch
from .writes import Call, Writes, Written

log = logging.getLogger("parlour.host")

ClaimFn = Callable[[str], Awaitable[tuple[int, list[int]]]]
"""Asks the router for this host's partitions: ``await claim(name) -> (epoch, partitions)``."""
HttpFn = Callable[[HttpRequest, str], Awaitable[HttpResult]]
"""Carries out an http effect for a conversation of a tenant: ``await http(request, tenant)``."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    partitions: int = 1024
    max_resident: int = 1_000_000
    idle_s: float = 600.0
    window: int = DEFAULT_WINDOW
    ended_ttl_s: float = 86_400.0
    abandoned_ttl_s: float = 30 * 86_400.0
    reply_ttl_s: float = 86_400.0
    timer_poll_s: float = 1.0
    sweep_s: float = 60.0
    max_batch: int = 1000
    ready_timeout_s: float = 30.0
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each tenant's env values (tenant -> name -> value): a flow reads its own tenant's only."""
    answered_channels: frozenset[str] = frozenset({"web"})
    """Channels whose caller receives a message's replies in its answer (the web channel's
    HTTP response): those replies are kept for a retry but not put in the outbox. What a timer
    or an API result makes a flow say still is, on every channel."""
    mailbox_channels: frozenset[str] = frozenset({"web"})
    """Channels whose outbox replies are also appended to the user's mailbox (a store log,
    :func:`parlour.messages.mailbox_log`), kept ``mailbox_ttl_s``: what a timer or an API result
    made the flow say reaches a web client that had no socket open (parlour serve:
    ``limits.mailbox_ttl_s``)."""
    mailbox_ttl_s: float = 7 * 86_400.0
    # isolation: dedicated (issue 12, finding 4): the caps and idle retirement of this host's
    # dedicated processes (parlour serve: Settings.dedicated)
    dedicated: DedicatedCaps = DedicatedCaps()
    dedicated_reap_s: float = 10.0
    # replays (issue 12, finding 7): a message with a channel time (Inbound.sent_at) keeps its
    # replies this long, and a replay of it within that time is a duplicate, in the window or not
    replay_horizon_s: float = 8 * 86_400.0
    # The watchdog (actors/watchdog.py): a turn running past watchdog_s ends its host's
    # process; a message in flight at poison_tries deaths is quarantined. 0 turns it off.
    watchdog_s: float = 5.0
    watchdog_period_s: float = 0.25
    poison_tries: int = 2
    watch_dir: str | None = None
    """Where the watch files are kept (default: the temporary folder's parlour-watch)."""
    # transcripts and hand-off tickets (issue 13, actors/tickets.py)
    transcript_ttl_s: float = 7 * 86_400.0
    tickets: TicketPolicy = TicketPolicy()


Ran = tuple[bytes | None, list[Step]] | BaseException
"""A conversation's turns in a batch: its new record (None if unchanged) and steps, or what they raised."""


class Host:
    def __init__(self, name: str, store: Store, config: HostConfig, claim: ClaimFn, *,
                 http: HttpFn | None = None, isolated: DedicatedPool | None = None,
                 watch: TurnWatch | None = None, clock: Callable[[], float] = time.time):
        self.name = name
        self.store = store
        self.config = config
        self.claim = claim
        self.http = http
        self.isolated = isolated
        self.watch = watch
        self.clock = clock
        self.flows = Flows(store, config.env)
        self.writes = Writes(config)
        self.epoch = 0
        self.owned: dict[int, int] = {}
        self.resident: OrderedDict[str, Conversation] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.metrics = HostMetrics()
        self._lock = asyncio.Lock()
        self._queued: deque[tuple[list[Work], asyncio.Future]] = deque()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.background = Background(self)
        self.lanes = Lanes(self, isolated) if isolated is not None else None

    def isolate(self, pool: DedicatedPool) -> None:
        """Run the conversations of ``isolation: dedicated`` flows in ``pool``'s processes (made
        after the host, when they need its flows)."""
        self.isolated = pool
        self.lanes = Lanes(self, pool)

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open the store, claim this host's partitions, load the flows, start the loops.
        Raises what stopped it (the store or the router not up yet): call again to retry."""
        if self.watch is not None and (died := self.watch.open()) is not None:
            self.counts["died_in_turn"] += 1
            log.error("%s: the last process of this host died in a turn (conversation and message: %r)",
                      self.name, died.replace("\0", " "))
        await self.store.open()
        await self._claim()
        await self.flows.reload()
        self._tasks = self.background.start()
        if self.isolated is not None:
            self._tasks.append(asyncio.create_task(self.isolated.run_reaper(self.config.dedicated_reap_s)))
        self._ready.set()
        log.info("%s owns %d partitions at epoch %d", self.name, len(self.owned), self.epoch)

    async def _claim(self) -> None:
        epoch, partitions = await self.claim(self.name)
        await self.store.claim({p: epoch for p in partitions})
        self.epoch, self.owned = epoch, {p: epoch for p in partitions}

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in hand (for up to ``timeout_s``), cancel the loops and calls in
        flight (their guard timers answer them after a restart), close the store."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout_s)
        except TimeoutError:
            log.error("%s: a batch still holds the lock after %g s; stopping anyway", self.name, timeout_s)
        tasks = [*self._tasks, *self.background.calls.values(), *(self.lanes.tasks() if self.lanes is not None else ())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.isolated is not None:
            self.isolated.stop()
        await self.store.aclose()
        if self.watch is not None:
            self.watch.close()

    async def ready(self) -> dict:
        await self._wait_ready()
        return {"name": self.name, "epoch": self.epoch, "partitions": len(self.owned)}

    async def _wait_ready(self) -> None:
        await asyncio.wait_for(self._ready.wait(), self.config.ready_timeout_s)

    # ------------------------------------------------------------ the entry point

    async def deliver(self, batch: list[Inbound]) -> list[Outcome]:
        """Run ``batch``; each event's outcome, in order, once the batch is committed. A node
        server's gateway calls this once per message (a batch of one): what arrives while a
        batch commits is run together with one commit (:meth:`process`)."""
        if not self._ready.is_set():
            try:
                await self._wait_ready()
            except TimeoutError:
                return [Outcome(i.message_id, FAILED, error=f"host {self.name} is not ready", retryable=True)
                        for i in batch]
        works: list[Work] = []
        moved: dict[int, Outcome] = {}
        for index, inbound in enumerate(batch):
            key = inbound.key.id
            partition = partition_of(key, self.config.partitions)
            if partition in self.owned:
                works.append(Work(index, key, partition, inbound.message_id, inbound.event, trace=inbound.trace,
                                  sent_at=inbound.sent_at))
            else:
                moved[index] = Outcome(inbound.message_id, MOVED, epoch=self.epoch)
        done = await settled(await self.process(works))
        if any(outcome.status == DUPLICATE for outcome in done):
            done = await self._with_first_replies(works, done)
        if not moved:
            return done
        ran = iter(done)  # in the batch's order, as ``works``
        return [moved[index] if index in moved else next(ran) for index in range(len(batch))]

    async def _with_first_replies(self, works: list[Work], done: list[Outcome]) -> list[Outcome]:
        """A duplicate's replies are those its message got the first time, while kept."""
        duplicates = [work for work, outcome in zip(works, done, strict=True) if outcome.status == DUPLICATE]
        replies = await asyncio.gather(*map(self._first_replies, duplicates))
        firsts = dict(zip(map(id, duplicates), replies, strict=True))
        return [Outcome(outcome.message_id, DUPLICATE, firsts[id(work)]) if outcome.status == DUPLICATE else outcome
                for work, outcome in zip(works, done, strict=True)]

    async def _first_replies(self, work: Work) -> tuple:
        if work.message_id is None:
            return ()
        try:
            data = await self.store.reply(work.key, work.message_id)
        except StoreError:
            return ()
        return unpack_replies(data) if data else ()

    # ------------------------------------------------------------ a batch

    async def process(self, works: list[Work]) -> list[Outcome | asyncio.Future]:
        """Run ``works`` as part of the next batch. Batches that arrive while one commits wait,
        and the first of them to get the lock runs them all as one batch with one commit
        (group commit): under load, a slow commit makes the next one bigger, not later.
        The outcome of a work handed to a dedicated lane is a future, settled by the lane:
        await it (:func:`settled`) once the lock is released."""
        if not works:
            return []
        done = asyncio.get_running_loop().create_future()
        self._queued.append((works, done))
        async with self._lock:
            while not done.done():
                taken: list[tuple[list[Work], asyncio.Future]] = []
                size = 0
                while self._queued and (not taken or size + len(self._queued[0][0]) <= self.config.max_batch):
                    taken.append(self._queued.popleft())
                    size += len(taken[-1][0])
                try:
                    works = [work for batch, _ in taken for work in batch]
                    lanes = self.lanes  # a Lanes with no lane running is falsy (len 0): test for None
                    outcomes = await (lanes.run_beside(works) if lanes is not None else self.run_locked(works))
                except BaseException as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    raise
                start = 0
                for batch, future in taken:
                    future.set_result(outcomes[start:start + len(batch)])
                    start += len(batch)
        return done.result()

    async def run_locked(self, works: list[Work]) -> list[Outcome | asyncio.Future]:
        self.metrics.batch_size.observe(len(works))
        now = self.clock()
        try:
            return await self._run_batch(works, now)
        except Fenced as exc:
            self.lose(exc.epochs)
            return [Outcome(w.message_id or "", MOVED if w.partition in exc.epochs else FAILED,
                            error=None if w.partition in exc.epochs else "batch refused by the store's fence",
                            retryable=True, epoch=self.epoch) for w in works]
        except StoreError as exc:
            # The commit may have landed before the error (a timeout): forget these
            # conversations, so that their next event reads what the store really holds.
            for work in works:
                self.resident.pop(work.key, None)
            self.counts["store_unavailable" if isinstance(exc, StoreUnavailable) else "store_errors"] += 1
            return [Outcome(w.message_id or "", FAILED, error=f"store: {exc}", retryable=True) for w in works]

    async def _run_batch(self, works: list[Work], now: float) -> list[Outcome | asyncio.Future]:
        outcomes: dict[int, Outcome | asyncio.Future] = {}
        groups = self._groups(works, outcomes)
        records = await self._load(groups)
        replayed = await self.replayed(groups, records)
        done, handed = self._turns(groups, records, now, replayed)
        written = Written()
        for key, group in groups.items():
            if key not in handed:
                self._write(written, key, group, done[key], records.get(key), now, outcomes)
        if written.pending:
            await settle(self.store, written.commit, written.pending, self.config.tickets, now)
        if written.commit:
            started = time.perf_counter()
            await self.store.commit(written.commit)
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.counts["commits"] += 1
        self.counts["turns"] += sum(1 for o in outcomes.values() if isinstance(o, Outcome) and o.status == APPLIED)
        self._install(groups, written.results, now)
        if handed and self.lanes is not None:
            outcomes.update(self.lanes.hand_out(handed))
        for key, partition, request in written.calls:
            self.background.call(key, partition, request)
        return [outcomes[id(work)] for work in works]

    def _groups(self, works: list[Work], outcomes: dict[int, Outcome | asyncio.Future]) -> dict[str, list[Work]]:
        """``works`` by conversation, in arrival order; those of partitions lost meanwhile are moved."""
        groups: dict[str, list[Work]] = {}
        for work in works:
            if work.partition in self.owned:
                groups.setdefault(work.key, []).append(work)
            else:  # lost to a newer owner while this batch waited
                outcomes[id(work)] = Outcome(work.message_id or "", MOVED, epoch=self.epoch)
        return groups

    async def _load(self, groups: dict[str, list[Work]]) -> dict[str, bytes]:
        """The groups' records: resident ones as they are, the others read from the store."""
        # What is resident now is what the store holds: take it before any await, so that a
        # passivation meanwhile cannot make a conversation start from nothing.
        held = {key: c.record for key in groups if (c := self.resident.get(key)) is not None and c.record is not None}
        missing = [key for key in groups if key not in held]
        self.counts["activations"] += len(missing)
        return {**(await self.store.load(missing) if missing else {}), **held}

    def _write(self, written: Written, key: str, group: list[Work], ran: Ran, record: bytes | None, now: float,
               outcomes: dict[int, Outcome | asyncio.Future]) -> None:
        """Add ``key``'s turns to the batch's writes and their outcomes to ``outcomes``; turns
        that raised fail their conversation alone."""
        partition = group[0].partition
        if partition not in self.owned:  # lost meanwhile (a lane's commit was fenced)
            for work in group:
                outcomes[id(work)] = Outcome(work.message_id or "", MOVED, epoch=self.epoch)
            return
        try:
            if isinstance(ran, BaseException):
                raise ran
            new_record, steps = ran
            commit, calls = Commit(), list[Call]()
            pending = self.writes.turns(commit, calls, key, group, steps, new_record, now, self.owned[partition])
        except Exception as exc:  # noqa: BLE001 - a defect in one conversation's turns fails only them
            log.exception("turns of %s failed (requests %s)", key, ", ".join(str(w.trace) for w in group))
            self.counts["turn_errors"] += 1
            for work in group:
                outcomes[id(work)] = Outcome(work.message_id or "", FAILED, retryable=False,
                                             error=f"the turn failed: {type(exc).__name__}: {exc}")
            return
        written.commit.extend(commit)
        written.pending.extend(pending)
        written.calls += calls
        written.results[key] = new_record if new_record is not None else record
        for work, step in zip(group, steps, strict=True):
            outcomes[id(work)] = self.outcome(work, step)

    def _turns(self, groups: dict[str, list[Work]], records: dict[str, bytes], now: float,
               replayed: set[tuple[str, str]]) -> tuple[dict[str, Ran], dict[str, tuple[list[Work], bytes | None]]]:
        """Each conversation's new record and steps, or the exception its turns raised; and
        the dedicated conversations, with their records, to hand to lanes after the commit.
        A ``replayed`` message (key, message id) runs nothing."""
        done: dict[str, Ran] = {}
        handed: dict[str, bytes | None] = {}
        for key, group in groups.items():
            tenant = key.split("/", 1)[0]
            catalog = self.flows.catalog(tenant)
            try:
                working = self.open(key, records.get(key))
                fresh = [w for w in group if (key, w.message_id) not in replayed]
                if fresh and self.lanes is not None and self._dedicated(catalog, working, group):
                    handed[key] = working.source  # its lane looks replays up again: rare, and in order
                    continue
                steps = [Step(w.message_id, duplicate=True) if (key, w.message_id) in replayed
                         else self._apply(working, catalog, key, w, now) for w in group]
                done[key] = ((working.pack() if working.changed else None), steps)
            except Exception as exc:  # noqa: BLE001 - reported per conversation by the caller
                done[key] = exc
        return done, {key: (groups[key], record) for key, record in handed.items()}

    async def replayed(self, groups: dict[str, list[Work]],
                       records: Mapping[str, bytes | None]) -> set[tuple[str, str]]:
        """The messages of ``groups`` their conversation took already, out of its dedup window
        now: the store is asked only about those that may be (:meth:`Working.may_be_evicted`),
        so a conversation's new messages cost no read."""
        asked = []
        for key, group in groups.items():
            if any(w.sent_at is not None for w in group):
                working = self.open(key, records.get(key))
                asked += [(key, w.message_id) for w in group
                          if w.message_id is not None and working.may_be_evicted(w.message_id, w.sent_at)]
        if not asked:
            return set()
        self.counts["replay_checks"] += len(asked)
        return await self.store.replied(asked)

    def _apply(self, working: Working, catalog: Catalog, key: str, work: Work, now: float) -> Step:
        """One event, under the watchdog's eye (:mod:`parlour.actors.watchdog`); not run at all if
        it was in flight each time this host died lately."""
        watch = self.watch
        if watch is None:
            return working.apply(catalog, work.message_id, work.event, now, work.sent_at)
        token = work.message_id or work.timer or getattr(work.event, "request_id", None) or ""
        if (watch.suspects and (tries := watch.poisoned(key, token))
                and not (work.message_id is not None and working.seen(work.message_id))):
            self.counts["quarantined"] += 1
            log.error("%s: %s of %s quarantined as poison: its host died running it %d times",
                      self.name, token, key, tries)
            return working.quarantine(work.message_id, f"quarantined as poison: this host stopped {tries} times "
                                                       "while running this message")
        watch.begin(key, token)
        try:
            return working.apply(catalog, work.message_id, work.event, now, work.sent_at)
        finally:
            watch.end()

    def open(self, key: str, record: bytes | None) -> Working:
        try:
            return Working(key, record, self.config.window)
        except StateError as exc:
            # An unreadable record must not wedge the conversation: it starts afresh.
            log.error("conversation %s had an unreadable record, starting afresh: %s", key, exc)
            self.counts["unreadable_records"] += 1
            return Working(key, None, self.config.window)

    @staticmethod
    def _dedicated(catalog: Catalog, working: Working, group: list[Work]) -> bool:
        state = working.state
        flow_id = state.flow if state.active else None
        if flow_id is None:
            first = group[0].event
            text = getattr(first, "text", None) or getattr(first, "button", None) or ""
            flow_id = getattr(first, "flow", None) or catalog.match(text, state.channel)
        try:
            version = state.version if state.flow == flow_id else None
            return flow_id is not None and catalog.get(flow_id, version).isolation == "dedicated"
        except ParlourError:
            return False

    def _install(self, groups: dict[str, list[Work]], results: dict[str, bytes | None], now: float) -> None:
        """The batch is committed: its records become the resident ones (most recent last)."""
        for key, record in results.items():
            if record is None:
                continue
            conversation = self.resident.pop(key, None) or Conversation(key, groups[key][0].partition, record, now)
            conversation.record, conversation.used_at = record, now
            self.resident[key] = conversation
        while len(self.resident) > self.config.max_resident:
            self.resident.popitem(last=False)
            self.counts["passivated_lru"] += 1

    def outcome(self, work: Work, step: Step) -> Outcome:
        if step.duplicate:
            self.counts["duplicates"] += 1
            return Outcome(work.message_id or "", DUPLICATE)
        return Outcome(work.message_id or "", APPLIED, step.replies, flow=step.flow, node=step.node,
                       conversation_status=step.status,
                       calling=any(isinstance(e, HttpRequest) for e in step.effects))

    def lose(self, epochs: dict[int, int]) -> None:
        """Another host holds these partitions now: stop serving them, forget their conversations."""
        log.warning("%s lost %d partitions to newer epochs", self.name, len(epochs))
        for partition in epochs:
            self.owned.pop(partition, None)
        for key in [k for k, c in self.resident.items() if c.partition in epochs]:
            del self.resident[key]
        self.counts["fenced"] += 1

    # ------------------------------------------------------------ administration

    async def reload_flows(self) -> int:
        """Read the flow registry again (after a deploy); how many flow versions are loaded."""
        return await self.flows.reload()

    async def inspect(self, key: ConversationKey) -> Record | None:
        """A conversation's record as committed (resident or in the store); None if it has none."""
        conversation = self.resident.get(key.id)
        data = conversation.record if conversation else (await self.store.load([key.id])).get(key.id)
        return unpack_record(data) if data else None

    async def reset(self, key: ConversationKey) -> bool:
        """Start ``key``'s conversation afresh (its flow state and pending timer dropped, its open
        hand-off ticket closed as ``reset``, the reset written in its transcript); False if it
        has no record. Its dedup window and reply counter stay, so that an old message replayed
        is still known and reply idempotency keys never repeat."""
        partition = key.partition(self.config.partitions)
        if partition not in self.owned:
            raise Fenced({partition: -1})
        async with self._lock:
            if self.lanes is not None:  # its dedicated turns finish first (they need no lock)
                await self.lanes.finished(key.id)
            conversation = self.resident.get(key.id)
            data = conversation.record if conversation else (await self.store.load([key.id])).get(key.id)
            if data is None:
                return False
            try:
                old = unpack_record(data)
            except StateError:
                old = Record(State())
            now = self.clock()
            record = pack_record(Record(State(), old.seen, old.replies, at=int(now)))
            commit = Commit(fences={partition: self.owned[partition]},
                            records=[(key.id, partition, record, now + self.config.ended_ttl_s)])
            for timer in (old.state.timer, old.state.request and HTTP_GUARD + old.state.request):
                if timer:
                    commit.cancels.append((key.id, partition, timer))
            commit.logs.append((transcript_log(key.id), reset_entry(old.state.ticket, now),
                                now + self.config.transcript_ttl_s))
            if old.state.ticket:  # its open hand-off ends with it: the agents see it closed
                pending = Pending(changes=[(key.id, old.state.ticket, {"status": "reset", "agent": None})])
                await settle(self.store, commit, pending, self.config.tickets, now)
            try:
                await self.store.commit(commit)
            except StoreError:
                self.resident.pop(key.id, None)
                raise
            self.resident.pop(key.id, None)
            self.resident[key.id] = Conversation(key.id, partition, record, now)
            self.counts["resets"] += 1
            return True

    def export_metrics(self) -> list:
        """This host's figures for ``/metrics`` (:meth:`parlour.metrics.HostMetrics.export`)."""
        return self.metrics.export({**self.counts, "regex_overruns": regex_overruns()}, host_gauges(self.stats()))

    async def passivate_idle(self, now: float) -> int:
        """Forget the resident conversations idle for ``idle_s``; how many."""
        async with self._lock:
            idle = [k for k, c in self.resident.items() if now - c.used_at > self.config.idle_s]
            for key in idle:
                del self.resident[key]
        self.counts["passivated_idle"] += len(idle)
        return len(idle)

    async def passivate(self) -> int:
        """Forget every resident conversation (each is in the store already); how many."""
        async with self._lock:
            count = len(self.resident)
            self.resident.clear()
        self.counts["passivated_asked"] += count
        return count

    def stats(self) -> dict:
        dedicated = {"dedicated": len(self.isolated.slots), **self.isolated.counts} if self.isolated else {}
        return {"name": self.name, "epoch": self.epoch, "partitions": len(self.owned),
                "resident": len(self.resident), "http_in_flight": len(self.background.calls),
                "dedicated_lanes": len(self.lanes) if self.lanes is not None else 0,
                **self.counts, **dedicated}
