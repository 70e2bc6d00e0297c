"""Where a pod's start goes through the control plane: POST → Running, split by what a watch sees.

For each pod (created one after another, as bench/pod_startup.py does): seconds from the POST to
the first watch event showing it bound to a node (scheduler), carrying its tenant-network address
(network controller), showing the node agent's first status (the agent took it up), and Running
(its container started). With `hypernetes up` as root every pod gets a NIC on a tenant network.

Used by `bench/templates.py --control-plane N`; alone:
`.venv/bin/python bench/pod_phases.py --pods 20 [--no-templates] [--cpu 100m]
[--runtime-class none --runtime-class hypervm]` (with and without the class's Pod Overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pod_startup import pod  # noqa: E402
from bench.startup import CLI, prepare_image  # noqa: E402
from hypernetes.apiclient import ApiClient  # noqa: E402
from hypernetes.objects.names import IP_ANNOTATION  # noqa: E402

PHASES = ("bound", "address", "agent", "running")


def _seen(obj: dict[str, Any]) -> set[str]:
    status = obj.get("status") or {}
    seen = set()
    if (obj.get("spec") or {}).get("nodeName"):
        seen.add("bound")
    if ((obj.get("metadata") or {}).get("annotations") or {}).get(IP_ANNOTATION):
        seen.add("address")
    if status.get("containerStatuses") or status.get("startTime"):
        seen.add("agent")
    if status.get("phase") == "Running":
        seen.add("running")
    return seen


def abba(i: int, n: int) -> int:
    """The variant of the i-th pod: in turn for one or three and more, A B B A for two (so
    neither is always first after the other as the host's load drifts)."""
    return (0, 1, 1, 0)[i % 4] if n == 2 else i % n


async def measure_phases(
    url: str,
    token: str,
    ca: Path,
    count: int,
    prefix: str,
    cpus: tuple[str, ...] = ("100m",),
    classes: tuple[str, ...] = ("",),
) -> list[dict[str, Any]]:
    """`cpus`: the pods' CPU limits, taken in turn (bench/pod_startup.py's pod has 100m);
    `classes`: their runtimeClassName ("": none), ABBA when two."""
    rows = []
    async with ApiClient(url, token=token, ca_file=ca) as c:
        for i in range(count):
            body = pod(i)
            name = f"{prefix}-{i:02d}"
            body["metadata"]["name"] = name
            cpu = cpus[i % len(cpus)]
            body["spec"]["containers"][0]["resources"]["limits"]["cpu"] = cpu
            rc = classes[abba(i, len(classes))]
            if rc:
                body["spec"]["runtimeClassName"] = rc
            listed = await c.list("v1", "pods", "default")
            rv = listed["metadata"]["resourceVersion"]
            start = time.monotonic()
            await c.create("v1", "pods", body, "default")
            row: dict[str, Any] = {"cpu": cpu + (f"+{rc}" if rc else "")}
            async for ev in c.watch(
                "v1",
                "pods",
                "default",
                resource_version=rv,
                field_selector=f"metadata.name={name}",
                timeout_seconds=120,
            ):
                now = time.monotonic() - start
                for phase in _seen(ev.object):
                    row.setdefault(phase, round(now, 3))
                if "running" in row:
                    break
            rows.append(row)
            print(json.dumps({"pod": name, **row}), flush=True)
            await c.delete("v1", "pods", name, "default")
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for cpu in dict.fromkeys(r["cpu"] for r in rows):
        mine = [r for r in rows if r["cpu"] == cpu]
        for phase in PHASES:
            values = sorted(r[phase] for r in mine if phase in r)
            if values:
                out[f"cpu_{cpu}_{phase}_p50_s"] = round(statistics.median(values), 3)
        running = sorted(r["running"] for r in mine if "running" in r)
        if running:
            out[f"cpu_{cpu}_running_max_s"] = running[-1]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--no-templates", action="store_true")
    parser.add_argument(
        "--cpu", action="append", help="pods' CPU limits, in turn (default 100m; repeat to compare)"
    )
    parser.add_argument(
        "--runtime-class",
        action="append",
        help="pods' runtimeClassName ('none': without), ABBA when two (e.g. --runtime-class none "
        "--runtime-class hypervm: the class's Pod Overhead against none)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hn-podphases-") as tmp:
        data = Path(tmp) / "data"
        prepare_image(data)
        flags = ["--no-templates"] if args.no_templates else []
        up = subprocess.Popen(
            [CLI, "up", "--data-dir", str(data), "--port", "0", "--stop-pods", "--accel", "tcg", *flags],
            stderr=subprocess.DEVNULL,
        )
        try:
            while not (data / "admin.kubeconfig").exists():
                time.sleep(0.2)
            time.sleep(2)  # node registration
            server = ApiClient.from_kubeconfig(data / "admin.kubeconfig").server
            token = (data / "pki" / "admin.token").read_text().strip()
            ca = data / "pki" / "ca.crt"
            asyncio.run(measure_phases(server, token, ca, 1, "warm"))  # has the template built
            time.sleep(10)
            cpus = tuple(args.cpu or ["100m"])
            classes = tuple("" if c == "none" else c for c in args.runtime_class or ["none"])
            rows = asyncio.run(measure_phases(server, token, ca, args.pods, "start", cpus, classes))
        finally:
            up.terminate()
            up.wait(60)
    print(json.dumps({"bench": "pod_phases", "templates": not args.no_templates, **summary(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
