"""A pod VM's NIC: a virtio-net device on a tap the node agent opened on a tenant bridge.

The VM tests make a host network namespace and a `TenantNetworkHost` under a unique prefix (as
tests/test_network_plumbing.py does), open taps on its bridge, and hand each fd to the runtime,
which owns it from then on. Teardown checks that nothing of the prefix is left.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest

from hypernetes.runtime.disks import check_disk_count
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.hypervm_state import pod_from_dict, pod_to_dict
from hypernetes.runtime.interface import (
    ContainerSpec,
    ImagePullFailed,
    NetworkConfig,
    PodRuntimeError,
    PodSpec,
    SandboxFailed,
)
from hypernetes.runtime.qemu import Nic, VMConfig, command_line, vhost_usable
from tests.support.tenantnet import (
    GW,
    MTU,
    VM1,
    VM2,
    TenantNet,
    needs_netns,
    network,
    sh_in,
    tenant,  # noqa: F401 (a fixture)
)

# -- no VM: the QEMU arguments, the disk budget, the state file ---------------------------------


def test_command_line_has_the_nic_on_the_inherited_fd(tmp_path: Path) -> None:
    cfg = VMConfig(
        name="n",
        dir=tmp_path,
        kernel=tmp_path / "k",
        initrd=tmp_path / "i",
        vcpus=1,
        memory_mib=128,
        nic=Nic(fd=7, mac="02:00:00:00:00:05"),
    )
    args = command_line(cfg)
    i = args.index("-netdev")
    assert args[i : i + 4] == [
        "-netdev",
        "tap,id=net0,fd=7,vhost=off",
        "-device",
        "virtio-net-device,netdev=net0,mac=02:00:00:00:00:05",
    ]
    assert args[args.index("-sandbox") + 1].startswith("on,")  # a passed fd needs no ifup script
    with_vhost = command_line(
        VMConfig(
            name="n",
            dir=tmp_path,
            kernel=tmp_path,
            initrd=tmp_path,
            vcpus=1,
            memory_mib=128,
            accel="kvm",
            nic=Nic(9, "02:00:00:00:00:05", True),
        )
    )
    assert "tap,id=net0,fd=9,vhost=on" in with_vhost
    no_nic = command_line(
        VMConfig(name="n", dir=tmp_path, kernel=tmp_path, initrd=tmp_path, vcpus=1, memory_mib=128)
    )
    assert "-netdev" not in no_nic and not any("virtio-net" in a for a in no_nic)
    assert not vhost_usable("tcg")
    with pytest.raises(ValueError, match="bad MAC"):
        Nic(7, "02:00:00:00:00:05,romfile=/etc/shadow")
    with pytest.raises(ValueError, match="standard streams"):
        Nic(1, "02:00:00:00:00:05")


def test_the_nic_takes_a_disk_slot() -> None:
    check_disk_count(1, 4, False, False)  # 5 disks fit a micro-VM without ACPI
    with pytest.raises(
        SandboxFailed,
        match=r"needs 5 virtio disks \(1 image disk, 4 persistent volumes\) "
        r"but a micro-VM without ACPI has room for 4 \(virtio-mmio "
        r"transports; its network interface takes one more\)",
    ):
        check_disk_count(1, 4, False, False, nics=1)
    check_disk_count(1, 18, True, True, nics=1)  # 20 disks + NIC + 3 fixed devices: ACPI's 24
    with pytest.raises(SandboxFailed, match="has room for 20"):
        check_disk_count(1, 19, True, True, nics=1)


def test_state_file_never_holds_the_fd() -> None:
    pod = PodSpec(id="p", name="p", network=NetworkConfig(mac=VM1.mac, dns_options=("ndots:5",), tap_fd=42))
    data = pod_to_dict(pod)
    assert "tap_fd" not in data["network"]
    back = pod_from_dict(data)
    assert back.network.tap_fd is None and back.network.dns_options == ("ndots:5",)
    assert pod_from_dict({**data, "network": {**data["network"], "tap_fd": 42}}).network.tap_fd is None


# -- real VMs on a real tenant bridge -----------------------------------------------------------


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        return e.errno == errno.EBADF
    return False


@pytest.mark.slow
@needs_netns
async def test_two_vms_on_one_tenant_network(hypervm: HyperVM, busybox_ref: str, tenant: TenantNet) -> None:
    fd1, fd2 = tenant.tap(VM1), tenant.tap(VM2)
    main = ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600"))
    web = ContainerSpec(
        name="main",
        image=busybox_ref,
        command=("sh", "-c", "echo hello-from-vm2 > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"),
    )
    started = time.monotonic()
    await asyncio.gather(
        hypervm.create_sandbox(PodSpec(id="vm1", name="vm1", containers=(main,), network=network(VM1, fd1))),
        hypervm.create_sandbox(PodSpec(id="vm2", name="vm2", containers=(web,), network=network(VM2, fd2))),
    )
    boot = time.monotonic() - started
    # The runtime owns the fds: both closed here, the taps kept alive by the QEMUs alone.
    assert closed(fd1) and closed(fd2)
    links = tenant.links()
    assert VM1.ifname in links and VM2.ifname in links
    await hypervm.start_container("vm1", "main")
    await hypervm.start_container("vm2", "main")

    code, out = await sh_in(
        hypervm,
        "vm1",
        f"""
        for d in /sys/class/net/*; do [ "$(cat $d/address)" = {VM1.mac} ] && dev=${{d##*/}}; done
        echo "dev=$dev mtu=$(cat /sys/class/net/$dev/mtu) state=$(cat /sys/class/net/$dev/operstate)"
        busybox ip -4 -o addr show dev $dev; busybox ip -4 route; echo ---; cat /etc/resolv.conf
        echo ---; cat /etc/hosts""",
    )
    assert code == 0, out
    dev = out.split("dev=", 1)[1].split()[0]
    assert f"dev={dev} mtu={MTU} state=up" in out
    assert f"inet {VM1.ip}/16" in out
    assert f"default via {GW} dev {dev}" in out
    resolv = out.split("---\n")[1]
    assert resolv == (
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\n"
        "options ndots:5 timeout:2\n"
    )
    hosts = out.split("---\n")[2]
    assert f"{VM2.ip}\tvm2 vm2.example\n" in hosts and "10.0.0.7\tother\n" in hosts

    started_ping = time.monotonic()
    pings = f"busybox ping -c 2 -W 10 {GW} && busybox ping -c 2 -W 10 {VM2.ip}"
    code, out = await sh_in(hypervm, "vm1", pings)
    ping_time = time.monotonic() - started_ping
    assert code == 0, out
    assert "2 packets received" in out
    # httpd in VM 2 may still be starting: retry for a while (busybox wget -T segfaults here)
    code, out = await sh_in(
        hypervm,
        "vm1",
        "for i in $(seq 60); do busybox wget -q -O - "
        f"http://{VM2.ip}:8080/ && exit 0; sleep 0.5; done; exit 1",
    )
    assert (code, out) == (0, "hello-from-vm2\n")
    print(f"two VMs with NICs booted in {boot:.1f}s; 4 pings took {ping_time:.1f}s")

    await hypervm.remove_sandbox("vm1")
    assert await tenant.wait_gone(VM1.ifname), tenant.links()  # nothing stale
    assert VM2.ifname in tenant.links()
    await hypervm.remove_sandbox("vm2")
    assert await tenant.wait_gone(VM2.ifname), tenant.links()


@pytest.mark.slow
@needs_netns
async def test_failed_creates_close_the_fd_and_leave_no_tap(
    hypervm: HyperVM, busybox_ref: str, tenant: TenantNet
) -> None:
    missing = busybox_ref.rsplit("/test/", 1)[0] + "/test/not-there:1"
    fd = tenant.tap(VM1)
    spec = PodSpec(
        id="bad",
        name="bad",
        containers=(ContainerSpec(name="main", image=missing),),
        network=network(VM1, fd),
    )
    with pytest.raises(ImagePullFailed):
        await hypervm.create_sandbox(spec)
    assert closed(fd)
    assert await tenant.wait_gone(VM1.ifname), tenant.links()

    # refused before anything is pulled: a tap without a usable MAC
    fd = tenant.tap(VM1)
    with pytest.raises(PodRuntimeError, match="needs a MAC"):
        await hypervm.create_sandbox(
            PodSpec(
                id="bad",
                name="bad",
                containers=(ContainerSpec(name="main", image=busybox_ref),),
                network=NetworkConfig(tap_fd=fd),
            )
        )
    assert closed(fd)
    assert await tenant.wait_gone(VM1.ifname), tenant.links()

    # QEMU starts and the guest refuses SETUP (a bad DNS option): the VM is gone, so is the tap
    fd = tenant.tap(VM1)
    bad = NetworkConfig(mac=VM1.mac, addresses=(f"{VM1.ip}/16",), dns_options=("nd ots",), tap_fd=fd)
    with pytest.raises(SandboxFailed, match="DNS_OPTION"):
        await hypervm.create_sandbox(
            PodSpec(
                id="bad", name="bad", containers=(ContainerSpec(name="main", image=busybox_ref),), network=bad
            )
        )
    assert closed(fd)
    assert await tenant.wait_gone(VM1.ifname), tenant.links()
    assert await hypervm.list_sandboxes() == []


@pytest.mark.slow
async def test_mac_without_a_tap_still_gets_dns(hypervm: HyperVM, busybox_ref: str) -> None:
    """No NIC, so no interface is configured (the guest would fail SETUP looking for the MAC);
    resolv.conf and hosts are written all the same."""
    spec = PodSpec(
        id="nonic",
        name="nonic",
        containers=(ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")),),
        network=network(VM1, None),
    )
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("nonic", "main")
    code, out = await sh_in(hypervm, "nonic", "ls /sys/class/net; cat /etc/resolv.conf /etc/hosts")
    assert code == 0, out
    assert out.split()[0] == "lo" and "eth0" not in out
    assert "options ndots:5 timeout:2\n" in out and f"{VM2.ip}\tvm2 vm2.example\n" in out
