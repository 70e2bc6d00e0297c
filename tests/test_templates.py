"""Pod VMs from templates (templates.py): the mechanism on real QEMU guests under TCG.

A template is booted once and saved; clones map its RAM copy-on-write and load its device state
as an incoming migration, and must then behave as freshly booted VMs of their own."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime import templates
from hypernetes.runtime.agentclient import AgentClient, AgentUnavailable
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import ContainerSpec, MountSpec, PodSpec, VolumeSpec
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.qemu import QemuVM, VMConfig, remove_socket_dir
from tests.support.guests import qemu_processes_under
from tests.support.pods import collect, pod, run
from tests.support.tenantnet import (
    GW,
    VM1,
    VM2,
    TenantNet,
    needs_netns,
    network,
    sh_in,
    tenant,  # noqa: F401 (a fixture)
)

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


IDENTITY = (
    "cat /proc/sys/kernel/random/boot_id /proc/sys/kernel/random/uuid; "
    "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '; date +%s; hostname; "
    "echo data > /scratch/f && cat /scratch/f && df -k /scratch | tail -1; "
    # memory the guest frees (and would report to the host's balloon) after a restore
    "dd if=/dev/zero of=/dev/null bs=80M count=1 2>/dev/null; sleep 4"
)


def _identity_pod(name: str, image: str) -> PodSpec:
    scratch = VolumeSpec(name="scratch", kind="emptyDir", size_limit=64 << 20)
    main = ContainerSpec(
        name="main", image=image, command=("sh", "-c", IDENTITY), mounts=(MountSpec("scratch", "/scratch"),)
    )
    return pod(name, main, volumes=(scratch,))


@pytest.fixture
async def templated(tmp_path: Path, kernels: KernelRegistry) -> AsyncIterator[HyperVM]:
    store = templates.TemplateStore(tmp_path / "templates")
    rt = HyperVM(
        tmp_path / "rt", ImageStore(tmp_path / "images"), kernels, die_with_parent=True, templates=store
    )
    yield rt
    for sandbox in await rt.list_sandboxes():
        await rt.remove_sandbox(sandbox.id)
    await store.close()
    assert not qemu_processes_under(tmp_path)


async def test_pods_from_a_template_have_their_own_identity_and_disks(
    templated: HyperVM, busybox_ref: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first pod of a shape boots cold and has its template built; the next ones are clones
    that see their own disks (the scratch disk's partition, written and read) and differ in
    everything that identifies a boot."""
    store = templated.templates
    assert store is not None
    outputs, when = {}, {}
    for name in ("cold", "clone-a", "clone-b"):
        started = time.time()
        status, out, err = await run(templated, _identity_pod(name, busybox_ref))
        when[name] = (started, time.time())
        assert status.code == 0, (name, out, err)
        outputs[name] = out.decode().split("\n")
        if name == "cold":
            assert store.clones == 0
            await store.wait_built()
            assert store.builds == 1
            [ram] = store.root.glob("*/ram")
            before = hashlib.sha256(ram.read_bytes()).hexdigest()
    assert store.clones == 2
    assert "booting cold" not in caplog.text  # clones indeed, not the fallback
    # what clones wrote or freed stayed theirs: the template's RAM is as it was saved
    assert hashlib.sha256(ram.read_bytes()).hexdigest() == before
    ids = {name: tuple(lines[:3]) for name, lines in outputs.items()}
    for i in range(3):  # boot_id, a random uuid, 16 bytes of /dev/urandom
        assert len({v[i] for v in ids.values()}) == 3, ids
    for name, lines in outputs.items():
        assert when[name][0] - 2 <= int(lines[3]) <= when[name][1] + 1, (name, lines, when[name])
        assert lines[4] == name
        assert lines[5] == "data"
        assert int(lines[6].split()[1]) > 32 * 1024, lines  # the pod's 64 MiB partition, not 0


