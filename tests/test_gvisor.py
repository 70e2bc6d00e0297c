"""The gvisor runtime end to end: real images from a real registry, real runsc sandboxes."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypernetes.runtime.gvisor import GVisor, runsc_processes_under
from hypernetes.runtime.gvisor_rootfs import ensure_rootfs, pause_elf
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import (
    ContainerSpec,
    ContainerState,
    ExecSpec,
    ExitStatus,
    ImagePullFailed,
    SandboxState,
    StartFailed,
    Stream,
)
from hypernetes.runtime.runsc import Runsc, decode_exit
from tests.support.pods import collect, pod, run

needs_runsc = pytest.mark.skipif(not Runsc.available(), reason="runsc is not installed")


@pytest.fixture
async def gvisor(tmp_path: Path) -> AsyncIterator[GVisor]:
    """A GVisor runtime on a fresh data dir; asserts that nothing is left after each test."""
    runtime = GVisor(tmp_path / "rt", ImageStore(tmp_path / "images"), die_with_parent=True)
    yield runtime
    for sandbox in await runtime.list_sandboxes():
        await runtime.remove_sandbox(sandbox.id)
    assert not list((tmp_path / "rt" / "gvisor" / "sandboxes").glob("*"))
    assert not list((tmp_path / "rt" / "gvisor" / "state").glob("*"))
    assert not leftover_processes(tmp_path)
    assert not list(Path("/sys/fs/cgroup").glob("*" + runtime.cgroup_of("*")))


def ps_runsc(path: Path) -> list[str]:
    """runsc, runsc-gofer and runsc-sandbox processes whose command line names `path`, by `ps`."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if line.startswith("runsc") and f"{path}/" in line]


def leftover_processes(path: Path) -> list[str]:
    """What `ps` and the runtime's own /proc scan both find of `path`'s runsc processes."""
    return ps_runsc(path) + [str(p) for p in runsc_processes_under(path) if Path(f"/proc/{p}").exists()]




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
async def test_echo_exit_code_streams_env_user(gvisor: GVisor, busybox_ref: str) -> None:
    script = ("echo out; echo err >&2; echo $GREETING; pwd; id; echo $HOSTNAME;"
              " cat /proc/sys/kernel/hostname; grep -c localhost /etc/hosts; exit 7")
    spec = pod("p1", ContainerSpec(
        name="main", image=busybox_ref, command=("sh", "-c", script),
        env=(("GREETING", "hello gvisor"),), working_dir="/tmp", user="app",
    ))
    status, out, err = await run(gvisor, spec)
    assert status == ExitStatus(code=7)
    lines = out.decode().splitlines()
    assert lines[:3] == ["out", "hello gvisor", "/tmp"]
    assert lines[3].startswith("uid=1000(app) gid=1000(app)")
    assert lines[4:7] == ["p1", "p1", "2"]
    assert err == b"err\n"
    st = await gvisor.status("p1")
    assert st.state is SandboxState.READY and st.runtime == "gvisor"
    assert st.containers[0].state is ContainerState.EXITED
    assert st.containers[0].exit == ExitStatus(code=7) and st.containers[0].reason == "Error"
    logged = [(ln.stream, ln.data) async for ln in gvisor.logs("p1", "main")]
    assert (Stream.STDERR, b"err") in logged and (Stream.STDOUT, b"hello gvisor") in logged


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
async def test_signal_exit_and_signal_delivery(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p2", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await gvisor.create_sandbox(spec)
    proc = await gvisor.start_container("p2", "main", attach=True)
    assert proc is not None
    await proc.signal(signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), 30) == ExitStatus(signal=signal.SIGKILL)
    st = await gvisor.wait_container("p2", "main")
    assert st.exit == ExitStatus(signal=signal.SIGKILL) and st.reason == "Error"


