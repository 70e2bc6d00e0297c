"""Run the API server in its own process (for latency measurements that must not share a GIL
with the load generator): `python -m tests.support.serve_api WORKDIR [STORE_URL] [--tenancy]`.
Prints `READY <port>` once it listens; stops on SIGTERM/SIGINT. STORE_URL: `memory` (default)
or `sqlite:///path/state.db`. `--tenancy`: the multi-tenant server `hypernetes up` runs (tenant
authenticator, authorizer, admission, identity endpoints, audit log), else the admin alone."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from hypernetes.api.audit import AuditLog
from hypernetes.api.authn import ADMIN, TokenAuthenticator
from hypernetes.api.authz import AllowAll
from hypernetes.api.server import bound_port, create_app, serve
from hypernetes.api.tenancy import build_tenancy
from hypernetes.auth.ca import ensure_ca
from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.memstore import MemoryStore


async def main(workdir: Path, store_url: str, tenancy: bool = False) -> None:
    ca = ensure_ca(workdir / "pki")
    store: Store = MemoryStore() if store_url == "memory" else open_store(store_url)
    if tenancy:
        tenants, authenticator = build_tenancy(store, ca.dir, ca.admin_token)
        app = create_app(
            store,
            authenticator=authenticator,
            authorizer=tenants.authorizer,
            pod_proxy=None,
            tenancy=tenants,
            audit=AuditLog(workdir / "audit.log"),
        )
    else:
        app = create_app(
            store,
            authenticator=TokenAuthenticator({ca.admin_token: ADMIN}),
            authorizer=AllowAll(),
            pod_proxy=None,
        )
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
    args = [a for a in sys.argv[1:] if a != "--tenancy"]
    asyncio.run(main(Path(args[0]), args[1] if len(args) > 1 else "memory", "--tenancy" in sys.argv))
