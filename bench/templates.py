"""Pod VMs from templates (issue 15): start time and idle memory, template vs cold vs gVisor.

Start: seconds from exec of `hypernetes run IMAGE -- echo first` to its first output line, image
cached, in ABBA order (each round runs the peers forward, the next backward), for
  - template   hypervm, a clone of the shape's template (built by a warm-up run first)
  - cold       hypervm `--no-templates`: the kernel boots
  - gvisor     `--runtime gvisor`
  - crun       `crun run` of the same rootfs (no isolation beyond namespaces), if crun works
The same in the node agent's process (create the sandbox, start `echo first`, its output),
without the CLI's own start-up (Python, imports, registries), ABBA, template/cold/gvisor.
Memory: host PSS per idle `sleep` pod with 1, 4 and 16 pods running at once (128 MiB VMs), for
the same peers but crun. A template's RAM file (tmpfs, once per shape on the node) is counted in
the clones' PSS only for the pages they map; its whole resident size is reported beside them.

`--control-plane 20`: instead, POST Pod → Running seen by a watch for 20 pods one after another,
through `hypernetes up` with templates, then with `--no-templates`.

Run as root after `make setup`: `.venv/bin/python bench/templates.py --rounds 5`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.startup import (  # noqa: E402
    CLI,
    IMAGE,
    crun_bundle,
    crun_command,
    first_line_time,
    machine,
    pids_matching,
    prepare_image,
    pss_kib,
    start_idle,
    summarize,
)
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import ContainerSpec, PodSpec, Runtime  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402


def tmpfs_resident_mib(root: Path) -> float:
    """Memory the template files hold on tmpfs (allocated blocks, not their sizes)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file()) / (1 << 20)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


async def idle_pss(runtime: Runtime, prefix: str, count: int) -> dict[str, object]:
    """Mean PSS per pod of `count` idle pods running at once (shared pages split among them).
    As bench/startup.py's, with names that are not prefixes of one another (pod 1 of 16 would
    otherwise also match the processes of pods 10 to 15)."""
    names = [f"{prefix}-{count}-{i:03d}" for i in range(count)]
    try:
        for name in names:
            await start_idle(runtime, name)
        await asyncio.sleep(3)  # let the guests settle into idle
        per_pod = [pss_kib(pids_matching(name)) for name in names]
        return {
            "bench": "idle_pss",
            "peer": runtime.name,
            "pods": count,
            "processes_per_pod": len(pids_matching(names[0])),
            "pss_mib_per_pod": round(statistics.mean(per_pod) / 1024, 1),
        }
    finally:
        for name in names:
            await runtime.remove_sandbox(name)


async def start_once(runtime: Runtime, name: str) -> float | None:
    """In the node agent's process: create the sandbox, start `echo first`, its output."""
    spec = ContainerSpec(name="main", image=IMAGE, command=("echo", "first"))
    t0 = time.monotonic()
    try:
        await runtime.create_sandbox(PodSpec(id=name, name=name, containers=(spec,)))
        proc = await runtime.start_container(name, "main", attach=True)
        assert proc is not None
        async for _stream, data in proc.output():
            if b"first" in data:
                return time.monotonic() - t0
        return None
    finally:
        await runtime.remove_sandbox(name)


async def in_process(
    data: Path, tpl_root: Path, rounds: int, counts: list[int], skip: list[str]
) -> list[dict[str, object]]:
    """Start time inside one process (no CLI start-up), then idle PSS per pod, in one event
    loop (a template build runs in it)."""
    from hypernetes.runtime.gvisor import GVisor
    from hypernetes.runtime.hypervm import HyperVM
    from hypernetes.runtime.templates import TemplateStore

    store = ImageStore(data / "images")
    kernels = KernelRegistry(data / "kernels", agent_binary())
    templates = TemplateStore(tpl_root)
    runtimes: list[tuple[str, Runtime]] = [
        ("template", HyperVM(data / "rt-tpl", store, kernels, accel="tcg", templates=templates)),
        ("cold", HyperVM(data / "rt-cold", store, kernels, accel="tcg")),
        ("gvisor", GVisor(data / "rt-gvisor", store)),
    ]
    rows: list[dict[str, object]] = []
    active = [(n, r) for n, r in runtimes if n not in skip]
    for name, runtime in active:  # warm-up; the first pod of the shape has its template built
        await start_once(runtime, f"warm-{name}")
    await templates.wait_built()
    times: dict[str, list[float | None]] = {n: [] for n, _ in active}
    for i in range(rounds):
        for name, runtime in active if i % 2 == 0 else list(reversed(active)):
            times[name].append(await start_once(runtime, f"s{i}-{name}"))
    for name, _ in active if rounds else []:
        rows.append(summarize(f"{name}-in-process", times[name]))
    if "template" not in skip:  # the first pod of the 128 MiB shape boots cold and has it built
        await idle_pss(runtimes[0][1], "pss-warmup", 1)
        await templates.wait_built()
    for count in counts:
        for name, runtime in runtimes:
            if name in skip:
                continue
            clones = templates.clones
            row = await idle_pss(runtime, f"pss{name}", count)
            row["peer"] = name
            if name == "template":
                row["clones"] = templates.clones - clones
                row["template_tmpfs_mib"] = round(tmpfs_resident_mib(tpl_root), 1)
            row["loadavg"] = loadavg()
            print(json.dumps({**row, "bench": "idle_pss_detail"}), flush=True)
            rows.append(row)
    await templates.close()
    return rows


