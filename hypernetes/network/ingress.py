"""Ingress (networking.k8s.io/v1) on a node: one small HTTP reverse proxy per tenant network.

Each tenant network that has Ingresses gets its own listening port on every node,
`INGRESS_PORT_BASE + <network id>` (the id is the same on every host), in the node's own network
namespace, as node ports are. A request is routed by its Host header and path over the rules of
that network's Ingresses only, to a Service of the Ingress's own namespace, through the network's
router: the proxy connects from inside the router namespace to the service's cluster IP, and the
router load-balances it as it does pods' service traffic (DNAT to a ready endpoint, on this host or
over VXLAN, with the hairpin SNAT). So one tenant's host names can never reach another tenant's
services: they are not in the same table, not on the same port, not in the same router. Why a port
per network rather than one shared port 80: on a shared port, host names would be first come, first
served across tenants, and one tenant could take a name another expects (docs/network.md).

The routing table is pure data (`Routes`, built by the node agent from the API objects); `pick`
matches as upstream specifies: the rules of the most specific host that matches, an exact host
before a wildcard (`*.example.com`, one label) before rules without host (as a server block: no
falling through to a less specific host); then, among those rules' paths, Exact before Prefix,
the longest Prefix (element-wise: `/foo` matches `/foo/bar`, not `/foobar`) first;
ImplementationSpecific is matched as Prefix. No path: the default backend, else 404.

One request per client connection is routed: the proxy sends it with `Connection: close` (an
`Upgrade` request keeps its headers and the connection becomes a tunnel) and pipes both ways until
either side closes. Limits: a request head of at most 32 KiB, 10 s to send it, 5 s to connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hypernetes.network.netns import run_in_netns
from hypernetes.objects import Obj
from hypernetes.objects.meta import metadata

log = logging.getLogger(__name__)

INGRESS_PORT_BASE = 20000  # + network id (1-8191): below the node port range 30000-32767
CONTROLLER = "hypernetes.io/ingress"  # IngressClass spec.controller served here
MAX_HEAD = 32 * 1024
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 120.0  # a proxied exchange with nothing sent either way this long ends (nginx: 60 s)
CHUNK = 64 * 1024
# Connections one tenant network's listener holds at once, and all of them together: the proxy
# runs in the node agent, whose descriptors one network's clients must not use up.
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_TOTAL = 1024


def ingress_port(network_id: int) -> int:
    return INGRESS_PORT_BASE + network_id


@dataclass(frozen=True)
class Target:
    """A service port, resolved: its cluster IP and port (None: the service or port does not exist
    or has no cluster IP; requests for it get 503)."""

    service: str  # namespace/name, for logs
    address: tuple[str, int] | None


@dataclass(frozen=True)
class Path:
    path: str
    path_type: str  # Exact, Prefix, ImplementationSpecific
    target: Target


@dataclass(frozen=True)
class Rule:
    host: str  # "" (every host), "example.com", "*.example.com"
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Routes:
    rules: tuple[Rule, ...] = ()
    default: Target | None = None


def _host_class(rule_host: str, host: str) -> int:
    """0: exact, 1: wildcard, 2: any host, -1: no match."""
    if not rule_host:
        return 2
    if rule_host.startswith("*."):
        head, _, rest = host.partition(".")
        return 1 if head and rest == rule_host[2:] else -1
    return 0 if rule_host == host else -1


def _prefix_matches(prefix: str, path: str) -> bool:
    want = [p for p in prefix.split("/") if p]
    have = [p for p in path.split("/") if p]
    return have[: len(want)] == want


def pick(routes: Routes, host: str, path: str) -> Target | None:
    host = host.lower().rstrip(".")
    ranked = [(c, r) for r in routes.rules if (c := _host_class(r.host, host)) >= 0]
    if not ranked:
        return routes.default
    best = min(c for c, _ in ranked)  # the most specific host's rules alone, as a server block
    paths = [p for c, r in ranked if c == best for p in r.paths]
    exact = [p for p in paths if p.path_type == "Exact" and p.path == path]
    if exact:
        return exact[0].target
    prefixes = [p for p in paths if p.path_type != "Exact" and _prefix_matches(p.path or "/", path)]
    if prefixes:
        return max(prefixes, key=lambda p: len([x for x in (p.path or "/").split("/") if x])).target
    return routes.default


# -- the proxy ---------------------------------------------------------------------------------


@dataclass
class _Listener:
    server: asyncio.AbstractServer
    port: int
    router: str
    routes: Routes
    open: int = 0  # connections being handled


class IngressProxy:
    """The node's ingress listeners, one per tenant network, in namespace `host_netns` (None: the
    agent's own). `serve` is idempotent and replaces a network's routes in place."""

    def __init__(self, host_netns: str | None = None, port_of: Callable[[int], int] = ingress_port) -> None:
        self.host_netns = host_netns
        self.port_of = port_of
        self._listeners: dict[int, _Listener] = {}
        self._open = 0  # connections being handled, every listener

    @property
    def networks(self) -> set[int]:
        return set(self._listeners)

    async def serve(self, network_id: int, router_netns: str, routes: Routes) -> int:
        found = self._listeners.get(network_id)
        if found is not None:
            found.routes, found.router = routes, router_netns
            return found.port
        port = self.port_of(network_id)

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(128)
            s.setblocking(False)
            return s

        sock = await asyncio.to_thread(run_in_netns, self.host_netns, listen) if self.host_netns else listen()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            listener = self._listeners.get(network_id)
            if listener is None:  # stopped meanwhile
                w.close()
                return
            if listener.open >= MAX_CONNECTIONS or self._open >= MAX_CONNECTIONS_TOTAL:
                w.close()  # shed at once: no head read, no upstream connection
                return
            listener.open += 1
            self._open += 1
            try:
                await self._handle(listener, r, w)
            finally:
                listener.open -= 1
                self._open -= 1

        server = await asyncio.start_server(handle, sock=sock, limit=MAX_HEAD)
        self._listeners[network_id] = _Listener(server, port, router_netns, routes)
        return port

    async def stop(self, network_id: int) -> None:
        listener = self._listeners.pop(network_id, None)
        if listener is not None:
            listener.server.close()
            with contextlib.suppress(Exception):
                await listener.server.wait_closed()

    async def close(self) -> None:
        for nid in list(self._listeners):
            await self.stop(nid)

    async def _handle(self, listener: _Listener, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = w.get_extra_info("peername") or ("", 0)
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            await _reply(w, 400, "Bad Request")
            return
        try:
            line, headers = _parse(head)
        except ValueError:
            await _reply(w, 400, "Bad Request")
            return
        host = next((v for k, v in headers if k.lower() == "host"), "").rsplit(":", 1)[0] if headers else ""
        if host.startswith("["):
            host = ""
        path = line.split(" ")[1].split("?", 1)[0] if line.count(" ") >= 2 else "/"
        target = pick(listener.routes, host, path)
        if target is None:
            await _reply(w, 404, "Not Found")
            return
        if target.address is None:
            await _reply(w, 503, "Service Unavailable")
            return
        try:
            ur, uw = await self._connect(listener.router, target.address)
        except (OSError, TimeoutError) as e:
            log.info("ingress: %s unreachable: %s", target.service, e)
            await _reply(w, 503, "Service Unavailable")
            return
        upgrade = any(k.lower() == "upgrade" for k, _ in headers)
        sent = [(k, v) for k, v in headers if upgrade or k.lower() not in ("connection", "keep-alive")]
        if not upgrade:
            sent.append(("Connection", "close"))
        sent += [
            ("X-Forwarded-For", str(peer[0])),
            ("X-Forwarded-Host", host),
            ("X-Forwarded-Port", str(listener.port)),
            ("X-Forwarded-Proto", "http"),
        ]
        uw.write((line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent) + "\r\n").encode("latin-1"))
        try:
            # the response's end ends the exchange: closing the client's side ends its pipe too
            await asyncio.gather(_pipe(r, uw, close=False), _pipe(ur, w, close=True))
        finally:
            uw.close()
            w.close()

    async def _connect(
        self, router: str, address: tuple[str, int]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """From inside the router namespace (the socket keeps it), to the cluster IP."""
        sock = await asyncio.to_thread(
            run_in_netns, router, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        )
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), CONNECT_TIMEOUT)
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise


def _parse(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    line = lines[0]
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise ValueError(line)
    headers = []
    for h in lines[1:]:
        if not h:
            continue
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(h)
        headers.append((name, value.strip()))
    return line, headers


async def _reply(w: asyncio.StreamWriter, code: int, reason: str) -> None:
    body = f"{code} {reason}\n".encode()
    w.write(
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await w.drain()
    w.close()


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, *, close: bool) -> None:
    try:
        while data := await asyncio.wait_for(r.read(CHUNK), IDLE_TIMEOUT):
            w.write(data)
            await w.drain()
        if not close and w.can_write_eof():
            w.write_eof()  # the client is done sending; the response may still come
    except (ConnectionError, OSError, TimeoutError):
        w.close()  # idle too long, or gone: the other direction ends with it
    finally:
        if close:
            w.close()


# -- from API objects --------------------------------------------------------------------------


def served_here(ingress: Obj, classes: Mapping[str, Obj]) -> bool:
    """An Ingress without class, or whose IngressClass names this controller."""
    name = (ingress.get("spec") or {}).get("ingressClassName")
    if not name:
        return True
    cls = classes.get(str(name))
    return cls is not None and (cls.get("spec") or {}).get("controller") == CONTROLLER


def _target(ns: str, backend: Obj, services: Mapping[str, Obj]) -> Target:
    ref = backend.get("service") or {}
    name = str(ref.get("name") or "")
    want = ref.get("port") or {}
    svc = services.get(f"{ns}/{name}")  # always the Ingress's own namespace: no way out of it
    spec = (svc or {}).get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        return Target(f"{ns}/{name}", None)  # absent, headless or ExternalName: nothing to reach
    for p in spec.get("ports") or []:
        if (p.get("protocol") or "TCP") != "TCP":
            continue
        by_name = want.get("name") and p.get("name") == want["name"]
        if by_name or (want.get("number") is not None and p.get("port") == want["number"]):
            return Target(f"{ns}/{name}", (str(ip), int(p["port"])))
    return Target(f"{ns}/{name}", None)


def routes_for(ingresses: Iterable[Obj], services: Mapping[str, Obj]) -> Routes:
    """One network's routes from its Ingresses (oldest first: the first default backend wins) and
    its Services (`namespace/name` -> Service)."""
    rules: list[Rule] = []
    default: Target | None = None
    for ing in sorted(
        ingresses, key=lambda i: (str(metadata(i).get("creationTimestamp")), str(metadata(i).get("uid")))
    ):
        ns = str(metadata(ing).get("namespace"))
        spec = ing.get("spec") or {}
        if default is None and spec.get("defaultBackend"):
            default = _target(ns, spec["defaultBackend"], services)
        for rule in spec.get("rules") or []:
            paths = tuple(
                Path(
                    str(p.get("path") or "/"),
                    str(p.get("pathType") or "Prefix"),
                    _target(ns, p.get("backend") or {}, services),
                )
                for p in (rule.get("http") or {}).get("paths") or []
            )
            if paths:
                rules.append(Rule(str(rule.get("host") or "").lower(), paths))
    return Routes(tuple(rules), default)
