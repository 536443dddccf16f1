"""The delivery supervisor's policies on their own: backoff with jitter, and the breaker."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from parlour.actors.delivery import Breaker, RetryPolicy


def test_backoff_is_full_jitter_under_an_exponential_bound_and_never_under_what_was_asked():
    policy, rng = RetryPolicy(base_s=0.5, max_backoff_s=8.0), random.Random(7)
    for attempt in range(1, 10):
        waits = [policy.backoff(attempt, None, rng) for _ in range(200)]
        bound = min(8.0, 0.5 * 2 ** attempt)
        assert all(0 <= w <= bound for w in waits) and max(waits) > 0.8 * bound  # spread over the whole range
    assert all(policy.backoff(1, 30.0, rng) == 30.0 for _ in range(20))  # Retry-After: 30 wins over a 1 s bound
    assert policy.backoff(9, 0.0, rng) <= 8.0


async def test_the_breaker_opens_after_failures_in_a_row_and_one_probe_closes_it():
    breaker = Breaker(failures_to_open=3, open_s=0.2, clock=time.monotonic)
    for ok in (False, False, True, False, False):  # a success in between starts the count again
        await breaker.admit()
        await breaker.record(ok)
    assert breaker.state == "closed"
    await breaker.record(False)
    assert breaker.state == "open"
    opened = time.monotonic()
    await asyncio.wait_for(breaker.admit(), 2)  # waits out open_s, then goes as the probe
    assert time.monotonic() - opened >= 0.19 and breaker.state == "half_open"
    waiting = asyncio.create_task(breaker.admit())  # others wait for the probe's answer
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await breaker.record(True)
    await asyncio.wait_for(waiting, 1)
    assert breaker.state == "closed"


async def test_a_failed_probe_opens_the_breaker_again():
    breaker = Breaker(failures_to_open=1, open_s=0.1, clock=time.monotonic)
    await breaker.record(False)
    await asyncio.wait_for(breaker.admit(), 1)
    assert breaker.state == "half_open"
    await breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(breaker.admit(), 0.05)  # open again: a send waits
