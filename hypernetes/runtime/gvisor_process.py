"""A process in a gVisor sandbox as seen from the host: fds we own, and runsc for the rest.

Output is read from pipes (or a pty master) with non-blocking reads on the event loop. Each
chunk goes to the sink (the container log) and, when attached, to a bounded queue, so a slow
reader slows the process rather than growing memory. The sandbox may hold a process's fds
after it ends (runsc keeps them on failed starts), so once the exit is known the streams get
DRAIN_TIMEOUT to reach EOF and are then cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator, Callable

from hypernetes.runtime.interface import ExitStatus, Process, Stream
from hypernetes.runtime.runsc import Runsc, RunscError

MAX_PENDING_OUTPUT = 64  # chunks queued for an attached reader before reading pauses
CHUNK = 64 * 1024
DRAIN_TIMEOUT = 2.0
EOT = b"\x04"

OutputSink = Callable[[Stream, bytes], None]


async def _wait_fd(fd: int, add: Callable[..., None], remove: Callable[[int], bool]) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, ready)
    try:
        await fut
    finally:
        remove(fd)


async def read_chunk(fd: int) -> bytes:
    """The next chunk from a non-blocking fd; b'' at EOF (a pty master says EIO instead)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            await _wait_fd(fd, loop.add_reader, loop.remove_reader)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


async def write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _wait_fd(fd, loop.add_writer, loop.remove_writer)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class SandboxProcess(Process):
    """One process: a container's main process (pid None: runsc addresses it by container id)
    or an exec (pid = its pid in the sandbox, from --internal-pid-file)."""

    def __init__(self, runsc: Runsc, container_id: str, sink: OutputSink | None, attach: bool) -> None:
        self.runsc = runsc
        self.container_id = container_id
        self.pid: int | None = None
        self._sink = sink
        self._queue: asyncio.Queue[tuple[Stream, bytes] | None] | None = (
            asyncio.Queue(MAX_PENDING_OUTPUT) if attach else None
        )
        self._exit: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._pumps: list[asyncio.Task[None]] = []
        self._stdin: int | None = None
        self._tty: int | None = None  # the pty master, for resize
        self._stdin_lock = asyncio.Lock()

    # --- wiring (by the runtime) ---------------------------------------------------------------

    def set_stdin(self, fd: int | None, tty: int | None = None) -> None:
        if fd is not None:
            os.set_blocking(fd, False)
        self._stdin, self._tty = fd, tty

    def pump(self, fd: int, stream: Stream) -> None:
        os.set_blocking(fd, False)
        self._pumps.append(asyncio.create_task(self._pump(fd, stream)))

    async def _pump(self, fd: int, stream: Stream) -> None:
        try:
            while data := await read_chunk(fd):
                if self._sink is not None:
                    self._sink(stream, data)
                if self._queue is not None:
                    await self._queue.put((stream, data))
        finally:
            os.close(fd)

    async def finish(self, status: ExitStatus) -> None:
        """The process ended: let output drain, then end the streams and release fds."""
        if self._pumps:
            _, pending = await asyncio.wait(self._pumps, timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
        self._close_stdin_fds()
        if not self._exit.done():
            self._exit.set_result(status)
        if self._queue is not None:
            await self._queue.put(None)

    def abort(self) -> None:
        """Release everything without waiting (sandbox teardown)."""
        for task in self._pumps:
            task.cancel()
        self._close_stdin_fds()
        if not self._exit.done():
            self._exit.set_result(ExitStatus())
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    def _close_stdin_fds(self) -> None:
        for fd in {self._stdin, self._tty} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self._stdin = self._tty = None

    # --- Process -------------------------------------------------------------------------------

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        if self._queue is None:
            raise ValueError("process is not attached")
        while (item := await self._queue.get()) is not None:
            yield item
        self._queue.put_nowait(None)  # a second reader ends at once too

    async def write_stdin(self, data: bytes) -> None:
        async with self._stdin_lock:
            if self._stdin is None or self._exit.done():
                raise BrokenPipeError("process stdin is closed")
            await write_all(self._stdin, data)

    async def close_stdin(self) -> None:
        async with self._stdin_lock:
            if self._stdin is None or self._exit.done():
                return
            if self._stdin == self._tty:
                await write_all(self._stdin, EOT)  # a terminal's end of input; the pty stays
                return
            os.close(self._stdin)
            self._stdin = None

    async def resize(self, rows: int, cols: int) -> None:
        if self._tty is None:
            raise ValueError("process has no terminal")
        set_winsize(self._tty, rows, cols)
        # The sandbox's processes are not in the host pty's process group: tell them ourselves.
        with contextlib.suppress(RunscError):
            await self.signal(signal.SIGWINCH)

    async def signal(self, signum: int) -> None:
        if self._exit.done():
            return
        await self.runsc.kill(self.container_id, signum, pid=self.pid)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exit)

    @property
    def exited(self) -> ExitStatus | None:
        return self._exit.result() if self._exit.done() else None
