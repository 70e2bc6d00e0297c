"""exec and attach over SPDY/3.1, for kubectl 1.27-1.29 (which have no WebSocket exec) and
newer kubectl falling back from WebSocket.

The client POSTs with `Upgrade: SPDY/3.1` and `X-Stream-Protocol-Version` offers; after `101`
the connection carries SPDY frames. The client opens one stream per channel (SYN_STREAM with a
`streamtype` header: error, stdin, stdout, stderr, resize); the server answers each with a
SYN_REPLY, runs the command once the streams it expects exist, sends output as DATA frames and
ends with the v4 Status on the error stream, then closes. Flow control is not enforced by
kubectl's SPDY library (moby/spdystream), so WINDOW_UPDATE frames are ignored.

aiohttp does not hand over connections upgraded to anything but WebSocket, so the session
takes the connection's bytes from its protocol object directly (see `_hijack`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

# The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): length-
# prefixed header names and values, then status lines, dates and media types.
_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


DICTIONARY = _dictionary()
assert len(DICTIONARY) == 1423, len(DICTIONARY)

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_FRAME = 16 * 1024 * 1024


@dataclass
class SpdyStream:
    id: int
    headers: dict[str, str]
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)  # None: the peer's FIN
    closed_by_us: bool = False


class SpdyServerSession:
    """The server side of one SPDY/3.1 connection: streams opened by the client."""

    def __init__(
        self, write: Callable[[bytes], None], on_stream: Callable[[SpdyStream], None] | None = None
    ) -> None:
        self._write = write
        self._on_stream = on_stream
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self.streams: dict[int, SpdyStream] = {}
        self.changed = asyncio.Event()
        self.closed = False

    # -- input ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if length > MAX_FRAME:
                self.close()
                return
            if len(self._buf) < 8 + length:
                return
            head, body = bytes(self._buf[:8]), bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            try:
                self._frame(head, body)
            except (zlib.error, ValueError, struct.error) as e:
                log.info("bad SPDY frame: %s", e)
                self.close()
                return

    def _frame(self, head: bytes, body: bytes) -> None:
        flags = head[4]
        if not head[0] & 0x80:  # DATA
            sid = int.from_bytes(head[0:4], "big") & 0x7FFFFFFF
            stream = self.streams.get(sid)
            if stream is not None:
                if body:
                    stream.data.put_nowait(body)
                if flags & FLAG_FIN:
                    stream.data.put_nowait(None)
            return
        ftype = int.from_bytes(head[2:4], "big")
        if ftype == SYN_STREAM:
            sid = int.from_bytes(body[0:4], "big") & 0x7FFFFFFF
            headers = self._headers(body[10:])
            stream = SpdyStream(sid, headers)
            self.streams[sid] = stream
            if flags & FLAG_FIN:
                stream.data.put_nowait(None)
            self._control(SYN_REPLY, 0, struct.pack(">I", sid) + self._header_block({}))
            self.changed.set()
            if self._on_stream is not None:
                self._on_stream(stream)
        elif ftype == RST_STREAM:
            sid = int.from_bytes(body[0:4], "big") & 0x7FFFFFFF
            if (stream := self.streams.get(sid)) is not None:
                stream.data.put_nowait(None)
        elif ftype == PING:
            self._control(PING, 0, body)  # the client's keepalive: echo it
        elif ftype == GOAWAY:
            self.close()
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do for exec

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        n = int.from_bytes(raw[0:4], "big")
        out, i = {}, 4
        for _ in range(n):
            klen = int.from_bytes(raw[i : i + 4], "big")
            key = raw[i + 4 : i + 4 + klen].decode().lower()
            i += 4 + klen
            vlen = int.from_bytes(raw[i : i + 4], "big")
            out[key] = raw[i + 4 : i + 4 + vlen].decode().split("\x00")[0]
            i += 4 + vlen
        return out

    # -- output --------------------------------------------------------------------------------

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in headers.items()
        )
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _control(self, ftype: int, flags: int, body: bytes) -> None:
        if not self.closed:
            self._write(struct.pack(">HHI", 0x8003, ftype, flags << 24 | len(body)) + body)

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        if self.closed:
            return
        for i in range(0, max(len(data), 1), 64 * 1024):
            chunk = data[i : i + 64 * 1024]
            last = fin and i + 64 * 1024 >= len(data)
            self._write(
                struct.pack(">II", sid & 0x7FFFFFFF, (FLAG_FIN if last else 0) << 24 | len(chunk)) + chunk
            )

    def goaway(self) -> None:
        self._control(GOAWAY, 0, struct.pack(">II", 0, 0))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for s in self.streams.values():
                s.data.put_nowait(None)
            self.changed.set()

    async def wait_streams(self, kinds: set[str], timeout: float) -> dict[str, SpdyStream]:
        """The client's streams by `streamtype`, once all of `kinds` are open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            have = {s.headers.get("streamtype", ""): s for s in self.streams.values()}
            if kinds <= have.keys() or self.closed:
                return have
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"streams {sorted(kinds - have.keys())} were not opened")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


def chosen_protocol(request: web.Request, wanted: str = "v4.channel.k8s.io") -> str | None:
    offers = [
        p.strip() for h in request.headers.getall("X-Stream-Protocol-Version", []) for p in h.split(",")
    ]
    return wanted if wanted in offers else None


def is_spdy_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/3")


class _Upgraded(asyncio.Protocol):
    """Takes an upgraded connection's bytes away from aiohttp's HTTP protocol (aiohttp hands over
    connections upgraded to WebSocket only)."""

    def __init__(self, session: SpdyServerSession) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.feed(data)

    def eof_received(self) -> bool | None:
        self.session.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()


async def _closed(session: SpdyServerSession) -> None:
    while not session.closed:
        session.changed.clear()
        await session.changed.wait()


async def upgrade(
    request: web.Request,
    protocol: str,
    on_stream: Callable[[SpdyStream], None] | None = None,
) -> tuple[web.StreamResponse, SpdyServerSession]:
    """Answer 101 and take the connection over as a SPDY session."""
    resp = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocol},
    )
    transport = request.transport
    assert transport is not None
    session = SpdyServerSession(transport.write, on_stream)
    await resp.prepare(request)  # the 101; from here on the connection speaks SPDY
    transport.set_protocol(_Upgraded(session))
    return resp, session


async def serve_spdy(
    request: web.Request,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    run: Callable[[Any], Awaitable[dict[str, Any]]],
    until: Callable[..., Awaitable[dict[str, Any] | None]],
    make_io: Callable[..., Any],
) -> web.StreamResponse:
    """Upgrade `request` to SPDY, wait for the channel streams, call `run(io)` (which returns
    the v4 Status) and close. `make_io(...)` builds the StreamIO over the session."""
    resp, session = await upgrade(request, chosen_protocol(request) or "")
    transport = request.transport
    assert transport is not None
    want = (
        {"error"}
        | ({"stdin"} if stdin else set())
        | ({"stdout"} if stdout else set())
        | ({"stderr"} if stderr and not tty else set())
        | ({"resize"} if tty else set())
    )
    try:
        streams = await session.wait_streams(want, 30)
        io = make_io(session, streams)
        status = await until(run(io), asyncio.ensure_future(_closed(session)))
        if status is None:
            return resp  # the client went away
        for name in ("stdout", "stderr"):
            if name in streams:
                session.send(streams[name].id, b"", fin=True)
        session.send(streams["error"].id, json.dumps(status).encode(), fin=True)
    except TimeoutError as e:
        log.info("SPDY exec: %s", e)
    finally:
        session.goaway()
        session.closed = True
        resp.force_close()
        transport.close()
    return resp
