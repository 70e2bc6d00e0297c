"""What only the gvisor runtime does, end to end: runsc's exit codes, the pause container, the
shared rootfs cache, start latency, a handler-less main process and SIGTERM, pods that die with
a crashed agent and are cleared by the next. Real images from a real registry, real runsc
sandboxes. What every runtime does is in test_runtime_contract.py."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypernetes.runtime.gvisor import GVisor
from hypernetes.runtime.gvisor_rootfs import ETC_MOUNTS, add_etc_mount_points, ensure_rootfs, pause_elf
from hypernetes.runtime.gvisor_volumes import private_root, refuse_unsupported
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import (
    BlockDevice,
    ContainerSpec,
    ExitStatus,
    MountSpec,
    PodRuntimeError,
    VolumeSpec,
)
from hypernetes.runtime.ocispec import BindMount
from hypernetes.runtime.runsc import Runsc, decode_exit
from tests.support.pods import pod
from tests.support.runtimes import GVisorHarness, leftover_runsc_processes

needs_runsc = pytest.mark.skipif(not Runsc.available(), reason="runsc is not installed")


@pytest.fixture
async def gvisor(tmp_path: Path) -> AsyncIterator[GVisor]:
    """A GVisor runtime on a fresh data dir; asserts that nothing is left after each test."""
    h = GVisorHarness(tmp_path / "rt", ImageStore(tmp_path / "images"))
    yield h.gvisor
    await h.remove_all()
    assert not h.leftovers()


# --- no sandbox needed ---------------------------------------------------------------------------


def test_exit_status_decoding() -> None:
    assert decode_exit(0) == ExitStatus(code=0)
    assert decode_exit(7) == ExitStatus(code=7)
    assert decode_exit(137) == ExitStatus(signal=9)
    assert decode_exit(255) == ExitStatus(code=255)


def test_pause_binary_runs_until_killed(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(pause_elf())
    binary.chmod(0o755)
    proc = subprocess.Popen([binary])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)
    finally:
        proc.kill()
    assert proc.wait() == -signal.SIGKILL


# --- real runsc ----------------------------------------------------------------------------------


@needs_runsc
@pytest.mark.slow
async def test_start_to_first_output(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p13", ContainerSpec(name="main", image=busybox_ref, command=("echo", "first")))
    await gvisor.create_sandbox(pod("warm", ContainerSpec(name="main", image=busybox_ref)))
    t0 = time.monotonic()
    await gvisor.create_sandbox(spec)
    proc = await gvisor.start_container("p13", "main", attach=True)
    assert proc is not None
    async for _stream, data in proc.output():
        assert data == b"first\n"
        break
    elapsed = time.monotonic() - t0
    print(f"gvisor create+start to first output: {elapsed:.3f}s")
    assert elapsed < 10
    assert await proc.wait() == ExitStatus(code=0)


@needs_runsc
@pytest.mark.slow
def test_rootfs_is_extracted_once(tmp_path: Path, image_store: ImageStore, busybox_ref: str) -> None:
    image = image_store.ensure(busybox_ref)
    first = ensure_rootfs(tmp_path / "cache", image.id, image.disk)
    assert (first / "bin" / "busybox").is_file()
    stamp = first.stat().st_ino
    assert ensure_rootfs(tmp_path / "cache", image.id, image.disk).stat().st_ino == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == [first.name]
    # what the pod's /etc bind mounts land on is there from the start: runsc need not write here
    for name in ETC_MOUNTS:
        assert (first / "etc" / name).is_file()


def test_etc_mount_points_never_follow_the_images_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "etc").symlink_to(outside)  # an image whose /etc points elsewhere
    add_etc_mount_points(linked)
    assert list(outside.iterdir()) == []

    partial = tmp_path / "partial"
    (partial / "etc").mkdir(parents=True)
    (partial / "etc" / "hosts").symlink_to(outside / "hosts")  # a dangling link: not followed
    (partial / "etc" / "hostname").write_text("image's own\n")
    add_etc_mount_points(partial)
    assert not (outside / "hosts").exists()
    assert (partial / "etc" / "hostname").read_text() == "image's own\n"
    assert (partial / "etc" / "resolv.conf").read_bytes() == b""

    empty = tmp_path / "empty"
    empty.mkdir()
    add_etc_mount_points(empty)
    assert sorted(p.name for p in (empty / "etc").iterdir()) == sorted(ETC_MOUNTS)


@needs_runsc
@pytest.mark.slow
async def test_sigterm_ends_a_main_process_without_handler(gvisor: GVisor, busybox_ref: str) -> None:
    """Unlike a container's PID 1 in a VM (or under runc), which ignores a signal it has no
    handler for, a gVisor container's main process is ended by SIGTERM."""
    spec = pod("p17", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await gvisor.create_sandbox(spec)
    await gvisor.start_container("p17", "main")
    await gvisor.signal_container("p17", "main", signal.SIGTERM)
    first = await asyncio.wait_for(gvisor.wait_container("p17", "main"), 30)
    assert first.exit == ExitStatus(signal=signal.SIGTERM)


CRASHING_AGENT = """
import asyncio, sys
from pathlib import Path
from hypernetes.runtime.gvisor import GVisor
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import ContainerSpec, ExecSpec, PodSpec

async def main() -> None:
    root, ref = Path(sys.argv[1]), sys.argv[2]
    rt = GVisor(root / "rt", ImageStore(root / "images"), die_with_parent=True)
    for name in ("orphan", "orphan2"):
        spec = PodSpec(id=name, name=name,
                       containers=(ContainerSpec(name="main", image=ref, command=("sleep", "600")),))
        await rt.create_sandbox(spec)
        await rt.start_container(name, "main")
        await rt.exec(name, "main", ExecSpec(command=("sleep", "600")))
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@needs_runsc
@pytest.mark.slow
async def test_die_with_parent_then_cleanup(tmp_path: Path, busybox_ref: str) -> None:
    """An agent killed with SIGKILL takes its pods along; a new one clears their files."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_AGENT,
        str(tmp_path),
        busybox_ref,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert agent.stdout is not None
    assert await asyncio.wait_for(agent.stdout.readline(), 60) == b"ready\n"
    assert leftover_runsc_processes(tmp_path)
    agent.kill()
    await agent.wait()
    deadline = time.monotonic() + 15
    while leftover_runsc_processes(tmp_path) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not leftover_runsc_processes(tmp_path)

    rt = GVisor(tmp_path / "rt", ImageStore(tmp_path / "images"))
    assert (rt.root / "sandboxes" / "orphan").exists()
    await rt.remove_sandbox("orphan")  # unknown to this runtime: its leftovers still go
    assert not (rt.root / "sandboxes" / "orphan").exists()
    # a restarted agent's adopt clears the rest (gVisor sandboxes are never taken over)
    assert (rt.root / "sandboxes" / "orphan2").exists()
    assert await rt.adopt() == []
    assert not list((rt.root / "sandboxes").glob("*"))
    assert not list((rt.root / "state").glob("*"))


def test_mount_points_missing_from_the_image_get_a_private_root(tmp_path: Path) -> None:
    """runsc makes missing mount points in the container's root on the host: never in the tree
    every pod of the image shares."""
    shared = tmp_path / "shared"
    (shared / "etc").mkdir(parents=True)
    (shared / "etc" / "hosts").write_text("")
    (shared / "bin").mkdir()
    (shared / "bin" / "sh").write_text("#!")
    (shared / "link").symlink_to("/etc")  # resolved by runsc inside the root: not "present"
    present = (BindMount(tmp_path, "/etc/hosts"), BindMount(tmp_path, "/etc"))
    assert private_root(shared, present, tmp_path / "p0") == shared
    for i, destination in enumerate(("/cfg", "/etc/hosts/x", "/link/hosts", "/etc/new")):
        private = tmp_path / f"p{i + 1}"
        assert private_root(shared, (*present, BindMount(tmp_path, destination)), private) == private
        assert (private / "bin" / "sh").stat().st_ino == (shared / "bin" / "sh").stat().st_ino
        # made once: a restarted container finds its tree again
        assert private_root(shared, (BindMount(tmp_path, destination),), private) == private
        assert not (private / "shared").exists()


def test_volumes_gvisor_cannot_serve_are_refused(tmp_path: Path) -> None:
    c = ContainerSpec(name="c", image="busybox", mounts=(MountSpec("scratch", "/s", sub_path="a"),))
    with pytest.raises(PodRuntimeError, match="subPath of an emptyDir"):
        refuse_unsupported(pod("p1", c, volumes=(VolumeSpec("scratch", "emptyDir"),)))
    block = VolumeSpec("data", "block", block=BlockDevice(str(tmp_path / "disk"), fs_type="ext4"))
    with pytest.raises(PodRuntimeError, match="cannot attach persistent volumes"):
        refuse_unsupported(pod("p2", ContainerSpec(name="c", image="busybox"), volumes=(block,)))
