"""Where a clone's start goes, in the node agent's process (issue 15: would a warm pool pay?).

A warm pool would keep restored, paused clones per shape: it could save a pod only what happens
before the pod's own files matter — QEMU's start (fork, jail, exec) and the restore (loading the
device state). SETUP (the pod's hostname, clock, entropy, disks re-probed, NIC) and CREATE need
the pod. This measures those parts of `--runs` clone starts (create the sandbox, `echo first`, its
first output), by timing QemuVM.start and templates.restore as the runtime calls them.

Run as root after `make setup`: `.venv/bin/python bench/clone_phases.py --runs 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.startup import image_and_template_dirs  # noqa: E402
from bench.templates import loadavg, start_once  # noqa: E402
from hypernetes.runtime import hypervm, qemu  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.templates import TemplateStore  # noqa: E402

spent: dict[str, float] = {}


def timed(name: str, f: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(f)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await f(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.monotonic() - t0

    return wrapper


async def run(data: Path, tpl_root: Path, runs: int) -> None:
    # as the runtime calls them: the method, and the name hypervm imported
    setattr(qemu.QemuVM, "start", timed("qemu_start", qemu.QemuVM.start))  # noqa: B010
    setattr(hypervm, "restore_clone", timed("restore", getattr(hypervm, "restore_clone")))  # noqa: B009, B010
    templates = TemplateStore(tpl_root)
    runtime = hypervm.HyperVM(
        data / "rt",
        ImageStore(data / "images"),
        KernelRegistry(data / "kernels", agent_binary()),
        accel="tcg",
        templates=templates,
    )
    await start_once(runtime, "warm")
    await templates.wait_built()
    rows = []
    for i in range(runs):
        spent.clear()
        total = await start_once(runtime, f"p{i}")
        if total is not None:
            rows.append({"total_s": total, **spent})
            print(json.dumps({k: round(v, 3) for k, v in rows[-1].items()}), flush=True)
    await templates.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    pool = med["qemu_start"] + med["restore"]
    print(
        json.dumps(
            {
                "bench": "clone_phases",
                "runs": len(rows),
                **{f"{k}_p50": round(v, 3) for k, v in med.items()},
                "pool_could_save_s": round(pool, 3),
                "pool_could_save_share": round(pool / med["total_s"], 2),
                "loadavg": loadavg(),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with image_and_template_dirs("hn-bench-phases-") as (data, tpl):
        asyncio.run(run(data, tpl, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
