"""pods/portforward: TCP connections to a pod's ports, through the node agent.

Three wire forms, as upstream:
- kubectl ≥ 1.30: WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`, SPDY frames inside
  binary messages;
- older kubectl (and the fallback): `POST` upgraded to SPDY/3.1, protocol `portforward.k8s.io`;
  in both, every forwarded connection is a pair of client streams (`streamtype` error and data,
  with its `port` and `requestid`);
- the Python client: WebSocket channels (`?ports=80,443`), port i on channel 2i (data) and
  2i+1 (errors), each starting with the port as 2 bytes little-endian.
The node agent opens the connections: a pod proxy that also has `port_forward` (`PortForwarder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, runtime_checkable

from aiohttp import WSMessage, WSMsgType, web

from hypernetes.api import spdy
from hypernetes.api.audit import stream_detail, stream_started
from hypernetes.api.status import bad_request
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

SPDY_OVER_WS = "SPDY/3.1+portforward.k8s.io"
SPDY_PROTOCOL = "portforward.k8s.io"
CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def channel_frame(msg: WSMessage) -> bytes | None:
    """The bytes of a channel-protocol message (channel byte first), or None for other frames.

    kube-apiserver (wsstream) reads text frames as well as binary ones, the first byte being the
    channel either way; the official Python client sends `str` data as text frames."""
    if msg.type == WSMsgType.BINARY:
        return bytes(msg.data)
    if msg.type == WSMsgType.TEXT:
        return str(msg.data).encode()
    return None


@runtime_checkable
class PortForwarder(Protocol):
    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `port` inside the pod; raise (PodProxyError) if there is none."""
        ...


class _Forwards:
    """The port-forward side of one SPDY session: a connection per (error, data) stream pair."""

    def __init__(self, pod: Obj, forwarder: PortForwarder, ports: list[int]) -> None:
        self.pod, self.forwarder = pod, forwarder
        self.ports = ports  # every port a connection was asked for, for the audit record
        self.session: spdy.SpdyServerSession | None = None
        self.pairs: dict[str, dict[str, spdy.SpdyStream]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def on_stream(self, stream: spdy.SpdyStream) -> None:
        rid = stream.headers.get("requestid", "")
        kind = stream.headers.get("streamtype", "")
        self.pairs.setdefault(rid, {})[kind] = stream
        if kind == "data":
            task = asyncio.create_task(self._forward(rid, stream))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, rid: str, data: spdy.SpdyStream) -> None:
        session = self.session
        assert session is not None
        try:
            port = int(data.headers.get("port", ""))
            if port not in self.ports:
                self.ports.append(port)
            reader, writer = await self.forwarder.port_forward(self.pod, port)
        except Exception as e:
            err = self.pairs.get(rid, {}).get("error")
            if err is not None:
                session.send(
                    err.id,
                    f"error forwarding port {data.headers.get('port')} to pod "
                    f"{self.pod['metadata']['name']}: {e}".encode(),
                    fin=True,
                )
            session.send(data.id, b"", fin=True)
            return

        async def up() -> None:
            while (chunk := await data.data.get()) is not None:
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        upload = asyncio.create_task(up())
        try:
            while chunk := await reader.read(64 * 1024):
                session.send(data.id, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            session.send(data.id, b"", fin=True)
            if (err := self.pairs.get(rid, {}).get("error")) is not None:
                session.send(err.id, b"", fin=True)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, OSError):
                await asyncio.wait_for(upload, 5)
            upload.cancel()
            writer.close()

    def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()


def _ws_protocols(request: web.Request) -> list[str]:
    return [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", []) for p in h.split(",")]


def _audit_ports(request: web.Request) -> list[int]:
    """The list the stream's audit records show its ports in (filled as connections come)."""
    ports: list[int] = stream_detail(request).setdefault("ports", [])
    return ports


async def serve(request: web.Request, pod: Obj, forwarder: PortForwarder) -> web.StreamResponse:
    if spdy.is_spdy_upgrade(request):
        return await _direct_spdy(request, pod, forwarder)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad_request("Upgrade request required: port-forward is served over WebSocket or SPDY/3.1")
    if SPDY_OVER_WS in _ws_protocols(request):
        return await _spdy_over_websocket(request, pod, forwarder)
    return await _channels(request, pod, forwarder)


async def _direct_spdy(request: web.Request, pod: Obj, forwarder: PortForwarder) -> web.StreamResponse:
    if spdy.chosen_protocol(request, SPDY_PROTOCOL) is None:
        raise bad_request(f"port-forward over SPDY needs the {SPDY_PROTOCOL} protocol")
    forwards = _Forwards(pod, forwarder, _audit_ports(request))
    stream_started(request)
    resp, session = await spdy.upgrade(request, SPDY_PROTOCOL, forwards.on_stream)
    forwards.session = session
    try:
        while not session.closed:
            session.changed.clear()
            await session.changed.wait()
    finally:
        forwards.stop()
        session.closed = True
        resp.force_close()
        if request.transport is not None:
            request.transport.close()
    return resp


async def _spdy_over_websocket(
    request: web.Request, pod: Obj, forwarder: PortForwarder
) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(SPDY_OVER_WS,), autoping=True)
    forwards = _Forwards(pod, forwarder, _audit_ports(request))
    stream_started(request)
    await ws.prepare(request)
    outbox: asyncio.Queue[bytes] = asyncio.Queue()
    session = spdy.SpdyServerSession(outbox.put_nowait, forwards.on_stream)
    forwards.session = session

    async def sender() -> None:
        while True:
            data = await outbox.get()
            if ws.closed:
                return
            await ws.send_bytes(data)

    send_task = asyncio.create_task(sender())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                session.feed(msg.data)  # SPDY is a byte stream: frames may span messages
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
            if session.closed:
                break
    finally:
        session.close()
        forwards.stop()
        send_task.cancel()
        await ws.close()
    return ws


async def _channels(request: web.Request, pod: Obj, forwarder: PortForwarder) -> web.StreamResponse:
    try:
        ports = [int(p) for v in request.query.getall("ports", []) for p in v.split(",") if p.strip()]
    except ValueError:
        raise bad_request("ports must be integers") from None
    if not ports:
        raise bad_request('query parameter "port" is required')
    ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS, autoping=True)
    _audit_ports(request).extend(ports)
    stream_started(request)
    await ws.prepare(request)
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task[None]] = []

    async def pump(i: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(64 * 1024):
                if ws.closed:
                    return
                await ws.send_bytes(bytes([2 * i]) + chunk)

    for i, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        await ws.send_bytes(bytes([2 * i]) + prefix)
        await ws.send_bytes(bytes([2 * i + 1]) + prefix)
        try:
            reader, writer = await forwarder.port_forward(pod, port)
        except Exception as e:
            await ws.send_bytes(bytes([2 * i + 1]) + f"error forwarding port {port}: {e}".encode())
            continue
        writers[i] = writer
        pumps.append(asyncio.create_task(pump(i, reader)))
    try:
        async for msg in ws:
            if data := channel_frame(msg):
                ch, payload = data[0], data[1:]
                w = writers.get(ch // 2)
                if ch % 2 == 0 and w is not None and payload:
                    w.write(payload)
                    await w.drain()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        for t in pumps:
            t.cancel()
        for w in writers.values():
            w.close()
        await ws.close()
    return ws
