"""The cost of tenant-network isolation: pod-to-pod TCP between two pod VMs on a tenant network
against the same two VMs on a plain Linux bridge, and the node-side network setup time per pod.

Prints one JSON object per measurement (and Markdown tables for bench/RESULTS.md on stderr).

Traffic peers (the same two hypervm pod VMs throughout, 1 vCPU and a 96 MiB limit each, the runtime's
own accelerator choice; their taps are moved between namespaces to switch peer, so the guests,
their kernels and QEMU processes are identical in every peer):

    tenant       the taps on a tenant network's bridge made by `TenantNetworkHost` (in a namespace
                 this script makes to play the host): router namespace, anti-spoofing and filter
                 rulesets, NAT, everything `apply` sets up
    tenant-noft  the same network with the router namespace's nftables ruleset flushed (restored by
                 `apply` afterwards): what the rules cost, apart from the rest of the plumbing
    plain        a namespace holding only a Linux bridge and the two taps (same MTU, IFF_VNET_HDR):
                 no nftables, no router, bridge-nf-call-* off as in a router namespace

Tests, with the static `bench/netperf/hn-netperf` (built here with musl-gcc, cached by source
hash in build/bench/) in a busybox image, client in VM 1, server in VM 2:

    stream   TCP bulk transfer VM 1 -> VM 2 for --seconds, bytes/s counted by the receiver
    rr       TCP 1-byte request/response for --seconds: transactions/s, RTT mean/p50/p99
    ping     busybox ping, --pings ICMP echoes 0.2 s apart: RTT min/avg/max

Peers are visited in ABBA order (A B C C B A for three) --rounds times over, each visit running
every test --reps times, so that drift of a shared machine falls on all peers alike.

`--native` adds the same tests between two network namespaces on the host (veth ports on the
same two bridges, hn-netperf run natively, client and server pinned to one CPU by default), where
the guests' emulated CPUs do not bound the rate.

Setup time: in another namespace playing the host, with another prefix, one network holding N
pods (--pod-counts, each with its tap open), the time to `apply` a state with one pod more plus
its `create_tap`; then the pod is removed again (apply without it) before the next repetition.
Separately the first network on a host (`apply` creating the router namespace, plus the tap) and
its removal (`apply` of an empty state).

Run as root after `make setup`, with musl-tools (`apt-get install musl-tools`):
`.venv/bin/python bench/network.py` (about 10 minutes; `--quick`: about 2). Everything is made in
namespaces named after a random prefix and removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import statistics
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

from pyroute2 import IPRoute  # type: ignore[import-untyped]  # noqa: E402

from hypernetes.network import netns  # noqa: E402
from hypernetes.network.host import TenantNetworkHost  # noqa: E402
from hypernetes.network.state import Network, NetworkState, Pod  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import ContainerSpec, ExecSpec, NetworkConfig, PodSpec, Stream  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.qemu import running_qemu  # noqa: E402
from tools.imagebuild import Layer, LayerBuilder, OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/netperf:bench"
CLI = str(REPO / ".venv" / "bin" / "hypernetes")
SOURCE = REPO / "bench" / "netperf" / "hn-netperf.c"
CACHE = REPO / "build" / "bench"
HZ = os.sysconf("SC_CLK_TCK")
PEERS = ("tenant", "tenant-noft", "plain")
PORT = 5201
BRIDGE = "br0"
NET_ID = 1
CIDR, GATEWAY, MTU = "10.0.0.0/16", "10.0.0.1", 1500


def pod(i: int, ifname: str) -> Pod:
    return Pod(ifname=ifname, mac=f"02:42:0a:00:{i >> 8:02x}:{i & 0xFF:02x}", ip=f"10.0.{i >> 8}.{i & 0xFF}")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pctl(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s), max(1, math.ceil(p * len(s)))) - 1] if s else float("nan")


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {proc.stderr.strip()}")
    return proc


# --- the tool and the image ---------------------------------------------------------------------


def build_netperf() -> Path:
    """hn-netperf, static, built once per source version."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = CACHE / f"hn-netperf-{digest}"
    if not out.exists():
        if shutil.which("musl-gcc") is None:
            raise SystemExit("musl-gcc is missing: apt-get install musl-tools")
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE)], check=True
        )
        os.replace(tmp, out)
    return out


