"""Pod preparation every runtime shares: what a pod spec must satisfy, its images, and the
process each container and exec runs (argv, environment, user, working directory).

Both runtimes derive a container's process from its spec and its image config the one way
written here, so a pod behaves alike under `hypervm` and `gvisor`; each runtime only turns a
`ProcessPlan` into its own wire form (the guest protocol's PROCESS, an OCI `process`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Container
from dataclasses import dataclass

from hypernetes.runtime.images import Image, ImageError, ImageStore, RegistryAuth, resolve_user
from hypernetes.runtime.interface import (
    ContainerSpec,
    ExecSpec,
    PodRuntimeError,
    PodSpec,
    StartFailed,
    image_pull_error,
)

SANDBOX_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CONTAINER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VOLUME_KINDS = ("emptyDir", "files", "block")


@dataclass(frozen=True)
class ProcessPlan:
    """A process as every runtime runs it. Field names are those of the guest protocol's
    ProcessSpec, which the hypervm runtime also keeps in its state.json."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()  # "NAME=value", in order
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    terminal: bool = False
    stdin: bool = False
    rows: int = 24
    cols: int = 80


def check_pod(pod: PodSpec, existing: Container[str]) -> None:
    """The checks a pod spec must pass before a runtime pulls or boots anything."""
    if not SANDBOX_ID.match(pod.id):
        raise PodRuntimeError(f"invalid sandbox id {pod.id!r}")
    if pod.id in existing:
        raise PodRuntimeError(f"sandbox {pod.id} already exists")
    if not pod.containers:
        raise PodRuntimeError("a pod needs at least one container")
    names = [c.name for c in pod.containers]
    if len(set(names)) != len(names) or not all(CONTAINER_NAME.match(n) for n in names):
        raise PodRuntimeError(f"container names must be unique DNS labels: {names}")
    check_mounts(pod)


def check_mounts(pod: PodSpec) -> None:
    """Volumes have unique names and known kinds; every mount and device names one of them,
    with a sane path; a raw block volume is only a device, a device only a raw block volume."""
    volumes = {v.name: v for v in pod.volumes}
    if len(volumes) != len(pod.volumes):
        raise PodRuntimeError("volume names must be unique")
    for v in pod.volumes:
        if v.kind not in VOLUME_KINDS or v.medium not in ("", "Memory"):
            raise PodRuntimeError(f"volume {v.name}: unknown kind {v.kind!r} or medium {v.medium!r}")
    for c in pod.containers:
        for m in c.mounts:
            if m.volume not in volumes:
                raise PodRuntimeError(f"container {c.name} mounts unknown volume {m.volume!r}")
            if not m.path.startswith("/") or ".." in m.sub_path.split("/"):
                raise PodRuntimeError(f"container {c.name}: bad mount {m.path!r} (subPath {m.sub_path!r})")
            block = volumes[m.volume].block
            if volumes[m.volume].kind == "block" and block is not None and not block.fs_type:
                raise PodRuntimeError(
                    f"container {c.name}: volume {m.volume!r} is a raw block device "
                    "(volumeMode: Block): it goes in volumeDevices, not volumeMounts"
                )
        for d in c.devices:
            dev = volumes.get(d.volume)
            if dev is None or dev.kind != "block" or dev.block is None or dev.block.fs_type:
                raise PodRuntimeError(
                    f"container {c.name}: volumeDevices need a raw block volume "
                    f"(volumeMode: Block), {d.volume!r} is not one"
                )
            parts = d.path.split("/")
            if not d.path.startswith("/") or d.path == "/" or "." in parts or ".." in parts:
                raise PodRuntimeError(f"container {c.name}: bad devicePath {d.path!r}")


async def pull_images(store: ImageStore, pod: PodSpec) -> dict[str, Image]:
    """Each container's image by container name, pulled as its pull policy says, with the pod's
    imagePullSecrets; a failure is the runtime error that says whether retrying helps."""
    images: dict[str, Image] = {}
    auth = RegistryAuth(dict(pod.pull_credentials))
    for c in pod.containers:
        try:
            images[c.name] = await asyncio.to_thread(store.ensure_for_pod, c.image, c.pull_policy, auth)
        except ImageError as e:
            raise image_pull_error(e) from e
    return images


def pod_hostname(pod: PodSpec) -> str:
    """The pod's hostname as its kernel holds it (at most 63 characters)."""
    return (pod.hostname or pod.name)[:63]


def container_process(pod: PodSpec, spec: ContainerSpec, image: Image) -> ProcessPlan:
    """The container's main process, as upstream derives it: `command` replaces the image's
    entrypoint (and drops its cmd), `args` its cmd; the image's env, then PATH if it has none,
    HOSTNAME, then the container's env; the spec's user, else the image's, else root."""
    cfg = image.config
    if spec.command is not None:
        argv = [*spec.command, *(spec.args or ())]
    else:
        argv = [*cfg.entrypoint, *(spec.args if spec.args is not None else cfg.cmd)]
    if not argv:
        raise StartFailed(f"container {spec.name}: no command given and image has none")
    try:
        uid, gid, groups = resolve_user(image, spec.user or cfg.user or "0")
    except ImageError as e:
        raise StartFailed(f"container {spec.name}: {e}") from e
    env = dict(kv.split("=", 1) for kv in cfg.env if "=" in kv)
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = pod.hostname or pod.name
    env.update(spec.env)
    return ProcessPlan(
        args=tuple(argv),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=spec.working_dir or cfg.working_dir or "/",
        uid=uid,
        gid=gid,
        groups=groups,
        terminal=spec.tty,
        stdin=spec.stdin,
    )


def exec_process(container: str, main: ProcessPlan, image: Image, spec: ExecSpec) -> ProcessPlan:
    """An exec in a container: its main process's user, environment and working directory,
    each replaced or extended by what the exec asks for."""
    if not spec.command:
        raise StartFailed(f"exec in {container}: empty command")
    uid, gid, groups = main.uid, main.gid, main.groups
    if spec.user is not None:
        try:
            uid, gid, groups = resolve_user(image, spec.user)
        except ImageError as e:
            raise StartFailed(str(e)) from e
    env = dict(kv.split("=", 1) for kv in main.env)
    env.update(spec.env)
    return ProcessPlan(
        args=spec.command,
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=spec.working_dir or main.cwd,
        uid=uid,
        gid=gid,
        groups=groups,
        terminal=spec.tty,
        stdin=spec.stdin,
        rows=spec.rows,
        cols=spec.cols,
    )
