"""Controller manager failover time (issue 14's bar: under 20 s), with upstream's lease timings.

Two controller-manager processes (tests/support/elected.py: the real ControllerManager under
hypernetes.leaderelection) against one real API server. Each round kills the leader while a
ReplicaSet it manages has pods to create, and measures from the kill to
  - takeover: the other process holding the Lease kube-system/NAME, and
  - first action: the first pod created by the other process (managedFields names it);
a crash (SIGKILL: the standby waits out the lease) and a clean stop (SIGINT: the lease is released).
Every round checks that the ReplicaSet ended with exactly its replicas created (nothing twice).

Prints one JSON object per round, then a summary line. `.venv/bin/python bench/failover.py
--rounds 3` (defaults: lease 15 s, renew deadline 10 s, retry 2 s, as kube-controller-manager).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.apiserver import ApiServerThread  # noqa: E402
from tests.support.controllers import ControllersThread  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402


def start(
    api: ApiServerThread, who: str, lease: str, args: argparse.Namespace, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.elected", "--server", api.url, "--token", api.token,
         "--ca", str(api.ca.ca_cert), "--identity", who, "--lease", lease,
         "--component", "controller-manager", "--controllers", "replicaset",
         "--lease-duration", str(args.lease_duration), "--renew-deadline", str(args.renew_deadline),
         "--retry-period", str(args.retry_period)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def creator(pod: dict[str, Any]) -> str:
    return str((pod["metadata"].get("managedFields") or [{}])[0].get("manager", ""))


def one_round(
    ctl: ControllersThread, api: ApiServerThread, n: int, how: str, args: argparse.Namespace
) -> dict[str, Any]:
    lease, ns = f"failover-{n}", ctl.namespace(f"failover-{n}")
    logs = {w: (api.workdir / f"{w}.log").open("ab") for w in (f"{lease}-a", f"{lease}-b")}
    procs = {w: start(api, w, lease, args, log) for w, log in logs.items()}
    try:

        def holder() -> str:
            got = ctl.get("coordination.k8s.io/v1", "leases", lease, "kube-system") or {}
            return str((got.get("spec") or {}).get("holderIdentity") or "")

        leader = wait_for(holder, timeout=60, what="a leader")
        standby = next(w for w in procs if w != leader)
        replicas = 200  # created in slow-start batches while the leader is killed
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "web"},
                        "annotations": {"fake.hypernetes.io/ignore": "true"},
                    },
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
        ctl.create("apps/v1", "replicasets", rs, ns)
        wait_for(lambda: len(ctl.pods(ns)) >= 15, timeout=60, what="the leader at work")
        procs[leader].send_signal(signal.SIGKILL if how == "crash" else signal.SIGINT)
        killed = time.monotonic()
        procs[leader].wait(30)
        took = wait_for(lambda: holder() == standby and time.monotonic(), timeout=120, interval=0.05) - killed
        first = (
            wait_for(
                lambda: any(creator(p) == standby for p in ctl.pods(ns)) and time.monotonic(),
                timeout=120,
                interval=0.05,
            )
            - killed
        )
        wait_for(lambda: len(ctl.pods(ns)) >= replicas, timeout=300, what="all pods")
        time.sleep(2)
        created = len(ctl.pods(ns))
        return {
            "bench": "controller_failover",
            "stop": how,
            "lease_duration": args.lease_duration,
            "renew_deadline": args.renew_deadline,
            "retry_period": args.retry_period,
            "takeover_s": round(took, 2),
            "first_action_s": round(first, 2),
            "pods_created": created,
            "replicas": replicas,
        }
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs.values():
            log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        api = ApiServerThread(Path(tmp)).start()
        ctl = ControllersThread(api, only=[], kubelet=False).start()
        results = []
        try:
            for _ in range(args.rounds):
                for how in ("crash", "clean"):
                    r = one_round(ctl, api, len(results), how, args)
                    results.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            ctl.stop()
            api.stop()
    for how in ("crash", "clean"):
        rs = [r for r in results if r["stop"] == how]
        print(
            json.dumps(
                {
                    "bench": "controller_failover_summary",
                    "stop": how,
                    "rounds": len(rs),
                    "first_action_s_median": statistics.median(r["first_action_s"] for r in rs),
                    "first_action_s_max": max(r["first_action_s"] for r in rs),
                    "all_exact": all(r["pods_created"] == r["replicas"] for r in rs),
                }
            )
        )


if __name__ == "__main__":
    main()
