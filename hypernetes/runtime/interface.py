"""The pod sandbox interface every runtime implements (`hypervm`, `gvisor`).

The node agent drives pods only through `Runtime`; nothing above this room knows whether a pod
is a QEMU micro-VM or a gVisor sandbox. Shapes follow the CRI loosely: a sandbox holds the pod's
containers, each container has one main process, exec adds more.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hypernetes.runtime.images.auth import Credentials
from hypernetes.runtime.images.errors import (
    ImageNotPresent,
    InvalidReference,
    RegistryNotAllowed,
    Unauthorized,
)


class PodRuntimeError(Exception):
    """Base of runtime errors; str() is a one-line message fit for a pod status or event."""

    reason = "RuntimeError"


class SandboxNotFound(PodRuntimeError):
    reason = "SandboxNotFound"


class ContainerNotFound(PodRuntimeError):
    reason = "ContainerNotFound"


class SandboxFailed(PodRuntimeError):
    """The VM or sandbox could not start or died; the message says what was seen."""

    reason = "SandboxFailed"


class StartFailed(PodRuntimeError):
    """The container's process could not be started (bad command, user, workdir...)."""

    reason = "StartError"

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno  # from the guest, when it said: ENOENT means "command not found"


class ImagePullFailed(PodRuntimeError):
    reason = "ErrImagePull"
    transient = True  # a registry or network hiccup: worth retrying on the usual back-off


class ImagePullRefused(ImagePullFailed):
    """Refused for good until someone changes something: the registry is not one the operator
    allows, or it will not let this pod's credentials pull the image."""

    transient = False


class ImageNeverPull(ImagePullRefused):
    """`imagePullPolicy: Never` and the image is not on the node."""

    reason = "ErrImageNeverPull"


def image_pull_error(exc: Exception) -> ImagePullFailed:
    """The runtime error for a failed image lookup or pull, keyed on whether retrying helps."""
    if isinstance(exc, ImageNotPresent):
        return ImageNeverPull(str(exc))
    if isinstance(exc, (RegistryNotAllowed, Unauthorized, InvalidReference)):
        return ImagePullRefused(str(exc))
    return ImagePullFailed(str(exc))


@dataclass(frozen=True)
class VolumeFile:
    path: str  # relative to the volume's root
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class RbdImage:
    """A Ceph RBD image QEMU opens itself through librbd (docs/volumes.md, "Ceph RBD"). The key
    reaches QEMU only as a secret object read from a 0400 file in its jail."""

    pool: str
    image: str
    user: str  # the cephx user, without "client."
    monitors: str  # comma-separated host:port
    key: str = field(repr=False)


@dataclass(frozen=True)
class BlockDevice:
    """A host file given to the VM as a virtio-blk disk (a persistent volume), or an RBD image
    (`rbd`; `path` is then empty). The host never mounts it; the guest agent mounts its
    filesystem, or hands the raw device to containers."""

    path: str  # the host file
    format: str = "raw"  # "raw" | "qcow2"
    fs_type: str = ""  # "ext4", "xfs", ...: mounted in the guest; "" = a raw block device
    read_only: bool = False
    rbd: RbdImage | None = None


@dataclass(frozen=True)
class VolumeSpec:
    """A pod volume: `emptyDir` (shared scratch space: a per-pod scratch disk, or tmpfs for
    medium "Memory"), `files` (configMap, secret, projected, downwardAPI: contents fixed when the
    pod starts, read-only) or `block` (a persistent volume's disk)."""

    name: str
    kind: str  # "emptyDir" | "files" | "block"
    files: tuple[VolumeFile, ...] = ()
    size_limit: int = 0  # bytes, emptyDir sizeLimit; 0 = none
    medium: str = ""  # emptyDir: "" (disk) or "Memory" (tmpfs, counted in the VM's memory)
    block: BlockDevice | None = None  # kind "block"


