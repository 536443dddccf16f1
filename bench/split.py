"""Wave 1's shape, kept for T1's before/after: the gateway in this process, one conversation
host actor behind it (the Python API's :class:`~parlour.runtime.Runtime`, as an embedding
application runs it), on the same settings ``parlour serve`` reads.

    python -m bench.split --config FILE --data-dir DIR --port PORT [--store URL]

It deploys the config's flows, listens on ``127.0.0.1:PORT`` until SIGTERM, then stops as
``parlour serve`` did before node servers: the gateway drains, the host commits, Ray stops.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from parlour.channels.registry import Bots, Cipher
from parlour.config import Settings, hash_token, load_settings
from parlour.gateway.app import Gateway
from parlour.runtime import Runtime
from parlour.serve import admin_token, check_flows, host_config, private_data_dir, secrets_key, tenant_flows
from parlour.store import open_store
from parlour.vault import Vault


async def main(settings: Settings) -> None:
    private_data_dir(settings.data_dir)
    token, _ = admin_token(settings)
    key, _ = secrets_key(settings)
    loaded = check_flows(tenant_flows(settings))
    runtime = await Runtime.start(store=settings.store_url, hosts=1, partitions=settings.partitions, secrets_key=key,
                                  config=host_config(settings), name="split", log_level="WARNING")
    for tenant, flows in loaded.items():
        await runtime.deploy(tenant, sorted({str(Path(f.path)) for f in flows}))
    store = open_store(settings.store_url)
    await store.open()
    cipher = Cipher.from_keys(key)
    gateway = Gateway(settings, runtime, store, operator_hash=hash_token(token), bots=Bots(store, cipher),
                      vault=Vault(store, cipher, unseal=False))
    runner = gateway.runner(handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await runtime.stop()
    await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.split")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    given = {"data_dir": args.data_dir, "port": args.port, "log_level": args.log_level,
             **({"store": args.store} if args.store else {})}
    asyncio.run(main(load_settings(args.config, **given)))
