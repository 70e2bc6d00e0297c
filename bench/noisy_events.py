"""What a tenant whose workloads can never work costs the control plane: `hypernetes up` (real
API server, controllers and node agent; --no-network) with tenant `noisy` (quota pods=2), a pod
and a 3-replica Deployment, all with an image that cannot be pulled, so two pods fail to pull
and two replicas are refused for quota. Prints one JSON object: Events created and occurring
(sum of `count`) per second and API requests per second, by verb and resource, over a window
after a warm-up. Run it on two trees to compare (docs/controllers.md, "Back-off and events"):

    python bench/noisy_events.py [--tree DIR] [--port 16443] [--warmup 20] [--window 60]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TENANT = """
apiVersion: hypernetes.io/v1
kind: Tenant
metadata: {name: noisy}
spec: {quota: {pods: "2", namespaces: "2"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: noisy-a, labels: {hypernetes.io/tenant: noisy}}
"""
REQUEST = re.compile(
    r'apiserver_request_total\{verb="(\w+)",resource="([\w.]*)",subresource="(\w*)",'
    r'code="\d+"\} (\d+)'
)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def requests(http: httpx.Client) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for m in REQUEST.finditer(http.get("/metrics").text):
        out[f"{m[1]} {m[2]}" + (f"/{m[3]}" if m[3] else "")] += int(m[4])
    return out


def events(kubeconfig: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        kubectl(kubeconfig, "get", "events", "-n", "noisy-a", "-o", "json")
    )["items"]
    return items


def measure(kubeconfig: Path, port: int, warmup: float, window: float) -> dict[str, Any]:
    token = re.search(r"token: (\S+)", kubeconfig.read_text())
    assert token is not None
    http = httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=False, headers={"Authorization": f"Bearer {token[1]}"}
    )
    kubectl(kubeconfig, "apply", "-f", "-", stdin=TENANT)
    time.sleep(2)  # the namespace's owner reaches admission
    kubectl(kubeconfig, "-n", "noisy-a", "run", "stuck", "--image=registry.invalid/nope:2")
    kubectl(
        kubeconfig,
        "-n",
        "noisy-a",
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/nope:1",
        "--replicas=3",
    )
    time.sleep(warmup)
    r0, e0, t0 = requests(http), events(kubeconfig), time.monotonic()
    time.sleep(window)
    r1, e1, t1 = requests(http), events(kubeconfig), time.monotonic()
    dt = t1 - t0
    delta = r1 - r0
    delta["LIST events"] -= 1  # our own reading
    delta["GET "] -= 1  # our own /metrics
    return {
        "warmup_s": warmup,
        "window_s": round(dt, 1),
        "event_objects_created_per_s": round((len(e1) - len(e0)) / dt, 2),
        "events_occurred_per_s": round(
            (sum(e.get("count") or 1 for e in e1) - sum(e.get("count") or 1 for e in e0)) / dt, 2
        ),
        "api_requests_per_s": round(sum(delta.values()) / dt, 2),
        "by_request_per_s": {k: round(v / dt, 2) for k, v in sorted(delta.items()) if v > 0},
        "event_objects_total": len(e1),
        "events_by_reason": dict(
            collections.Counter(f"{e['involvedObject']['kind']}/{e['reason']}" for e in e1)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=REPO, help="source tree to run (default: this one)")
    ap.add_argument("--port", type=int, default=16443)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=60.0)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="noisy-events-"))
    kubeconfig = data / "admin.kubeconfig"
    with open(data / "up.log", "w") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypernetes.cli.main",
                "up",
                "--data-dir",
                str(data),
                "--port",
                str(args.port),
                "--no-network",
                "--stop-pods",
            ],
            cwd=args.tree,
            env={**os.environ, "PYTHONPATH": str(args.tree)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(120):
                if (
                    kubeconfig.exists()
                    and subprocess.run(
                        ["kubectl", f"--kubeconfig={kubeconfig}", "get", "nodes"],
                        capture_output=True,
                        check=False,
                    ).returncode
                    == 0
                ):
                    break
                time.sleep(1)
            result = measure(kubeconfig, args.port, args.warmup, args.window)
            print(json.dumps({"bench": "noisy_events", "tree": str(args.tree), **result}))
        finally:
            up.terminate()
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()


if __name__ == "__main__":
    main()
