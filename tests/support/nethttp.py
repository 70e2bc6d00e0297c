"""HTTP over namespaces for tests: a tiny HTTP/1.1 server in a namespace that says who it is,
and a blocking GET from a namespace (the ingress tests)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from tests.support.netns import ns_socket


@dataclass
class Http:
    """An HTTP/1.1 server in a namespace answering `<name> <path> <X-Forwarded-For>`."""

    netns: str
    name: str
    port: int = 8080
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = ns_socket(self.netns)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                lines = head.decode().split("\r\n")
                fwd = next(
                    (h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("x-forwarded-for")), ""
                )
                body = f"{self.name} {lines[0].split(' ')[1]} {fwd}".encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
                )

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def get(netns: str, ip: str, port: int, host: str, path: str = "/") -> tuple[int, str]:
    with ns_socket(netns) as s:
        s.settimeout(5)
        s.connect((ip, port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()
