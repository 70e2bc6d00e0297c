"""A real VM whose PID 1 breaks the protocol on purpose: the host must stay in control.

The guest is `guest/testing/evil-agent.c` on our real kernel under QEMU; its misbehaviour is
chosen on the kernel command line. Each case checks the host's defence and that the VM is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime.agentclient import MAX_LOG_LINES, AgentClient, AgentUnavailable
from hypernetes.runtime.initrd import build_initrd
from hypernetes.runtime.interface import ExitStatus
from hypernetes.runtime.qemu import QemuVM, VMConfig
from tests.support.guests import boot_timeout, build, default_kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evil_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    agent = build("evil-agent", "guest/testing")
    return build_initrd(tmp_path_factory.mktemp("evil") / "initrd.gz", {"init": agent})


async def _boot(tmp_path: Path, initrd: Path, mode: str) -> AsyncIterator[tuple[QemuVM, AgentClient]]:
    vm = QemuVM(
        VMConfig(
            name=f"evil-{mode}",
            dir=tmp_path / "vm",
            kernel=default_kernel(),
            initrd=initrd,
            vcpus=1,
            memory_mib=96,
            cmdline=f"hn.evil={mode}",
            die_with_parent=True,
        )
    )
    await vm.start()
    client = AgentClient(mode)
    try:
        yield vm, client
    finally:
        await client.close()
        await vm.kill()
        assert not vm.alive()


@pytest.mark.parametrize(
    "mode, message",
    [
        ("garbage", "guest broke the protocol: non-zero flags"),
        ("oversize", "frame of 4294967280 bytes exceeds 1048576"),
        ("silent", "did not answer message 32"),
    ],
)
async def test_bad_handshake_fails_fast(tmp_path: Path, evil_initrd: Path, mode: str, message: str) -> None:
    async for vm, client in _boot(tmp_path, evil_initrd, mode):
        with pytest.raises(AgentUnavailable, match=message):
            timeout = 20 if mode == "silent" else boot_timeout(60)
            await client.connect(str(vm.cfg.ctl_socket), timeout, vm.alive)


async def _create(client: AgentClient, vm: QemuVM) -> tuple[object, list[bytes]]:
    await client.connect(str(vm.cfg.ctl_socket), boot_timeout(60), vm.alive)
    await client.request(gp.MSG_SETUP, gp.TLV(), timeout=10)
    seen: list[bytes] = []
    proc = client.new_process(lambda _s, data: seen.append(data), attach=False, stdin=False)
    await client.start(gp.MSG_CREATE, gp.TLV(), proc, 10)
    return proc, seen


async def test_request_that_never_answers_times_out(tmp_path: Path, evil_initrd: Path) -> None:
    async for vm, client in _boot(tmp_path, evil_initrd, "hang"):
        await client.connect(str(vm.cfg.ctl_socket), boot_timeout(60), vm.alive)
        with pytest.raises(AgentUnavailable, match="did not answer message 33 within 3s"):
            await client.request(gp.MSG_SETUP, gp.TLV(), timeout=3)


async def test_guest_that_dies_mid_run(tmp_path: Path, evil_initrd: Path) -> None:
    async for vm, client in _boot(tmp_path, evil_initrd, "die"):
        proc, seen = await _create(client, vm)
        status = await asyncio.wait_for(proc.wait(), 60)  # type: ignore[attr-defined]
        assert status == ExitStatus()  # unknown: the guest never said
        assert seen == [b"before the end\n"]
        assert await vm.wait(30)
        assert "Kernel panic" in vm.console_tail()


async def test_invalid_exit_code_drops_channel(tmp_path: Path, evil_initrd: Path) -> None:
    async for vm, client in _boot(tmp_path, evil_initrd, "badexit"):
        proc, _ = await _create(client, vm)
        assert await asyncio.wait_for(proc.wait(), 60) == ExitStatus()  # type: ignore[attr-defined]
        assert "EXIT with code 999" in client.disconnect_reason


async def test_flood_is_bounded(tmp_path: Path, evil_initrd: Path) -> None:
    """16 MiB of output for process ids never issued and 100k log frames: dropped and counted."""
    async for vm, client in _boot(tmp_path, evil_initrd, "flood"):
        proc, seen = await _create(client, vm)
        status = await asyncio.wait_for(proc.wait(), 120)  # type: ignore[attr-defined]
        assert status == ExitStatus(code=3)
        assert seen == [b"before the end\n"]
        assert len(client.agent_log) == MAX_LOG_LINES
        assert client.dropped_frames >= 512 + 100000 - MAX_LOG_LINES
