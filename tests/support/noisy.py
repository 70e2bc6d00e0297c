"""A quiet tenant next to a hostile one, against the multi-tenant API server in a process of its
own, on SQLite as `hypernetes up` (issue 12): used by tests/test_api_fairness.py (short) and
bench/noisy_neighbour.py (long).

    python -m tests.support.noisy serve WORKDIR [--no-fairness]     # the server; prints READY <port>
    python -m tests.support.noisy hostile URL TOKEN CA NS [--clients 64 --watches 300 --seconds 10]

The hostile tenant works from its own address (127.0.0.2), as a tenant on another host would: it
opens `--watches` watches and runs `--clients` callers that list and create configmaps in a closed
loop, ignoring Retry-After. The quiet tenant (from 127.0.0.1) sends one request at a time: get,
list and merge-patch of its configmaps; its latencies are what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hypernetes.api.client import ApiClient
from hypernetes.apiclient import ApiException
from tests.support.apiload import percentile

ROOT = Path(__file__).resolve().parents[2]
GROUP_V = "hypernetes.io/v1"
TENANT_LABEL = "hypernetes.io/tenant"
HOSTILE_ADDRESS = "127.0.0.2"


@dataclass(frozen=True)
class World:
    url: str
    ca: Path
    pid: int
    tokens: dict[str, str]  # tenant -> its user's token
    namespace: dict[str, str]  # tenant -> its namespace


# -- the server ----------------------------------------------------------------------------------


async def _serve(workdir: Path, fairness: bool, overrides: dict[str, Any]) -> None:
    from hypernetes.api.audit import AuditLog
    from hypernetes.api.fairness import FairnessConfig
    from hypernetes.api.server import bound_port, create_app, serve
    from hypernetes.api.tenancy import build_tenancy
    from hypernetes.auth.ca import ensure_ca
    from hypernetes.store import open_store

    ca = ensure_ca(workdir / "pki")
    # SQLite, as `hypernetes up` (a memory store keeps all history in the heap: longer GC pauses)
    store = open_store(f"sqlite:///{workdir}/state.db")
    tenants, authenticator = build_tenancy(store, ca.dir, ca.admin_token)
    # without fairness: every limit out of reach, as the server was before issue 12
    cfg = (
        FairnessConfig(**overrides)
        if fairness
        else FairnessConfig(
            system_seats=100_000,
            workload_seats=100_000,
            global_seats=100_000,
            max_watches=100_000,
            max_long_running=100_000,
            reject_delay=0,
            time_share=False,
        )
    )
    app = create_app(
        store,
        authenticator=authenticator,
        authorizer=tenants.authorizer,
        pod_proxy=None,
        tenancy=tenants,
        audit=AuditLog(workdir / "audit.log"),
        fairness=cfg,
    )
    runner = await serve(app, "127.0.0.1", 0, ca.server)
    print(f"READY {bound_port(runner)}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await store.close()


@contextlib.contextmanager
def server(
    workdir: Path, *, fairness: bool = True, overrides: dict[str, Any] | None = None
) -> Iterator[tuple[str, str, Path, int]]:
    """(url, admin token, CA file, pid) of the multi-tenant server in a child process;
    `overrides`: FairnessConfig fields."""
    cmd = [
        sys.executable,
        "-m",
        "tests.support.noisy",
        "serve",
        str(workdir),
        "--config",
        json.dumps(overrides or {}),
    ]
    proc = subprocess.Popen(
        cmd + ([] if fairness else ["--no-fairness"]),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"API server did not start: {line!r}")
        try:
            token = (workdir / "pki" / "admin.token").read_text().strip()
            yield f"https://127.0.0.1:{line.split()[1]}", token, workdir / "pki" / "ca.crt", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


async def populate(
    url: str, admin_token: str, ca: Path, *, seeds: int = 50
) -> tuple[dict[str, str], dict[str, str]]:
    """Tenants `quiet` and `noisy`, a namespace and an admin user each, `seeds` configmaps in each
    namespace: (tokens, namespaces) by tenant."""
    tokens, namespaces = {}, {}
    async with ApiClient(url, token=admin_token, ca_file=ca) as c:
        for tenant in ("quiet", "noisy"):
            await c.create(
                GROUP_V,
                "tenants",
                {"apiVersion": GROUP_V, "kind": "Tenant", "metadata": {"name": tenant}, "spec": {}},
            )
            ns = namespaces[tenant] = f"{tenant}-ns"
            await c.create("v1", "namespaces", {"metadata": {"name": ns, "labels": {TENANT_LABEL: tenant}}})
            await c.create(
                GROUP_V,
                "users",
                {
                    "apiVersion": GROUP_V,
                    "kind": "User",
                    "metadata": {"name": f"{tenant}-user"},
                    "spec": {"tenant": tenant, "role": "admin"},
                },
            )
            asked = {"user": f"{tenant}-user", "expirationSeconds": 3600}
            tokens[tenant] = str((await c.request("POST", "/hypernetes/v1/tokens", asked))["token"])
            for i in range(seeds):
                cm = {"metadata": {"name": f"seed-{i}"}, "data": {"v": "0"}}
                await c.create("v1", "configmaps", cm, ns)
    for tenant, token in tokens.items():  # the directory catches up with the new users
        async with ApiClient(url, token=token, ca_file=ca) as u:
            for _ in range(100):
                try:
                    await u.get("v1", "configmaps", "seed-0", namespaces[tenant])
                    break
                except ApiException:
                    await asyncio.sleep(0.1)
    return tokens, namespaces


# -- the quiet tenant ----------------------------------------------------------------------------


async def quiet(
    url: str, token: str, ca: Path, namespace: str, seconds: float, rate: float = 50.0
) -> dict[str, Any]:
    """For `seconds`, `rate` requests a second, one at a time (a request later than its turn starts
    when the one before ends): get, list, merge patch of the tenant's configmaps. As a person's
    kubectl or a small controller would, not a closed loop that keeps the server busy itself."""
    lat: list[float] = []
    errors: Counter[str] = Counter()
    async with ApiClient(url, token=token, ca_file=ca) as c:
        await c.list("v1", "configmaps", namespace)  # a warm connection
        start = time.monotonic()
        deadline = start + seconds
        i = 0
        while time.monotonic() < deadline:
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            name = f"seed-{random.randrange(50)}"
            t0 = time.monotonic()
            try:
                if i % 4 == 0:
                    await c.list("v1", "configmaps", namespace)
                elif i % 4 == 1:
                    await c.patch("v1", "configmaps", name, {"data": {"v": str(i)}}, namespace)
                else:
                    await c.get("v1", "configmaps", name, namespace)
            except ApiException as e:
                errors[str(e.status)] += 1
                continue
            lat.append(time.monotonic() - t0)

    def ms(x: float) -> float:
        return round(x * 1000, 2)

    return {
        "requests": len(lat),
        "errors": dict(errors),
        "mean_ms": ms(sum(lat) / max(1, len(lat))),
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat, default=0)),
    }


# -- the hostile tenant --------------------------------------------------------------------------


async def hostile(
    url: str, token: str, ca: Path, namespace: str, *, clients: int, watches: int, seconds: float
) -> dict[str, Any]:
    """Watches and a closed-loop request flood from HOSTILE_ADDRESS; what the server answered."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    conn = aiohttp.TCPConnector(ssl=ctx, limit=0, local_addr=(HOSTILE_ADDRESS, 0))
    codes: Counter[str] = Counter()
    watch_codes: Counter[str] = Counter()
    base = f"{url}/api/v1/namespaces/{namespace}/configmaps"
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(
        connector=conn, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        held: list[aiohttp.ClientResponse] = []

        async def watch() -> None:
            try:
                resp = await http.get(base + "?watch=true")
            except aiohttp.ClientError as e:
                watch_codes[type(e).__name__] += 1
                return
            watch_codes[str(resp.status)] += 1
            if resp.status == 200:
                held.append(resp)  # held open, never read: a slow client
            else:
                resp.release()

        async def flood(k: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                try:
                    if n % 2:
                        async with http.get(base) as r:
                            await r.read()
                    else:
                        obj = {"metadata": {"name": f"h{os.getpid()}-{k}-{n}"}}
                        async with http.post(base, json=obj) as r:
                            await r.read()
                    codes[str(r.status)] += 1
                except (TimeoutError, aiohttp.ClientError) as e:
                    codes[type(e).__name__] += 1

        await asyncio.gather(*(watch() for _ in range(watches)))
        await asyncio.gather(*(flood(k) for k in range(clients)))
        for r in held:
            r.close()
    return {"clients": clients, "seconds": seconds, "responses": dict(codes), "watches": dict(watch_codes)}


@contextlib.contextmanager
def hostile_process(
    url: str, token: str, ca: Path, namespace: str, *, clients: int, watches: int, seconds: float
) -> Iterator[dict[str, Any]]:
    """The hostile tenant in a process of its own (its own CPU and GIL), for `seconds`; the dict
    yielded holds what the server answered it once the block has ended."""
    cmd = [
        sys.executable,
        "-m",
        "tests.support.noisy",
        "hostile",
        url,
        token,
        str(ca),
        namespace,
        "--clients",
        str(clients),
        "--watches",
        str(watches),
        "--seconds",
        str(seconds),
    ]
    result: dict[str, Any] = {}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    ) as proc:
        try:
            yield result
        finally:
            try:
                out, _ = proc.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            lines = out.strip().splitlines()
            if lines:
                result.update(json.loads(lines[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("workdir", type=Path)
    s.add_argument("--no-fairness", action="store_true")
    s.add_argument("--config", default="{}", help="FairnessConfig fields, as JSON")
    h = sub.add_parser("hostile")
    for a in ("url", "token", "ca", "namespace"):
        h.add_argument(a)
    h.add_argument("--clients", type=int, default=64)
    h.add_argument("--watches", type=int, default=300)
    h.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(_serve(args.workdir, not args.no_fairness, json.loads(args.config)))
    else:
        print(
            json.dumps(
                asyncio.run(
                    hostile(
                        args.url,
                        args.token,
                        Path(args.ca),
                        args.namespace,
                        clients=args.clients,
                        watches=args.watches,
                        seconds=args.seconds,
                    )
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
