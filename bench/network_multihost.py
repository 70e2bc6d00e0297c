"""Tenant networks across hosts: pod-to-pod TCP between two pod VMs on one host against the same
two VMs on two hosts over VXLAN, in the same run (issue 16).

Two hosts are network namespaces on an underlay bridge (MTU 1500), each with its own
`TenantNetworkHost`; one tenant network (MTU 1450, the underlay's less the VXLAN overhead, in
both peers) spans both. The same two hypervm pod VMs serve both peers; VM 2's tap moves between
the hosts' router namespaces, and each host's state is re-applied around the move (forwarding
and ARP entries for the pod that left, ports for the one that came), so guests, kernels and QEMU
processes are identical in both peers:

    one-host   both taps on host 1's bridge (the network still spans both hosts: the traffic
               simply never meets the VXLAN port)
    two-hosts  VM 1 on host 1, VM 2 on host 2: bridge → vxlan0 → underlay → vxlan0 → bridge,
               with the underlay filter and the VXLAN port's antispoof rules

`--native` adds the same tests between network namespaces on the same bridges (veth ports,
hn-netperf run natively, pinned to one CPU), where the guests' emulated CPUs do not bound the
rate and the cost of the encapsulation shows. Tests, peers in ABBA order, tables: as
bench/network.py, whose pieces this reuses.

Run as root after `make setup`, with musl-tools: `.venv/bin/python bench/network_multihost.py`
(`--quick`: 3 s tests, one rep).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
_spec = importlib.util.spec_from_file_location("bench_network", REPO / "bench" / "network.py")
assert _spec is not None and _spec.loader is not None
single = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(single)

from hypernetes.network import netns  # noqa: E402
from hypernetes.network.host import TenantNetworkHost  # noqa: E402
from hypernetes.network.state import VXLAN_OVERHEAD, Network, NetworkState, Overlay, Pod, RemotePod  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402

PEERS = ["one-host", "two-hosts"]
H1, H2 = "10.78.0.1", "10.78.0.2"
MTU = 1500 - VXLAN_OVERHEAD
single.MTU = MTU  # type: ignore[attr-defined]  # the guests', taps' and bridges' MTU in bench/network.py's helpers


def states(local1: list[Pod], local2: list[Pod]) -> tuple[NetworkState, NetworkState]:
    """Host 1's and host 2's state with these pods on each: each host's pods are the other's
    remote pods."""

    def net(here: list[Pod], there: list[Pod], me: str, peer: str) -> Network:
        overlay = Overlay(me, (peer,), tuple(RemotePod(p.mac, p.ip, peer) for p in there))
        return Network(id=single.NET_ID, cidr=single.CIDR, gateway=single.GATEWAY, mtu=MTU,
                       pods=tuple(here), overlay=overlay)  # fmt: skip

    return NetworkState((net(local1, local2, H1, H2),)), NetworkState((net(local2, local1, H2, H1),))


async def traffic(made: Any, prefix: str, binary: Path, rt: HyperVM, args: argparse.Namespace,
                  emit: Any) -> None:  # fmt: skip
    under = made.netns(f"{prefix}xu")
    single.sh("ip", "link", "add", "br0", "type", "bridge", ns=under)
    single.sh("ip", "link", "set", "br0", "up", ns=under)
    host_ns = []
    for i, addr in ((1, H1), (2, H2)):
        h = made.netns(f"{prefix}xh{i}")
        single.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"u{i}", "netns", under, ns=h)
        single.sh("ip", "addr", "add", f"{addr}/24", "dev", "eth0", ns=h)
        single.sh("ip", "link", "set", "eth0", "up", ns=h)
        single.sh("ip", "link", "set", f"u{i}", "master", "br0", "up", ns=under)
        host_ns.append(h)
    hosts = [
        TenantNetworkHost(h, f"{prefix}{c}", management=["10.78.0.0/24"])
        for h, c in zip(host_ns, "ab", strict=True)
    ]
    vm1, vm2 = single.pod(5, f"{prefix}v1"), single.pod(6, f"{prefix}v2")
    na, nb, nc, nd = (single.pod(7 + i, f"{prefix}n{i}") for i in range(4))
    natives: dict[str, Any] = {}
    vms = single.VMPair(rt, prefix)

    def apply(on1: list[Pod], on2: list[Pod]) -> None:
        s1, s2 = states(on1, on2)
        hosts[0].apply(s1)
        hosts[1].apply(s2)

    base1, base2 = [na, nb, nc], [nd]
    try:
        apply([vm1, vm2, *base1], base2)
        s1, s2 = states([vm1, vm2, *base1], base2)
        if args.native:
            pods_ns = {p.ifname: made.netns(f"{prefix}x{p.ifname[-2:]}") for p in (na, nb, nc, nd)}
            for p in (na, nb, nc):
                hosts[0].attach_veth(s1.networks[0], p.ifname, p.mac, pods_ns[p.ifname], ip=p.ip)
            hosts[1].attach_veth(s2.networks[0], nd.ifname, nd.mac, pods_ns[nd.ifname], ip=nd.ip)
            natives["one-host"] = single.NativePair(
                binary, pods_ns[na.ifname], pods_ns[nb.ifname], args.native_cpus
            )
            natives["two-hosts"] = single.NativePair(
                binary, pods_ns[nc.ifname], pods_ns[nd.ifname], args.native_cpus
            )
            for np_ in natives.values():
                np_.start()
        fds = [hosts[0].create_tap(s1.networks[0], p.ifname, p.mac) for p in (vm1, vm2)]
        await vms.start([vm1, vm2], fds)
        routers = [h.router_netns(single.NET_ID) for h in hosts]
        where = "one-host"

        def switch(peer: str) -> None:
            nonlocal where
            if peer == where:
                return
            if peer == "two-hosts":  # the port is listed where it goes before it arrives
                hosts[1].apply(states([vm1, *base1], [vm2, *base2])[1])
                single.move_links([vm2.ifname], routers[0], routers[1])
                hosts[0].apply(states([vm1, *base1], [vm2, *base2])[0])
            else:
                hosts[0].apply(states([vm1, vm2, *base1], base2)[0])
                single.move_links([vm2.ifname], routers[1], routers[0])
                hosts[1].apply(states([vm1, vm2, *base1], base2)[1])
            where = peer

        cmds = single.commands(args, vm2.ip)
        timeout = args.seconds + 60
        for visit, peer in enumerate(single.abba(PEERS, args.rounds)):
            switch(peer)
            await vms.run(["ping", "-q", "-c", "3", "-i", "0.2", "-W", "5", vm2.ip], 30)  # warm ARP
            for test in args.tests:
                for rep in range(args.reps if test != "ping" else 1):
                    row: dict[str, Any] = {"bench": "network_traffic", "side": "vm", "peer": peer,
                                           "test": test, "visit": visit, "rep": rep}  # fmt: skip
                    with single.cpu_window(vms.pids, row):
                        out = await vms.run(cmds[test], timeout)
                    emit({**row, **single.parse(test, out)})
                    if args.native:
                        target = nb if peer == "one-host" else nd
                        row = {**row, "side": "native"}
                        out = await natives[peer].run(single.commands(args, target.ip)[test], timeout)
                        emit({**row, **single.parse(test, out)})
    finally:
        for np_ in natives.values():
            np_.stop()
        await vms.remove()
        for h in hosts:
            with suppress(Exception):
                h.apply(NetworkState())


def ratios(rows: list[dict[str, Any]]) -> str:
    out = ["| side | test | one host | two hosts | two/one |", "|---|---|---|---|---|"]
    for side in ("vm", "native"):
        for test, metrics in single.METRICS.items():
            for key, label, conv in metrics:
                meds = {}
                for peer in PEERS:
                    xs = [conv(r[key]) for r in rows if r.get("side") == side and r.get("peer") == peer
                          and r.get("test") == test and key in r]  # fmt: skip
                    if xs:
                        meds[peer] = (single.median(xs), min(xs), max(xs))
                if len(meds) == 2:
                    a, b = meds["one-host"], meds["two-hosts"]
                    out.append(f"| {side} | {test} {label} | {a[0]:.1f} ({a[1]:.1f}-{a[2]:.1f}) | "
                               f"{b[0]:.1f} ({b[1]:.1f}-{b[2]:.1f}) | {b[0] / a[0]:.3f} |")  # fmt: skip
    return "\n".join(out)


async def bench(args: argparse.Namespace) -> int:
    prefix = "mb" + secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix="hn-bench-mh-"))
    made = single.Made()
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row = {**row, "loadavg1": float(Path("/proc/loadavg").read_text().split()[0])}
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        binary = single.build_netperf()
        data = base / "data"
        single.prepare_image(binary, data, base)
        rt = HyperVM(
            data / "runtime", ImageStore(data / "images"), KernelRegistry(data / "kernels", agent_binary())
        )
        print(json.dumps({"bench": "machine", **single.machine(await rt.accel())}), flush=True)
        await traffic(made, prefix, binary, rt, args, emit)
    finally:
        made.close()
        for ns in netns.list_netns():
            if ns.startswith(prefix):
                with suppress(Exception):
                    netns.delete(ns)
        shutil.rmtree(base, ignore_errors=True)
    print(ratios(rows), file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds over the two peers")
    parser.add_argument("--pings", type=int, default=20)
    parser.add_argument("--tests", type=lambda s: s.split(","), default=["stream", "rr", "ping"])
    parser.add_argument("--native", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--native-cpus", default="0")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps, args.pings = 3, 1, 5
    if os.geteuid() != 0:
        parser.error("run as root")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