@needs_runsc
@pytest.mark.slow
async def test_two_containers_share_network_not_files(gvisor: GVisor, busybox_ref: str) -> None:
    server = ContainerSpec(name="web", image=busybox_ref,
                           command=("sh", "-c", "echo served > /tmp/index.html; httpd -f -p 8080 -h /tmp"))
    fetch = (
        "test -e /tmp/index.html && echo LEAK; for i in $(seq 50); do"
        " wget -q -O - http://127.0.0.1:8080/ 2>/dev/null && exit 0; sleep 0.2; done; exit 1"
    )
    client = ContainerSpec(name="client", image=busybox_ref, command=("sh", "-c", fetch))
    spec = pod("p3", server, client)
    await gvisor.create_sandbox(spec)
    await gvisor.start_container("p3", "web")
    await gvisor.start_container("p3", "client")
    st = await asyncio.wait_for(gvisor.wait_container("p3", "client"), 60)
    assert st.exit == ExitStatus(code=0)
    logged = [ln.data async for ln in gvisor.logs("p3", "client")]
    assert logged == [b"served"]
    # The client ended; the web server (another container of the sandbox) still runs.
    status = await gvisor.status("p3")
    assert status.containers[0].state is ContainerState.RUNNING
    # Each container has its own writable layer; the shared rootfs cache was not written.
    proc = await gvisor.exec("p3", "web", ExecSpec(command=("cat", "/tmp/index.html")))
    assert await collect(proc) == (b"served\n", b"")
    rootfs = gvisor.root / "rootfs"
    assert not list(rootfs.glob("*/tmp/index.html"))