def prepare_image(binary: Path, data: Path, work: Path) -> None:
    b = LayerBuilder()
    b.file("usr/bin/hn-netperf", binary.read_bytes(), 0o755)
    b.symlink("bin/ping", "/bin/busybox")
    layout = OciLayout(work / "oci")
    layout.add(busybox_image([Layer(b.tar())]), IMAGE)
    subprocess.run(
        [CLI, "image", "import", "--data-dir", str(data), str(layout.root)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --- namespaces and links -----------------------------------------------------------------------


class Made:
    """Every namespace this script makes; close() deletes them whatever happened."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)
        return name

    def close(self) -> None:
        for name in reversed(self.names):
            with suppress(Exception):
                netns.delete(name)
        self.names.clear()


def _lookup(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise RuntimeError(f"no link {name}")
    return int(found[0])


def make_plain_bridge(ns: str) -> None:
    def body() -> None:
        # As in a router namespace: bridged frames skip the IP hooks. A new namespace starts with
        # these at 1 where br_netfilter is loaded (built in here), which costs bridged traffic
        # a hook pass even without a single rule.
        for table in ("iptables", "ip6tables", "arptables"):
            netns.write_sysctl(f"net/bridge/bridge-nf-call-{table}", "0", optional=True)
        with IPRoute() as ipr:
            ipr.link("add", ifname=BRIDGE, kind="bridge", mtu=MTU)
            br = _lookup(ipr, BRIDGE)
            ipr.addr("add", index=br, address=GATEWAY, prefixlen=16)  # so the guests' gateway exists
            ipr.link("set", index=br, state="up")

    netns.run_in_netns(ns, body)


def move_links(names: list[str], src: str, dst: str) -> None:
    """Move links (the VMs' taps: their fds stay with QEMU) from one namespace's bridge onto
    another's."""
    dst_fd = netns.open_netns(dst)
    try:

        def out() -> None:
            with IPRoute() as ipr:
                for name in names:
                    ipr.link("set", index=_lookup(ipr, name), net_ns_fd=dst_fd)

        netns.run_in_netns(src, out)
    finally:
        os.close(dst_fd)

    def attach() -> None:
        with IPRoute() as ipr:
            br = _lookup(ipr, BRIDGE)
            for name in names:
                ipr.link("set", index=_lookup(ipr, name), master=br, mtu=MTU, state="up")

    netns.run_in_netns(dst, attach)


def plain_veth(bridge_ns: str, name: str, peer_ns: str, p: Pod) -> None:
    """A veth port `name` on the plain bridge, its other end eth0 in `peer_ns` with the pod's
    MAC and address (what `attach_veth` does on a tenant network)."""
    peer_fd = netns.open_netns(peer_ns)
    try:

        def side() -> None:
            with IPRoute() as ipr:
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": peer_fd})
                ipr.link("set", index=_lookup(ipr, name), master=_lookup(ipr, BRIDGE), mtu=MTU, state="up")

        netns.run_in_netns(bridge_ns, side)
    finally:
        os.close(peer_fd)

    def pod_side() -> None:
        with IPRoute() as ipr:
            i = _lookup(ipr, "eth0")
            ipr.link("set", index=i, address=p.mac, mtu=MTU, state="up")
            ipr.addr("add", index=i, address=p.ip, prefixlen=16)

    netns.run_in_netns(peer_ns, pod_side)


# --- host-side CPU ------------------------------------------------------------------------------


def proc_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def host_busy() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs; softirq separately in `host_softirq`."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def host_softirq() -> int:
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[7])


@contextmanager
def cpu_window(pids: list[int], row: dict[str, Any]) -> Iterator[None]:
    """Adds to `row` the CPUs used over the block: each QEMU process and the whole host."""
    t0 = time.monotonic()
    q0 = [proc_ticks(p) for p in pids]
    b0, s0 = host_busy(), host_softirq()
    yield
    dt = time.monotonic() - t0
    q1 = [proc_ticks(p) for p in pids]
    b1, s1 = host_busy(), host_softirq()
    for i, (a, b) in enumerate(zip(q0, q1, strict=True), 1):
        row[f"qemu{i}_cpus"] = round((b - a) / HZ / dt, 2)
    row["host_busy_cpus"] = round((b1[0] - b0[0]) / HZ / dt, 2)
    row["host_softirq_cpus"] = round((s1 - s0) / HZ / dt, 2)


# --- the tests ------------------------------------------------------------------------------------


PING_RE = re.compile(r"round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms")
LOSS_RE = re.compile(r"(\d+) packets transmitted, (\d+) packets received")


def parse_ping(out: str) -> dict[str, Any]:
    m, loss = PING_RE.search(out), LOSS_RE.search(out)
    if m is None or loss is None:
        raise RuntimeError(f"ping said: {out.strip()[-300:]}")
    return {
        "sent": int(loss.group(1)),
        "received": int(loss.group(2)),
        "rtt_min_us": round(float(m.group(1)) * 1000, 1),
        "rtt_avg_us": round(float(m.group(2)) * 1000, 1),
        "rtt_max_us": round(float(m.group(3)) * 1000, 1),
    }


def commands(args: argparse.Namespace, server_ip: str) -> dict[str, list[str]]:
    t = str(args.seconds)
    return {
        "stream": ["hn-netperf", "stream", server_ip, "-p", str(PORT), "-t", t],
        "rr": ["hn-netperf", "rr", server_ip, "-p", str(PORT), "-t", t],
        "ping": ["ping", "-q", "-c", str(args.pings), "-i", "0.2", "-W", "2", server_ip],
    }


def parse(test: str, out: str) -> dict[str, Any]:
    if test == "ping":
        return parse_ping(out)
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    res.pop("test", None)
    return res


class VMPair:
    def __init__(self, rt: HyperVM, prefix: str) -> None:
        self.rt = rt
        self.ids = [f"{prefix}-vm1", f"{prefix}-vm2"]
        self.pids: list[int] = []

    async def start(self, pods: list[Pod], fds: list[int]) -> None:
        container = ContainerSpec(
            name="np", image=IMAGE, command=("hn-netperf", "server", "-p", str(PORT)), memory_limit=96 << 20
        )
        for i, (sid, p, fd) in enumerate(zip(self.ids, pods, fds, strict=True)):
            net = NetworkConfig(mac=p.mac, addresses=(f"{p.ip}/16",), gateway=GATEWAY, mtu=MTU, tap_fd=fd)
            try:
                await self.rt.create_sandbox(PodSpec(id=sid, name=sid, containers=(container,), network=net))
            except BaseException:
                for later in fds[i + 1 :]:  # not handed over yet (the runtime closed this one)
                    os.close(later)
                raise
            await self.rt.start_container(sid, "np")
            pid = running_qemu(self.rt.root / sid)
            assert pid is not None
            self.pids.append(pid)

    async def run(self, cmd: list[str], timeout: float) -> str:
        proc = await self.rt.exec(self.ids[0], "np", ExecSpec(command=tuple(cmd)))
        out, err = bytearray(), bytearray()

        async def collect() -> None:
            async for stream, data in proc.output():
                (out if stream is Stream.STDOUT else err).extend(data)

        await asyncio.wait_for(collect(), timeout)
        status = await asyncio.wait_for(proc.wait(), 10)
        if status.code != 0:
            raise RuntimeError(f"{' '.join(cmd)} in the VM failed ({status}): {bytes(out + err)[-500:]!r}")
        return out.decode()

    async def remove(self) -> None:
        for sid in self.ids:
            with suppress(Exception):
                await self.rt.remove_sandbox(sid)


class NativePair:
    """hn-netperf run on the host in two namespaces: the server in b, the client in a."""

    def __init__(self, binary: Path, a: str, b: str, cpus: str) -> None:
        self.binary, self.a, self.b = binary, a, b
        self.pin = ["taskset", "-c", cpus] if cpus else []
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.b, *self.pin, str(self.binary), "server", "-p", str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def run(self, cmd: list[str], timeout: float) -> str:
        # the guest's command line, with the host's binaries: ours for hn-netperf, busybox's ping
        exe = [str(self.binary)] if cmd[0] == "hn-netperf" else ["busybox", cmd[0]]
        full = ["ip", "netns", "exec", self.a, *self.pin, *exe, *cmd[1:]]
        proc = await asyncio.create_subprocess_exec(
            *full, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} failed: {(out + err)[-500:]!r}")
        return out.decode()

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.server.wait(5)
            if self.server.poll() is None:
                self.server.kill()
                self.server.wait()


def abba(peers: list[str], rounds: int) -> list[str]:
    order: list[str] = []
    for r in range(rounds):
        order += peers if r % 2 == 0 else list(reversed(peers))
    return order


# --- setup time ---------------------------------------------------------------------------------


def setup_times(
    made: Made, prefix: str, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
) -> None:
    host_ns = made.netns(f"{prefix}xsetup")
    host = TenantNetworkHost(host_ns, prefix)
    net_id = 2
    fds: list[int] = []
    try:

        def net(pods: list[Pod]) -> Network:
            return Network(id=net_id, cidr=CIDR, gateway=GATEWAY, mtu=MTU, pods=tuple(pods))

        # the first network on the host: router namespace, links, rulesets; and its removal
        first, gone = [], []
        for _ in range(args.setup_reps):
            p = pod(10, "s0")
            t0 = time.perf_counter()
            n = net([p])
            host.apply(NetworkState((n,)))
            fd = host.create_tap(n, p.ifname, p.mac)
            t1 = time.perf_counter()
            os.close(fd)
            t2 = time.perf_counter()
            host.apply(NetworkState())
            t3 = time.perf_counter()
            first.append((t1 - t0) * 1000)
            gone.append((t3 - t2) * 1000)
        for what, xs in (
            ("first network: apply + create_tap", first),
            ("remove the network: apply(empty)", gone),
        ):
            emit(
                {
                    "bench": "network_setup",
                    "what": what,
                    "pods_before": 0,
                    "reps": len(xs),
                    "p50_ms": round(median(xs), 1),
                    "p90_ms": round(pctl(xs, 0.9), 1),
                    "min_ms": round(min(xs), 1),
                }
            )

        for count in args.pod_counts:
            pods = [pod(10 + i, f"s{i}") for i in range(count)]
            n = net(pods)
            host.apply(NetworkState((n,)))
            for fd in fds:
                os.close(fd)
            fds = [host.create_tap(n, p.ifname, p.mac) for p in pods]
            new = pod(10 + count, f"s{count}")
            with_new = net([*pods, new])
            apply_ms, tap_ms, total_ms, remove_ms = [], [], [], []
            for _ in range(args.setup_reps):
                t0 = time.perf_counter()
                host.apply(NetworkState((with_new,)))
                t1 = time.perf_counter()
                fd = host.create_tap(with_new, new.ifname, new.mac)
                t2 = time.perf_counter()
                os.close(fd)
                t3 = time.perf_counter()
                host.apply(NetworkState((n,)))
                t4 = time.perf_counter()
                apply_ms.append((t1 - t0) * 1000)
                tap_ms.append((t2 - t1) * 1000)
                total_ms.append((t2 - t0) * 1000)
                remove_ms.append((t4 - t3) * 1000)
            for what, xs in (
                ("add a pod: apply + create_tap", total_ms),
                ("  of which apply", apply_ms),
                ("  of which create_tap", tap_ms),
                ("remove a pod: apply", remove_ms),
            ):
                emit(
                    {
                        "bench": "network_setup",
                        "what": what,
                        "pods_before": count,
                        "reps": len(xs),
                        "p50_ms": round(median(xs), 1),
                        "p90_ms": round(pctl(xs, 0.9), 1),
                        "min_ms": round(min(xs), 1),
                    }
                )
    finally:
        for fd in fds:
            os.close(fd)
        with suppress(Exception):
            host.apply(NetworkState())


# --- the traffic peers --------------------------------------------------------------------------


async def traffic(
    made: Made,
    prefix: str,
    binary: Path,
    rt: HyperVM | None,
    args: argparse.Namespace,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    host_ns = made.netns(f"{prefix}xhost")
    plain_ns = made.netns(f"{prefix}xplain")
    make_plain_bridge(plain_ns)
    host = TenantNetworkHost(host_ns, prefix)
    router = host.router_netns(NET_ID)
    vm_pods = [pod(5, f"{prefix}v1"), pod(6, f"{prefix}v2")]
    native_pods = [pod(7, f"{prefix}n1"), pod(8, f"{prefix}n2")]
    state = NetworkState(
        (
            Network(
                id=NET_ID,
                cidr=CIDR,
                gateway=GATEWAY,
                mtu=MTU,
                egress=True,
                pods=tuple(vm_pods + (native_pods if args.native else [])),
            ),
        )
    )
    vms = VMPair(rt, prefix) if rt is not None else None
    natives: dict[str, NativePair] = {}
    try:
        host.apply(state)
        net = state.networks[0]
        if args.native:
            for where in ("tenant", "plain"):
                a, b = made.netns(f"{prefix}x{where[0]}a"), made.netns(f"{prefix}x{where[0]}b")
                for p, ns in zip(native_pods, (a, b), strict=True):
                    if where == "tenant":
                        host.attach_veth(net, p.ifname, p.mac, ns, ip=p.ip)
                    else:
                        plain_veth(plain_ns, p.ifname, ns, p)
                natives[where] = NativePair(binary, a, b, args.native_cpus)
                natives[where].start()
        if vms is not None:
            fds = [host.create_tap(net, p.ifname, p.mac) for p in vm_pods]
            await vms.start(vm_pods, fds)  # the runtime owns the fds from here on
        where_taps = "tenant"
        flushed = False

        def switch(peer: str) -> None:
            nonlocal where_taps, flushed
            want_tenant = peer != "plain"
            if vms is not None and want_tenant != (where_taps == "tenant"):
                names = [p.ifname for p in vm_pods]
                if want_tenant:
                    move_links(names, plain_ns, router)
                else:
                    move_links(names, router, plain_ns)
                where_taps = "tenant" if want_tenant else "plain"
            if peer == "tenant-noft" and not flushed:
                sh("nft", "flush", "ruleset", ns=router)
                flushed = True
            elif peer != "tenant-noft" and flushed:
                host.apply(state)  # the whole ruleset back, atomically
                flushed = False

        cmds = commands(args, vm_pods[1].ip)
        native_cmds = commands(args, native_pods[1].ip)
        timeout = args.seconds + 60
        order = abba(args.peers, args.rounds)
        for visit, peer in enumerate(order):
            switch(peer)
            if vms is not None:
                await vms.run(
                    ["ping", "-q", "-c", "3", "-i", "0.2", "-W", "5", vm_pods[1].ip], 30
                )  # warm ARP
            for test in args.tests:
                for rep in range(args.reps if test != "ping" else 1):
                    if vms is not None:
                        row: dict[str, Any] = {
                            "bench": "network_traffic",
                            "side": "vm",
                            "peer": peer,
                            "test": test,
                            "visit": visit,
                            "rep": rep,
                        }
                        with cpu_window(vms.pids, row):
                            out = await vms.run(cmds[test], timeout)
                        emit({**row, **parse(test, out)})
                    if args.native:
                        np_ = natives["plain" if peer == "plain" else "tenant"]
                        row = {
                            "bench": "network_traffic",
                            "side": "native",
                            "peer": peer,
                            "test": test,
                            "visit": visit,
                            "rep": rep,
                        }
                        with cpu_window([], row):
                            out = await np_.run(native_cmds[test], timeout)
                        emit({**row, **parse(test, out)})
    finally:
        for np_ in natives.values():
            np_.stop()
        if vms is not None:
            await vms.remove()
        with suppress(Exception):
            host.apply(NetworkState())


# --- report ---------------------------------------------------------------------------------------


def machine(accel: str | None) -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]

    def first_line(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1048576),
        "host_kernel": platform.release(),
        "qemu": first_line("qemu-system-x86_64", "--version"),
        "nft": first_line("nft", "--version"),
        "accel": accel,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


METRICS: dict[str, list[tuple[str, str, Callable[[float], float]]]] = {
    "stream": [("bytes_per_s", "Mbit/s", lambda v: v * 8 / 1e6)],
    "rr": [
        ("tps", "trans/s", lambda v: v),
        ("rtt_p50_us", "RTT p50 µs", lambda v: v),
        ("rtt_p99_us", "RTT p99 µs", lambda v: v),
    ],
    "ping": [("rtt_avg_us", "ping avg µs", lambda v: v)],
}


def tables(rows: list[dict[str, Any]], peers: list[str]) -> str:
    out: list[str] = []
    for side in ("vm", "native"):
        mine = [r for r in rows if r.get("bench") == "network_traffic" and r["side"] == side]
        if not mine:
            continue
        shown = [p for p in peers if any(r["peer"] == p for r in mine)]
        ratio_peers = [p for p in shown if p != "plain"] if "plain" in shown else []
        out.append(f"\n{side}: medians (min-max); ratios of medians to plain")
        out.append("| test | " + " | ".join(shown) + "".join(f" | {p}/plain" for p in ratio_peers) + " |")
        out.append("|---" * (1 + len(shown) + len(ratio_peers)) + "|")
        for test, metrics in METRICS.items():
            for key, label, conv in metrics:
                meds: dict[str, float] = {}
                cells = []
                for p in shown:
                    xs = [conv(r[key]) for r in mine if r["peer"] == p and r["test"] == test and key in r]
                    if not xs:
                        cells.append("-")
                        continue
                    meds[p] = median(xs)
                    cells.append(f"{meds[p]:.1f} ({min(xs):.1f}-{max(xs):.1f})")
                if all(c == "-" for c in cells):
                    continue
                ratios = [
                    f"{meds[p] / meds['plain']:.3f}" if p in meds and meds.get("plain") else "-"
                    for p in ratio_peers
                ]
                out.append(
                    f"| {test} {label} | " + " | ".join(cells) + "".join(f" | {x}" for x in ratios) + " |"
                )
    setup = [r for r in rows if r.get("bench") == "network_setup"]
    if setup:
        out.append("\nsetup: | what | pods before | p50 ms | p90 ms | min ms | reps |")
        for r in setup:
            out.append(
                f"| {r['what']} | {r['pods_before']} | {r['p50_ms']} | {r['p90_ms']} | {r['min_ms']} | "
                f"{r['reps']} |"
            )
    return "\n".join(out)


async def bench(args: argparse.Namespace) -> int:
    prefix = "nb" + secrets.token_hex(3)
    base = Path(tempfile.mkdtemp(prefix="hn-bench-net-"))
    made = Made()
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row = {**row, "run": args.run, "loadavg1": float(Path("/proc/loadavg").read_text().split()[0])}
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        binary = build_netperf()
        rt: HyperVM | None = None
        accel = None
        if args.vms:
            data = base / "data"
            prepare_image(binary, data, base)
            rt = HyperVM(
                data / "runtime",
                ImageStore(data / "images"),
                KernelRegistry(data / "kernels", agent_binary()),
            )
            accel = await rt.accel()
        print(json.dumps({"bench": "machine", "prefix": prefix, **machine(accel)}), flush=True)
        if args.setup:
            setup_times(made, prefix + "s", args, emit)
        if args.vms or args.native:
            await traffic(made, prefix, binary, rt, args, emit)
    finally:
        made.close()
        for ns in netns.list_netns():  # anything of ours a failure left behind (routers included)
            if ns.startswith(prefix):
                with suppress(Exception):
                    netns.delete(ns)
        shutil.rmtree(base, ignore_errors=True)
    print(
        json.dumps({"bench": "machine_after", "loadavg": Path("/proc/loadavg").read_text().split()[:3]}),
        flush=True,
    )
    print(tables(rows, args.peers), file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of one stream or rr run")
    parser.add_argument("--reps", type=int, default=2, help="runs of each test per peer visit")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds over the peers")
    parser.add_argument("--pings", type=int, default=20, help="ICMP echoes per ping test")
    parser.add_argument(
        "--peers",
        type=lambda s: s.split(","),
        default=list(PEERS),
        help=f"comma-separated, from {','.join(PEERS)}",
    )
    parser.add_argument(
        "--tests",
        type=lambda s: s.split(","),
        default=["stream", "rr", "ping"],
        help="comma-separated, from stream,rr,ping",
    )
    parser.add_argument(
        "--pod-counts",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 10, 50],
        help="pods already on the network for the setup-time part",
    )
    parser.add_argument("--setup-reps", type=int, default=30, help="repetitions of each setup measurement")
    parser.add_argument("--no-vms", dest="vms", action="store_false", help="leave out the VM traffic tests")
    parser.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the tests between two host namespaces (hn-netperf run natively)",
    )
    parser.add_argument(
        "--native-cpus",
        default="0",
        help="taskset CPU list for both native processes (default 0: client and server share one CPU, "
        "so a run is bound by one CPU's work per byte, not by cross-CPU wake-ups); empty: unpinned",
    )
    parser.add_argument("--no-setup", dest="setup", action="store_false", help="leave out the setup times")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 s tests, one rep, 5 setup reps, pod counts 1,10"
    )
    parser.add_argument("--run", type=int, default=1, help="a run number, copied into every result")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps, args.setup_reps, args.pod_counts, args.pings = 3, 1, 5, [1, 10], 5
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if unknown := set(args.tests) - {"stream", "rr", "ping"}:
        parser.error(f"unknown tests: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        parser.error("run as root: it makes network namespaces, bridges and taps")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
