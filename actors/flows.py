"""The flows a host runs: every version in the store's registry, compiled once, per tenant.

A new version compiles in a thread (:meth:`Flows.reload`), so that a tenant's upload does not
hold the host's event loop, and with it every tenant's turns, for the compile's time; a source
compiled before (the same text uploaded again, or by another tenant) is not compiled again
(:mod:`parlour.flow.cache`).

Each tenant's catalog gets that tenant's ``env`` and no other's (``{{ env }}`` in a flow of
``alpha`` shows ``alpha``'s values only).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping

from parlour.errors import FlowError
from parlour.flow import Catalog, Flow
from parlour.flow.cache import COMPILED
from parlour.store import FlowRecord, Store

log = logging.getLogger("parlour.flows")

SWITCH_S = 0.0005
"""The GIL switch interval while a compile runs in its thread: the event loop, which gives the
GIL up at every ``select``, waits this long (not the default 5 ms) to get it back."""


class Flows:
    def __init__(self, store: Store | None, env: Mapping[str, Mapping[str, str]] | None = None):
        """``env``: each tenant's values, by tenant."""
        self.store = store
        self.env = {tenant: dict(values) for tenant, values in (env or {}).items()}
        self._compiled: dict[tuple[str, str, str], Flow] = {}
        self._catalogs: dict[str, Catalog] = {}
        self._empty = Catalog()
        self.records: list[FlowRecord] = []

    async def reload(self) -> int:
        """Read the registry again; how many flow versions it holds."""
        if self.store is None:
            raise RuntimeError("these flows have no registry to read: they are installed (Flows.install)")
        records = await self.store.flows()
        if any((r.tenant, r.flow, r.version) not in self._compiled for r in records):
            before = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_S)
            try:
                await asyncio.to_thread(self._compile, records)
            finally:
                sys.setswitchinterval(before)
        self.records = records
        return self.install(records)

    def install(self, records: list[FlowRecord]) -> int:
        """Serve ``records``, compiling only the versions not seen before."""
        records = sorted(records, key=lambda r: (r.created_at, r.version))
        catalogs: dict[str, Catalog] = {}
        for record in records:
            name = (record.tenant, record.flow, record.version)
            flow = self._compiled.get(name)
            if flow is None:
                try:
                    flow = self._compiled[name] = _load(record)
                except FlowError as exc:  # the registry only holds valid flows; a newer parlour may differ
                    log.error("flow %s/%s@%s does not load: %s", *name, exc)
                    continue
            if record.tenant not in catalogs:
                catalogs[record.tenant] = Catalog(env=self.env.get(record.tenant), tenant=record.tenant)
            catalogs[record.tenant].add(flow, make_current=record.current)
        self._catalogs = catalogs
        return sum(1 for _ in records)

    def _compile(self, records: list[FlowRecord]) -> None:
        """Compile the versions not seen before into the cache (CPU only: run in a thread)."""
        for record in records:
            if (record.tenant, record.flow, record.version) not in self._compiled:
                COMPILED.compile(record.source, record.path)

    def catalog(self, tenant: str) -> Catalog:
        return self._catalogs.get(tenant, self._empty)


def _load(record: FlowRecord) -> Flow:
    flow, _, _, problems = COMPILED.compile(record.source, record.path)
    errors = [p for p in problems if p.severity == "error"]
    if errors or flow is None:
        raise FlowError(errors)
    return flow