@needs_runsc
@pytest.mark.slow
async def test_exec_with_and_without_tty(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p4", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await gvisor.create_sandbox(spec)
    await gvisor.start_container("p4", "main")
    proc = await gvisor.exec("p4", "main", ExecSpec(command=("sh", "-c", "echo a; echo b >&2; exit 3")))
    assert await collect(proc) == (b"a\n", b"b\n")
    assert await proc.wait() == ExitStatus(code=3)

    as_user = await gvisor.exec("p4", "main", ExecSpec(
        command=("sh", "-c", "id -u; pwd; echo $X"), user="app", working_dir="/tmp", env=(("X", "y"),)))
    assert await collect(as_user) == (b"1000\n/tmp\ny\n", b"")

    tty = await gvisor.exec("p4", "main", ExecSpec(command=("sh",), tty=True, stdin=True, rows=30, cols=100))
    await tty.write_stdin(b"stty size; exit 5\n")
    out, err = await asyncio.wait_for(collect(tty), 30)
    assert b"30 100" in out and err == b""
    assert await tty.wait() == ExitStatus(code=5)

    resize = await gvisor.exec("p4", "main", ExecSpec(command=("sh",), tty=True, stdin=True))
    await resize.resize(50, 132)
    await resize.write_stdin(b"stty size; exit\n")
    out, _ = await asyncio.wait_for(collect(resize), 30)
    assert b"50 132" in out

    signalled = await gvisor.exec("p4", "main", ExecSpec(command=("sleep", "600")))
    await signalled.signal(signal.SIGTERM)
    assert await asyncio.wait_for(signalled.wait(), 30) == ExitStatus(signal=signal.SIGTERM)

    with pytest.raises(StartFailed, match="nonexistent"):
        await gvisor.exec("p4", "main", ExecSpec(command=("/nonexistent",)))


@needs_runsc
@pytest.mark.slow
async def test_tty_container(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p14", ContainerSpec(name="main", image=busybox_ref, command=("sh",), tty=True, stdin=True))
    await gvisor.create_sandbox(spec)
    proc = await gvisor.start_container("p14", "main", attach=True)
    assert proc is not None
    await proc.resize(40, 120)
    await proc.write_stdin(b"stty size; exit 4\n")
    out, err = await asyncio.wait_for(collect(proc), 30)
    assert b"40 120" in out and err == b""
    assert await proc.wait() == ExitStatus(code=4)


@needs_runsc
@pytest.mark.slow
async def test_large_output_and_stdin(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p5", ContainerSpec(name="main", image=busybox_ref, command=("sha256sum",), stdin=True))
    await gvisor.create_sandbox(spec)
    proc = await gvisor.start_container("p5", "main", attach=True)
    assert proc is not None
    data = bytes(range(256)) * 4096 * 2
    await proc.write_stdin(data)
    await proc.close_stdin()
    out, _ = await asyncio.wait_for(collect(proc), 60)
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


@needs_runsc
@pytest.mark.slow
async def test_large_output_in_order(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p12", ContainerSpec(name="main", image=busybox_ref, command=("seq", "1", "300000")))
    status, out, _ = await run(gvisor, spec)
    assert status == ExitStatus(code=0)
    assert out == "".join(f"{i}\n" for i in range(1, 300001)).encode()
    logged = [ln.data async for ln in gvisor.logs("p12", "main")]
    assert len(logged) == 300000 and logged[-1] == b"300000"


@needs_runsc
@pytest.mark.slow
async def test_bad_command_is_clear(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p6", ContainerSpec(name="main", image=busybox_ref, command=("/nonexistent",)))
    await gvisor.create_sandbox(spec)
    with pytest.raises(StartFailed, match="nonexistent: no such file") as failed:
        await gvisor.start_container("p6", "main")
    assert failed.value.errno == errno.ENOENT
    st = await gvisor.status("p6")
    assert st.containers[0].reason == "StartError"
    assert st.containers[0].exit == ExitStatus(code=128)


@needs_runsc
@pytest.mark.slow
async def test_restart_in_place_and_signal(gvisor: GVisor, busybox_ref: str) -> None:
    script = "test -e /tmp/mark && echo STALE; touch /tmp/mark; echo run; exec sleep 600"
    spec = pod("p17", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await gvisor.create_sandbox(spec)
    await gvisor.start_container("p17", "main")
    await gvisor.signal_container("p17", "main", signal.SIGTERM)
    first = await asyncio.wait_for(gvisor.wait_container("p17", "main"), 30)
    assert first.exit == ExitStatus(signal=signal.SIGTERM)

    await gvisor.restart_container("p17", "main")
    st = (await gvisor.status("p17")).containers[0]
    assert st.state is ContainerState.RUNNING and st.exit is None
    await gvisor.signal_container("p17", "main", signal.SIGKILL)
    await asyncio.wait_for(gvisor.wait_container("p17", "main"), 30)
    # A fresh writable layer (no STALE) and a fresh log; the last one kept as "previous".
    assert [ln.data async for ln in gvisor.logs("p17", "main")] == [b"run"]
    assert [ln.data async for ln in gvisor.logs("p17", "main", previous=True)] == [b"run"]


@needs_runsc
@pytest.mark.slow
async def test_bad_images_are_clear_and_leave_nothing(gvisor: GVisor, tmp_path: Path) -> None:
    with pytest.raises(ImagePullFailed, match="registry unreachable"):
        await gvisor.create_sandbox(pod("p7", ContainerSpec(name="main", image="127.0.0.1:1/x:1")))
    with pytest.raises(ImagePullFailed, match="invalid"):
        await gvisor.create_sandbox(pod("p8", ContainerSpec(name="main", image="UPPER/Case::x")))
    assert not leftover_processes(tmp_path)


@needs_runsc
@pytest.mark.slow
async def test_graceful_stop(gvisor: GVisor, busybox_ref: str) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    spec = pod("p11", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await gvisor.create_sandbox(spec)
    proc = await gvisor.start_container("p11", "main", attach=True)
    assert proc is not None
    async for _stream, data in proc.output():
        if b"ready" in data:
            break
    await gvisor.stop_sandbox("p11", grace_seconds=20)
    assert await proc.wait() == ExitStatus(code=0)
    logged = [ln.data async for ln in gvisor.logs("p11", "main")]
    assert b"got TERM" in logged
    assert (await gvisor.status("p11")).state is SandboxState.STOPPED


@needs_runsc
@pytest.mark.slow
async def test_remove_leaves_nothing(gvisor: GVisor, busybox_ref: str, tmp_path: Path) -> None:
    sleeper = ContainerSpec(name="a", image=busybox_ref, command=("sleep", "600"))
    stubborn = ContainerSpec(name="b", image=busybox_ref,
                             command=("sh", "-c", "trap '' TERM; while true; do sleep 1; done"))
    never = ContainerSpec(name="c", image=busybox_ref, command=("true",))
    await gvisor.create_sandbox(pod("p15", sleeper, stubborn, never))
    await gvisor.start_container("p15", "a")
    await gvisor.start_container("p15", "b")
    exec_proc = await gvisor.exec("p15", "a", ExecSpec(command=("sleep", "600")))
    running = ps_runsc(tmp_path)
    # run (pause), exec, the sandbox and one gofer per container at least.
    assert {line.split()[0] for line in running} >= {"runsc", "runsc-sandbox", "runsc-gofer"}
    assert len(running) >= 6
    await gvisor.remove_sandbox("p15")
    assert await asyncio.wait_for(exec_proc.wait(), 10) is not None
    assert not leftover_processes(tmp_path)
    assert not (gvisor.root / "sandboxes" / "p15").exists()
    await gvisor.remove_sandbox("p15")  # again: not an error
    await gvisor.remove_sandbox("never-existed")


@needs_runsc
@pytest.mark.slow
async def test_sandbox_killed_mid_run(gvisor: GVisor, busybox_ref: str, tmp_path: Path) -> None:
    spec = pod("p10", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await gvisor.create_sandbox(spec)
    await gvisor.start_container("p10", "main")
    for pid in runsc_processes_under(tmp_path):
        if b"runsc-sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    st_container = await asyncio.wait_for(gvisor.wait_container("p10", "main"), 30)
    assert st_container.state is ContainerState.EXITED
    st = await asyncio.wait_for(_failed(gvisor, "p10"), 30)
    assert "ended unexpectedly" in st


async def _failed(rt: GVisor, sandbox_id: str) -> str:
    while (st := await rt.status(sandbox_id)).state is not SandboxState.FAILED:
        await asyncio.sleep(0.05)
    return st.message


@needs_runsc
@pytest.mark.slow
async def test_memory_limit_sizes_the_sandbox(gvisor: GVisor, busybox_ref: str) -> None:
    spec = pod("p16", ContainerSpec(name="main", image=busybox_ref, command=("head", "-1", "/proc/meminfo"),
                                    memory_limit=128 * 1024 * 1024, cpu_limit_millis=500))
    status, out, _ = await run(gvisor, spec)
    assert status == ExitStatus(code=0)
    total_kib = int(out.split()[1])
    assert 128 * 1024 <= total_kib <= 256 * 1024
    # The host enforces it too: the pod's cgroup (v1 on this host) holds the limit + overhead.
    memory_cg = Path("/sys/fs/cgroup/memory" + gvisor.cgroup_of("p16"))
    if memory_cg.is_dir():
        assert int((memory_cg / "memory.limit_in_bytes").read_text()) == total_kib * 1024


@needs_runsc
@pytest.mark.slow
def test_rootfs_is_extracted_once(tmp_path: Path, image_store: ImageStore, busybox_ref: str) -> None:
    image = image_store.ensure(busybox_ref)
    first = ensure_rootfs(tmp_path / "cache", image.id, image.disk)
    assert (first / "bin" / "busybox").is_file()
    stamp = first.stat().st_ino
    assert ensure_rootfs(tmp_path / "cache", image.id, image.disk).stat().st_ino == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == [first.name]


CRASHING_AGENT = """
import asyncio, sys
from pathlib import Path
from hypernetes.runtime.gvisor import GVisor
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import ContainerSpec, ExecSpec, PodSpec

async def main() -> None:
    root, ref = Path(sys.argv[1]), sys.argv[2]
    rt = GVisor(root / "rt", ImageStore(root / "images"), die_with_parent=True)
    spec = PodSpec(id="orphan", name="orphan",
                   containers=(ContainerSpec(name="main", image=ref, command=("sleep", "600")),))
    await rt.create_sandbox(spec)
    await rt.start_container("orphan", "main")
    await rt.exec("orphan", "main", ExecSpec(command=("sleep", "600")))
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@needs_runsc
@pytest.mark.slow
async def test_die_with_parent_then_cleanup(tmp_path: Path, busybox_ref: str) -> None:
    """An agent killed with SIGKILL takes its pods along; a new one clears their files."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_AGENT, str(tmp_path), busybox_ref,
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent,
    )
    assert agent.stdout is not None
    assert await asyncio.wait_for(agent.stdout.readline(), 60) == b"ready\n"
    assert leftover_processes(tmp_path)
    agent.kill()
    await agent.wait()
    deadline = time.monotonic() + 15
    while leftover_processes(tmp_path) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not leftover_processes(tmp_path)

    rt = GVisor(tmp_path / "rt", ImageStore(tmp_path / "images"))
    assert (rt.root / "sandboxes" / "orphan").exists()
    await rt.remove_sandbox("orphan")
    assert not (rt.root / "sandboxes" / "orphan").exists()
    assert not list((rt.root / "state").glob("*"))
