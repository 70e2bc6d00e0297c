"""Logs and exec of this node's pods, for the API server (what the kubelet serves upstream).

The API server calls these for `kubectl logs` and `kubectl exec`; they are structural matches of
its `PodProxy` protocol. Errors are `PodRuntimeError`s with messages shown to the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from hypernetes.node.podspec import ConfigError, sandbox_id
from hypernetes.objects import Obj
from hypernetes.runtime.interface import (
    ExecSpec,
    LogLine,
    PodRuntimeError,
    Process,
    Runtime,
    SandboxNotFound,
    Stream,
)


class LogOptions(Protocol):
    @property
    def follow(self) -> bool: ...
    @property
    def tail_lines(self) -> int | None: ...
    @property
    def since_seconds(self) -> int | None: ...
    @property
    def since_time(self) -> str | None: ...
    @property
    def timestamps(self) -> bool: ...
    @property
    def previous(self) -> bool: ...
    @property
    def limit_bytes(self) -> int | None: ...


class TerminalSize(Protocol):
    width: int
    height: int


class StreamIO(Protocol):
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    resize: asyncio.Queue[Any]

    async def read_stdin(self) -> bytes | None: ...
    async def write_stdout(self, data: bytes) -> None: ...
    async def write_stderr(self, data: bytes) -> None: ...


def _parse_time(text: str) -> dt.datetime:
    """RFC 3339 with up to nanoseconds (CRI logs) or none (sinceTime); Python takes microseconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


class PodConnector(Protocol):
    async def connect(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


class NodePodProxy:
    def __init__(self, runtime: Runtime, networks: PodConnector | None = None) -> None:
        """`networks`: this node's tenant networks, through which port-forward reaches pods."""
        self.runtime = runtime
        self.networks = networks

    def _container(self, pod: Obj, container: str) -> str:
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        if not container:
            if len(names) != 1:
                raise PodRuntimeError(
                    f"a container name must be specified for pod {pod['metadata']['name']}, "
                    f"choose one of: [{' '.join(names)}]"
                )
            return str(names[0])
        if container not in names:
            raise PodRuntimeError(f"container {container} is not valid for pod {pod['metadata']['name']}")
        return container

    async def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        name = self._container(pod, container)
        since: dt.datetime | None = None
        if options.since_seconds:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=options.since_seconds)
        elif options.since_time:
            since = _parse_time(options.since_time)
        try:
            lines = self.runtime.logs(sandbox_id(pod), name, follow=False, previous=options.previous)
            kept: deque[LogLine] | list[LogLine] = (
                deque(maxlen=options.tail_lines) if options.tail_lines is not None else []
            )
            async for line in lines:
                if since is None or _parse_time(line.timestamp) >= since:
                    kept.append(line)
        except SandboxNotFound:
            raise PodRuntimeError(
                f'container "{name}" in pod "{pod["metadata"]["name"]}" is waiting to start'
            ) from None
        budget = options.limit_bytes
        emitted = 0

        def render(line: LogLine) -> bytes:
            prefix = f"{line.timestamp} ".encode() if options.timestamps else b""
            return prefix + line.data + (b"" if line.partial else b"\n")

        for line in kept:
            chunk = render(line)
            if budget is not None and emitted + len(chunk) > budget:
                yield chunk[: budget - emitted]
                return
            emitted += len(chunk)
            yield chunk
        if not options.follow or options.previous:
            return
        # Follow: start after what was sent, by skipping that many kept lines of a fresh read.
        seen = 0
        total = len(kept) if options.tail_lines is None and since is None else None
        async for line in self.runtime.logs(sandbox_id(pod), name, follow=True):
            seen += 1
            if total is not None and seen <= total:
                continue
            if total is None and kept and line.timestamp <= kept[-1].timestamp:
                continue
            chunk = render(line)
            if budget is not None and emitted + len(chunk) > budget:
                yield chunk[: budget - emitted]
                return
            emitted += len(chunk)
            yield chunk

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        name = self._container(pod, container)
        size = None
        with contextlib.suppress(asyncio.QueueEmpty):
            size = io.resize.get_nowait()
        spec = ExecSpec(
            command=tuple(command),
            tty=io.tty,
            stdin=io.stdin,
            rows=size.height if size else 24,
            cols=size.width if size else 80,
        )
        try:
            proc = await self.runtime.exec(sandbox_id(pod), name, spec)
        except SandboxNotFound:
            raise PodRuntimeError(f"pod {pod['metadata']['name']} has no running sandbox") from None
        return await _pump(proc, io)

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        """The main process's output from now on, its stdin if the container keeps it open; the
        session ends when the process does (runtime/attach.py)."""
        name = self._container(pod, container)
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == name)
        if io.stdin and not spec.get("stdin"):
            raise PodRuntimeError(
                f"cannot attach to the stdin of container {name}: it does not keep stdin open "
                "(set stdin: true in its spec), attach without -i"
            )
        try:
            proc = await self.runtime.attach(sandbox_id(pod), name)
        except SandboxNotFound:
            raise PodRuntimeError(f"pod {pod['metadata']['name']} has no running sandbox") from None
        return await _pump(proc, io)

    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `port` of the pod, over its tenant network (a pod without one has no
        TCP port to reach: its VM has no network interface)."""
        if self.networks is None:
            raise PodRuntimeError("port-forward needs tenant networks, which are off on this node")
        try:
            return await self.networks.connect(pod, port)
        except (OSError, TimeoutError) as e:
            name = pod["metadata"]["name"]
            raise PodRuntimeError(f"cannot connect to port {port} of pod {name}: {e}") from None
        except ConfigError as e:
            raise PodRuntimeError(str(e)) from None


async def _pump(proc: Process, io: StreamIO) -> int:
    async def stdin() -> None:
        while (data := await io.read_stdin()) is not None:
            await proc.write_stdin(data)
        await proc.close_stdin()

    async def resize() -> None:
        while True:
            size = await io.resize.get()
            await proc.resize(size.height, size.width)

    helpers = [asyncio.create_task(resize())]
    if io.stdin:
        helpers.append(asyncio.create_task(stdin()))
    try:
        async for stream, data in proc.output():
            if stream is Stream.STDOUT:
                await io.write_stdout(data)
            else:
                await io.write_stderr(data)
        status = await proc.wait()
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return status.shell_code
