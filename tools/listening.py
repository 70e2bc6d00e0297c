"""The TCP ports a process listens on, read from /proc (no dependency): how a tool or a test
learns the port of a server it started on port 0. A port picked as "free" beforehand and handed
to the server can be taken by another process before the server binds it."""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def listening_ports(pid: int) -> list[int]:
    """The TCP ports (IPv4 and IPv6) that `pid` or its descendants listen on, in this network
    namespace; empty if it listens on none (yet) or is gone."""
    inodes: set[str] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        inodes |= _socket_inodes(p)
        todo += _children(p)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == _LISTEN and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))
