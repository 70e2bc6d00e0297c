"""Start time and memory of one pod, against peers in the same run.

Prints one JSON object per result, then a Markdown table (for bench/RESULTS.md) on stderr.

Start time: from exec of the command to the container's first output line, p50/p90 over
--runs runs, for
  - hypervm + our kernel       `hypernetes run IMAGE -- echo first`
  - hypervm + Debian's cloud kernel (registered as `debian-cloud`)
  - gvisor                     `hypernetes run --runtime gvisor IMAGE -- echo first`
  - crun                       `crun run` of the same rootfs (no isolation beyond namespaces)
  - plain QEMU boots           microvm + Debian's kernel / our kernel + a busybox initramfs whose
                               /init prints a line (no agent, no image disk, no protocol)
Memory: host PSS summed over all processes of one idle `sleep` pod (the VMM, or gVisor's
sandbox + gofer), with 128 MiB of guest memory for hypervm (96Mi limit + 32 MiB overhead).

Run as root after `make setup`: `.venv/bin/python bench/startup.py --runs 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.initrd import File, build_initrd  # noqa: E402
from hypernetes.runtime.interface import ContainerSpec, PodSpec, Runtime  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.qemu import host_tsc_khz  # noqa: E402
from tools.imagebuild import OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/busybox:bench"
CLI = str(REPO / ".venv" / "bin" / "hypernetes")
DEBIAN_KERNEL_NAME = "debian-cloud"


def first_line_time(
    cmd: list[str], expect: bytes, timeout: float, env: dict[str, str] | None = None
) -> float | None:
    """Seconds from exec to the first stdout line containing `expect`; None on timeout/failure."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    result: float | None = None
    os.set_blocking(proc.stdout.fileno(), True)
    deadline = start + timeout
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if expect in buf:
            result = time.monotonic() - start
            break
    if proc.poll() is None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result


def summarize(name: str, times: list[float | None]) -> dict[str, object]:
    ok = sorted(t for t in times if t is not None)
    row: dict[str, object] = {
        "bench": "start",
        "peer": name,
        "runs": len(times),
        "failed": len(times) - len(ok),
    }
    if ok:
        row["p50_s"] = round(statistics.median(ok), 3)
        row["p90_s"] = round(ok[min(len(ok) - 1, int(0.9 * len(ok)))], 3)
        row["min_s"] = round(ok[0], 3)
    print(json.dumps(row), flush=True)
    return row


