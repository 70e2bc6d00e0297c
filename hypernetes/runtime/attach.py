"""`kubectl attach`: a handle on a running container's main process, the same under every runtime.

The main process's output already goes to the container's log (the runtime keeps it whether or not
anyone is attached), so what an attached client sees is the log followed from the moment it
attached, line by line with its stream, as the kubelet's attach does. Its stdin reaches the main
process only if the container keeps stdin open (`stdin: true` in the pod spec), and a resize
reaches it only if it has a terminal (`tty: true`); detaching leaves that stdin open; the process
ends the session when it exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from hypernetes.runtime.interface import ContainerSpec, ExitStatus, LogLine, PodRuntimeError, Process, Stream


class AttachedContainer(Process):
    def __init__(
        self,
        main: Process,
        spec: ContainerSpec,
        lines: AsyncIterator[LogLine],
        skip: int,
        wait: Callable[[], Awaitable[ExitStatus]],
    ) -> None:
        """`lines`: the container's log followed from its start, of which the first `skip` were
        written before the client attached."""
        self.main, self.spec, self._lines, self._skip, self._wait = main, spec, lines, skip, wait

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        seen = 0
        async for line in self._lines:
            seen += 1
            if seen > self._skip:
                yield line.stream, line.data + (b"" if line.partial else b"\n")

    async def write_stdin(self, data: bytes) -> None:
        if not self.spec.stdin:
            raise PodRuntimeError(
                f"container {self.spec.name} does not keep stdin open (stdin: true in its spec)"
            )
        await self.main.write_stdin(data)

    async def close_stdin(self) -> None:
        """A client that detaches leaves the process's stdin open for the next one (upstream's
        default, stdinOnce: false; stdinOnce itself is not supported)."""

    async def resize(self, rows: int, cols: int) -> None:
        if self.spec.tty:
            await self.main.resize(rows, cols)

    async def signal(self, signum: int) -> None:
        await self.main.signal(signum)

    async def wait(self) -> ExitStatus:
        return await self._wait()
