"""One time budget for every author regex a message is searched with (issue 12, finding 6).

A flow's ``regex`` triggers and ``validate: {regex: ...}`` are patterns its author wrote, run
with the ``regex`` module on text a chat user wrote. A pattern that backtracks badly
(``^(a+)+$`` on 4,000 ``a`` and a ``!``) must not stall a host, and 100 of them must not stall
it 100 times as long: the searches of one message share one deadline, :data:`REGEX_BUDGET_S`
after the first. Each search gets what is left as its ``timeout``, and at most
:data:`REGEX_SEARCH_MAX_S`: ``regex`` measures its timeout in CPU time, which a busy machine
stretches in wall time, so that a search may overrun the deadline by a bounded slice only.
Once nothing is left, the searches still to run are not run. A trigger that runs out does not match (the message goes on
to the next rule: another trigger, the default flow); a ``validate`` that runs out is a flow
error. Each search that ran out is counted (:func:`overruns`, the host's
``parlour_host_regex_overruns_total``) and logged at most once a minute.

>>> budget = RegexBudget()
>>> budget.search(regex.compile("^h"), "hello") is not None
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import regex

log = logging.getLogger("parlour.flow")

REGEX_BUDGET_S = 0.1
"""What every author regex searching one message may take together (some 10,000 times what an
ordinary pattern takes on a chat message)."""
REGEX_SEARCH_MAX_S = REGEX_BUDGET_S / 4
"""The most one search may take (an ordinary pattern takes microseconds on a chat message)."""
_WARN_EVERY_S = 60.0


class RegexTimeout(TimeoutError):
    """A search ran out of the message's regex budget."""


class _Overruns:
    """The searches that ran out, process-wide (read by the host for ``/metrics``)."""

    def __init__(self) -> None:
        self.count = 0
        self.warned_at = -_WARN_EVERY_S
        self._lock = threading.Lock()

    def add(self, budget_s: float) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if now - self.warned_at < _WARN_EVERY_S:
                return
            self.warned_at = now
        log.warning("a message's regex searches ran out of their %g s budget: the rest did not run "
                    "(%d such searches so far)", budget_s, self.count)


_overruns = _Overruns()


def overruns() -> int:
    """How many searches ran out of their message's budget in this process."""
    return _overruns.count


class RegexBudget:
    """The deadline of one message's regex searches; :meth:`search` raises
    :class:`RegexTimeout` once it is spent."""

    __slots__ = ("budget_s", "search_max_s", "deadline", "clock")

    def __init__(self, budget_s: float = REGEX_BUDGET_S, clock: Callable[[], float] = time.monotonic,
                 search_max_s: float = REGEX_SEARCH_MAX_S):
        self.budget_s, self.search_max_s, self.clock = budget_s, search_max_s, clock
        self.deadline = clock() + budget_s

    def search(self, pattern: regex.Pattern, text: str) -> regex.Match | None:
        left = self.deadline - self.clock()
        if left <= 0:
            _overruns.add(self.budget_s)
            raise RegexTimeout(f"the message's regex budget of {self.budget_s:g} s is spent")
        try:
            return pattern.search(text, timeout=min(left, self.search_max_s))
        except TimeoutError:
            _overruns.add(self.budget_s)
            raise RegexTimeout(f"a regex search ran out of the message's budget of {self.budget_s:g} s") from None
