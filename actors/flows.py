"""The flows a host runs: every version in the store's registry, compiled once, per tenant.

Each tenant's catalog gets that tenant's ``env`` and no other's (``{{ env }}`` in a flow of
``alpha`` shows ``alpha``'s values only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from parlour.errors import FlowError
from parlour.flow import Catalog, Flow, load_text
from parlour.store import FlowRecord, Store

log = logging.getLogger("parlour.flows")


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
        self.records = await self.store.flows()
        return self.install(self.records)

    def install(self, records: list[FlowRecord]) -> int:
        """Serve ``records``, compiling only the versions not seen before."""
        records = sorted(records, key=lambda r: (r.created_at, r.version))
        catalogs: dict[str, Catalog] = {}
        for record in records:
            name = (record.tenant, record.flow, record.version)
            flow = self._compiled.get(name)
            if flow is None:
                try:
                    flow = self._compiled[name] = load_text(record.source, record.path)
                except FlowError as exc:  # the registry only holds valid flows; a newer parlour may differ
                    log.error("flow %s/%s@%s does not load: %s", *name, exc)
                    continue
            if record.tenant not in catalogs:
                catalogs[record.tenant] = Catalog(env=self.env.get(record.tenant))
            catalogs[record.tenant].add(flow, make_current=record.current)
        self._catalogs = catalogs
        return sum(1 for _ in records)

    def catalog(self, tenant: str) -> Catalog:
        return self._catalogs.get(tenant, self._empty)
