"""The one way the integration tests start Ray: this machine's two cores, as DESIGN.md says."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ray


@contextmanager
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="parlour")
    try:
        yield
    finally:
        ray.shutdown()
