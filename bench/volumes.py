"""Persistent-volume I/O: fio inside a pod VM against the same fio on the host, in the same run.

Prints one JSON object per result (and a Markdown table for bench/RESULTS.md on stderr).

Workload (fio 3.33, Debian's build, run as it is in the guest: the pod image holds its binary
and the 60-odd shared libraries it links, copied from the host), every job with O_DIRECT:

    seq-write-first   write the whole test file once, 1 MiB blocks, fsync at the end (the
                      filesystem allocates as it goes: a fresh volume)
    seq-write         overwrite it sequentially, 1 MiB blocks, --runtime seconds, fsync at the end
    seq-read          read it sequentially, 1 MiB blocks
    rand-write-4k     4 KiB random overwrites, one at a time (psync), fsync at the end
    rand-read-4k      4 KiB random reads, one at a time
    rand-*-4k-qd16    the same with 16 in flight (libaio)

Peers:

    host         fio on the host against a plain file in the directory that holds the volume
                 files (the same host filesystem; the host never mounts a volume)
    vm           fio in a hypervm pod against a file on the persistent volume (a sparse ext4 file
                 made by LocalVolumes, attached as a `block` volume): cache=none, as shipped
    vm-unsafe    the same, with QEMU's cache=unsafe (host page cache, the guest's flushes ignored):
                 not a mode the runtime offers, patched in here to take the host disk away
    vm-tmpfs     the volume file on /dev/shm: tmpfs (cache=none where its kernel takes O_DIRECT,
                 as 6.6 and later do, else the runtime's writeback fallback: `qemu_cache` says which;
                 a flush is nothing either way): the host side of every I/O is a memory copy,
                 so what is left is the guest, virtio and QEMU under TCG

For the VM peers, the host-side CPU of the QEMU process over each job (its TCG vCPU thread vs
everything else: the main loop and the thread-pool workers that do the file I/O) is sampled from
/proc; for all peers, the busy time of the host disk (/proc/diskstats) over the job.

Run as root after `make setup`, with fio on the host (`apt-get install fio`):
`.venv/bin/python bench/volumes.py` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qemu.qmp import QMPClient  # noqa: E402

from hypernetes.runtime import qemu  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import (  # noqa: E402
    BlockDevice,
    ContainerSpec,
    ExecSpec,
    MountSpec,
    PodSpec,
    Stream,
    VolumeSpec,
)
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.qemu import running_qemu, socket_dir  # noqa: E402
from hypernetes.volumes.local import LocalVolumes  # noqa: E402
from tools.imagebuild import Layer, LayerBuilder, OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/fio:bench"
CLI = str(REPO / ".venv" / "bin" / "hypernetes")
FIO = "/usr/bin/fio"
HZ = os.sysconf("SC_CLK_TCK")
SECTOR = 512
PEERS = ("host", "vm", "vm-unsafe", "vm-tmpfs")


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    rw: str
    bs: str
    iodepth: int = 1
    timed: bool = True  # time_based for --runtime seconds; else the whole file once

    def args(self, filename: str, size_mib: int, runtime: int) -> list[str]:
        engine = "libaio" if self.iodepth > 1 else "psync"
        args = [
            f"--name={self.name}",
            f"--filename={filename}",
            f"--size={size_mib}M",
            f"--rw={self.rw}",
            f"--bs={self.bs}",
            f"--ioengine={engine}",
            f"--iodepth={self.iodepth}",
            "--direct=1",
            "--output-format=json",
            "--eta=never",
        ]
        if self.timed:
            args += ["--time_based", f"--runtime={runtime}"]
        if "write" in self.rw:
            args.append("--end_fsync=1")
        return args


JOBS = (
    Job("seq-write-first", "write", "1M", timed=False),
    Job("seq-write", "write", "1M"),
    Job("seq-read", "read", "1M"),
    Job("rand-write-4k", "randwrite", "4k"),
    Job("rand-read-4k", "randread", "4k"),
    Job("rand-write-4k-qd16", "randwrite", "4k", iodepth=16),
    Job("rand-read-4k-qd16", "randread", "4k", iodepth=16),
)


# --- the image: busybox + Debian's fio and every library it links -------------------------------


def linked_files(binary: str) -> list[str]:
    """The binary's shared libraries and its interpreter, as ldd resolves them on this host."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    found: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > 2 and parts[2].startswith("/"):
            found.append(parts[2])
        elif parts and parts[0].startswith("/"):
            found.append(parts[0])
    return found


