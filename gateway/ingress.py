"""The way in for messages: admission (the tenant's rate limit, a bound on messages in
flight), then the runtime, whose dispatcher micro-batches per host.

A message is acknowledged only once its turn is committed: :meth:`Ingress.send` returns the
:class:`~parlour.messages.Outcome` the host gave after its commit, and a handler answers 2xx
only when ``outcome.ok``. Under overload nothing queues without bound: past ``max_pending``
messages in flight a new one is refused at once with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import limits
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from parlour.messages import FAILED, Inbound, Outcome
from parlour.metrics import GatewayMetrics

from .errors import ApiError, unavailable

SendFn = Callable[[Inbound], Awaitable[Outcome]]


class Ingress:
    def __init__(self, send: SendFn, metrics: GatewayMetrics, *, max_pending: int, timeout_s: float):
        self._send = send
        self.metrics = metrics
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.pending = 0
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._limits: dict[str, list[limits.RateLimitItem]] = {}
        self._user_limits: dict[str, list[limits.RateLimitItem]] = {}

    def set_rate_limit(self, tenant: str, expression: str | None, per_user: str | None = None) -> None:
        """``tenant``'s rate, and each of its web users' (``per_user``); None for no limit."""
        self._limits[tenant] = limits.parse_many(expression) if expression else []
        self._user_limits[tenant] = limits.parse_many(per_user) if per_user else []

    def admit(self, tenant: str, user: str | None = None) -> None:
        """Refuse a message of ``tenant`` now if its ``user`` is over the per-user rate or the
        tenant over its own (429), or the gateway is full (503), each with ``Retry-After``.
        The user's rate comes first: a user over it spends nothing of the tenant's."""
        if user is not None:
            self._hit(self._user_limits.get(tenant, ()), f"{tenant}/{user}", "user_rate_limited",
                      f"user {user[:64]!r} sends faster than tenant {tenant!r} allows one user")
        self._hit(self._limits.get(tenant, ()), tenant, "rate_limited", f"tenant {tenant!r} is over its rate limit")
        if self.pending >= self.max_pending:
            self.metrics.rejected.labels("overloaded").inc()
            raise unavailable(f"the gateway has {self.pending} messages in flight: retry shortly", code="overloaded")

    def admit_read(self, tenant: str, user: str) -> None:
        """Refuse a read of ``user``'s mailbox now if the user or the tenant is over its rate
        (429): a read costs what a message does, so that polling cannot go faster than sending
        (a poller that waits with ``wait_s`` spends one per wait). Reads hold no place among
        the messages in flight."""
        self._hit(self._user_limits.get(tenant, ()), f"{tenant}/{user}", "user_rate_limited",
                  f"user {user[:64]!r} reads or sends faster than tenant {tenant!r} allows one user")
        self._hit(self._limits.get(tenant, ()), tenant, "rate_limited", f"tenant {tenant!r} is over its rate limit")

    def _hit(self, items, key: str, code: str, message: str) -> None:
        for item in items:
            if not self._limiter.hit(item, key):
                reset_at = self._limiter.get_window_stats(item, key).reset_time
                self.metrics.rejected.labels(code).inc()
                raise ApiError(429, code, f"{message} ({item})",
                               headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))})

    async def send(self, inbound: Inbound, channel: str) -> Outcome:
        """``inbound``'s outcome once committed; a timed-out wait is a retryable failure (the
        turn may still commit: a retry with the same message id is then a duplicate)."""
        self.pending += 1
        self.metrics.pending.inc()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                outcome = await self._send(inbound)
        except TimeoutError:
            outcome = Outcome(inbound.message_id, FAILED, error=f"no outcome within {self.timeout_s:g} s",
                              retryable=True)
        finally:
            self.pending -= 1
            self.metrics.pending.dec()
        self.metrics.turn_seconds.labels(channel).observe(time.perf_counter() - started)
        if not outcome.ok:
            self.metrics.errors.labels("retryable" if outcome.retryable else "turn").inc()
        return outcome
