"""The one way the integration tests start Ray: this machine's two cores, as DESIGN.md says.

Every other ``ray.init`` in the test process raises (:func:`refuse`, installed for the whole
session by ``tests/conftest.py``): a unit test that would start Ray by accident, through
``Runtime.start`` or ``parlour.cluster``, fails at once, naming this module, instead of paying
Ray's start-up and leaking a cluster into the tests after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ray

_INIT = ray.init


def refuse(*args, **kwargs):
    raise RuntimeError("this test would start Ray: unit tests run without it; an integration test starts it "
                       "with tests.ray_local.local_ray() (a package or module fixture)")


@contextmanager
def local_ray() -> Iterator[None]:
    _INIT(num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="parlour")
    try:
        yield
    finally:
        ray.shutdown()
