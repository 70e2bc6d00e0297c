"""What every runtime must do, run against each of them (`hypervm`: QEMU micro-VMs under TCG
here; `gvisor`: runsc): real images from a real registry, real sandboxes.

Cold boots are the suite's cost, so the image is pulled and built once for the module, and the
tests that only exec into a running pod, or start one of its spare containers, share one pod
per runtime (`shared`) instead of booting their own. Every other test gets a fresh runtime on a
fresh directory (`rt`) and must leave nothing behind on the host.

What differs by design is in the harness (tests/support/runtimes.py): the reason of a container
whose sandbox died under it, and whether a restarted node agent takes running sandboxes over
(hypervm adopts its VMs; gVisor sandboxes cannot be taken over and are cleared). Behaviour of
one runtime alone (VM devices, kernels, jail, network taps, volumes, probes, rootfs cache) is
in test_hypervm*.py, test_vmm_jail.py and test_gvisor.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from hypernetes.runtime.images import Image, ImageStore
from hypernetes.runtime.interface import (
    ContainerNotFound,
    ContainerSpec,
    ContainerState,
    ExecSpec,
    ExitStatus,
    ImagePullFailed,
    MountSpec,
    PodRuntimeError,
    Runtime,
    SandboxNotFound,
    SandboxState,
    StartFailed,
    Stream,
    VolumeFile,
    VolumeSpec,
)
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.runsc import Runsc
from tests.support.pods import collect, pod, run
from tests.support.runtimes import GVisorHarness, HyperVMHarness, RuntimeHarness, ps_runsc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

RUNTIMES = [
    "hypervm",
    pytest.param("gvisor", marks=pytest.mark.skipif(not Runsc.available(), reason="runsc is not installed")),
]
SHARED = "shared"
MiB = 1024 * 1024


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def images(busybox_ref: str, tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """One image store for the module: the image is pulled and built once, for every runtime."""
    return ImageStore(tmp_path_factory.mktemp("images"))


def harness(name: str, root: Path, images: ImageStore, kernels: KernelRegistry) -> RuntimeHarness:
    if name == "hypervm":
        return HyperVMHarness(root, images, kernels)
    return GVisorHarness(root, images)


@pytest_asyncio.fixture(loop_scope="module")
async def rt(
    runtime_name: str, images: ImageStore, kernels: KernelRegistry, tmp_path: Path
) -> AsyncIterator[RuntimeHarness]:
    """A fresh runtime on a fresh directory; after the test, nothing of it is left."""
    h = harness(runtime_name, tmp_path / "fresh", images, kernels)
    yield h
    await h.remove_all()
    assert not h.leftovers()


@dataclasses.dataclass
class Shared:
    h: RuntimeHarness
    image: Image
    fingerprint: str  # of the image before any container wrote anything


SHARED_VOLUMES = (
    VolumeSpec(
        "cfg",
        "files",
        files=(VolumeFile("greeting", b"hello\n"), VolumeFile("keys/secret", b"s3cret\n", 0o600)),
    ),
    VolumeSpec("scratch", "emptyDir"),
)
SHARED_CONTAINERS = {
    "main": ContainerSpec(
        name="main",
        image="",
        command=("sleep", "600"),
        mounts=(
            MountSpec("cfg", "/cfg"),
            MountSpec("cfg", "/etc/secret", sub_path="keys/secret"),
            MountSpec("scratch", "/scratch"),
        ),
    ),
    "web": ContainerSpec(
        name="web",
        image="",
        command=("sh", "-c", "echo served > /tmp/index.html; httpd -f -p 8080 -h /tmp"),
        mounts=(MountSpec("scratch", "/shared"),),
    ),
    "client": ContainerSpec(
        name="client",
        image="",
        command=(
            "sh",
            "-c",
            "test -e /tmp/index.html && echo LEAK; for i in $(seq 50); do"
            " wget -q -O - http://127.0.0.1:8080/ 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
        ),
    ),
    # started by the tests that are about them
    "broken": ContainerSpec(name="broken", image="", command=("/nonexistent",)),
    "tty": ContainerSpec(name="tty", image="", command=("sh",), tty=True, stdin=True),
    "idle": ContainerSpec(name="idle", image="", command=("true",)),  # never started
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    runtime_name: str,
    images: ImageStore,
    kernels: KernelRegistry,
    busybox_ref: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Shared]:
    """One pod per runtime for the tests that exec into it or start one of its containers:
    `main` sleeps, `web` serves on 8080, `client` fetches from it and exits."""
    h = harness(runtime_name, tmp_path_factory.mktemp("shared"), images, kernels)
    containers = [dataclasses.replace(c, image=busybox_ref) for c in SHARED_CONTAINERS.values()]
    await h.runtime.create_sandbox(pod(SHARED, *containers, volumes=SHARED_VOLUMES))
    image = images.ensure(busybox_ref)
    fingerprint = h.image_fingerprint(image)
    for name in ("main", "web", "client"):
        await h.runtime.start_container(SHARED, name)
    yield Shared(h, image, fingerprint)
    await h.remove_all()
    assert not h.leftovers()


# --- a container's process, its streams and its exit ---------------------------------------------


async def test_exit_code_streams_env_user_hostname(rt: RuntimeHarness, busybox_ref: str) -> None:
    script = (
        "echo out; echo err >&2; echo $GREETING; pwd; id; echo $HOSTNAME;"
        " cat /proc/sys/kernel/hostname; grep -c localhost /etc/hosts; exit 7"
    )
    spec = pod(
        "p1",
        ContainerSpec(
            name="main",
            image=busybox_ref,
            command=("sh", "-c", script),
            env=(("GREETING", "hello sandbox"),),
            working_dir="/tmp",
            user="app",
        ),
    )
    status, out, err = await run(rt.runtime, spec)
    assert status == ExitStatus(code=7)
    lines = out.decode().splitlines()
    assert lines[:3] == ["out", "hello sandbox", "/tmp"]
    assert lines[3].startswith("uid=1000(app) gid=1000(app)")
    assert lines[4:7] == ["p1", "p1", "2"]
    assert err == b"err\n"
    st = await rt.runtime.status("p1")
    assert st.state is SandboxState.READY and st.runtime == rt.name
    assert st.containers[0].state is ContainerState.EXITED
    assert st.containers[0].exit == ExitStatus(code=7) and st.containers[0].reason == "Error"
    logged = [(ln.stream, ln.data) async for ln in rt.runtime.logs("p1", "main")]
    assert (Stream.STDERR, b"err") in logged and (Stream.STDOUT, b"hello sandbox") in logged


async def test_signal_exit_and_signal_delivery(rt: RuntimeHarness, busybox_ref: str) -> None:
    spec = pod("p2", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await rt.runtime.create_sandbox(spec)
    proc = await rt.runtime.start_container("p2", "main", attach=True)
    assert proc is not None
    await proc.signal(signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), 60) == ExitStatus(signal=signal.SIGKILL)
    st = await rt.runtime.wait_container("p2", "main")
    assert st.exit == ExitStatus(signal=signal.SIGKILL) and st.reason == "Error"


async def test_large_stdin_and_output_in_order(rt: RuntimeHarness, busybox_ref: str) -> None:
    """2 MiB through a container's stdin; 300000 lines out of another, in order, in its log."""
    summer = ContainerSpec(name="sum", image=busybox_ref, command=("sha256sum",), stdin=True)
    counter = ContainerSpec(name="seq", image=busybox_ref, command=("seq", "1", "300000"))
    await rt.runtime.create_sandbox(pod("p5", summer, counter))
    proc = await rt.runtime.start_container("p5", "sum", attach=True)
    assert proc is not None
    data = bytes(range(256)) * 4096 * 2  # 2 MiB through the stdin window
    await proc.write_stdin(data)
    await proc.close_stdin()
    out, _ = await asyncio.wait_for(collect(proc), 120)
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()

    proc = await rt.runtime.start_container("p5", "seq", attach=True)
    assert proc is not None
    out, _ = await asyncio.wait_for(collect(proc), 120)
    assert await proc.wait() == ExitStatus(code=0)
    assert out == "".join(f"{i}\n" for i in range(1, 300001)).encode()
    logged = [ln.data async for ln in rt.runtime.logs("p5", "seq")]
    assert len(logged) == 300000 and logged[-1] == b"300000"


