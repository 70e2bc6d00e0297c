"""The bookkeeping every runtime shares: its sandboxes by id, lookups with clear errors, status
snapshots, logs and waiting for a container, and how a container's status moves (started,
failed to start, exited, lost with its sandbox, restarted). Runtimes keep their own sandbox and
container records; this only needs the fields named in the two protocols below."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Generic, Protocol, TypeVar

from hypernetes.runtime.attach import AttachedContainer
from hypernetes.runtime.interface import (
    ContainerNotFound,
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    ExitStatus,
    LogLine,
    PodRuntimeError,
    PodSpec,
    Process,
    SandboxNotFound,
    SandboxState,
    SandboxStatus,
)
from hypernetes.runtime.logs import LogWriter, container_logs, new_instance


class ContainerRecord(Protocol):
    status: ContainerStatus
    log: LogWriter
    done: asyncio.Event

    @property
    def spec(self) -> ContainerSpec: ...

    @property
    def main(self) -> Process | None: ...


C = TypeVar("C", bound=ContainerRecord)


class SandboxRecord(Protocol[C]):
    pod: PodSpec
    state: SandboxState
    message: str
    created_at: float
    containers: dict[str, C]


S = TypeVar("S", bound=SandboxRecord)  # type: ignore[type-arg]


class SandboxTable(Generic[S, C]):
    name: str
    _sandboxes: dict[str, S]

    def _get(self, sandbox_id: str) -> S:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id}")
        return sandbox

    def _container(self, sandbox: S, name: str) -> C:
        c: C | None = sandbox.containers.get(name)
        if c is None:
            raise ContainerNotFound(f"no container {name} in pod {sandbox.pod.name}")
        return c

    def _status(self, sandbox: S) -> SandboxStatus:
        return SandboxStatus(
            id=sandbox.pod.id,
            name=sandbox.pod.name,
            namespace=sandbox.pod.namespace,
            state=sandbox.state,
            runtime=self.name,
            message=sandbox.message,
            containers=[c.status for c in sandbox.containers.values()],
            created_at=sandbox.created_at,
        )

    async def status(self, sandbox_id: str) -> SandboxStatus:
        return self._status(self._get(sandbox_id))

    async def list_sandboxes(self) -> list[SandboxStatus]:
        return [self._status(s) for s in self._sandboxes.values()]

    async def logs(
        self, sandbox_id: str, container: str, follow: bool = False, previous: bool = False
    ) -> AsyncIterator[LogLine]:
        c = self._container(self._get(sandbox_id), container)
        async for line in container_logs(c.log.path, c.done, follow, previous):
            yield line

    async def wait_container(self, sandbox_id: str, container: str) -> ContainerStatus:
        c = self._container(self._get(sandbox_id), container)
        await c.done.wait()
        return c.status

    async def attach(self, sandbox_id: str, container: str) -> Process:
        c = self._container(self._get(sandbox_id), container)
        if c.main is None or c.status.state is not ContainerState.RUNNING:
            raise PodRuntimeError(f"container {container} is not running")
        skip = 0  # what was written before the client came is `kubectl logs`', not the attach's
        async for _ in container_logs(c.log.path, c.done, False, False):
            skip += 1

        async def wait() -> ExitStatus:
            status = await self.wait_container(sandbox_id, container)
            return status.exit or ExitStatus()

        lines = container_logs(c.log.path, c.done, True, False)
        return AttachedContainer(c.main, c.spec, lines, skip, wait)


# --- a container's status, the same under every runtime ----------------------------------------

START_FAILED_EXIT = ExitStatus(code=128)  # a process that never ran: no code of its own


def start_failed(c: ContainerRecord, message: str) -> None:
    """The container's process could not be started: it is over, with reason StartError."""
    c.status.state, c.status.reason, c.status.message = ContainerState.EXITED, "StartError", message
    c.status.exit = START_FAILED_EXIT
    c.log.flush_partial()
    c.done.set()


def started(c: ContainerRecord, pid: int | None = None) -> None:
    c.status.state, c.status.pid, c.status.started_at = ContainerState.RUNNING, pid, time.time()


def exited(c: ContainerRecord, status: ExitStatus, lost_reason: str, lost_message: str) -> None:
    """The container's process ended: Completed or Error by its code; with neither code nor
    signal (its sandbox went before it said), `lost_reason` and why."""
    if status.code is None and status.signal is None:
        c.status.reason, c.status.message = lost_reason, lost_message
    else:
        c.status.reason = "Completed" if status.code == 0 else "Error"
    c.log.flush_partial()
    c.status.state, c.status.exit, c.status.finished_at = ContainerState.EXITED, status, time.time()
    c.done.set()


def lost(c: ContainerRecord, reason: str, message: str) -> None:
    """The sandbox ended under a container that no reaper watches (never started, or adopted
    without its process): it is over too."""
    if c.status.state in (ContainerState.RUNNING, ContainerState.CREATED):
        c.status.state = ContainerState.EXITED
        c.status.reason, c.status.message = reason, message
        c.done.set()


def check_exited(c: ContainerRecord) -> None:
    if c.status.state is not ContainerState.EXITED:
        raise PodRuntimeError(f"container {c.status.name} has not exited")


def new_container_instance(c: ContainerRecord) -> None:
    """Bookkeeping of a restart in place: only an exited container restarts; the new instance
    gets a fresh status and log, and the last log stays readable as `previous`."""
    check_exited(c)
    c.log = new_instance(c.log)
    c.done = asyncio.Event()
    c.status = ContainerStatus(name=c.status.name, image=c.status.image, image_id=c.status.image_id)
