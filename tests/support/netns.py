"""Network namespaces for tests, and talking across them without VMs.

Everything a test makes is named `<prefix>x<what>` (the library's own names are `<prefix>-<id>`),
so `leftovers(prefix)` finds anything either of them forgot. Sockets are created inside a
namespace by a thread that entered it, then used from the test's thread; no subprocess per probe.
"""

from __future__ import annotations

import secrets
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field

from hypernetes.network.netns import list_netns, run_in_netns

TIMEOUT = 0.6  # for probes expected to fail: a LAN round trip here is well under a millisecond
ETH_P_ALL = 0x0003


def unique_prefix() -> str:
    return "t" + secrets.token_hex(3)


def sh(*cmd: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {proc.stderr.strip()}")
    return proc


class Namespaces:
    """Namespaces made by a test, deleted by close() whatever happened."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[str] = []

    def add(self, what: str) -> str:
        name = f"{self.prefix}x{what}"
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)
        return name

    def wire(self, a: str, a_if: str, a_cidr: str, b: str, b_if: str, b_cidr: str) -> None:
        """A veth between two of our namespaces, with addresses (an "a.b.c.d/nn" each)."""
        sh("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b, netns=a)
        for ns, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
            sh("ip", "addr", "add", cidr, "dev", ifname, netns=ns)
            sh("ip", "link", "set", ifname, "up", netns=ns)

    def close(self) -> None:
        for name in self.made:
            sh("ip", "netns", "delete", name, check=False)
        self.made.clear()


def leftovers(prefix: str) -> list[str]:
    return [n for n in list_netns() if n.startswith(prefix)]


def ns_socket(
    netns: str, kind: int = socket.SOCK_STREAM, family: int = socket.AF_INET, proto: int = 0
) -> socket.socket:
    return run_in_netns(netns, lambda: socket.socket(family, kind, proto))


# -- a server that says who it is ----------------------------------------------------------


@dataclass
class Responder:
    """TCP and UDP on `port` in `netns`, answering every connection or datagram with `name`
    and remembering the UDP senders."""

    netns: str
    name: str
    port: int
    udp_from: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._tcp = ns_socket(self.netns)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("0.0.0.0", self.port))
        self._tcp.listen(64)
        self._tcp.settimeout(0.1)
        self._udp = ns_socket(self.netns, socket.SOCK_DGRAM)
        self._udp.bind(("0.0.0.0", self.port))
        self._udp.settimeout(0.1)
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_tcp, self._serve_udp)]
        for t in self._threads:
            t.start()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.sendall(self.name.encode())

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.udp_from.append((peer[0], data))
            self._udp.sendto(self.name.encode(), peer)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._tcp.close()
        self._udp.close()


REFUSED = "<refused>"
NO_ANSWER = "<no answer>"
UNREACHABLE = "<unreachable>"


def tcp_ask(netns: str, ip: str, port: int, timeout: float = TIMEOUT) -> str:
    """The responder's name, or REFUSED / NO_ANSWER / UNREACHABLE."""
    with ns_socket(netns) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            return s.recv(64).decode()
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return NO_ANSWER
        except OSError:  # EHOSTUNREACH, ENETUNREACH: an ICMP error came back
            return UNREACHABLE


def udp_ask(
    netns: str, ip: str, port: int, timeout: float = TIMEOUT, src: str | None = None, src_port: int = 0
) -> str:
    with ns_socket(netns, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if src or src_port:
            s.bind((src or "0.0.0.0", src_port))
        s.settimeout(timeout)
        try:
            s.connect((ip, port))  # so that an ICMP port unreachable is reported to us
            s.send(b"hello")
            return s.recv(64).decode()
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return NO_ANSWER
        except OSError:
            return UNREACHABLE


def ping(netns: str, ip: str) -> bool:
    return sh("busybox", "ping", "-c", "1", "-W", "1", ip, netns=netns, check=False).returncode == 0


# -- raw frames --------------------------------------------------------------------------


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes, port: int = 9) -> bytes:
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        socket.inet_aton(src_ip),
        socket.inet_aton(dst_ip),
    )
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00" + hdr + udp


def arp_frame(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str, op: int = 1) -> bytes:
    """An ARP request (op 1) broadcast from `src_mac` claiming sender_ip is at sender_mac."""
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        op,
        mac_bytes(sender_mac),
        socket.inet_aton(sender_ip),
        b"\0" * 6,
        socket.inet_aton(target_ip),
    )
    return b"\xff" * 6 + mac_bytes(src_mac) + b"\x08\x06" + arp


def parse_arp_reply(frame: bytes) -> tuple[str, str] | None:
    """(sender IP, sender MAC) if `frame` is an Ethernet ARP reply."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
        return None
    return socket.inet_ntoa(frame[28:32]), frame[22:28].hex(":")


def send_raw(netns: str, ifname: str, frame: bytes) -> None:
    with ns_socket(netns, socket.SOCK_RAW, socket.AF_PACKET, socket.htons(ETH_P_ALL)) as s:
        s.bind((ifname, 0))
        s.send(frame)


class Sniffer:
    """Every frame arriving on `ifname` in `netns` while it runs (to tell what reached a pod)."""

    def __init__(self, netns: str, ifname: str) -> None:
        self.frames: list[bytes] = []
        self._sock = ns_socket(netns, socket.SOCK_RAW, socket.AF_PACKET, socket.htons(ETH_P_ALL))
        self._sock.bind((ifname, 0))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            if addr[2] != socket.PACKET_OUTGOING:
                self.frames.append(data)

    def saw(self, token: bytes, wait: float = TIMEOUT) -> bool:
        """Whether a frame holding `token` arrived within `wait` seconds."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if any(token in f for f in self.frames):
                return True
            time.sleep(0.02)
        return any(token in f for f in self.frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
