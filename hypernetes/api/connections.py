"""Connection limits of the API server's listener: one tenant's connections must not take the
process to its file-descriptor limit (issue 12: 21,000 half-open connections did, and every
refused accept logged a traceback).

- At start the soft RLIMIT_NOFILE is raised to the hard limit, and connections are capped below
  it (`reserve_fds` descriptors stay for the store, logs and, in `hypernetes up`, the pods' VMs),
  and per source address.
- A connection over a cap is closed on arrival, before any TLS work: a new connection costs an
  accept and a close, never a handshake. Each burst of such closes is logged as one line when it
  starts and one summary line per `log_every` seconds while it lasts.
- TLS handshakes must finish within `handshake_timeout`; a connection with no request in progress
  must send a complete request head within `header_timeout` once it has sent anything, and is
  closed after `idle_timeout` of silence (half-open and slowloris connections end).

`GatedSite` is an aiohttp site doing this in front of the application's usual request handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hypernetes.api.fairness import WENT_FIRST
from hypernetes.api.loopslice import Precedence

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 0  # 0: the file-descriptor limit minus `reserve_fds`, at most 20,000
    max_per_source: int = 1000
    reserve_fds: int = 1024
    handshake_timeout: float = 10.0
    header_timeout: float = 15.0
    idle_timeout: float = 120.0
    log_every: float = 10.0


def raise_nofile_limit() -> int:
    """Raises the soft limit on open files to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_cap(limits: ConnectionLimits, nofile: int) -> int:
    below_limit = max(64, nofile - limits.reserve_fds)
    return min(limits.max_connections, below_limit) if limits.max_connections else min(20_000, below_limit)


