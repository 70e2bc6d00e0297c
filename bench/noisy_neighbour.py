"""A quiet tenant next to a hostile one (issue 12): the quiet tenant's API latency with and without
the neighbour, in the same run, on the same server.

The multi-tenant API server runs in a process of its own (tests/support/noisy.py); the hostile
tenant in another, from its own address: `--watches` watches held open and never read, and
`--clients` callers listing and creating configmaps in a closed loop, ignoring Retry-After. The
quiet tenant sends `--quiet-rate` requests a second, one at a time (get, list, merge patch of its
configmaps). Slices of
`--seconds` alternate without and with the neighbour in ABBA order, `--rounds` times, so drift on
a shared machine cancels. With `--compare-unfair` the same run is repeated on a server whose
fairness limits are out of reach (as before issue 12).

Only the API flood is modelled: CPU-spinning pod VMs and pods in pull/create hot loops need a
node and are left to the node-side benchmarks of the same issue (VM cgroups, back-off).

Prints one JSON object per slice and a summary with the ratios (bar: under 2x either way).

    python bench/noisy_neighbour.py [--seconds 5 --rounds 2 --clients 64 --watches 300 --compare-unfair]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import noisy
from tests.support.apiload import percentile, process_cpu


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


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
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


def run(fair: bool, args: argparse.Namespace) -> dict[str, Any]:
    overrides = json.loads(args.config)
    with (
        tempfile.TemporaryDirectory() as d,
        noisy.server(Path(d), fairness=fair, overrides=overrides) as (
            url,
            admin,
            ca,
            pid,
        ),
    ):
        tokens, ns = asyncio.run(noisy.populate(url, admin, ca))
        slices: dict[str, list[dict[str, Any]]] = {"alone": [], "neighbour": []}
        order = ["alone", "neighbour", "neighbour", "alone"] * args.rounds

        def quiet() -> dict[str, Any]:
            q = noisy.quiet(url, tokens["quiet"], ca, ns["quiet"], args.seconds, args.quiet_rate)
            return asyncio.run(q)

        for i, phase in enumerate(order):
            cpu0, t0 = process_cpu(pid), time.monotonic()
            if phase == "alone":
                res = quiet()
                hostile: dict[str, Any] = {}
            else:
                seconds = args.seconds + args.warmup
                with noisy.hostile_process(
                    url,
                    tokens["noisy"],
                    ca,
                    ns["noisy"],
                    clients=args.clients,
                    watches=args.watches,
                    seconds=seconds,
                ) as hostile:
                    time.sleep(args.warmup)  # its watches open and its flood is running
                    res = quiet()
            slices[phase].append(res)
            emit(
                {
                    "fairness": fair,
                    "slice": i,
                    "phase": phase,
                    "quiet": res,
                    "hostile": hostile,
                    "server_cpu_util": round((process_cpu(pid) - cpu0) / (time.monotonic() - t0), 2),
                    "loadavg": os.getloadavg()[0],
                }
            )
    med = {
        phase: {k: percentile([s[k] for s in xs], 50) for k in ("mean_ms", "p50_ms", "p99_ms")}
        for phase, xs in slices.items()
    }
    summary = {
        "fairness": fair,
        "quiet_alone": med["alone"],
        "quiet_with_neighbour": med["neighbour"],
        "p50_ratio": round(med["neighbour"]["p50_ms"] / max(med["alone"]["p50_ms"], 1e-3), 2),
        "p99_ratio": round(med["neighbour"]["p99_ms"] / max(med["alone"]["p99_ms"], 1e-3), 2),
        "mean_ratio": round(med["neighbour"]["mean_ms"] / max(med["alone"]["mean_ms"], 1e-3), 2),
        "quiet_errors": sum(sum(s["errors"].values()) for xs in slices.values() for s in xs),
    }
    emit({"summary": summary})
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one slice")
    ap.add_argument("--warmup", type=float, default=2.0, help="the neighbour's head start in a slice")
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    ap.add_argument("--clients", type=int, default=64, help="the neighbour's concurrent callers")
    ap.add_argument("--watches", type=int, default=300, help="watches the neighbour opens")
    ap.add_argument("--quiet-rate", type=float, default=50.0, help="the quiet tenant's requests a second")
    ap.add_argument("--compare-unfair", action="store_true", help="also run without fairness limits")
    ap.add_argument("--config", default="{}", help="FairnessConfig fields as JSON: '{\"precedence\": false}'")
    args = ap.parse_args()
    emit({"machine": machine(), "args": vars(args)})
    run(True, args)
    if args.compare_unfair:
        run(False, args)


if __name__ == "__main__":
    main()
