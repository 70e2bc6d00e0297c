"""Which network addresses a pull on a tenant's behalf may connect to.

The node agent pulls as root from the host's network namespace: an image reference naming
`127.0.0.1:PORT`, a management address, a host name resolving to one, or a registry that
redirects a blob download or names a token realm there would make the node talk to the host's
own services for a tenant. A `RegistryPolicy` vets every TCP connection the registry client
makes (the registry, each redirect hop, the token realm): the name is resolved once, each
address is checked, and the connection goes to the vetted address (no second lookup that a
rebinding DNS server could answer differently). Operators name exceptions as `HOST[:PORT]`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore

from .errors import RegistryNotAllowed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# getaddrinfo's signature: (host, port, family, type) -> [(family, type, proto, canon, sockaddr)]
Resolver = Callable[..., list[tuple[Any, ...]]]

# 0.0.0.0/8 is "this network": Linux connects 0.x.y.z to the host itself.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


@dataclass(frozen=True)
class AllowEntry:
    host: str  # lower-case name or address, without brackets
    port: int | None  # None: every port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_allow_entry(text: str) -> AllowEntry:
    """`registry.example`, `10.0.0.5:5000`, `[::1]:5000` -> AllowEntry; ValueError if malformed."""
    entry = text.strip()
    port: str | None = None
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected HOST[:PORT] ([ADDR]:PORT for IPv6)")
        port = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host = entry
    if not host or "/" in host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{text!r}: expected HOST[:PORT] with a port from 1 to 65535")
    return AllowEntry(host.lower().rstrip("."), int(port) if port is not None else None)


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def refusal(address: Address, management: Sequence[Network]) -> str | None:
    """Why a tenant's pull may not connect to `address` by default, or None if it may."""
    ip: Address = address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback:
        return f"loopback address {ip}"
    if ip.is_link_local:
        return f"link-local address {ip}"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return f"unspecified address {ip}"
    if ip.is_multicast:
        return f"multicast address {ip}"
    for net in management:
        if ip.version == net.version and ip in net:
            return f"address {ip} is in the management network {net}"
    if ip.is_reserved:
        return f"reserved address {ip}"
    return None


class RegistryPolicy:
    """The networks a tenant's pull may reach: anything but loopback, link-local, unspecified,
    multicast, reserved and the management networks, unless `allow` lists the host."""

    def __init__(
        self,
        *,
        allow: Sequence[str] = (),
        management: Sequence[str] = (),
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        self.allow = tuple(parse_allow_entry(a) for a in allow)
        self.management = tuple(ipaddress.ip_network(n, strict=False) for n in management)
        self._resolve = resolver

    def _allowed(self, host: str, port: int, address: Address | None = None) -> bool:
        names = {host.lower().rstrip(".")} | ({str(address)} if address is not None else set())
        return any(e.host in names and e.port in (None, port) for e in self.allow)

    def _addresses(self, host: str, port: int) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            infos = self._resolve(host, port, 0, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            # httpx reports a ConnectError as "cannot resolve host name"
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        found: list[Address] = []
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if addr not in found:
                found.append(addr)
        if not found:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        return found

    def vet(self, host: str, port: int) -> list[str]:
        """The addresses `host:port` may be reached at, in resolver order; RegistryNotAllowed
        if there are none. An allowed host (by name) may use every address it resolves to;
        otherwise only the addresses allowed by name or passing the checks are returned."""
        addresses = self._addresses(host, port)
        if self._allowed(host, port):
            return [str(a) for a in addresses]
        usable, reasons = [], []
        for addr in addresses:
            why = None if self._allowed(host, port, addr) else refusal(addr, self.management)
            if why is None:
                usable.append(str(addr))
            else:
                reasons.append(why)
        if usable:
            return usable
        detail = reasons[0]
        if str(addresses[0]) != host.strip("[]"):
            detail += f" ({host} resolves to it)"
        raise RegistryNotAllowed(
            f"registry {_display(host, port)} is not allowed: {detail}; an operator can allow it "
            f"with `hypernetes up --allow-registry {_display(host, port)}`"
        )


class VettingBackend(httpcore.SyncBackend):
    """httpcore's socket backend with every TCP connection vetted by a policy; TLS still
    verifies (and sends SNI for) the host name, since httpcore passes it to start_tls."""

    def __init__(self, policy: RegistryPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.policy.vet(host, port):  # as create_connection: each in turn
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last
