"""``parlour serve``: the composition root that puts a node together.

1. settings (defaults, YAML file, ``PARLOUR_*``, options) and logging;
2. every tenant's flows checked before anything starts (``file:line:column`` on error), a
   ``{secret: NAME}`` included against the secrets its tenant has;
3. the node's port reserved (bound with ``SO_REUSEPORT``: :func:`reserve_port`);
4. Ray, the router, the delivery supervisor and the node servers, one per core by default
   (:class:`~parlour.runtime.Runtime` with :class:`~parlour.cluster.node_server.Serving`): each
   is a conversation host with the gateway in its process, listening on the node's port; then
   the flows of each tenant whose versions the registry does not hold yet;
5. this process, the driver, waits for SIGTERM or SIGINT;
6. then every node server drains, in order: stop accepting, let requests in flight finish
   (their turns commit and are answered), close chat sockets, commit the batch in hand; then
   Ray stops if this process started it. Exit status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import SecretStr

from .actors.dedicated import DedicatedCaps
from .actors.host import HostConfig
from .actors.tickets import TicketPolicy
from .channels.registry import Cipher
from .cluster.node_server import Serving
from .config import Settings, hash_token, new_token, scope_node_values
from .errors import FlowError, Problem
from .flow import Flow
from .flows_dir import bundled_flows
from .logs import setup_logging
from .publish import Draft, check_files, publish, write_to
from .runtime import Runtime
from .store import Store, open_store
from .vault import saved_names

log = logging.getLogger("parlour.serve")

TOKEN_FILE = "admin-token"
SECRETS_KEY_FILE = "secrets-key"


def admin_token(settings: Settings) -> tuple[str, str]:
    """The operator's token and where it comes from."""
    return kept_secret(settings.admin_token, "PARLOUR_ADMIN_TOKEN", settings.data_dir / TOKEN_FILE, new_token)


def secrets_key(settings: Settings) -> tuple[str, str]:
    """The key(s) that encrypt channel credentials, and where they come from. A cluster's
    nodes must share one: set PARLOUR_SECRETS_KEY on each."""
    return kept_secret(settings.secrets_key, "PARLOUR_SECRETS_KEY", settings.data_dir / SECRETS_KEY_FILE,
                       Cipher.new_key)


def kept_secret(given: SecretStr | None, variable: str, path: Path, make: Callable[[], str]) -> tuple[str, str]:
    """A secret from the environment, or from a file in the data folder, created with mode
    0600 on first start; refused if others can read that file."""
    if given is not None:
        return given.get_secret_value(), f"the {variable} environment variable"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise SystemExit(f"parlour: {path} can be read by others: chmod 600 it "
                             "(or delete it for a new one)") from None
        return path.read_text().strip(), f"the file {path}"
    value = make()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value, f"the file {path} (new)"


def private_data_dir(folder: Path) -> None:
    """Make ``folder`` its owner's only: created 0700; if it was made beforehand open to others
    (a 0755 ``mkdir``), made 0700, and the SQLite files in it 0600, each with a log line.
    Refuses to start when it cannot (the folder is someone else's)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (folder, *sorted(folder.glob("parlour.db*"))):
        mode = path.stat().st_mode & 0o777
        private = 0o700 if path.is_dir() else 0o600
        if mode & 0o077:
            try:
                path.chmod(private)
            except PermissionError:
                raise SystemExit(f"parlour: {path} can be read by others (mode {mode:o}) and is not this user's "
                                 f"to change: chmod {private:o} it") from None
            log.warning("%s could be read by others (mode %o): it is now %o", path, mode, private)


def tenant_flows(settings: Settings) -> dict[str, list[Path]]:
    default = [settings.flows or bundled_flows()]
    return {name: tenant.flows if tenant.flows is not None else default for name, tenant in settings.tenants.items()}


def check_flows(flows: dict[str, list[Path]], secrets: dict[str, set[str]] | None = None,
                env: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list[Flow]]:
    """Every tenant's flows, loaded; :class:`FlowError` listing every problem of any, a secret
    its tenant does not have (in ``secrets``, tenant -> names) included. The bundled flows are
    the exception: they are demos whose calls fail into their ``on_error`` nodes until the
    operator gives them what they name, so a missing secret of theirs is only a warning. An
    ``env.NAME`` a flow reads that its tenant's ``env`` lacks is logged as a warning, with its
    place: the template fails when it runs, which may be a branch the flow never takes."""
    loaded: dict[str, list[Flow]] = {}
    problems: list[Problem] = []
    for tenant, paths in flows.items():
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise SystemExit(f"parlour: tenant {tenant!r}: no such flows folder or file: "
                             f"{', '.join(map(str, missing))}")
        severity = "warning" if list(paths) == [bundled_flows()] else "error"
        checked = check_files(tenant, paths, (env or {}).get(tenant, {}), secrets=(secrets or {}).get(tenant, ()),
                              secrets_severity=severity)
        for warning in checked.warnings:
            log.warning("%s", warning)
        problems += checked.errors
        loaded[tenant] = checked.flows
    if problems:
        raise FlowError(problems)
    return loaded


def dedicated_caps(settings: Settings) -> DedicatedCaps:
    """The node's dedicated caps (each host takes its share: :meth:`DedicatedCaps.share`)."""
    config = settings.dedicated
    return DedicatedCaps(max_actors=config.max_per_node, max_per_tenant=config.max_per_tenant,
                         per_tenant={name: t.max_dedicated for name, t in settings.tenants.items()
                                     if t.max_dedicated is not None},
                         idle_s=config.idle_s)


