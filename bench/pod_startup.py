"""Pod startup through the whole control plane: create → Running observed through a watch.

Runs `hypernetes up` on a temporary data dir with the busybox image already imported, then
creates pods one after another and times each from the POST to the watch event that shows it
Running. Prints one JSON object with p50/p99. `python bench/pod_startup.py [--pods 20]`
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypernetes.apiclient import ApiClient  # noqa: E402
from tools.imagebuild import OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/busybox:bench"
CLI = str(REPO / ".venv" / "bin" / "hypernetes")


def pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"start-{i:02d}"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


async def measure(url: str, token: str, ca: Path, count: int) -> list[float]:
    times = []
    async with ApiClient(url, token=token, ca_file=ca) as c:
        for i in range(count):
            listed = await c.list("v1", "pods", "default")
            rv = listed["metadata"]["resourceVersion"]
            start = time.monotonic()
            await c.create("v1", "pods", pod(i), "default")
            async for ev in c.watch(
                "v1",
                "pods",
                "default",
                resource_version=rv,
                field_selector=f"metadata.name=start-{i:02d}",
                timeout_seconds=120,
            ):
                if (ev.object.get("status") or {}).get("phase") == "Running":
                    times.append(time.monotonic() - start)
                    break
            await c.delete("v1", "pods", f"start-{i:02d}", "default")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hn-podstart-") as tmp:
        data = Path(tmp) / "data"
        layout = OciLayout(Path(tmp) / "oci")
        layout.add(busybox_image(), IMAGE)
        subprocess.run(
            [CLI, "image", "import", "--data-dir", str(data), str(layout.root)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        up = subprocess.Popen(  # any free port: the kubeconfig says which
            [CLI, "up", "--data-dir", str(data), "--port", "0", "--stop-pods", "--accel", "tcg"],
            stderr=subprocess.DEVNULL,
        )
        try:
            token_file, ca = data / "pki" / "admin.token", data / "pki" / "ca.crt"
            while not (data / "admin.kubeconfig").exists():
                time.sleep(0.2)
            time.sleep(2)  # node registration
            server = ApiClient.from_kubeconfig(data / "admin.kubeconfig").server
            times = asyncio.run(measure(server, token_file.read_text().strip(), ca, args.pods))
        finally:
            up.terminate()
            up.wait(60)
    times.sort()
    print(
        json.dumps(
            {
                "bench": "pod_startup",
                "pods": len(times),
                "p50_s": round(statistics.median(times), 3),
                "p99_s": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
                "min_s": round(times[0], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
