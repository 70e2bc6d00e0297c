"""Pull/import progress: a callback API plus a small renderer for terminals.

The store only ever calls a `ProgressCallback`; whoever owns the terminal (the CLI) decides
whether to render. `terminal_progress()` returns None unless stderr is a tty, so daemons and
tests stay quiet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a pull or import.

    phase: "resolve" (manifest), "download" (blob bytes), "exists" (blob already cached),
    "unpack" (a layer), "build" (the erofs disk), "done".
    """

    ref: str
    phase: str
    item: str = ""  # a short blob id, e.g. "sha256:1a2b3c4d5e6f"
    current: int = 0
    total: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


def short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return hexpart[:12] if hexpart else algo[:12]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{n}B"
        value /= 1000
    return f"{n}B"


class TerminalProgress:
    """Renders one line per blob, rewritten in place (like `docker pull`)."""

    def __init__(self, stream: TextIO, min_interval: float = 0.1) -> None:
        self._stream = stream
        self._min_interval = min_interval
        self._last = 0.0
        self._lines: dict[str, str] = {}
        self._drawn = 0

    def __call__(self, event: ProgressEvent) -> None:
        key = event.item or event.phase
        if event.phase == "download":
            text = f"{event.item}: downloading {_size(event.current)}/{_size(event.total)}"
        elif event.phase == "exists":
            text = f"{event.item}: already exists"
        elif event.phase == "unpack":
            text = f"{event.item}: unpacking"
        elif event.phase == "build":
            key, text = "build", f"building disk for {event.ref}"
        elif event.phase == "done":
            key, text = "build", f"{event.ref}: ready"
        else:
            text = f"{event.phase} {event.ref}"
        self._lines[key] = text
        now = time.monotonic()
        final = event.phase != "download" or event.current >= event.total
        if final or now - self._last >= self._min_interval:
            self._last = now
            self._redraw()

    def _redraw(self) -> None:
        out = self._stream
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F")  # back to the first line we drew
        for text in self._lines.values():
            out.write(f"\x1b[2K{text}\n")
        self._drawn = len(self._lines)
        out.flush()


def terminal_progress(stream: TextIO | None = None) -> ProgressCallback | None:
    """A renderer on `stream` (default stderr) if it is a terminal, else None."""
    stream = stream if stream is not None else sys.stderr
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return TerminalProgress(stream)
