"""A guest agent on a booted VM, driven with raw requests (CREATE with mounts, processes): the
building blocks without the runtime's host-side plumbing, for tests of the agent itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime.agentclient import AgentClient, GuestProcess, ProcessSpec
from hypernetes.runtime.interface import ExitStatus
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.qemu import Disk, QemuVM, VMConfig
from tests.support.guests import boot_timeout


@asynccontextmanager
async def booted(
    tmp_path: Path, kernels: KernelRegistry, image: Path, extra: Sequence[Disk] = ()
) -> AsyncIterator[AgentClient]:
    kernel = kernels.default()
    vm = QemuVM(
        VMConfig(
            name="vp",
            dir=tmp_path / "vm",
            kernel=kernel.image,
            initrd=kernel.initrd,
            vcpus=1,
            memory_mib=192,
            acpi=kernel.acpi,
            cmdline=kernel.cmdline,
            disks=[Disk(image, "img0"), *extra],
            die_with_parent=True,
        )
    )
    await vm.start()
    client = AgentClient("vp")
    try:
        await client.connect(str(vm.cfg.ctl_socket), boot_timeout(90), vm.alive)
        await client.request(gp.MSG_SETUP, gp.TLV().add_str(gp.TAG_HOSTNAME, "vp"), timeout=30)
        yield client
    except BaseException:
        print("guest console:", vm.console_tail(30))
        print("agent log:", client.agent_log[-20:])
        raise
    finally:
        await client.close()
        await vm.kill()


def vol(
    source: str,
    target: str,
    *,
    subpath: str | None = None,
    size: int | None = None,
    readonly: bool = False,
    fstype: str | None = None,
) -> gp.TLV:
    t = gp.TLV().add_str(gp.TAG_SOURCE, source).add_str(gp.TAG_TARGET, target)
    if subpath is not None:
        t.add_str(gp.TAG_SUBPATH, subpath)
    if size is not None:
        t.add_u64(gp.TAG_SIZE_LIMIT, size)
    if fstype is not None:
        t.add_str(gp.TAG_FSTYPE, fstype)
    return t.add_bool(gp.TAG_READONLY, readonly)


async def start(
    client: AgentClient,
    cid: str,
    script: str,
    *,
    mounts: Sequence[gp.TLV] = (),
    fsgroup: int | None = None,
    uid: int = 0,
    gid: int = 0,
) -> tuple[GuestProcess, list[bytes]]:
    out: list[bytes] = []
    proc = client.new_process(lambda _s, data: out.append(data), attach=False, stdin=False)
    spec = ProcessSpec(args=["sh", "-c", script], env=["PATH=/bin:/usr/bin"], uid=uid, gid=gid)
    tlv = gp.TLV().add_str(gp.TAG_CONTAINER_ID, cid).add_str(gp.TAG_IMAGE_DISK, "img0")
    tlv.add_tlv(gp.TAG_PROCESS, spec.encode(proc.id))
    for m in mounts:
        tlv.add_tlv(gp.TAG_MOUNT, m)
    if fsgroup is not None:
        tlv.add_u32(gp.TAG_FSGROUP, fsgroup)
    await client.start(gp.MSG_CREATE, tlv, proc, 60)
    return proc, out


async def run(client: AgentClient, cid: str, script: str, **kw: object) -> tuple[ExitStatus, str]:
    proc, out = await start(client, cid, script, **kw)  # type: ignore[arg-type]
    status = await asyncio.wait_for(proc.wait(), 120)
    return status, b"".join(out).decode()