async def test_bad_command_is_clear(shared: Shared) -> None:
    rt = shared.h.runtime
    with pytest.raises(StartFailed, match=r"(?i)nonexistent: no such file") as failed:
        await rt.start_container(SHARED, "broken")
    assert failed.value.errno == errno.ENOENT
    st = next(c for c in (await rt.status(SHARED)).containers if c.name == "broken")
    assert st.state is ContainerState.EXITED and st.reason == "StartError"
    assert st.exit == ExitStatus(code=128)
    # the pod's other containers are not affected
    assert next(c for c in (await rt.status(SHARED)).containers if c.name == "main").state is (
        ContainerState.RUNNING
    )


async def test_tty_container(shared: Shared) -> None:
    proc = await shared.h.runtime.start_container(SHARED, "tty", attach=True)
    assert proc is not None
    await proc.resize(40, 120)
    await proc.write_stdin(b"stty size; exit 4\n")
    out, err = await asyncio.wait_for(collect(proc), 60)
    assert b"40 120" in out and err == b""
    assert await proc.wait() == ExitStatus(code=4)


async def test_containers_share_network_not_files(shared: Shared) -> None:
    rt = shared.h.runtime
    st = await asyncio.wait_for(rt.wait_container(SHARED, "client"), 120)
    assert st.exit == ExitStatus(code=0)
    logged = [ln.data async for ln in rt.logs(SHARED, "client")]
    assert logged == [b"served"]  # and no LEAK: the web container's file is not the client's
    # The client ended; the web server (another container of the pod) still runs.
    states = {c.name: c.state for c in (await rt.status(SHARED)).containers}
    assert states["web"] is ContainerState.RUNNING
    # Each container has its own writable layer, and the image every pod shares is not written.
    proc = await rt.exec(SHARED, "web", ExecSpec(command=("cat", "/tmp/index.html")))
    assert await collect(proc) == (b"served\n", b"")
    assert shared.h.image_fingerprint(shared.image) == shared.fingerprint


