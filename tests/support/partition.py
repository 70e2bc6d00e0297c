"""A TCP relay between a client and a server that a test can cut and heal: a network partition
(packets dropped, not refused), the fault a node or a leader that loses the API server sees."""

from __future__ import annotations

import asyncio
import contextlib


class Partition:
    """A TCP relay between one client and the API server that the test can cut: every open
    connection is dropped and new ones are accepted but never answered (a network partition,
    not a refusal: the client's own deadline has to notice)."""

    def __init__(self, port: int) -> None:
        self.target, self.cut = port, False
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut:
            with contextlib.suppress(OSError):
                await reader.read()  # held until heal() or partition() drops it: never answered
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.add(up_w)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    if self.cut:
                        return
                    w.write(data)
                    await w.drain()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        for w in (writer, up_w):
            w.close()

    def partition(self) -> None:
        self.cut = True
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        """Relay again; connections held during the partition are dropped so clients retry."""
        self.cut = False
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.partition()
        self.server.close()
