"""The runtimes under test behind one harness, for the runtime contract suite and each runtime's
own tests: how to make one on a directory, what it may leave behind (nothing), how to kill a
sandbox from outside, and the few words in which the runtimes differ by design."""

from __future__ import annotations

import abc
import hashlib
import os
import signal
import subprocess
from pathlib import Path

from hypernetes.runtime.gvisor import GVisor, runsc_processes_under
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import Image, ImageStore
from hypernetes.runtime.interface import Runtime
from hypernetes.runtime.kernels import KernelRegistry
from tests.support.guests import qemu_processes_under

CGROUP_ROOT = Path("/sys/fs/cgroup")


class RuntimeHarness(abc.ABC):
    """One runtime on its own directory. `runtime` is the first one made; `again()` makes
    another on the same directory (a restarted node agent)."""

    name: str
    lost_reason: str  # the reason of a container whose sandbox ended under it
    adopts: bool  # whether a new runtime on the same directory takes running sandboxes over
    exec_tty_name: bytes  # what `tty` prints in an exec with a terminal

    def __init__(self, root: Path, images: ImageStore) -> None:
        self.root = root
        self.images = images
        self.made: list[Runtime] = []
        self.runtime = self.again()

    def again(self) -> Runtime:
        runtime = self._make()
        self.made.append(runtime)
        return runtime

    @abc.abstractmethod
    def _make(self) -> Runtime: ...

    @abc.abstractmethod
    def leftovers(self) -> list[str]:
        """Whatever of a sandbox is still on the host (processes, files, cgroups)."""

    @abc.abstractmethod
    def kill_sandbox(self) -> None:
        """SIGKILL, from outside, the host process that is the sandbox (QEMU, gVisor's sentry)."""

    @abc.abstractmethod
    def image_fingerprint(self, image: Image) -> str:
        """What the host holds of an image for every pod that uses it, as one digest: a
        container's writes must never change it."""

    def host_memory_limit(self, sandbox_id: str) -> int | None:
        """The memory limit the host holds the sandbox to, where this harness can read it."""
        return None

    async def remove_all(self) -> None:
        for runtime in self.made:
            for sandbox in await runtime.list_sandboxes():
                await runtime.remove_sandbox(sandbox.id)


class HyperVMHarness(RuntimeHarness):
    name = "hypervm"
    lost_reason = "VMExited"
    adopts = True
    exec_tty_name = b"/dev/pts/"

    def __init__(self, root: Path, images: ImageStore, kernels: KernelRegistry) -> None:
        self.kernels = kernels
        super().__init__(root, images)

    def _make(self) -> HyperVM:
        return HyperVM(self.root, self.images, self.kernels, die_with_parent=True)

    def leftovers(self) -> list[str]:
        files = [str(p) for p in (self.root / "hypervm").glob("*") if p.name != "accel.json"]
        return files + [f"qemu pid {pid}" for pid in qemu_processes_under(self.root)]

    def kill_sandbox(self) -> None:
        for pid in qemu_processes_under(self.root):
            os.kill(pid, signal.SIGKILL)

    def image_fingerprint(self, image: Image) -> str:
        # One read-only erofs disk per image, shared by every pod of it: its bytes.
        return hashlib.sha256(image.disk.read_bytes()).hexdigest()


class GVisorHarness(RuntimeHarness):
    name = "gvisor"
    lost_reason = "SandboxExited"
    adopts = False  # see GVisor.adopt: its sandboxes cannot be taken over
    # The exec's terminal works (stty, resize) but has no name in the sandbox: ttyname(3)
    # fails there. A known gap; this fails once it is closed, to be updated.
    exec_tty_name = b"not a tty"

    def _make(self) -> GVisor:
        return GVisor(self.root, self.images, die_with_parent=True)

    @property
    def gvisor(self) -> GVisor:
        assert isinstance(self.runtime, GVisor)
        return self.runtime

    def leftovers(self) -> list[str]:
        root = self.root / "gvisor"
        found = [str(p) for p in (root / "sandboxes").glob("*")]
        found += [str(p) for p in (root / "state").glob("*")]
        found += leftover_runsc_processes(self.root)
        found += [str(p) for p in CGROUP_ROOT.glob("*" + self.gvisor.cgroup_of("*"))]
        return found

    def kill_sandbox(self) -> None:
        for pid in runsc_processes_under(self.root):
            if b"runsc-sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)

    def image_fingerprint(self, image: Image) -> str:
        # The image unpacked once into a rootfs every container of it shares: its tree.
        rootfs = self.root / "gvisor" / "rootfs" / image.id.split(":", 1)[-1]
        tree = sorted(
            f"{p.relative_to(rootfs)} {p.lstat().st_size} {p.lstat().st_mtime_ns}" for p in rootfs.rglob("*")
        )
        assert tree, f"no rootfs at {rootfs}"
        return hashlib.sha256("\n".join(tree).encode()).hexdigest()

    def host_memory_limit(self, sandbox_id: str) -> int | None:
        memory_cg = CGROUP_ROOT / ("memory" + self.gvisor.cgroup_of(sandbox_id))  # cgroup v1 here
        if not memory_cg.is_dir():
            return None
        return int((memory_cg / "memory.limit_in_bytes").read_text())


def ps_runsc(path: Path) -> list[str]:
    """runsc, runsc-gofer and runsc-sandbox processes whose command line names `path`, by `ps`
    (-ww: not cut at 80 columns, where a long `path` would not be seen)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if line.startswith("runsc") and f"{path}/" in line]


def leftover_runsc_processes(path: Path) -> list[str]:
    """What `ps` and the runtime's own /proc scan both find of `path`'s runsc processes."""
    return ps_runsc(path) + [str(p) for p in runsc_processes_under(path) if Path(f"/proc/{p}").exists()]
