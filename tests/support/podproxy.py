"""A PodProxy without VMs: the API server's logs, exec, attach and port-forward paths answered by a
script of what a container would do, for API tests that have no node agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypernetes.api.subresources import LogOptions, PodProxyError, StreamIO
from hypernetes.objects import Obj


class ScriptedProxy:
    """Runs a few commands the way a container would, without a VM."""

    def __init__(self) -> None:
        self.resizes: list[tuple[int, int]] = []
        self.echo: asyncio.Server | None = None
        self.cancelled: list[str] = []

    async def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        if container == "broken":
            raise PodProxyError(f'container "{container}" is waiting to start')
        lines = [f"line {i} of {container}\n".encode() for i in range(5)]
        if options.tail_lines is not None:
            lines = lines[-options.tail_lines :]
        for line in lines:
            yield line
        if options.follow:
            await asyncio.sleep(0.2)
            yield b"followed\n"

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        if command[0] == "echo":
            await io.write_stdout((" ".join(command[1:]) + "\n").encode())
            return 0
        if command[0] == "cat":
            while (data := await io.read_stdin()) is not None:
                await io.write_stdout(data)
            return 0
        if command[0] == "fail":
            await io.write_stderr(b"going down\n")
            return int(command[1])
        if command[0] == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(command[1])
                raise
        if command[0] == "size":
            size = await asyncio.wait_for(io.resize.get(), 5)
            self.resizes.append((size.width, size.height))
            await io.write_stdout(f"{size.width}x{size.height} tty={io.tty}\n".encode())
            return 0
        raise PodProxyError(f"executable file not found: {command[0]}")

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        await io.write_stdout(b"attached\n")
        return 0

    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Port 80 of every pod is an upper-casing echo server on 127.0.0.1."""
        if port != 80:
            raise PodProxyError(f"connection refused on port {port}")
        if self.echo is None:

            async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                while data := await r.read(65536):
                    w.write(data.upper())
                    await w.drain()
                w.close()

            self.echo = await asyncio.start_server(serve, "127.0.0.1", 0)
        return await asyncio.open_connection("127.0.0.1", self.echo.sockets[0].getsockname()[1])