async def test_volumes_files_and_empty_dir(shared: Shared) -> None:
    """File volumes are read-only and replaced atomically while the pod runs; an emptyDir is one
    directory for every container that mounts it."""
    rt = shared.h.runtime

    async def sh(container: str, script: str) -> tuple[int | None, bytes]:
        proc = await rt.exec(SHARED, container, ExecSpec(command=("sh", "-c", script)))
        out, _ = await collect(proc)
        return (await proc.wait()).code, out

    assert await sh("main", "cat /cfg/greeting /etc/secret; stat -c %a /cfg/keys/secret") == (
        0,
        b"hello\ns3cret\n600\n",
    )
    code, _ = await sh("main", "echo x > /cfg/greeting")
    assert code != 0
    assert await sh("main", "echo from-main > /scratch/note") == (0, b"")
    assert await sh("web", "cat /shared/note") == (0, b"from-main\n")
    await rt.update_files(SHARED, "cfg", (VolumeFile("greeting", b"renewed\n"),))
    assert await sh("main", "cat /cfg/greeting") == (0, b"renewed\n")
    with pytest.raises(PodRuntimeError, match="not a file volume"):
        await rt.update_files(SHARED, "scratch", (VolumeFile("x", b""),))


# --- exec ----------------------------------------------------------------------------------------


async def test_exec_streams_exit_user_env_cwd(shared: Shared) -> None:
    rt = shared.h.runtime
    proc = await rt.exec(SHARED, "main", ExecSpec(command=("sh", "-c", "echo a; echo b >&2; exit 3")))
    assert await collect(proc) == (b"a\n", b"b\n")
    assert await proc.wait() == ExitStatus(code=3)

    as_user = await rt.exec(
        SHARED,
        "main",
        ExecSpec(
            command=("sh", "-c", "id -u; pwd; echo $X"), user="app", working_dir="/tmp", env=(("X", "y"),)
        ),
    )
    assert await collect(as_user) == (b"1000\n/tmp\ny\n", b"")
    # without overrides: the container's own user, directory and environment (HOSTNAME, PATH)
    plain = await rt.exec(SHARED, "main", ExecSpec(command=("sh", "-c", "id -u; pwd; echo $HOSTNAME")))
    assert await collect(plain) == (b"0\n/\nshared\n", b"")


