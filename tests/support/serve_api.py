"""Run the API server in its own process (for latency measurements that must not share a GIL
with the load generator): `python -m tests.support.serve_api WORKDIR [STORE_URL]`.
Prints `READY <port>` once it listens; stops on SIGTERM/SIGINT. STORE_URL: `memory` (default)
or `sqlite:///path/state.db`."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from hypernetes.api.authn import ADMIN, TokenAuthenticator
from hypernetes.api.authz import AllowAll
from hypernetes.api.server import bound_port, create_app, serve
from hypernetes.auth.ca import ensure_ca
from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.memstore import MemoryStore


async def main(workdir: Path, store_url: str) -> None:
    ca = ensure_ca(workdir / "pki")
    store: Store = MemoryStore() if store_url == "memory" else open_store(store_url)
    app = create_app(store, authenticator=TokenAuthenticator({ca.admin_token: ADMIN}),
                     authorizer=AllowAll(), pod_proxy=None)
    runner = await serve(app, "127.0.0.1", 0, ca.server)
    print(f"READY {bound_port(runner)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "memory"))
