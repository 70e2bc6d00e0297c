"""Container logs kept on the host in the CRI log format, bounded by size with one rotation.

Line format (as kubelet's CRI logs): `2026-11-25T01:02:03.123456789Z stdout F text`. `P` marks a
partial line (a chunk that did not end in a newline, or a line longer than MAX_LINE).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from hypernetes.runtime.interface import LogLine, PodRuntimeError, Stream
from hypernetes.runtime.paths import open_private, private_dir

MAX_LINE = 16 * 1024
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def rfc3339_ns(ts: float | None = None) -> str:
    ns = time.time_ns() if ts is None else int(ts * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class LogWriter:
    """Appends output chunks of one container; keeps at most ~2x max_bytes on disk."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._pending: dict[Stream, bytes] = {}
        private_dir(path.parent)  # a container's output is its tenant's data
        self._file = _open_append(path)  # held for the container's life
        self._size = self._file.tell()

    def write(self, stream: Stream, data: bytes) -> None:
        buf = self._pending.get(stream, b"") + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._emit(stream, line, partial=False)
        while len(rest) >= MAX_LINE:
            self._emit(stream, rest[:MAX_LINE], partial=True)
            rest = rest[MAX_LINE:]
        self._pending[stream] = rest

    def flush_partial(self) -> None:
        for stream, rest in self._pending.items():
            if rest:
                self._emit(stream, rest, partial=True)
        self._pending.clear()
        self._file.flush()

    def close(self) -> None:
        self.flush_partial()
        self._file.close()

    def _emit(self, stream: Stream, line: bytes, partial: bool) -> None:
        record = b"%s %s %s %s\n" % (
            rfc3339_ns().encode(),
            stream.value.encode(),
            b"P" if partial else b"F",
            line,
        )
        if self._size + len(record) > self.max_bytes:
            self._rotate()
        self._file.write(record)
        self._file.flush()
        self._size += len(record)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = _open_append(self.path)
        self._size = 0


def _open_append(path: Path) -> BinaryIO:
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")


def parse_line(raw: bytes) -> LogLine | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    return LogLine(parts[0].decode(), Stream(parts[1].decode()), data, parts[2] == b"P")


async def read_logs(path: Path, follow: bool, done: asyncio.Event | None = None) -> AsyncIterator[LogLine]:
    """Yield kept lines (rotated file first); with follow, poll for more until `done` is set."""
    rotated = path.with_name(path.name + ".1")
    if rotated.exists():
        with open(rotated, "rb") as f:
            for raw in f:
                if (line := parse_line(raw)) is not None:
                    yield line
    if not path.exists():
        return
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    try:
        inode = os.fstat(f.fileno()).st_ino
        while True:
            raw = f.readline()
            if raw.endswith(b"\n"):
                if (line := parse_line(raw)) is not None:
                    yield line
                continue
            if raw:
                f.seek(-len(raw), os.SEEK_CUR)
            if not follow:
                return
            if done is not None and done.is_set():
                return
            try:
                if os.stat(path).st_ino != inode:
                    f.close()
                    f = open(path, "rb")  # noqa: SIM115
                    inode = os.fstat(f.fileno()).st_ino
                    continue
            except FileNotFoundError:
                return
            await asyncio.sleep(0.1)
    finally:
        f.close()


def previous_log(path: Path) -> Path:
    """Where a container's last instance's log goes when it restarts (`logs --previous`)."""
    return path.with_name(path.name.removesuffix(".log") + ".previous.log")


def new_instance(writer: LogWriter) -> LogWriter:
    """Close a restarting container's log, keep it (and its rotation) as the previous
    instance's, and return a fresh writer at the same path."""
    writer.close()
    prev = previous_log(writer.path)
    for stale in (prev, prev.with_name(prev.name + ".1")):
        stale.unlink(missing_ok=True)
    os.replace(writer.path, prev)
    rotated = writer.path.with_name(writer.path.name + ".1")
    if rotated.exists():
        os.replace(rotated, prev.with_name(prev.name + ".1"))
    return LogWriter(writer.path, writer.max_bytes)


async def container_logs(
    path: Path, done: asyncio.Event, follow: bool, previous: bool
) -> AsyncIterator[LogLine]:
    """A container's log as `Runtime.logs` serves it: the current instance (followed until it
    exits), or with `previous` the one before the last restart."""
    if not previous:
        async for line in read_logs(path, follow, done):
            yield line
        return
    prev = previous_log(path)
    if not prev.exists():
        raise PodRuntimeError(f'previous terminated container "{path.stem}" not found')
    async for line in read_logs(prev, follow=False):
        yield line
