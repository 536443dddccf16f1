"""Checking an uploaded flow in a process of its own, off the gateway's event loop.

Compiling a flow is pure Python (YAML parsing, validation, template compilation): ~60 ms for
the bundled support flow, and an upload also checks the tenant's other current flows with it.
Run on the event loop, ten uploads stalled every tenant's messages; run in a thread, it still
holds the GIL, and the loop, which gives the GIL up at every ``select``, waits up to the switch
interval (5 ms) to get it back at each step of each request. So an upload is checked in one
worker process (``spawn``ed: the gateway's process runs Ray's threads, which ``fork`` must not
copy), which keeps its own compile cache (:mod:`parlour.flow.cache`): a tenant's other flows
are compiled there once, not at every upload. One worker: uploads, whoever sends them, use at
most one core, at a lower priority than the node's turns (``nice`` 10); the admin rate limit
bounds how many wait for it.

The gateway only needs the verdict (:class:`Checked`); each host compiles the flow it serves
itself, once per version (:mod:`parlour.actors.flows`).

>>> compiler = CompilerProcess()
>>> checked = await compiler.check(text, "support.yaml", "support", others=[(source, "faq.yaml")])
>>> checked.version, checked.errors
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from parlour.errors import Problem
from parlour.flow.cache import COMPILED
from parlour.flow.deploy_checks import check_secrets, check_together, gotos_into

from .errors import unavailable


@dataclass(frozen=True, slots=True)
class Checked:
    """An upload's verdict: its version if it compiled, the errors that refuse it, the warnings."""

    version: str | None
    errors: list[Problem]
    warnings: list[Problem]


def check_upload(text: str, path: str, flow_id: str, others: list[tuple[str, str]],
                 tenant: str = "", secrets: tuple[str, ...] | None = None) -> Checked:
    """The flow alone, then with the tenant's other current flows (``(source, path)`` each), and
    against the names of the ``secrets`` ``tenant`` has (when given)."""
    flow, spec, smap, problems = COMPILED.compile(text, path)
    errors = [p for p in problems if p.severity == "error"]
    if spec is not None and spec.flow != flow_id:
        errors.append(smap.problem(("flow",), f"the flow is {spec.flow!r} but was uploaded as {flow_id!r}"))
    if not errors and spec is not None:
        together = [(other, other_map) for _, other, other_map, _ in (COMPILED.compile(*o) for o in others)
                    if other is not None]
        errors = [p for p in check_together([*together, (spec, smap)]) if p.path == path and p.severity == "error"]
        if secrets is not None:
            errors += check_secrets(spec, smap, secrets, tenant)
    return Checked(flow.version if flow is not None and not errors else None, errors,
                   [p for p in problems if p.severity != "error"])


def check_removal(flow_id: str, others: list[tuple[str, str]]) -> list[Problem]:
    """What in the tenant's other current flows (``(source, path)`` each) goes to ``flow_id``."""
    compiled = (COMPILED.compile(*other) for other in others)
    return gotos_into(flow_id, [(spec, smap) for _, spec, smap, _ in compiled if spec is not None])


NICE = 10
"""The worker's niceness: on a busy node, the turns of every tenant come before an upload."""


def _yield_to_messages() -> None:
    os.nice(NICE)


class CompilerProcess:
    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker (on the first upload: it takes a second to import parlour, which a
        node that is never sent a flow need not spend)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_yield_to_messages)
            self._pool.submit(len, "")

    async def check(self, text: str, path: str, flow_id: str, others: list[tuple[str, str]],
                    tenant: str = "", secrets: tuple[str, ...] | None = None) -> Checked:
        """:func:`check_upload` in the worker (started again if it died)."""
        return await self._run(check_upload, text, path, flow_id, others, tenant, secrets)

    async def removal(self, flow_id: str, others: list[tuple[str, str]]) -> list[Problem]:
        """:func:`check_removal` in the worker."""
        return await self._run(check_removal, flow_id, others)

    async def _run(self, function, *args):
        self.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        except BrokenProcessPool:
            self._pool = None  # it died (killed, out of memory): the next upload starts another
            raise unavailable("the flow compiler stopped while checking this flow; send it again",
                              code="compiler_unavailable") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