def tenant_values(settings: Settings) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Each tenant's env and secrets from the config (tenant -> name -> value)."""
    env = {name: dict(t.env) for name, t in settings.tenants.items() if t.env}
    secrets = {name: {k: v.get_secret_value() for k, v in t.secrets.items()}
               for name, t in settings.tenants.items() if t.secrets}
    return env, secrets


def check_webhooks(settings: Settings, secrets: dict[str, set[str]]) -> None:
    """Refuse to start when a tenant's hand-off webhook names a secret the tenant does not have:
    every event would go to the dead letters unsent (as a flow naming a missing secret is refused)."""
    missing = [f"tenants.{tenant}.handoff_webhook.secret: tenant {tenant!r} has no secret {secret!r} (set it in "
               f"tenants.{tenant}.secrets or with PUT /v1/{tenant}/secrets/{secret})"
               for tenant, (_, secret) in sorted(settings.handoff_webhooks().items())
               if secret not in secrets.get(tenant, set())]
    if missing:
        raise SystemExit("parlour: " + "\n".join(missing))


async def deploy_new(store: Store, loaded: dict[str, list[Flow]]) -> int:
    """Put each flow version the registry does not hold yet in it, as current, before any
    node server starts (each reads the registry when it starts, so none serves a message
    before the flows are there); how many. A version it holds is left as the registry has it,
    so that a restart does not undo an upload or a rollback made with the admin API."""
    drafts = [Draft.of(tenant, flow) for tenant, flows in loaded.items() for flow in flows]
    published = await publish(drafts, write_to(store), now=time.time(), held=await store.flows(), keep_held=True)
    return sum(1 for p in published if p.change == "added")


async def known_secrets(store: Store, secrets: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """The names of each tenant's secrets: the config's, and those already set through the API."""
    names = await saved_names(store)
    return {tenant: names.get(tenant, set()) | set(secrets.get(tenant, {})) for tenant in {*names, *secrets}}


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> int:
    settings = scope_node_values(settings)
    private_data_dir(settings.data_dir)
    token, token_source = admin_token(settings)
    key, _ = secrets_key(settings)
    env, secrets = tenant_values(settings)
    store = open_store(settings.store_url)  # the driver's reads and writes before anything serves
    await store.open()
    try:
        names = await known_secrets(store, secrets)
        check_webhooks(settings, names)
        loaded = check_flows(tenant_flows(settings), names, env)
        installed = await deploy_new(store, loaded)
    finally:
        await store.aclose()
    stop = asyncio.Event()
    servers = settings.server_count()
    port = reserve_port(settings.host, settings.port)
    bound = port.getsockname()[1]
    print(f"parlour: starting Ray and {servers} node server(s) on {settings.store_url}", file=sys.stderr, flush=True)
    runtime = None
    try:
        runtime = await Runtime.start(
            store=settings.store_url, hosts=servers, partitions=settings.partitions, address=settings.ray_address,
            num_cpus=settings.num_cpus, env=env, secrets=secrets, log_level=settings.log_level,
            log_format=settings.log_format, secrets_key=key, config=host_config(settings),
            egress=settings.egress_allows(), webhooks=settings.handoff_webhooks(), ready_timeout_s=120.0,
            serving=Serving(settings.model_copy(update={"port": bound, "admin_token": None}), hash_token(token), key,
                            bound))
        # After Ray: its core worker installs a C-level SIGTERM handler that prints a stack and
        # kills the process; ours must be the one installed last.
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        if installed:
            await runtime.install([])  # node servers that were running already read the registry again
        base = settings.public_url or f"http://{settings.host}:{bound}"
        _announce(settings, base, token_source, installed)
        if ready is not None:
            ready.set()
        await stop.wait()
        print("parlour: stopping: every node server finishes the requests in flight", file=sys.stderr, flush=True)
    finally:
        if runtime is not None:
            await runtime.stop(timeout_s=settings.shutdown_timeout_s + 10)
        port.close()
    print("parlour: stopped", file=sys.stderr, flush=True)
    return 0


def reserve_port(host: str, port: int) -> socket.socket:
    """The node's port, bound (``SO_REUSEPORT``, not listening) for as long as the driver runs:
    the node servers bind it too and listen, so that the kernel spreads connections over them,
    and a server restarted by Ray binds it again while the others keep accepting. With port 0,
    the port the system picked. ``SystemExit`` if another program holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"parlour: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def host_config(settings: Settings) -> HostConfig:
    limits = settings.limits
    return HostConfig(watchdog_s=limits.turn_watchdog_s, poison_tries=limits.poison_tries,
                      mailbox_ttl_s=limits.mailbox_ttl_s, transcript_ttl_s=limits.transcript_ttl_s,
                      tickets=TicketPolicy(closed_ttl_s=limits.closed_ticket_ttl_s), dedicated=dedicated_caps(settings))


def _announce(settings: Settings, base: str, token_source: str, installed: int) -> None:
    lines = [f"parlour: serving on {base} ({installed} new flow version(s) deployed)"]
    for name, tenant in sorted(settings.tenants.items()):
        if "web" in tenant.channels:
            lines.append(f"parlour: chat with tenant {name!r} at {base}/chat/{name}")
    lines.append(f"parlour: the admin token is in {token_source}")
    lines.append(f"parlour: the API is described at {base}/openapi.json; stop with Ctrl-C")
    print("\n".join(lines), file=sys.stderr, flush=True)


def run(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(settings))
    except FlowError as exc:
        print(f"parlour: the flows have errors, nothing was started:\n{exc}", file=sys.stderr)
        return 1
