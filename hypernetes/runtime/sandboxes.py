"""The bookkeeping every runtime shares: its sandboxes by id, lookups with clear errors, status
snapshots, logs and waiting for a container. Runtimes keep their own sandbox and container
records; this only needs the fields named in the two protocols below."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, Protocol, TypeVar

from hypernetes.runtime.interface import (
    ContainerNotFound,
    ContainerStatus,
    LogLine,
    PodSpec,
    SandboxNotFound,
    SandboxState,
    SandboxStatus,
)
from hypernetes.runtime.logs import LogWriter, container_logs


class ContainerRecord(Protocol):
    status: ContainerStatus
    log: LogWriter
    done: asyncio.Event


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
            id=sandbox.pod.id, name=sandbox.pod.name, namespace=sandbox.pod.namespace,
            state=sandbox.state, runtime=self.name, message=sandbox.message,
            containers=[c.status for c in sandbox.containers.values()],
            created_at=sandbox.created_at,
        )

    async def status(self, sandbox_id: str) -> SandboxStatus:
        return self._status(self._get(sandbox_id))

    async def list_sandboxes(self) -> list[SandboxStatus]:
        return [self._status(s) for s in self._sandboxes.values()]

    async def logs(self, sandbox_id: str, container: str, follow: bool = False,
                   previous: bool = False) -> AsyncIterator[LogLine]:
        c = self._container(self._get(sandbox_id), container)
        async for line in container_logs(c.log.path, c.done, follow, previous):
            yield line

    async def wait_container(self, sandbox_id: str, container: str) -> ContainerStatus:
        c = self._container(self._get(sandbox_id), container)
        await c.done.wait()
        return c.status
