"""Pod VMs from templates (templates.py): the mechanism on real QEMU guests under TCG.

A template is booted once and saved; clones map its RAM copy-on-write and load its device state
as an incoming migration, and must then behave as freshly booted VMs of their own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime import templates
from hypernetes.runtime.agentclient import AgentClient, AgentUnavailable
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.qemu import QemuVM, VMConfig, remove_socket_dir

pytestmark = pytest.mark.slow


def _shape(kernels: KernelRegistry, disks: tuple[bool, ...] = ()) -> templates.Shape:
    k = kernels.default()
    return templates.Shape(k.image, k.initrd, k.cmdline, k.acpi, "tcg", 1, 128, disks)


def _cfg(shape: templates.Shape, directory: Path, name: str) -> VMConfig:
    return VMConfig(
        name=name,
        dir=directory,
        kernel=shape.kernel,
        initrd=shape.initrd,
        vcpus=shape.vcpus,
        memory_mib=shape.memory_mib,
        accel=shape.accel,
        acpi=shape.acpi,
        cmdline=shape.cmdline,
        die_with_parent=True,
    )


async def _start_and_setup(cfg: VMConfig, hostname: str) -> tuple[QemuVM, AgentClient, float]:
    """Start a VM, connect, SETUP: the seconds from QEMU's start to SETUP's ACK."""
    vm, client = QemuVM(cfg), AgentClient(cfg.name)
    t0 = time.monotonic()
    await vm.start()
    if cfg.incoming_fd is not None:
        os.close(cfg.incoming_fd)
        await templates.restore(vm)
    try:
        await client.connect(str(cfg.ctl_socket), 90, vm.alive)
        setup = gp.TLV().add_str(gp.TAG_HOSTNAME, hostname).add_u64(gp.TAG_TIME_NS, time.time_ns())
        setup.add(gp.TAG_RANDOM_SEED, os.urandom(64))
        await client.request(gp.MSG_SETUP, setup)
    except AgentUnavailable as e:
        await _stop(vm, client)
        raise AssertionError(f"{cfg.name}: {e}: {vm.qemu_errors()} {vm.console_tail(30)}") from e
    return vm, client, time.monotonic() - t0


async def _stop(vm: QemuVM, client: AgentClient) -> None:
    await client.close("test over")
    await vm.kill()
    remove_socket_dir(vm.cfg.dir)


async def test_clone_resumes_waiting_for_setup(kernels: KernelRegistry, tmp_path: Path) -> None:
    shape = _shape(kernels)
    tpl = await templates.build(tmp_path / "tpl", shape)
    assert templates.load(tmp_path / "tpl", shape) == tpl
    assert tpl.ram.stat().st_size == 128 << 20
    assert tpl.state.stat().st_size < 1 << 20, "the state file holds no RAM (x-ignore-shared)"
    cold = await _start_and_setup(_cfg(shape, tmp_path / "cold", "cold"), "cold")
    clone = await _start_and_setup(templates.clone_config(tpl, _cfg(shape, tmp_path / "c1", "c1")), "c1")
    print(f"cold {cold[2]:.2f}s clone {clone[2]:.2f}s")
    await _stop(*cold[:2])
    await _stop(*clone[:2])
