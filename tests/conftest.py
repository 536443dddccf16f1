"""Shared helpers for the unit tests of the pure core: build a flow from text, and talk to it.

Test modules import these directly (``from tests.conftest import Convo, flow``); time is always a
parameter, never the wall clock.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

from parlour.flow import Catalog, Flow, Turn, UserMessage, advance, load_text

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
"""The moment every conversation starts at, unless a test says otherwise: a Sunday noon, UTC."""


def flow(text: str, path: str = "<flow>") -> Flow:
    """Load a flow written inline (indented freely) with the real loader."""
    return load_text(textwrap.dedent(text).lstrip("\n"), path)


def of(turn: Turn, kind: type) -> list:
    """The effects of ``kind`` in ``turn``, in order."""
    return [e for e in turn.effects if isinstance(e, kind)]


REMINDER = textwrap.dedent("""\
    flow: remind
    triggers: [{default: true}]
    start: first
    nodes:
      first: {say: "See you in an hour.", wait: 1h, next: later}
      later: {say: "It has been an hour.", end: true}
""")
"""A flow whose one timer fires an hour after the first message."""


class Convo:
    """One conversation: keeps the state between turns; ``now`` moves only when a test moves it.

    >>> c = Convo(flow(TEXT))
    >>> c.send("hi")
    ['Hello!']
    >>> c.now += 3600   # an hour later
    """

    def __init__(self, flows: Flow | Catalog, now: float = T0, state=None):
        self.flows = flows
        self.now = now
        self.state = state
        self.turn: Turn | None = None

    def event(self, event) -> Turn:
        self.turn = advance(self.flows, self.state, event, self.now)
        self.state = self.turn.state
        return self.turn

    def send(self, text: str = "", button: str | None = None, **fields) -> list[str | None]:
        """Send a user message; the texts of the replies."""
        return [r.text for r in self.event(UserMessage(text, button=button, **fields)).replies]

    def effects(self, kind: type) -> list:
        return of(self.turn, kind)


# ---------------------------------------------------------------- real services for integration tests

import pytest  # noqa: E402
import ray  # noqa: E402

from tests.ray_local import refuse  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def ray_only_through_local_ray():
    """``ray.init`` raises for the whole session, except inside ``tests.ray_local.local_ray()``."""
    patch = pytest.MonkeyPatch()
    patch.setattr(ray, "init", refuse)
    yield
    patch.undo()

from tests.redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (AOF on), on a free port."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