def fio_layer() -> Layer:
    files = [FIO, *linked_files(FIO)]
    dirs: set[str] = set()
    for f in files:
        parts = f.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    b = LayerBuilder()
    for d in sorted(dirs - {"usr", "usr/bin"}):  # the busybox layer has those
        b.dir(d)
    for f in files:  # ldd's names: a symlink's target content under the name the loader asks for
        b.file(f.strip("/"), Path(f).read_bytes(), 0o755)
    return Layer(b.tar())


def prepare_image(data: Path, work: Path) -> None:
    layout = OciLayout(work / "oci")
    layout.add(busybox_image([fio_layer()]), IMAGE)
    subprocess.run(
        [CLI, "image", "import", "--data-dir", str(data), str(layout.root)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --- host-side measurements ------------------------------------------------------------------------


def disk_of(path: Path) -> str | None:
    """The whole block device under the filesystem holding `path` (e.g. vda), or None (tmpfs)."""
    st = os.stat(path)
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not sys_dev.exists():
        return None
    dev = sys_dev.resolve()
    if (dev / "partition").exists():
        dev = dev.parent
    return dev.name


def diskstats(name: str | None) -> tuple[int, int, int]:
    """(ios completed, sectors moved, ms the device was busy) of a disk; zeros for None."""
    if name is None:
        return (0, 0, 0)
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if f[2] == name:
            return (int(f[3]) + int(f[7]), int(f[5]) + int(f[9]), int(f[12]))
    return (0, 0, 0)


def cpu_iowait() -> int:
    """Host-wide iowait, clock ticks summed over all CPUs."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[5])


def _ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def qemu_ticks(pid: int, vcpu_tids: list[int]) -> tuple[int, int]:
    """(all threads, vCPU threads) user+system clock ticks of a QEMU process. The process's own
    stat also counts threads that already exited (thread-pool workers come and go)."""
    vcpu = sum(_ticks(Path(f"/proc/{pid}/task/{t}/stat")) for t in vcpu_tids)
    return _ticks(Path(f"/proc/{pid}/stat")), vcpu


async def vcpu_threads(vm_dir: Path) -> list[int]:
    """The host thread ids of a VM's vCPUs, from QMP (without debug-threads every QEMU thread
    has the same name)."""
    client = QMPClient("bench")
    await client.connect(str(socket_dir(vm_dir) / "qmp.sock"))
    try:
        cpus = await client.execute("query-cpus-fast")
    finally:
        await client.disconnect()
    assert isinstance(cpus, list)
    return [int(c["thread-id"]) for c in cpus]


class Sampler:
    """Samples counters every `interval` seconds, so a window that ends when a job ended can be
    cut out afterwards (the job's start inside the exec is not visible from the host: fio spends
    about a second under TCG loading its libraries first)."""

    def __init__(self, read: Callable[[], tuple[int, ...]], interval: float = 0.05) -> None:
        self.read = read
        self.interval = interval
        self.samples: list[tuple[float, tuple[int, ...]]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.read()))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.samples.append((time.monotonic(), self.read()))
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def at(self, t: float) -> tuple[float, ...]:
        """Counters at time t, interpolated between the samples either side."""
        prev = self.samples[0]
        for s in self.samples:
            if s[0] >= t:
                if s[0] == prev[0]:
                    return tuple(float(x) for x in s[1])
                w = (t - prev[0]) / (s[0] - prev[0])
                return tuple(a + w * (b - a) for a, b in zip(prev[1], s[1], strict=True))
            prev = s
        return tuple(float(x) for x in prev[1])

    def delta(self, start: float, end: float) -> tuple[float, ...]:
        a, b = self.at(start), self.at(end)
        return tuple(y - x for x, y in zip(a, b, strict=True))


# --- one job, its result ---------------------------------------------------------------------------


def fio_result(doc: dict[str, Any]) -> dict[str, Any]:
    job = doc["jobs"][0]
    side = job["write"] if job["write"]["total_ios"] else job["read"]
    clat = side["clat_ns"]
    pct = clat.get("percentile", {})
    runtime_s = max(job["job_runtime"], side["runtime"]) / 1000
    return {
        "mb_s": round(side["bw_bytes"] / 1e6, 1),
        "iops": round(side["iops"]),
        "ios": side["total_ios"],
        "clat_mean_us": round(clat["mean"] / 1000, 1),
        "clat_p99_us": round(pct.get("99.000000", 0) / 1000, 1),
        "fio_runtime_s": round(runtime_s, 2),
        "fio_usr_pct": round(job["usr_cpu"], 1),
        "fio_sys_pct": round(job["sys_cpu"], 1),
    }


def window_stats(
    sampler: Sampler, end: float, runtime_s: float, disk: str | None, pid: int | None
) -> dict[str, Any]:
    """Host-side figures over the last `runtime_s` seconds before the job ended."""
    d = sampler.delta(end - runtime_s, end)
    ios, sectors, busy_ms, iowait = d[0], d[1], d[2], d[3]
    row: dict[str, Any] = {
        "host_disk_ios": round(ios),
        "host_disk_mb": round(sectors * SECTOR / 1e6, 1),
        "host_disk_busy": round(busy_ms / 1000 / runtime_s, 2) if disk else None,
        "host_iowait_cpus": round(iowait / HZ / runtime_s, 2),
    }
    if pid is not None:
        total, vcpu = d[4], d[5]
        row["qemu_vcpu_cpus"] = round(vcpu / HZ / runtime_s, 2)
        row["qemu_other_cpus"] = round((total - vcpu) / HZ / runtime_s, 2)
    return row


def counters(disk: str | None, pid: int | None, vcpus: list[int]) -> Callable[[], tuple[int, ...]]:
    def read() -> tuple[int, ...]:
        q = qemu_ticks(pid, vcpus) if pid is not None else (0, 0)
        return (*diskstats(disk), cpu_iowait(), *q)

    return read


# --- peers ----------------------------------------------------------------------------------------


async def run_host_job(job: Job, path: Path, size_mib: int, runtime: int, disk: str | None) -> dict[str, Any]:
    sampler = Sampler(counters(disk, None, []))
    sampler.start()
    proc = await asyncio.create_subprocess_exec(
        FIO, *job.args(str(path), size_mib, runtime), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    end = time.monotonic()
    await sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"fio {job.name} on the host failed: {out[-500:]!r}")
    res = fio_result(json.loads(out))
    return {**res, **window_stats(sampler, end, res["fio_runtime_s"], disk, None)}


async def run_vm_job(
    rt: HyperVM,
    sandbox: str,
    job: Job,
    size_mib: int,
    runtime: int,
    disk: str | None,
    pid: int,
    vcpus: list[int],
) -> dict[str, Any]:
    sampler = Sampler(counters(disk, pid, vcpus))
    sampler.start()
    proc = await rt.exec(
        sandbox, "fio", ExecSpec(command=("fio", *job.args("/data/fio.dat", size_mib, runtime)))
    )
    out, err = bytearray(), bytearray()
    async for stream, data in proc.output():
        (out if stream is Stream.STDOUT else err).extend(data)
    status = await proc.wait()
    end = time.monotonic()
    await sampler.stop()
    if status.code != 0:
        raise RuntimeError(f"fio {job.name} in the VM failed ({status}): {bytes(out + err)[-500:]!r}")
    res = fio_result(json.loads(out))
    row = {**res, **window_stats(sampler, end, res["fio_runtime_s"], disk, pid)}
    # the guest's CPU time per I/O: what TCG costs, as the vCPU thread spends it on the host
    row["vcpu_us_per_io"] = round(row["qemu_vcpu_cpus"] * res["fio_runtime_s"] / max(res["ios"], 1) * 1e6)
    return row


@contextmanager
def unsafe_volumes() -> Iterator[None]:
    """QEMU's cache=unsafe for persistent volumes (serials pv*): page cache, flushes ignored."""
    original = qemu._blockdev

    def blockdev(disk: qemu.Disk, node: str) -> str:
        if disk.serial.startswith("pv"):
            disk = dataclasses.replace(disk, cache="writeback", flush=False)
        return original(disk, node)

    qemu._blockdev = blockdev
    try:
        yield
    finally:
        qemu._blockdev = original


async def vm_peer(
    rt: HyperVM, peer: str, volume_dir: Path, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
) -> None:
    volumes = LocalVolumes(volume_dir)
    handle = f"bench-{peer}"
    volumes.delete(handle)
    path = volumes.ensure(handle, args.volume_gib << 30, "ext4")
    disk = disk_of(volume_dir)
    sandbox = f"vol-{peer}"
    container = ContainerSpec(
        name="fio",
        image=IMAGE,
        command=("sleep", "100000"),
        memory_limit=256 << 20,
        mounts=(MountSpec("data", "/data"),),
    )
    spec = PodSpec(
        id=sandbox,
        name=sandbox,
        containers=(container,),
        volumes=(VolumeSpec("data", "block", block=BlockDevice(str(path), fs_type="ext4")),),
    )
    try:
        if peer == "vm-unsafe":
            with unsafe_volumes():
                await rt.create_sandbox(spec)
        else:
            await rt.create_sandbox(spec)
        await rt.start_container(sandbox, "fio")
        pid = running_qemu(rt.root / sandbox)
        assert pid is not None
        vcpus = await vcpu_threads(rt.root / sandbox)
        # the volume is the pod's one writable disk: under the jail QEMU names it by an fd set
        # (/dev/fdset/N), not by its path
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        blockdevs = [json.loads(a) for a in cmdline if a.startswith(b"{") and b'"node-name"' in a]
        cache = next(b for b in blockdevs if not b["read-only"])["cache"]
        for job in JOBS:
            if job.name in args.skip and job.timed:
                continue
            row = await run_vm_job(rt, sandbox, job, args.size_mib, args.runtime, disk, pid, vcpus)
            emit(
                {
                    "peer": peer,
                    "job": job.name,
                    "bs": job.bs,
                    "iodepth": job.iodepth,
                    "qemu_cache": cache,
                    **row,
                }
            )
    finally:
        await rt.remove_sandbox(sandbox)
        volumes.delete(handle)


async def host_peer(
    volume_dir: Path, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
) -> None:
    volume_dir.mkdir(parents=True, exist_ok=True)
    path = volume_dir / "host-fio.dat"
    path.unlink(missing_ok=True)
    disk = disk_of(volume_dir)
    try:
        for job in JOBS:
            if job.name in args.skip and job.timed:
                continue
            row = await run_host_job(job, path, args.size_mib, args.runtime, disk)
            emit({"peer": "host", "job": job.name, "bs": job.bs, "iodepth": job.iodepth, **row})
    finally:
        path.unlink(missing_ok=True)


def machine(volume_dir: Path) -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    qemu_version = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    fio_version = subprocess.run([FIO, "--version"], capture_output=True, text=True).stdout.strip()
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(volume_dir)],
        capture_output=True,
        text=True,
    ).stdout.strip()
    disk = disk_of(volume_dir)
    queue = Path(f"/sys/block/{disk}/queue") if disk else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1048576),
        "host_kernel": platform.release(),
        "qemu": qemu_version,
        "fio": fio_version,
        "volume_dir": str(volume_dir),
        "volume_fs": fs,
        "disk": disk,
        "disk_rotational": (queue / "rotational").read_text().strip() if queue else None,
        "disk_scheduler": (queue / "scheduler").read_text().strip() if queue else None,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    by = {(r["peer"], r["job"]): r for r in rows}
    peers = [p for p in PEERS if any(r["peer"] == p for r in rows)]
    head = "| job | " + " | ".join(peers) + " | vm/host |"
    lines = [head, "|---" * (len(peers) + 2) + "|"]
    for job in JOBS:
        cells = []
        for p in peers:
            r = by.get((p, job.name))
            cells.append(
                "-" if r is None else (f"{r['mb_s']} MB/s" if job.bs == "1M" else f"{r['iops']} IOPS")
            )
        h, v = by.get(("host", job.name)), by.get(("vm", job.name))
        ratio = f"{v['mb_s'] / h['mb_s']:.2f}" if h and v and h["mb_s"] else "-"
        lines.append(f"| {job.name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hn-bench-vol-"))
    shm = Path(tempfile.mkdtemp(prefix="hn-bench-vol-", dir="/dev/shm"))
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row = {
            "bench": "volume_io",
            "run": args.run,
            **row,
            "loadavg1": float(Path("/proc/loadavg").read_text().split()[0]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        data = base / "data"
        print(json.dumps({"bench": "machine", **machine(base)}), flush=True)
        prepare_image(data, base)
        rt = HyperVM(
            data / "runtime",
            ImageStore(data / "images"),
            KernelRegistry(data / "kernels", agent_binary()),
            accel="tcg",
        )
        for peer in args.peers:
            if peer == "host":
                await host_peer(base / "volumes", args, emit)
            else:
                await vm_peer(rt, peer, shm if peer == "vm-tmpfs" else base / "volumes", args, emit)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(
        json.dumps({"bench": "machine_after", "loadavg": Path("/proc/loadavg").read_text().split()[:3]}),
        flush=True,
    )
    print("\n" + table(rows), file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", type=int, default=10, help="seconds per timed job")
    parser.add_argument("--size-mib", type=int, default=1024, help="the test file's size")
    parser.add_argument("--volume-gib", type=int, default=2, help="the persistent volume's size")
    parser.add_argument(
        "--peers",
        type=lambda s: s.split(","),
        default=list(PEERS),
        help=f"comma-separated, from {','.join(PEERS)}",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="a job to leave out (seq-write-first always runs: it writes the file)",
    )
    parser.add_argument("--dir", help="where the volume files go (default: a new directory in $TMPDIR)")
    parser.add_argument("--run", type=int, default=1, help="a run number, copied into every result")
    args = parser.parse_args()
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if shutil.which(FIO) is None:
        parser.error(f"{FIO} is missing: apt-get install fio")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
