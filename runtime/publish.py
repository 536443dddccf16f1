"""Publishing flow versions: the one place that decides what a publication is.

Three callers publish: the Python API (:meth:`parlour.runtime.Runtime.deploy`, a tenant's flows
from files), ``parlour serve`` as it starts (:func:`parlour.serve.serve`, every tenant's flows
from the config) and the admin API's upload (:mod:`parlour.gateway.admin`, one flow's text,
checked in the gateway's compiler process). Each finds its flows and their problems its own
way (:func:`check_files` for files); :func:`publish` then decides the rest, the same for all:

- one error refuses the whole publication: :class:`~parlour.errors.FlowError` with every
  error, nothing written; warnings do not stop it;
- each flow version becomes a :class:`~parlour.store.FlowRecord`, current (new conversations
  start on it; those in progress stay on theirs), created now, or when the registry first held
  it (a version is the flow's own label, or a hash of its source);
- a version the registry holds and serves already is ``unchanged``; one it holds but does not
  serve (rolled back from) is made current again; at start-up (``keep_held``) a held version
  is left as the registry has it, so that a restart undoes no upload or rollback made since;
- the records are written in one call: to the store itself before any host runs
  (:func:`write_to`), or through the hosts, each of which writes them and reads the registry
  again (:meth:`parlour.runtime.Runtime.install`).

What stays with each caller: how problems are shown (the CLI's text, the API's 422), where the
warnings go, and telling hosts already running to read the registry again.

>>> published = await publish([Draft.of("demo", flow)], runtime.install, now=time.time())
>>> [(p.record.version, p.change) for p in published]
[('3f2a9c0d11be', 'added')]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .errors import FlowError, Problem
from .flow import Flow, load_paths
from .flow.deploy_checks import check_env, check_secrets
from .store import FlowRecord, Store

Change = Literal["added", "made_current", "unchanged", "kept"]
"""What a publication did to one version: ``added`` (the registry did not hold it),
``made_current`` (held, not current before), ``unchanged`` (held and current already; written
again all the same), ``kept`` (held, left as it was: not written)."""

Write = Callable[[list[FlowRecord]], Awaitable[None]]
"""Puts flow records in the registry (:meth:`parlour.store.Store.put_flow` is idempotent)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A flow version to publish for a tenant, found valid by its caller's checks."""

    tenant: str
    flow: str
    version: str
    source: str
    path: str

    @classmethod
    def of(cls, tenant: str, flow: Flow) -> Draft:
        return cls(tenant, flow.id, flow.version, flow.source, flow.path)

    def record(self, created_at: float) -> FlowRecord:
        return FlowRecord(self.tenant, self.flow, self.version, self.source, self.path, created_at, True)


@dataclass(frozen=True, slots=True)
class Published:
    """One version of a publication: its record as the registry holds it now, and the change."""

    record: FlowRecord
    change: Change

    @property
    def written(self) -> bool:
        return self.change != "kept"


@dataclass(frozen=True, slots=True)
class Checked:
    """A tenant's flows loaded from files: those that loaded, the errors that refuse them all,
    and the warnings about the tenant's env and secrets (a flow's own warnings are not here:
    ``parlour flows validate`` shows those)."""

    flows: list[Flow]
    errors: list[Problem]
    warnings: list[Problem]


def check_files(tenant: str, paths: Iterable[str | Path], env: Mapping[str, str], *,
                secrets: Iterable[str] | None = None, secrets_severity: str = "error") -> Checked:
    """Load the flows under ``paths`` together and check them against ``tenant``'s ``env``
    (an ``env.NAME`` it lacks is a warning: the template fails only when it runs) and, when
    given, the names of its ``secrets`` (a ``{secret: NAME}`` it lacks is a problem of
    ``secrets_severity``)."""
    loaded = load_paths(paths)
    found = [p for spec, smap in loaded.specs if secrets is not None
             for p in check_secrets(spec, smap, secrets, tenant, severity=secrets_severity)]
    found += [p for flow in loaded.flows for p in check_env(flow, env, tenant)]
    return Checked(loaded.flows, loaded.errors + [p for p in found if p.severity == "error"],
                   [p for p in found if p.severity != "error"])


async def publish(drafts: Sequence[Draft], write: Write, *, now: float, problems: Iterable[Problem] = (),
                  held: Iterable[FlowRecord] = (), keep_held: bool = False) -> list[Published]:
    """Make ``drafts`` current, in one ``write``; what became of each, in order.

    :class:`FlowError` (nothing written) if ``problems`` has an error. ``held`` is what the
    caller read of the registry (any tenant's, any flow's), or nothing when it cannot read it
    (the Python API's driver, whose ``memory://`` store lives in its host): each version is then
    ``added``, and the store keeps a held version's ``created_at`` all the same."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise FlowError(errors)
    registry = {(r.tenant, r.flow, r.version): r for r in held}
    published = [_decide(d, registry.get((d.tenant, d.flow, d.version)), now, keep_held) for d in drafts]
    await write([p.record for p in published if p.written])
    return published


def _decide(draft: Draft, held: FlowRecord | None, now: float, keep_held: bool) -> Published:
    if held is None:
        return Published(draft.record(now), "added")
    if keep_held:
        return Published(held, "kept")
    return Published(replace(held, current=True), "unchanged" if held.current else "made_current")


def write_to(store: Store) -> Write:
    """A :data:`Write` straight into ``store`` (before any host runs: none is told)."""
    async def write(records: list[FlowRecord]) -> None:
        for record in records:
            await store.put_flow(record)
    return write
