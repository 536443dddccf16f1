"""One conversation run in-process: the interpreter, a clock of its own, its timers, and an
HTTP caller. ``parlour chat`` and ``parlour test`` are built on it; the actors issue runs the
same effects on Ray with durable timers.

>>> session = Session(catalog, http=caller, now=time.time())
>>> effects = await session.send(UserMessage("hi"))
>>> effects += await session.wait(3600)   # move the clock: due timers fire, in order
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .flow import (
    CancelTimer,
    Catalog,
    Effect,
    Event,
    HttpRequest,
    HttpResult,
    StartTimer,
    State,
    TimerFired,
    advance,
)

HttpFn = Callable[[HttpRequest], Awaitable[HttpResult]]


class Session:
    def __init__(self, catalog: Catalog, http: HttpFn, now: float, state: State | None = None):
        self.catalog = catalog
        self.http = http
        self.now = now
        self.state = state or State()
        self.timers: dict[str, float] = {}

    async def send(self, event: Event) -> list[Effect]:
        """Apply ``event``, carry out its effects (HTTP calls feed their results back), and
        return every effect produced, in order."""
        done: list[Effect] = []
        pending: list[Event] = [event]
        while pending:
            turn = advance(self.catalog, self.state, pending.pop(0), self.now)
            self.state = turn.state
            for effect in turn.effects:
                done.append(effect)
                if isinstance(effect, StartTimer):
                    self.timers[effect.timer_id] = effect.due_at
                elif isinstance(effect, CancelTimer):
                    self.timers.pop(effect.timer_id, None)
                elif isinstance(effect, HttpRequest):
                    pending.append(await self.http(effect))
        return done

    def next_due(self) -> float | None:
        return min(self.timers.values(), default=None)

    async def wait(self, seconds: float) -> list[Effect]:
        """Move the clock ``seconds`` forward, firing the timers that fall due on the way."""
        until = self.now + seconds
        done: list[Effect] = []
        while (due := self.next_due()) is not None and due <= until:
            timer_id = min(self.timers, key=self.timers.__getitem__)
            del self.timers[timer_id]
            self.now = max(self.now, due)
            done += await self.send(TimerFired(timer_id))
        self.now = until
        return done