async def test_exec_tty_and_resize(shared: Shared) -> None:
    rt = shared.h.runtime
    tty = await rt.exec(SHARED, "main", ExecSpec(command=("sh",), tty=True, stdin=True, rows=30, cols=100))
    await tty.write_stdin(b"stty size; tty; exit 5\n")
    out, err = await asyncio.wait_for(collect(tty), 60)
    assert b"30 100" in out and shared.h.exec_tty_name in out and err == b""
    assert await tty.wait() == ExitStatus(code=5)

    resize = await rt.exec(SHARED, "main", ExecSpec(command=("sh",), tty=True, stdin=True))
    await resize.resize(50, 132)
    await resize.write_stdin(b"stty size; exit\n")
    out, _ = await asyncio.wait_for(collect(resize), 60)
    assert b"50 132" in out


async def test_exec_signal_and_bad_command(shared: Shared) -> None:
    rt = shared.h.runtime
    signalled = await rt.exec(SHARED, "main", ExecSpec(command=("sleep", "600")))
    await signalled.signal(signal.SIGTERM)
    assert await asyncio.wait_for(signalled.wait(), 60) == ExitStatus(signal=signal.SIGTERM)
    with pytest.raises(StartFailed, match="nonexistent") as failed:
        await rt.exec(SHARED, "main", ExecSpec(command=("/nonexistent",)))
    assert failed.value.errno == errno.ENOENT


# --- restart, stop, remove, failure --------------------------------------------------------------


