"""A tenant network for pod VMs without a cluster: a host namespace and a `TenantNetworkHost`
under a unique prefix, taps on its bridge for the runtime to take, and what a guest is told
(shared by the NIC and template tests)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hypernetes.network import Network, NetworkState, Pod, TenantNetworkHost
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.interface import ExecSpec, NetworkConfig
from tests.support.netns import Namespaces, leftovers, sh, unique_prefix
from tests.support.pods import collect

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 to make network namespaces"
)

CIDR, GW, MTU = "10.0.0.0/16", "10.0.0.1", 1400
VM1 = Pod("hnvm1", "02:00:00:00:00:05", "10.0.0.5")
VM2 = Pod("hnvm2", "02:00:00:00:00:06", "10.0.0.6")
FD_FLOOR = 1000  # handed-over fds are moved up here: a freed low number is soon reused


@dataclass
class TenantNet:
    host: TenantNetworkHost
    net: Network
    router: str

    def tap(self, pod: Pod) -> int:
        """A tap for `pod`, as the node agent would open it, moved to a high fd number so that
        "the runtime closed it" can be told apart from "the number was reused since"."""
        fd = self.host.create_tap(self.net, pod.ifname, pod.mac)
        try:
            return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_FLOOR)
        finally:
            os.close(fd)

    def links(self) -> str:
        return sh("ip", "-o", "link", "show", netns=self.router).stdout

    async def wait_gone(self, ifname: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while ifname in self.links():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True


@pytest.fixture
def tenant() -> Iterator[TenantNet]:
    prefix = unique_prefix()
    ns = Namespaces(prefix)
    host: TenantNetworkHost | None = None
    try:
        host_ns = ns.add("host")
        host = TenantNetworkHost(host_ns, prefix)
        net = Network(id=1, cidr=CIDR, gateway=GW, mtu=MTU, egress=False, pods=(VM1, VM2))
        host.apply(NetworkState((net,)))
        yield TenantNet(host, net, host.router_netns(net.id))
        host.apply(NetworkState())
        assert [n for n in leftovers(prefix) if n.startswith(f"{prefix}-")] == []
    finally:
        if host is not None:
            with contextlib.suppress(Exception):  # already failing: the namespaces go below anyway
                host.apply(NetworkState())
        ns.close()
        for name in leftovers(prefix):
            sh("ip", "netns", "delete", name, check=False)


def network(pod: Pod, fd: int | None) -> NetworkConfig:
    return NetworkConfig(
        mac=pod.mac,
        addresses=(f"{pod.ip}/16",),
        gateway=GW,
        mtu=MTU,
        dns_servers=("10.96.0.10",),
        dns_search=("default.svc.cluster.local", "svc.cluster.local"),
        dns_options=("ndots:5", "timeout:2"),
        hosts=(f"{VM2.ip}\tvm2 vm2.example", "10.0.0.7\tother"),
        tap_fd=fd,
    )


async def sh_in(rt: HyperVM, sandbox: str, script: str, timeout: float = 90) -> tuple[int | None, str]:
    proc = await rt.exec(sandbox, "main", ExecSpec(command=("sh", "-c", script)))
    out, err = await asyncio.wait_for(collect(proc), timeout)
    status = await proc.wait()
    return status.code, (out + err).decode(errors="replace")