def prepare_image(data: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = OciLayout(Path(tmp) / "oci")
        layout.add(busybox_image(), IMAGE)
        subprocess.run(
            [CLI, "image", "import", "--data-dir", str(data), str(layout.root)],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def debian_kernel() -> tuple[Path, Path] | None:
    for image in sorted(Path("/boot").glob("vmlinuz-*cloud-amd64")):
        version = image.name.removeprefix("vmlinuz-")
        return image, Path("/lib/modules") / version
    return None


def crun_bundle(data: Path, work: Path) -> Path:
    store = ImageStore(data / "images")
    image = store.get(IMAGE)
    assert image is not None
    bundle = work / "crun"
    (bundle / "rootfs").mkdir(parents=True)
    subprocess.run(
        ["fsck.erofs", f"--extract={bundle / 'rootfs'}", str(image.disk)], check=True, capture_output=True
    )
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["echo", "first"]
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def crun_command(bundle: Path, n: int) -> list[str]:
    # crun refuses this host's hybrid cgroup layout; hide the v2 mount in a private namespace.
    script = (
        "umount /sys/fs/cgroup/unified 2>/dev/null; "
        f"exec crun --cgroup-manager=disabled run -b {bundle} bench{n}"
    )
    return ["unshare", "-m", "sh", "-c", script]


def plain_qemu_command(kernel: Path, initrd: Path) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-M",
        "microvm,x-option-roms=off,rtc=on",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        f"console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz={host_tsc_khz()}",
    ]


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


@contextmanager
def image_and_template_dirs(prefix: str) -> Iterator[tuple[Path, Path]]:
    """A data directory with the bench image imported, and a template root on tmpfs (as a node
    keeps its templates), both removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = Path(tmp) / "data"
        prepare_image(data)
        with tempfile.TemporaryDirectory(prefix="hn-bench-tpl-", dir="/dev/shm") as tpl:
            yield data, Path(tpl)


async def start_idle(
    runtime: Runtime, name: str, memory_limit: int = 96 << 20, cpu_limit_millis: int | None = None
) -> None:
    """Create a pod whose container prints `up` and sleeps, and return once it has printed."""
    spec = ContainerSpec(
        name="main",
        image=IMAGE,
        command=("sh", "-c", "echo up; exec sleep 600"),
        memory_limit=memory_limit,
        cpu_limit_millis=cpu_limit_millis,
    )
    await runtime.create_sandbox(PodSpec(id=name, name=name, containers=(spec,)))
    proc = await runtime.start_container(name, "main", attach=True)
    assert proc is not None
    async for _stream, data in proc.output():
        if b"up" in data:
            return


def pids_matching(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


async def idle_pss(runtime: Runtime, prefix: str, count: int) -> dict[str, object]:
    """Mean PSS per pod of `count` idle pods running at once (shared pages split among them)."""
    names = [f"{prefix}-{count}-{i}" for i in range(count)]
    try:
        for name in names:
            await start_idle(runtime, name)
        await asyncio.sleep(3)  # let the guests settle into idle
        per_pod = [pss_kib(pids_matching(name)) for name in names]
        row: dict[str, object] = {
            "bench": "idle_pss",
            "peer": runtime.name,
            "pods": count,
            "processes_per_pod": len(pids_matching(names[0])),
            "pss_mib_per_pod": round(statistics.mean(per_pod) / 1024, 1),
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        for name in names:
            await runtime.remove_sandbox(name)


def machine() -> dict[str, str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{int(mem) / 1048576:.0f}",
        "host_kernel": platform.release(),
        "qemu": qemu.splitlines()[0] if qemu else "?",
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip", action="append", default=[], help="peer names to skip")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    print(json.dumps({"bench": "machine", **machine()}), flush=True)
    with tempfile.TemporaryDirectory(prefix="hn-bench-") as tmp:
        work = Path(tmp)
        data = work / "data"
        env = {**os.environ, "HYPERNETES_ACCEL": "tcg"}
        prepare_image(data)
        kernels = KernelRegistry(data / "kernels", agent_binary())
        deb = debian_kernel()
        if deb is not None:
            kernels.register(DEBIAN_KERNEL_NAME, deb[0], modules_dir=deb[1])
        base = [CLI, "run", "--data-dir", str(data)]
        peers: list[tuple[str, object]] = [
            ("hypervm-our-kernel", lambda i: [*base, IMAGE, "--", "echo", "first"]),
            ("gvisor", lambda i: [*base, "--runtime", "gvisor", IMAGE, "--", "echo", "first"]),
        ]
        if deb is not None:
            peers.insert(
                1,
                (
                    "hypervm-debian-kernel",
                    lambda i: [*base, "--kernel", DEBIAN_KERNEL_NAME, IMAGE, "--", "echo", "first"],
                ),
            )
        if shutil.which("crun"):
            bundle = crun_bundle(data, work)
            peers.append(("crun", lambda i: crun_command(bundle, i)))
        init = b"#!/bin/busybox sh\n/bin/busybox echo first\n/bin/busybox reboot -f\n"
        plain_initrd = build_initrd(
            work / "plain.gz", {"init": File(init, 0o755), "bin/busybox": Path("/bin/busybox")}
        )
        if deb is not None:
            peers.append(("qemu-plain-debian-kernel", lambda i: plain_qemu_command(deb[0], plain_initrd)))
        ours = kernels.default()
        peers.append(("qemu-plain-our-kernel", lambda i: plain_qemu_command(ours.image, plain_initrd)))
        for name, make in peers:
            if name in args.skip:
                continue
            times = [first_line_time(make(i), b"first", 60, env) for i in range(args.runs)]  # type: ignore[operator]
            rows.append(summarize(name, times))

        from hypernetes.runtime.gvisor import GVisor
        from hypernetes.runtime.hypervm import HyperVM

        store = ImageStore(data / "images")
        runtimes: list[Runtime] = [
            HyperVM(data / "runtime", store, kernels, accel="tcg"),
            GVisor(data / "runtime", store),
        ]
        for runtime in runtimes:
            for count in (1, 4):
                if runtime.name not in args.skip:
                    rows.append(asyncio.run(idle_pss(runtime, f"pss{runtime.name}", count)))
    print("\n| peer | p50 s | p90 s | failed/runs |\n|---|---|---|---|", file=sys.stderr)
    for row in rows:
        if row["bench"] == "start":
            print(
                f"| {row['peer']} | {row.get('p50_s', '-')} | {row.get('p90_s', '-')} | "
                f"{row['failed']}/{row['runs']} |",
                file=sys.stderr,
            )
    for row in rows:
        if row["bench"] == "idle_pss":
            print(
                f"| idle PSS {row['peer']} x{row['pods']} | {row['pss_mib_per_pod']} MiB/pod | "
                f"{row['processes_per_pod']} processes/pod |",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
