"""What authorization costs: the API benchmark (bench/api_latency.py) run as the admin and as a tenant
user against one multi-tenant server holding many tenants and namespaces.

One run: the multi-tenant server `hypernetes up` runs (tenant authenticator, authorizer and
admission, audit log) in a process of its own on SQLite; as the admin it creates `--tenants`
tenants, `--namespaces` namespaces spread evenly over them (owned through the
`hypernetes.io/tenant` label), `--pods-per-namespace` pods in each, a member user of the first
tenant and the configmaps the request mix touches in that tenant's first namespace. Then, for the
admin and for the tenant user in turn (ABBA order, repeated, to cancel drift):

- throughput: the single-object mix (50% get, 25% create, 25% merge patch of configmaps) from
  `--clients` concurrent callers in a closed loop, in `--slices` alternating slices of
  `--slice-seconds` (other work on a shared machine comes and goes: short interleaved slices see
  the same machine); requests/s and the server's CPU time per request;
- latency at a fixed `--rate` (open loop), p50/p99;
- `GET /api/v1/pods` across all namespaces (the tenant's is filtered to its own namespaces);
- watch fan-out: one write reaching 100 watchers of the namespace, and of all namespaces;

and in this process, against the same database, the authenticator and authorizer alone per call.
Prints one JSON object per result and a summary with the tenant/admin ratios.

    python bench/authz_cost.py [--tenants 100 --namespaces 1000 --clients 16 --slices 40 --rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypernetes.api.client import ApiClient, ApiException
from tests.support.apiload import (
    ServerProcess,
    closed_loop,
    list_latency,
    request_latency,
    seed_configmaps,
    tenant_server_process,
    watch_fanout,
)

GROUP_V = "hypernetes.io/v1"
TENANT_LABEL = "hypernetes.io/tenant"
USER = "bench-member"


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def tenant_name(i: int) -> str:
    return f"t{i:03d}"


def namespace_name(tenant: int, j: int) -> str:
    return f"{tenant_name(tenant)}-ns{j:02d}"


async def _create_all(
    c: ApiClient,
    api_version: str,
    plural: str,
    objs: list[tuple[dict[str, Any], str | None]],
    parallel: int = 16,
) -> None:
    """Create (object, namespace) pairs, `parallel` at a time."""
    sem = asyncio.Semaphore(parallel)

    async def one(obj: dict[str, Any], ns: str | None) -> None:
        async with sem:
            await c.create(api_version, plural, obj, ns)

    await asyncio.gather(*(one(o, ns) for o, ns in objs))


async def populate(srv: ServerProcess, tenants: int, namespaces: int, pods: int) -> tuple[str, str]:
    """Tenants, their namespaces and pods, the user; (tenant user's token, load namespace)."""
    t0 = time.monotonic()
    per_tenant = max(1, namespaces // tenants)
    async with ApiClient(srv.url, token=srv.admin_token, ca_file=srv.ca) as c:
        await _create_all(
            c,
            GROUP_V,
            "tenants",
            [
                (
                    {
                        "apiVersion": GROUP_V,
                        "kind": "Tenant",
                        "metadata": {"name": tenant_name(i)},
                        "spec": {"displayName": f"bench tenant {i}"},
                    },
                    None,
                )
                for i in range(tenants)
            ],
        )
        names = [(i % tenants, namespace_name(i % tenants, i // tenants)) for i in range(namespaces)]
        await _create_all(
            c,
            "v1",
            "namespaces",
            [({"metadata": {"name": n, "labels": {TENANT_LABEL: tenant_name(t)}}}, None) for t, n in names],
        )
        spec = {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "inf"]}]}
        await _create_all(
            c,
            "v1",
            "pods",
            [({"metadata": {"name": f"p{k}"}, "spec": spec}, n) for _, n in names for k in range(pods)],
        )
        await c.create(
            GROUP_V,
            "users",
            {
                "apiVersion": GROUP_V,
                "kind": "User",
                "metadata": {"name": USER},
                "spec": {"tenant": tenant_name(0), "role": "member"},
            },
        )
        token = str(
            (
                await c.request(
                    "POST", "/hypernetes/v1/tokens", {"user": USER, "expirationSeconds": 24 * 3600}
                )
            )["token"]
        )
        load_ns = namespace_name(0, 0)
        await seed_configmaps(c, load_ns, create_namespace=False)
    # the directory (watch-fed mirrors) must have caught up before the user's token works
    async with ApiClient(srv.url, token=token, ca_file=srv.ca) as u:
        for _ in range(100):
            try:
                await u.get("v1", "configmaps", "seed-0", load_ns)
                break
            except ApiException:
                await asyncio.sleep(0.1)
        mine = len((await u.list("v1", "namespaces"))["items"])
        try:
            await u.get("v1", "pods", "p0", namespace_name(1 % tenants, 0))
            leak = True
        except ApiException as e:
            leak = e.status != 403
    if mine != per_tenant or leak:
        raise RuntimeError(
            f"tenancy not in force: the user sees {mine} namespaces; other tenants' pods: {leak}"
        )
    emit(
        {
            "setup": {
                "tenants": tenants,
                "namespaces": namespaces,
                "pods": namespaces * pods,
                "tenant_namespaces": mine,
                "seconds": round(time.monotonic() - t0, 1),
                "loadavg": os.getloadavg(),
            }
        }
    )
    return token, load_ns


async def auth_micro(srv: ServerProcess, tenant_token: str, load_ns: str, n: int = 20000) -> dict[str, Any]:
    """The authenticator and authorizer alone, as the server builds them, over the same database
    (read here through a second connection): microseconds per call for each identity."""
    from hypernetes.api.tenancy import build_tenancy
    from hypernetes.auth.authorizer import Attributes
    from hypernetes.store import open_store
    from hypernetes.store.keys import key_prefix

    store = open_store(f"sqlite:///{srv.workdir / 'state.db'}")
    tenancy, authn = build_tenancy(store, srv.workdir / "pki", srv.admin_token)
    await tenancy.directory.start()
    out: dict[str, Any] = {"calls": n}
    try:
        path = f"/api/v1/namespaces/{load_ns}/configmaps/seed-0"
        for who, token in (("admin", srv.admin_token), ("tenant", tenant_token)):
            headers = {"Authorization": f"Bearer {token}"}
            user = await authn.authenticate(headers)
            assert user is not None, who
            t0 = time.perf_counter()
            for _ in range(n):
                await authn.authenticate(headers)
            authn_us = (time.perf_counter() - t0) / n * 1e6
            attrs = Attributes(user, "get", True, path, "", "v1", "configmaps", "", load_ns, "seed-0")
            t0 = time.perf_counter()
            for _ in range(n):
                await tenancy.authorizer.authorize(attrs)
            authz_us = (time.perf_counter() - t0) / n * 1e6
            all_pods = Attributes(user, "list", True, "/api/v1/pods", "", "v1", "pods")
            decision = await tenancy.authorizer.authorize(all_pods)
            pods = [json.loads(kv.value) for kv in (await store.list(key_prefix("", "pods", None))).items]
            t0 = time.perf_counter()
            visible = sum(1 for p in pods if decision.scope is None or decision.scope(p))
            scope_ms = (time.perf_counter() - t0) * 1000
            out[who] = {
                "authenticate_us": round(authn_us, 2),
                "authorize_us": round(authz_us, 2),
                "list_scope_ms": round(scope_ms, 3),
                "pods_scanned": len(pods),
                "pods_visible": visible,
            }
    finally:
        await tenancy.directory.stop()
        await store.close()
    return out


def _orders(rounds: int) -> list[tuple[int, str, int]]:
    """(round, identity, position in its pair): admin first in even rounds, tenant first in odd."""
    out = []
    for r in range(rounds):
        pair = ("admin", "tenant") if r % 2 == 0 else ("tenant", "admin")
        out += [(r, who, pos) for pos, who in enumerate(pair)]
    return out


def _tagged(bench: str, who: str, r: int, pos: int, res: dict[str, Any]) -> dict[str, Any]:
    out = {
        "bench": bench,
        "as": who,
        "round": r,
        "first": "admin" if r % 2 == 0 else "tenant",
        "position": pos,
        **res,
    }
    emit(out)
    return out


def _mean(results: list[dict[str, Any]], who: str, key: str) -> float:
    return statistics.fmean(r[key] for r in results if r["as"] == who)


def throughput_summary(thr: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals per identity over all its slices; tenant/admin ratios overall, per adjacent pair
    (median and range) and by which went first in the pair."""
    tot = {
        w: {k: sum(r[k] for r in thr if r["as"] == w) for k in ("requests", "seconds", "server_cpu_s")}
        for w in ("admin", "tenant")
    }
    rate = {w: tot[w]["requests"] / tot[w]["seconds"] for w in tot}
    cpu = {w: tot[w]["server_cpu_s"] / tot[w]["requests"] * 1e6 for w in tot}
    ratios: dict[str, list[float]] = {"admin": [], "tenant": []}
    for i in range(0, len(thr) - 1, 2):
        by = {thr[i]["as"]: thr[i]["req_per_s"], thr[i + 1]["as"]: thr[i + 1]["req_per_s"]}
        ratios[thr[i]["as"]].append(by["tenant"] / by["admin"])
    every = sorted(ratios["admin"] + ratios["tenant"])
    return {
        "slices": len(thr),
        "admin_req_per_s": round(rate["admin"], 1),
        "tenant_req_per_s": round(rate["tenant"], 1),
        "throughput_ratio": round(rate["tenant"] / rate["admin"], 3),
        "pair_ratio_median": round(statistics.median(every), 3),
        "pair_ratio_range": [round(every[0], 3), round(every[-1], 3)],
        "throughput_ratio_admin_first": round(statistics.fmean(ratios["admin"]), 3),
        "throughput_ratio_tenant_first": round(statistics.fmean(ratios["tenant"]), 3),
        "admin_server_cpu_us_per_req": round(cpu["admin"]),
        "tenant_server_cpu_us_per_req": round(cpu["tenant"]),
        "server_cpu_ratio": round(cpu["tenant"] / cpu["admin"], 3),
        "server_util": {w: round(tot[w]["server_cpu_s"] / tot[w]["seconds"], 2) for w in tot},
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": os.getloadavg(),
    }


async def run(args: argparse.Namespace, srv: ServerProcess) -> None:
    token, ns = await populate(srv, args.tenants, args.namespaces, args.pods_per_namespace)
    tokens = {"admin": srv.admin_token, "tenant": token}
    pid = srv.pid
    order = [who for _, who, _ in _orders(args.slices // 2)]
    thr = await closed_loop(
        srv.url,
        tokens,
        srv.ca,
        order=order,
        namespace=ns,
        clients=args.clients,
        seconds=args.slice_seconds,
        server_pid=pid,
    )
    for res in thr:
        emit({"bench": "throughput", **res})
    lat: list[dict[str, Any]] = []
    for r, who, pos in _orders(args.rounds):
        lat.append(
            _tagged(
                "latency",
                who,
                r,
                pos,
                await request_latency(
                    srv.url,
                    tokens[who],
                    srv.ca,
                    rate=args.rate,
                    seconds=args.latency_seconds,
                    namespace=ns,
                    seed=False,
                    prefix=f"lat{r}{who[0]}",
                ),
            )
        )
    lists: list[dict[str, Any]] = []
    for r, who, pos in _orders(args.rounds):
        lists.append(
            _tagged(
                "list_all_pods",
                who,
                r,
                pos,
                await list_latency(srv.url, tokens[who], srv.ca, repeats=args.list_repeats, server_pid=pid),
            )
        )
    fans: list[dict[str, Any]] = []
    for all_ns in (False, True):
        for r, who, pos in _orders(args.rounds):
            fans.append(
                _tagged(
                    "watch_fanout",
                    who,
                    r,
                    pos,
                    await watch_fanout(
                        srv.url,
                        tokens[who],
                        srv.ca,
                        namespace=ns,
                        create_namespace=False,
                        all_namespaces=all_ns,
                        prefix=f"w{r}{who[0]}{int(all_ns)}x",
                    ),
                )
            )
    if (srv.workdir / "state.db").exists():
        emit({"bench": "auth_per_call", **await auth_micro(srv, token, ns)})
    summary: dict[str, Any] = {
        "summary": True,
        **machine(),
        "tenants": args.tenants,
        "namespaces": args.namespaces,
        "clients": args.clients,
        **throughput_summary(thr),
        "latency_p50_ms": {w: round(_mean(lat, w, "p50_ms"), 1) for w in ("admin", "tenant")},
        "latency_p99_ms": {w: round(_mean(lat, w, "p99_ms"), 1) for w in ("admin", "tenant")},
        "list_all_pods_p50_ms": {w: round(_mean(lists, w, "p50_ms"), 1) for w in ("admin", "tenant")},
        "fanout_p99_ms": {
            f"{w}{'_all_namespaces' if a else ''}": round(
                statistics.fmean(f["p99_ms"] for f in fans if f["as"] == w and f["all_namespaces"] == a), 1
            )
            for w in ("admin", "tenant")
            for a in (False, True)
        },
    }
    summary["bar_met"] = summary["throughput_ratio"] >= 0.85
    emit(summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="sqlite", help="sqlite (default) or memory")
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--pods-per-namespace", type=int, default=1)
    ap.add_argument("--clients", type=int, default=16, help="concurrent callers of the throughput run")
    ap.add_argument("--slices", type=int, default=40, help="throughput slices, half of them each identity's")
    ap.add_argument("--slice-seconds", type=float, default=2)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--latency-seconds", type=float, default=10, help="of each fixed-rate run")
    ap.add_argument("--list-repeats", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs; the order alternates (ABBA...)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store_url = "memory" if args.store == "memory" else f"sqlite:///{d}/state.db"
        with tenant_server_process(Path(d), store_url) as srv:
            asyncio.run(run(args, srv))


if __name__ == "__main__":
    main()