@dataclass(frozen=True)
class MountSpec:
    volume: str
    path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    """A `block` volume without a filesystem, as a device node at `path` in the container."""

    volume: str
    path: str


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...] | None = None  # replaces the image's entrypoint
    args: tuple[str, ...] | None = None  # replaces the image's cmd
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    user: str | None = None  # "name", "uid", "uid:gid"; None = the image's user
    tty: bool = False
    stdin: bool = False
    cpu_limit_millis: int | None = None
    memory_limit: int | None = None  # bytes
    mounts: tuple[MountSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()  # raw block volumes (volumeMode: Block)
    cpu_request_millis: int | None = None  # requests.cpu: the VM's CPU weight (None: the limit)
    pull_policy: str = "IfNotPresent"  # imagePullPolicy: "Always" | "IfNotPresent" | "Never"


@dataclass(frozen=True)
class NetworkConfig:
    """The pod's network: its NIC (a tap the node agent opened) and what the guest is told.

    `tap_fd` is handed over: `create_sandbox` owns it from the call on and closes it on success
    and failure alike (QEMU keeps its own copy, so the tap lives exactly as long as the VM). It is
    never persisted: after adoption it is None. Without a tap the pod has no NIC, only `lo`, and
    `mac`/`addresses`/`gateway` are not applied; DNS and hosts still are.
    """

    mac: str | None = None
    addresses: tuple[str, ...] = ()
    gateway: str | None = None
    mtu: int = 1500
    dns_servers: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()  # resolv.conf "options" words, e.g. "ndots:5"
    tap_fd: int | None = None


@dataclass(frozen=True)
class PodSpec:
    id: str  # sandbox id: unique, [a-z0-9-], e.g. the pod uid
    name: str
    namespace: str = "default"
    containers: tuple[ContainerSpec, ...] = ()
    hostname: str | None = None
    kernel: str | None = None  # a registered kernel name; None = the default
    termination_grace_seconds: int = 30
    network: NetworkConfig = field(default_factory=NetworkConfig)
    volumes: tuple[VolumeSpec, ...] = ()
    fs_group: int | None = None
    # The pod's spec.overhead (Pod Overhead, from its RuntimeClass): host CPU (millicores) and
    # memory (bytes) its sandbox's cgroup gets beside the containers' limits; the VM's own size
    # does not change. 0: none (the runtime keeps its own headroom).
    overhead_millicpu: int = 0
    overhead_memory: int = 0
    # The pod's imagePullSecrets: (registry host, credentials). Used for pulls and for checking
    # that this pod may use a cached image; never persisted with the sandbox's state.
    pull_credentials: tuple[tuple[str, Credentials], ...] = field(default=(), repr=False)


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ExitStatus:
    code: int | None = None
    signal: int | None = None

    @property
    def shell_code(self) -> int:
        """The `docker run` convention: the code, or 128+N for signal N."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 255


@dataclass
class ContainerStatus:
    name: str
    state: ContainerState = ContainerState.CREATED
    image: str = ""
    image_id: str = ""
    pid: int | None = None
    exit: ExitStatus | None = None
    reason: str = ""
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None


class SandboxState(enum.Enum):
    CREATING = "creating"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class SandboxStatus:
    id: str
    name: str
    namespace: str
    state: SandboxState
    runtime: str
    message: str = ""
    containers: list[ContainerStatus] = field(default_factory=list)
    created_at: float = 0.0
    # (reason, message) of what went wrong but did not stop the sandbox (a template restore
    # that fell back to a cold boot): the node records each as a Warning event on the pod
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Usage:
    """A sandbox's use so far: cumulative CPU time, and its memory working set now."""

    cpu_ns: int
    memory_working_set: int


@dataclass(frozen=True)
class ExecSpec:
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    user: str | None = None
    tty: bool = False
    stdin: bool = False
    rows: int = 24
    cols: int = 80


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


class Process(abc.ABC):
    """A running process the caller is attached to: its output, stdin, signals, exit."""

    @abc.abstractmethod
    def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Output chunks until the process's streams end."""

    @abc.abstractmethod
    async def write_stdin(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def close_stdin(self) -> None: ...

    @abc.abstractmethod
    async def resize(self, rows: int, cols: int) -> None: ...

    @abc.abstractmethod
    async def signal(self, signum: int) -> None: ...

    @abc.abstractmethod
    async def wait(self) -> ExitStatus: ...


class Runtime(abc.ABC):
    """A pod sandbox implementation. Every method is safe to call again after a failure."""

    name: str

    async def usage(self, sandbox_id: str) -> Usage | None:
        """The sandbox's CPU and memory use as the host sees it (metrics); None: not known."""
        return None

    @abc.abstractmethod
    async def create_sandbox(self, pod: PodSpec) -> SandboxStatus:
        """Pull what is missing, boot the sandbox; containers are created, not started."""

    @abc.abstractmethod
    async def start_container(self, sandbox_id: str, name: str, attach: bool = False) -> Process | None:
        """Start a container's main process; with attach, return a handle on its stdio."""

    @abc.abstractmethod
    async def stop_sandbox(self, sandbox_id: str, grace_seconds: int | None = None) -> None:
        """SIGTERM, wait the grace period, SIGKILL, then end the sandbox."""

    @abc.abstractmethod
    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Stop if needed and release everything it held; unknown ids are not an error."""

    @abc.abstractmethod
    async def status(self, sandbox_id: str) -> SandboxStatus: ...

    @abc.abstractmethod
    async def list_sandboxes(self) -> list[SandboxStatus]: ...

    @abc.abstractmethod
    async def exec(self, sandbox_id: str, container: str, spec: ExecSpec) -> Process: ...

    @abc.abstractmethod
    def logs(
        self, sandbox_id: str, container: str, follow: bool = False, previous: bool = False
    ) -> AsyncIterator[LogLine]:
        """The container's kept log, oldest first; with follow, then new lines as they come.
        With previous, the log of the instance before the last restart."""

    @abc.abstractmethod
    async def wait_container(self, sandbox_id: str, container: str) -> ContainerStatus:
        """Wait until the container's current instance has exited."""

    @abc.abstractmethod
    async def attach(self, sandbox_id: str, container: str) -> Process:
        """A handle on the running container's main process (`kubectl attach`): its output from
        now on, its stdin if the container keeps stdin open, resize if it has a terminal."""

    @abc.abstractmethod
    async def adopt(self) -> list[SandboxStatus]:
        """Take over the sandboxes an earlier process on this root left (a node agent restart)
        and return them; clear, leaving nothing behind, every one that cannot be taken over.
        The node agent re-creates from the API's state the pods whose sandbox is not returned."""

    @abc.abstractmethod
    async def detach_all(self) -> None:
        """Let go of every sandbox without stopping it (node agent shutdown): this process stops
        watching them and closes what it holds; a later `adopt` finds them."""

    async def update_files(self, sandbox_id: str, volume: str, files: tuple[VolumeFile, ...]) -> None:
        """Replace files of a running pod's file volume (a refreshed service-account token)."""
        raise PodRuntimeError(f"the {self.name} runtime cannot change a running pod's files")

    async def resize_block(self, sandbox_id: str, volume: str, size: int) -> None:
        """Tell a running VM that a block volume's device grew to `size` bytes (an RBD image the
        control plane grew); the guest sees the new size at once, and a filesystem on it is
        grown online to fill it."""
        raise PodRuntimeError(f"the {self.name} runtime cannot resize a running pod's volumes")

    async def signal_container(self, sandbox_id: str, name: str, signum: int) -> None:
        """Deliver a signal to a container's main process (from outside its PID namespace, so
        even a PID 1 without handlers is killed by SIGKILL)."""
        raise PodRuntimeError(f"the {self.name} runtime cannot signal containers")

    async def probe(self, sandbox_id: str, spec: ProbeSpec) -> tuple[bool, str]:
        """Run a tcpSocket or httpGet probe from inside the pod's network namespace."""
        raise PodRuntimeError(f"the {self.name} runtime cannot run {spec.kind} probes")

    async def restart_container(self, sandbox_id: str, name: str) -> None:
        """Start a fresh instance of an exited container: a new writable layer and a new log;
        the previous instance's log stays readable with `logs(previous=True)`."""
        raise PodRuntimeError(f"the {self.name} runtime cannot restart containers in place")


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # "tcp" | "http"
    port: int
    host: str = "127.0.0.1"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 1.0


@dataclass(frozen=True)
class LogLine:
    timestamp: str  # RFC 3339 with nanoseconds, as the CRI log format
    stream: Stream
    data: bytes  # one line, without its newline (or a partial line if `partial`)
    partial: bool = False