class ShedLog:
    """One log line when a burst of refusals starts, then one summary per `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.counts: Counter[tuple[str, str]] = Counter()  # (reason, source) -> refusals
        self.total: Counter[str] = Counter()  # reason -> refusals since start (for /metrics)
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0

    def note(self, reason: str, source: str, detail: str) -> None:
        self.total[reason] += 1
        if self._handle is None:
            log.warning(
                "refusing connections: %s (from %s); summaries follow every %gs while it lasts",
                detail,
                source or "?",
                self.every,
            )
            self._started = time.monotonic()
            self._handle = asyncio.get_running_loop().call_later(self.every, self._summary)
        self.counts[(reason, source)] += 1

    def _summary(self) -> None:
        if not self.counts:
            self._handle = None  # a window with nothing refused: the burst is over
            return
        by_reason = Counter[str]()
        by_source = Counter[str]()
        for (reason, source), n in self.counts.items():
            by_reason[reason] += n
            by_source[source] += n
        log.warning(
            "refused %d connections in the last %.0fs (%s); top sources: %s",
            sum(by_reason.values()),
            time.monotonic() - self._started,
            ", ".join(f"{r}={n}" for r, n in by_reason.items()),
            ", ".join(f"{s}={n}" for s, n in by_source.most_common(3)),
        )
        self.counts.clear()
        self._started = time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(self.every, self._summary)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class _Conn(asyncio.Protocol):
    """One accepted connection: admitted or closed on arrival, then TLS, then aiohttp's handler.
    Until the handler is attached (after the handshake) what arrives is kept and replayed."""

    def __init__(self, gate: ConnectionGate) -> None:
        self.gate = gate
        self.raw: asyncio.Transport | None = None
        self.tls: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None
        self.source = ""
        self.admitted = False
        self.busy = 0  # requests being handled
        self.since = time.monotonic()  # when the connection last became idle
        self.partial = False  # bytes arrived while idle: a request head is under way
        self.went_first = False  # its last request went first (api/loopslice.py Precedence) ...
        self.early: Callable[[], None] | None = None  # ... so the one arriving goes first already
        self._pending: list[bytes] = []
        self._eof = False

    # the raw TCP connection (before TLS), then the TLS transport's app protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        if not self.gate.admit(self):
            transport.close()
            return
        transport.pause_reading()  # nothing is read until start_tls takes over the transport
        self.gate.handshakes.add(asyncio.get_running_loop().create_task(self._handshake()))

    async def _handshake(self) -> None:
        assert self.raw is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                self.raw,
                self,
                self.gate.ssl_context,
                server_side=True,
                ssl_handshake_timeout=self.gate.limits.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            self.raw.abort()
            return
        finally:
            task = asyncio.current_task()
            if task is not None:
                self.gate.handshakes.discard(task)
        if tls is None or tls.is_closing():
            return
        self.tls = tls
        self.since = time.monotonic()
        self.gate.by_transport[id(tls)] = self
        self.inner = self.gate.factory()
        self.inner.connection_made(tls)
        for data in self._pending:
            self.inner.data_received(data)
        self._pending.clear()
        if self._eof:
            self.inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.busy == 0 and not self.partial:
            self.partial, self.since = True, time.monotonic()
            if self.went_first and self.gate.precedence is not None and self.early is None:
                self.early = self.gate.precedence.go_first()
        if self.inner is None:
            self._pending.append(data)
        else:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self._eof = True
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_early()
        self.gate.release(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def end_early(self) -> None:
        if self.early is not None:
            self.early()
            self.early = None

    def expired(self, now: float, limits: ConnectionLimits) -> bool:
        if self.tls is None or self.busy:
            return False  # handshakes time out by themselves
        return now - self.since > (limits.header_timeout if self.partial else limits.idle_timeout)


class ConnectionGate:
    def __init__(
        self, limits: ConnectionLimits, ssl_context: ssl.SSLContext, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        self.limits, self.ssl_context, self.factory = limits, ssl_context, factory
        self.max_total = connection_cap(limits, raise_nofile_limit())
        self.total = 0
        self.by_source: Counter[str] = Counter()
        self.by_transport: dict[int, _Conn] = {}
        self.conns: set[_Conn] = set()
        self.handshakes: set[asyncio.Task[None]] = set()
        self.timed_out = 0
        self.shed = ShedLog(limits.log_every)
        self._sweeper: asyncio.Task[None] | None = None
        self.precedence: Precedence | None = None  # the fairness middleware's (server.py)

    def admit(self, conn: _Conn) -> bool:
        if self.total >= self.max_total:
            self.shed.note("total", conn.source, f"{self.total} open, the most allowed")
            return False
        if self.by_source[conn.source] >= self.limits.max_per_source:
            self.shed.note(
                "per-source",
                conn.source,
                f"{self.by_source[conn.source]} open from one address, the most allowed",
            )
            return False
        conn.admitted = True
        self.total += 1
        self.by_source[conn.source] += 1
        self.conns.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="connection-sweeper")
        return True

    def release(self, conn: _Conn) -> None:
        if not conn.admitted:
            return
        conn.admitted = False
        self.total -= 1
        self.by_source[conn.source] -= 1
        if self.by_source[conn.source] <= 0:
            del self.by_source[conn.source]
        self.conns.discard(conn)
        if conn.tls is not None:
            self.by_transport.pop(id(conn.tls), None)

    async def _sweep(self) -> None:
        every = max(0.1, min(1.0, self.limits.header_timeout / 4))
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in [c for c in self.conns if c.expired(now, self.limits)]:
                self.timed_out += 1
                if conn.tls is not None:
                    conn.tls.abort()

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request is handled (the outermost middleware)."""
        conn = self.by_transport.get(id(request.transport)) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.busy += 1
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.went_first = request.get(WENT_FIRST, False)
            conn.end_early()
            if conn.busy == 0:
                conn.partial, conn.since = False, time.monotonic()

    async def close(self) -> None:
        self.shed.close()
        for t in list(self.handshakes):
            t.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class GatedSite(web.TCPSite):
    """A TLS listener whose connections pass a ConnectionGate (aiohttp's TCPSite otherwise)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, gate: ConnectionGate, backlog: int = 512
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self.gate = gate

    @property
    def name(self) -> str:
        return super().name.replace("http://", "https://", 1)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self.gate),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        sock = self._server.sockets[0] if self._server.sockets else None
        self._bound_port = sock.getsockname()[1] if sock is not None else self._port

    async def stop(self) -> None:
        await super().stop()
        await self.gate.close()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, shed: ShedLog) -> None:
    """asyncio reports every accept() that fails for want of descriptors with a traceback; count
    them into the shed log's bursts instead. Every other report goes where it went before."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            shed.note("descriptors", "", f"accept failed: {context.get('exception')}")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