def control_plane(work: Path, pods: int) -> list[dict[str, object]]:
    """POST Pod → Running seen by a watch (bench/pod_startup.py's measure), through `hypernetes
    up` with templates and with --no-templates. One pod first: it boots cold and has its shape's
    template built (with templates), then the pods measured one after another."""
    from bench.pod_startup import measure
    from hypernetes.apiclient import ApiClient

    rows: list[dict[str, object]] = []
    for name, flags in (("template", []), ("cold", ["--no-templates"])):
        data = work / f"cp-{name}"
        prepare_image(data)
        up = subprocess.Popen(
            [CLI, "up", "--data-dir", str(data), "--port", "0", "--stop-pods", "--accel", "tcg", *flags],
            stderr=subprocess.DEVNULL,
        )
        try:
            token_file, ca = data / "pki" / "admin.token", data / "pki" / "ca.crt"
            while not (data / "admin.kubeconfig").exists():
                time.sleep(0.2)
            time.sleep(2)  # node registration
            server = ApiClient.from_kubeconfig(data / "admin.kubeconfig").server
            token = token_file.read_text().strip()
            asyncio.run(measure(server, token, ca, 1))
            time.sleep(10)  # the template's build
            times = sorted(asyncio.run(measure(server, token, ca, pods)))
        finally:
            up.terminate()
            up.wait(60)
        row: dict[str, object] = {
            "bench": "control_plane",
            "peer": name,
            "pods": len(times),
            "p50_s": round(statistics.median(times), 3),
            "p99_s": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
            "min_s": round(times[0], 3),
            "loadavg": loadavg(),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="ABBA rounds (runs per peer)")
    parser.add_argument("--pods", type=int, action="append", default=None, help="idle pod counts")
    parser.add_argument("--skip", action="append", default=[], help="peer names to skip")
    parser.add_argument("--memory-only", action="store_true", help="no start-time runs")
    parser.add_argument("--control-plane", type=int, default=0, metavar="PODS", help="only that")
    args = parser.parse_args()
    counts = args.pods or [1, 4, 16]
    print(json.dumps({"bench": "machine", **machine(), "loadavg_start": loadavg()}), flush=True)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="hn-bench-tpl-") as tmp:
        work = Path(tmp)
        data = work / "data"
        tpl_root = Path(tempfile.mkdtemp(prefix="hn-bench-templates-", dir="/dev/shm"))
        env = {**os.environ, "HYPERNETES_ACCEL": "tcg", "HYPERNETES_TEMPLATE_DIR": str(tpl_root)}
        # The CLI as installed, with its bytecode compiled (the warm-ups write it): a checkout run
        # with PYTHONDONTWRITEBYTECODE=1 compiles every edited module on every run (0.1 s of CPU
        # more on the hypervm path than on gVisor's, measured with process_time)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        try:
            if args.control_plane:
                control_plane(work, args.control_plane)
                return 0
            prepare_image(data)
            base = [CLI, "run", "--data-dir", str(data)]
            peers: dict[str, object] = {
                "template": lambda i: [*base, IMAGE, "--", "echo", "first"],
                "cold": lambda i: [*base, "--no-templates", IMAGE, "--", "echo", "first"],
                "gvisor": lambda i: [*base, "--runtime", "gvisor", IMAGE, "--", "echo", "first"],
            }
            if shutil.which("crun"):
                bundle = crun_bundle(data, work)
                peers["crun"] = lambda i: crun_command(bundle, i)
            names = [n for n in peers if n not in args.skip and not args.memory_only]
            # warm-up: builds the template (the run itself boots cold), fills caches for all
            for name in names:
                first_line_time(peers[name](0), b"first", 120, env)  # type: ignore[operator]
            times: dict[str, list[float | None]] = {n: [] for n in names}
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else reversed(names):
                    times[name].append(first_line_time(peers[name](r + 1), b"first", 120, env))  # type: ignore[operator]
            for name in names:
                rows.append(summarize(name, times[name]))

            rounds = 0 if args.memory_only else args.rounds
            rows += asyncio.run(in_process(data, tpl_root, rounds, counts, args.skip))
        finally:
            shutil.rmtree(tpl_root, ignore_errors=True)
    print(json.dumps({"bench": "machine_end", "loadavg_end": loadavg(), "time": time.time()}), flush=True)
    print("\n| peer | p50 s | p90 s | min s | failed/runs |\n|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        if row["bench"] == "start":
            print(
                f"| {row['peer']} | {row.get('p50_s', '-')} | {row.get('p90_s', '-')} | "
                f"{row.get('min_s', '-')} | {row['failed']}/{row['runs']} |",
                file=sys.stderr,
            )
    print("\n| peer | pods | PSS MiB/pod | template tmpfs MiB |\n|---|---|---|---|", file=sys.stderr)
    for row in rows:
        if row["bench"] == "idle_pss":
            print(
                f"| {row['peer']} | {row['pods']} | {row['pss_mib_per_pod']} | "
                f"{row.get('template_tmpfs_mib', '')} |",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
