"""The port a server process got: tests start servers on port 0 and read the port back, since a
port picked as "free" beforehand can be taken by another process before the server binds it."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tools.listening import listening_ports


def listening_port(proc: subprocess.Popen[Any], timeout: float, what: str) -> int:
    """The TCP port `proc` (or a child of it) listens on, as soon as it listens on one."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        ports = listening_ports(proc.pid)
        if ports:
            return ports[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen within {timeout:g} s")
        time.sleep(0.05)


@contextmanager
def refusing_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> Iterator[int]:
    """A port of 127.0.0.1 that refuses every connection (TCP) or datagram (UDP, with ICMP port
    unreachable) for as long as the block runs: held by a socket of ours, so no other process can
    take it meanwhile, as one could a port closed again after picking it. A TCP socket that never
    listens refuses; a UDP socket connected elsewhere is not given strangers' datagrams."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_DGRAM:
            sock.connect(("127.0.0.1", 9))
        yield int(sock.getsockname()[1])


def forwarded_port(port_forward: subprocess.Popen[str], remote: int) -> int:
    """The local port `kubectl port-forward ... :REMOTE` took (kubectl picks a free one and says
    which on its first line)."""
    assert port_forward.stdout is not None
    line = port_forward.stdout.readline()
    found = re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {remote}\b", line)
    assert found, f"kubectl port-forward did not say which local port it took: {line!r}"
    return int(found[1])