async def test_restart_in_place_and_signal(rt: RuntimeHarness, busybox_ref: str) -> None:
    """A restarted container gets a fresh writable layer and log; the previous log stays.
    signal_container reaches the container's process (a handler runs; SIGKILL always ends it)."""
    script = (
        "trap 'echo got TERM; exit 3' TERM; test -e /tmp/mark && echo STALE; touch /tmp/mark;"
        " echo run; while true; do sleep 0.1; done"
    )
    spec = pod("p17", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    runtime = rt.runtime
    await runtime.create_sandbox(spec)
    proc = await runtime.start_container("p17", "main", attach=True)
    assert proc is not None
    async for _stream, data in proc.output():
        if b"run" in data:
            break
    with pytest.raises(PodRuntimeError, match="has not exited"):
        await runtime.restart_container("p17", "main")
    await runtime.signal_container("p17", "main", signal.SIGTERM)
    first = await asyncio.wait_for(runtime.wait_container("p17", "main"), 60)
    assert first.exit == ExitStatus(code=3) and first.reason == "Error"

    await runtime.restart_container("p17", "main")
    st = (await runtime.status("p17")).containers[0]
    assert st.state is ContainerState.RUNNING and st.exit is None and st.reason == ""
    assert st.started_at is not None and first.finished_at is not None and st.started_at >= first.finished_at
    await asyncio.sleep(1)  # it prints "run" (not STALE: a fresh writable layer)
    await runtime.signal_container("p17", "main", signal.SIGKILL)
    last = await asyncio.wait_for(runtime.wait_container("p17", "main"), 60)
    assert last.exit == ExitStatus(signal=signal.SIGKILL)
    # A fresh writable layer (no STALE) and a fresh log; the last one kept as "previous".
    assert [ln.data async for ln in runtime.logs("p17", "main")] == [b"run"]
    assert [ln.data async for ln in runtime.logs("p17", "main", previous=True)] == [b"run", b"got TERM"]


async def test_graceful_stop(rt: RuntimeHarness, busybox_ref: str) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    spec = pod("p11", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await rt.runtime.create_sandbox(spec)
    proc = await rt.runtime.start_container("p11", "main", attach=True)
    assert proc is not None
    async for _stream, data in proc.output():
        if b"ready" in data:
            break
    await rt.runtime.stop_sandbox("p11", grace_seconds=20)
    assert await proc.wait() == ExitStatus(code=0)
    logged = [ln.data async for ln in rt.runtime.logs("p11", "main")]
    assert b"got TERM" in logged
    assert (await rt.runtime.status("p11")).state is SandboxState.STOPPED


async def test_remove_leaves_nothing(rt: RuntimeHarness, busybox_ref: str) -> None:
    """A running pod with a container that ignores SIGTERM, one never started and an exec
    still running: removing it ends them all and leaves nothing on the host."""
    sleeper = ContainerSpec(name="a", image=busybox_ref, command=("sleep", "600"))
    stubborn = ContainerSpec(
        name="b", image=busybox_ref, command=("sh", "-c", "trap '' TERM; while true; do sleep 1; done")
    )
    never = ContainerSpec(name="c", image=busybox_ref, command=("true",))
    await rt.runtime.create_sandbox(pod("p15", sleeper, stubborn, never))
    await rt.runtime.start_container("p15", "a")
    await rt.runtime.start_container("p15", "b")
    exec_proc = await rt.runtime.exec("p15", "a", ExecSpec(command=("sleep", "600")))
    if isinstance(rt, GVisorHarness):
        running = ps_runsc(rt.root)
        # run (pause), exec, the sandbox and one gofer per container at least.
        assert {line.split()[0] for line in running} >= {"runsc", "runsc-sandbox", "runsc-gofer"}
        assert len(running) >= 6
    assert rt.leftovers()  # what a running pod has on the host, so that the check below means something
    await rt.runtime.remove_sandbox("p15")
    assert await asyncio.wait_for(exec_proc.wait(), 10) is not None
    assert not rt.leftovers()
    with pytest.raises(SandboxNotFound):
        await rt.runtime.status("p15")
    await rt.runtime.remove_sandbox("p15")  # again: not an error
    await rt.runtime.remove_sandbox("never-existed")


async def test_sandbox_killed_mid_run(rt: RuntimeHarness, busybox_ref: str) -> None:
    spec = pod("p10", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await rt.runtime.create_sandbox(spec)
    await rt.runtime.start_container("p10", "main")
    rt.kill_sandbox()
    st_container = await asyncio.wait_for(rt.runtime.wait_container("p10", "main"), 30)
    assert st_container.state is ContainerState.EXITED and st_container.reason == rt.lost_reason
    message = await asyncio.wait_for(_failed(rt, "p10"), 30)
    assert "ended unexpectedly" in message


async def _failed(rt: RuntimeHarness, sandbox_id: str) -> str:
    while (st := await rt.runtime.status(sandbox_id)).state is not SandboxState.FAILED:
        await asyncio.sleep(0.05)
    return st.message


async def test_memory_limit_sizes_the_sandbox(rt: RuntimeHarness, busybox_ref: str) -> None:
    """A pod whose containers all have a memory limit sees that much memory (plus the sandbox's
    own overhead), not the host's."""
    spec = pod(
        "p16",
        ContainerSpec(
            name="main",
            image=busybox_ref,
            command=("head", "-1", "/proc/meminfo"),
            memory_limit=128 * MiB,
            cpu_limit_millis=500,
        ),
    )
    status, out, _ = await run(rt.runtime, spec)
    assert status == ExitStatus(code=0)
    total_kib = int(out.split()[1])
    assert 128 * 1024 <= total_kib <= 256 * 1024, total_kib
    # Where the harness can read it, the host enforces it too.
    if (limit := rt.host_memory_limit("p16")) is not None:
        assert limit == total_kib * 1024


# --- bad input -----------------------------------------------------------------------------------


async def test_bad_images_are_clear_and_leave_nothing(rt: RuntimeHarness) -> None:
    with pytest.raises(ImagePullFailed, match="registry unreachable"):
        await rt.runtime.create_sandbox(pod("p7", ContainerSpec(name="main", image="127.0.0.1:1/x:1")))
    with pytest.raises(ImagePullFailed, match="invalid"):
        await rt.runtime.create_sandbox(pod("p8", ContainerSpec(name="main", image="UPPER/Case::x")))
    assert not rt.leftovers()
    assert await rt.runtime.list_sandboxes() == []


async def test_bad_specs_are_refused_before_anything_runs(rt: RuntimeHarness, busybox_ref: str) -> None:
    c = ContainerSpec(name="main", image=busybox_ref, command=("true",))
    refused = {
        "invalid sandbox id": pod("Bad_ID", c),
        "at least one container": pod("p20"),
        "unique DNS labels": pod("p21", c, c),
        "unique DNS labels: \\['Main'\\]": pod("p22", dataclasses.replace(c, name="Main")),
        "mounts unknown volume 'data'": pod("p23", dataclasses.replace(c, mounts=(MountSpec("data", "/d"),))),
        "volume names must be unique": pod("p24", c, volumes=(VolumeSpec("v", "emptyDir"),) * 2),
        "unknown kind 'hostPath'": pod("p25", c, volumes=(VolumeSpec("v", "hostPath"),)),
    }
    for message, spec in refused.items():
        with pytest.raises(PodRuntimeError, match=message):
            await rt.runtime.create_sandbox(spec)
    assert await rt.runtime.list_sandboxes() == []
    assert not rt.leftovers()


async def test_wrong_calls_on_a_running_pod(shared: Shared, busybox_ref: str) -> None:
    rt = shared.h.runtime
    spec = pod(SHARED, ContainerSpec(name="main", image=busybox_ref, command=("true",)))
    with pytest.raises(PodRuntimeError, match=f"sandbox {SHARED} already exists"):
        await rt.create_sandbox(spec)
    with pytest.raises(PodRuntimeError, match="already started"):
        await rt.start_container(SHARED, "main")
    with pytest.raises(PodRuntimeError, match="idle is not running"):
        await rt.exec(SHARED, "idle", ExecSpec(command=("true",)))
    with pytest.raises(PodRuntimeError, match="idle is not running"):
        await rt.signal_container(SHARED, "idle", signal.SIGTERM)
    with pytest.raises(StartFailed, match="empty command"):
        await rt.exec(SHARED, "main", ExecSpec(command=()))
    with pytest.raises(ContainerNotFound, match=f"no container nope in pod {SHARED}"):
        await rt.start_container(SHARED, "nope")
    with pytest.raises(ContainerNotFound):
        await rt.exec(SHARED, "nope", ExecSpec(command=("true",)))
    with pytest.raises(ContainerNotFound):
        _ = [ln async for ln in rt.logs(SHARED, "nope")]
    for call in (rt.status("nope"), rt.stop_sandbox("nope"), rt.wait_container("nope", "main")):
        with pytest.raises(SandboxNotFound, match="no sandbox nope"):
            await call
    # none of it disturbed the pod
    assert (await rt.status(SHARED)).state is SandboxState.READY


# --- a node agent restart ------------------------------------------------------------------------


async def test_detach_then_adopt(rt: RuntimeHarness, busybox_ref: str) -> None:
    """A new runtime on the same directory (a restarted node agent) takes over a running pod
    (status, exec, logs, remove) if the runtime adopts; if it does not, adoption clears the pod
    entirely, for the node agent to create again."""
    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"
    spec = pod("p13", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await rt.runtime.create_sandbox(spec)
    await rt.runtime.start_container("p13", "main")
    await asyncio.sleep(1)
    await rt.runtime.detach_all()
    assert await rt.runtime.list_sandboxes() == []
    assert rt.leftovers(), "detaching must leave the sandbox running"
    await asyncio.sleep(1)

    again = rt.again()
    adopted = await again.adopt()
    if not rt.adopts:
        assert adopted == []
        assert not rt.leftovers()
        return
    assert [s.id for s in adopted] == ["p13"]
    assert adopted[0].containers[0].state is ContainerState.RUNNING
    proc = await again.exec("p13", "main", ExecSpec(command=("echo", "still here")))
    assert await collect(proc) == (b"still here\n", b"")
    await asyncio.sleep(1)
    ticks = [int(ln.data.split()[1]) async for ln in again.logs("p13", "main")]
    # Output printed while no host listens is kept in the sandbox (the process blocks on a full
    # pipe at worst) and delivered to the adopting host. The one frame QEMU had already passed
    # to the old host's socket when it closed can be lost (the protocol has no
    # acknowledgements), so at most one line may be missing, at the moment of the detach.
    missing = sorted(set(range(ticks[-1] + 1)) - set(ticks))
    assert ticks == sorted(set(ticks)) and len(missing) <= 1 and len(ticks) >= 8, ticks
    await again.remove_sandbox("p13")
    assert not rt.leftovers()


async def test_every_runtime_is_in_the_contract() -> None:
    """A runtime added to the package joins this suite: it runs against every Runtime."""
    names = {cls.name for cls in Runtime.__subclasses__()}
    assert names == {p if isinstance(p, str) else p.values[0] for p in RUNTIMES}