async def test_a_broken_template_falls_back_to_a_cold_boot(
    templated: HyperVM, busybox_ref: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A template whose saved state QEMU refuses: the pod boots cold, the log says so, and the
    template is dropped (the next pod of the shape starts its rebuild)."""
    store = templated.templates
    assert store is not None
    spec = ContainerSpec(name="main", image=busybox_ref, command=("echo", "hi"))
    status, out, _ = await run(templated, pod("first", spec))
    assert (status.code, out) == (0, b"hi\n")
    await store.wait_built()
    [template] = [d for d in store.root.iterdir() if (d / "state").exists()]
    (template / "state").write_bytes((template / "state").read_bytes()[:200])  # truncated

    second = pod("second", spec)
    created = await templated.create_sandbox(second)
    [(reason, message)] = created.warnings  # the node records it as a Warning event on the pod
    assert reason == "TemplateRestoreFailed" and template.name[:12] in message, message
    assert "booted cold" in message
    proc = await templated.start_container("second", "main", attach=True)
    assert proc is not None
    out, _ = await collect(proc)
    assert ((await proc.wait()).code, out) == (0, b"hi\n")
    assert store.clones == 1
    assert "restore from template" in caplog.text and "booting cold" in caplog.text
    assert not template.exists()


def test_store_keeps_the_recently_used_templates(tmp_path: Path) -> None:
    """Pruning: idle templates and the least recently used beyond the cap go, builds of dead
    processes go, a build under way stays."""
    store = templates.TemplateStore(tmp_path, max_idle=100, max_templates=2)
    now = time.time()
    for name, age in (("a", 10), ("b", 20), ("c", 30), ("idle", 200)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text("{}")
        os.utime(tmp_path / name / "meta.json", (now - age, now - age))
    (tmp_path / f".build-k-{os.getpid()}-1").mkdir()
    (tmp_path / ".build-k-999999999-1").mkdir()  # no such pid
    store.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".build-k-{os.getpid()}-1", "a", "b"]


@needs_netns
async def test_a_clone_on_a_tenant_network_has_the_pods_mac(
    templated: HyperVM,
    busybox_ref: str,
    tenant: TenantNet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The template's NIC slot, on a tap of its own, becomes the pod's: on the pod's tap, with
    the pod's MAC (set by the agent from SETUP), reaching a cold-booted VM and the gateway."""
    store = templated.templates
    assert store is not None
    sleeper = ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600"))
    cold = PodSpec(id="vm1", name="vm1", containers=(sleeper,), network=network(VM1, tenant.tap(VM1)))
    await templated.create_sandbox(cold)
    await templated.start_container("vm1", "main")
    await store.wait_built()
    assert store.builds == 1
    clone = PodSpec(id="vm2", name="vm2", containers=(sleeper,), network=network(VM2, tenant.tap(VM2)))
    await templated.create_sandbox(clone)
    assert store.clones == 1
    await templated.start_container("vm2", "main")
    code, out = await sh_in(
        templated,
        "vm2",
        f"cat /sys/class/net/eth0/address; busybox ping -c 2 -W 10 {GW} && busybox ping -c 2 -W 10 {VM1.ip}",
    )
    assert code == 0, out
    assert out.splitlines()[0] == VM2.mac
    assert out.count("2 packets received") == 2, out
    assert "booting cold" not in caplog.text  # a clone indeed, not the fallback


def test_hypernetes_run_clones_the_template_its_first_run_built(tmp_path: Path, busybox_ref: str) -> None:
    """`hypernetes run`: the first run of a shape boots cold and leaves its template built, the
    next run is a clone of it; `--no-templates` boots cold and does not touch it."""
    env = {**os.environ, "HYPERNETES_TEMPLATE_DIR": str(tmp_path / "templates"), "HYPERNETES_ACCEL": "tcg"}
    cli = [str(Path(sys.executable).parent / "hypernetes"), "run", "--data-dir", str(tmp_path / "data")]

    def run_cli(*flags: str) -> None:
        done = subprocess.run(
            [*cli, *flags, busybox_ref, "--", "echo", "hi"], env=env, capture_output=True, timeout=180
        )
        assert (done.returncode, done.stdout) == (0, b"hi\n"), done.stderr

    run_cli()
    [template] = [d for d in (tmp_path / "templates").iterdir() if (d / "state").exists()]
    assert not (template / "used").exists()
    run_cli()
    used = (template / "used").stat().st_mtime_ns
    run_cli("--no-templates")
    assert (template / "used").stat().st_mtime_ns == used


def _stale_template(root: Path, shape: templates.Shape, kernel_name: str) -> Path:
    """A template left by an earlier node, built from files since replaced (its key is not
    today's: a pod never asks for it again)."""
    directory = root / ("f" * 32)
    directory.mkdir(parents=True)
    meta = {"key": "f" * 32, "shape": dataclasses.asdict(shape), "kernel": kernel_name}
    (directory / "meta.json").write_text(json.dumps(meta, default=str))
    (directory / "used").touch()
    return directory


def test_start_shapes_are_the_default_pods_and_the_recent_ones_with_todays_kernel(
    tmp_path: Path, kernels: KernelRegistry
) -> None:
    store = templates.TemplateStore(tmp_path / "templates")
    default = kernels.default()
    initrd = kernels.root / "old-initrd.img"  # built by this registry before an agent change
    old = templates.Shape(Path("/old/vmlinux"), initrd, "", False, "tcg", 2, 288, (True, False))
    _stale_template(store.root, dataclasses.replace(old, scope="team-a"), kernels.DEFAULT)
    other = templates.Shape(Path("/old/vmlinux"), Path("/elsewhere/initrd"), "", False, "tcg", 1, 96, ())
    (_stale_template(store.root / "other", other, kernels.DEFAULT)).rename(store.root / ("e" * 32))
    shapes = templates.start_shapes(store, kernels, "tcg", ["", "team-b", ""], nic=True)
    pod = templates.Shape(
        default.image, default.initrd, default.cmdline, default.acpi, "tcg", 1, 160, (True,), nic=True
    )
    today = dataclasses.replace(
        old, kernel=default.image, initrd=default.initrd, cmdline=default.cmdline, acpi=default.acpi
    )
    assert shapes == [
        (pod, kernels.DEFAULT),
        (dataclasses.replace(pod, scope="team-b"), kernels.DEFAULT),
        (dataclasses.replace(today, scope="team-a"), kernels.DEFAULT),
    ]
    # a template unused for max_idle is not asked for again
    store.max_idle = 0
    os.utime(store.root / ("f" * 32) / "used", (time.time() - 10, time.time() - 10))
    assert len(templates.start_shapes(store, kernels, "tcg", [""], nic=True)) == 1


async def test_a_node_builds_its_start_shapes_templates_when_it_starts(
    tmp_path: Path, kernels: KernelRegistry, busybox_ref: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`adopt` (a node's start) builds the default pod's template in the background, and drops
    the one an older kernel build left; the node's first default pod is then a clone."""
    store = templates.TemplateStore(tmp_path / "templates", max_idle=60)
    rt = HyperVM(
        tmp_path / "rt",
        ImageStore(tmp_path / "images"),
        kernels,
        die_with_parent=True,
        templates=store,
        template_scope="node",
        prepare_templates=False,
    )
    default = kernels.default()
    size = (1, 160)  # the default container's 128 MiB and the guest's overhead
    stale = templates.Shape(Path("/old/vmlinux"), default.initrd, "", default.acpi, "tcg", *size, (True,))
    old = _stale_template(store.root, stale, kernels.DEFAULT)
    os.utime(old / "used", (time.time() - 120, time.time() - 120))  # idle beyond max_idle
    try:
        assert await rt.adopt() == []
        assert rt.preparing is not None
        assert await rt.preparing == 1
        assert not old.exists()
        assert store.builds == 1 and store.clones == 0
        spec = ContainerSpec(name="main", image=busybox_ref, command=("echo", "hi"))
        status, out, _ = await run(rt, pod("first", spec))
        assert (status.code, out) == (0, b"hi\n")
        assert store.clones == 1 and store.builds == 1
        assert "booting cold" not in caplog.text
    finally:
        for sandbox in await rt.list_sandboxes():
            await rt.remove_sandbox(sandbox.id)
        await store.close()
    assert not qemu_processes_under(tmp_path)
