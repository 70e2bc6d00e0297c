"""The node's server: the API servers reach this node's pods through it (upstream's kubelet
port, 10250), for `kubectl logs`, `exec` and `port-forward` of pods on other hosts.

HTTPS with this node's serving certificate (signed by the cluster CA when the node joined), and
mutual TLS: only a client certificate of the cluster CA with the API servers' name
(`hypernetes:apiserver`, client authentication) is served. Nothing else calls into a node.

    POST /v1/logs           {pod, container, options} → the log bytes, streamed
    GET  /v1/exec           WebSocket; first a text message {pod, container, command, stdin,
                            stdout, stderr, tty}; then binary messages prefixed by their channel
                            (upstream's channel numbers: 0 stdin, 1 stdout, 2 stderr, 3 the final
                            status as JSON {exitCode} or {message}, 4 resize, 255 close of stdin)
    GET  /v1/portforward    WebSocket; first a text message {pod, port}, answered by a text message:
                            {} once connected, then the connection's bytes; or {message}
    GET  /stats/summary     the node's and its pod VMs' CPU and memory use, in the kubelet's
                            Summary API shape (node/stats.py), for the API servers' metrics

The API server sends the pod it authorized; the node serves it only if it is bound here and its
sandbox is one of this node's (the runtime finds sandboxes by the pod's uid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from hypernetes.node.proxy import NodePodProxy
from hypernetes.node.stats import NodeStats
from hypernetes.objects import Obj
from hypernetes.objects.names import APISERVER_CLIENT
from hypernetes.runtime.interface import PodRuntimeError

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
DEFAULT_PORT = 10250
MAX_OPEN = 64 * 1024  # the first message of a stream: a pod object and a command


@dataclass(frozen=True)
class LogRequest:
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: str | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None

    @classmethod
    def from_json(cls, o: Any) -> LogRequest:
        o = o if isinstance(o, dict) else {}

        def num(key: str) -> int | None:
            v = o.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

        since_time = o.get("sinceTime")
        return cls(
            follow=o.get("follow") is True,
            tail_lines=num("tailLines"),
            since_seconds=num("sinceSeconds"),
            since_time=since_time if isinstance(since_time, str) else None,
            timestamps=o.get("timestamps") is True,
            previous=o.get("previous") is True,
            limit_bytes=num("limitBytes"),
        )


@dataclass(frozen=True)
class Size:
    width: int
    height: int


class WebSocketIO:
    """An exec session's client side as NodePodProxy wants it, over the API server's WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
    ) -> None:
        self.ws = ws
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self.resize: asyncio.Queue[Any] = asyncio.Queue()
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._eof = not stdin

    async def read_stdin(self) -> bytes | None:
        if self._eof:
            return None
        data = await self._stdin.get()
        self._eof = data is None
        return data

    async def write_stdout(self, data: bytes) -> None:
        if self.stdout and data:
            await self._send(STDOUT, data)

    async def write_stderr(self, data: bytes) -> None:
        if self.stderr and data:
            await self._send(STDERR, data)

    async def _send(self, channel: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_bytes(bytes([channel]) + data)

    def feed(self, message: bytes) -> None:
        if not message:
            return
        channel, payload = message[0], message[1:]
        if channel == STDIN and not self._eof:
            self._stdin.put_nowait(payload)
        elif channel == RESIZE:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                size = json.loads(payload)
                self.resize.put_nowait(Size(int(size["Width"]), int(size["Height"])))
        elif channel == CLOSE:
            self._stdin.put_nowait(None)


def _forbidden(message: str) -> web.Response:
    return web.json_response({"message": message}, status=403)


def server_ssl(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate of the cluster CA, no handshake
    return ctx


class NodeServer:
    def __init__(self, proxy: NodePodProxy, node_name: str) -> None:
        self.proxy, self.node_name = proxy, node_name
        self.stats = NodeStats(proxy.runtime, node_name)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._only_apiservers], client_max_size=MAX_OPEN)
        app.router.add_post("/v1/logs", self.logs)
        app.router.add_get("/v1/exec", self.exec)
        app.router.add_get("/v1/portforward", self.port_forward)
        app.router.add_get("/stats/summary", self.summary)
        return app

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> web.AppRunner:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
        return runner

    @web.middleware
    async def _only_apiservers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        names = [v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
        if names != [APISERVER_CLIENT]:
            return _forbidden("only the API servers may call a node")
        resp: web.StreamResponse = await handler(request)
        return resp

    def _check(self, pod: Any) -> Obj:
        """The pod the API server sent, if it is bound to this node."""
        if not isinstance(pod, dict) or (pod.get("spec") or {}).get("nodeName") != self.node_name:
            raise PodRuntimeError(f"the pod is not bound to node {self.node_name}")
        return pod

    async def logs(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            pod = self._check(body.get("pod"))
            chunks = self.proxy.logs(
                pod, str(body.get("container") or ""), LogRequest.from_json(body.get("options"))
            )
            first = await anext(chunks, b"")
        except (ValueError, AttributeError):
            return web.json_response({"message": "a logs request is a JSON object"}, status=400)
        except PodRuntimeError as e:
            return web.json_response({"message": str(e)}, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            if first:
                await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
        except PodRuntimeError as e:
            log.info("logs of %s ended: %s", pod["metadata"].get("name"), e)
        except ConnectionResetError:
            pass
        return resp

    async def summary(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stats.summary())

    async def _open(self, request: web.Request) -> tuple[web.WebSocketResponse, Obj | None]:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        first = await ws.receive(timeout=30)
        try:
            opening = json.loads(first.data) if first.type == WSMsgType.TEXT else None
        except ValueError:
            opening = None
        if not isinstance(opening, dict):
            await _finish(ws, {"message": "the first message of a stream is a JSON object"})
            return ws, None
        return ws, opening

    async def exec(self, request: web.Request) -> web.StreamResponse:
        ws, opening = await self._open(request)
        if opening is None:
            return ws
        flags = {k: opening.get(k) is True for k in ("stdin", "stdout", "stderr", "tty")}
        io = WebSocketIO(ws, **flags)
        reader = asyncio.create_task(_read_into(ws, io))
        try:
            pod = self._check(opening.get("pod"))
            command = opening.get("command")
            container = str(opening.get("container") or "")
            if command is None:
                code = await self.proxy.attach(pod, container, io)
            elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
                code = await self.proxy.exec(pod, container, command, io)
            else:
                raise PodRuntimeError("command must be a non-empty list of strings")
            await _finish(ws, {"exitCode": code})
        except PodRuntimeError as e:
            await _finish(ws, {"message": str(e)})
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        ws, opening = await self._open(request)
        if opening is None:
            return ws
        port = opening.get("port")
        try:
            pod = self._check(opening.get("pod"))
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise PodRuntimeError("port must be a number from 1 to 65535")
            forward = getattr(self.proxy, "port_forward", None)
            if forward is None:
                raise PodRuntimeError("this node cannot forward ports")
            reader, writer = await forward(pod, port)
        except (PodRuntimeError, OSError) as e:
            await ws.send_str(json.dumps({"message": f"error forwarding port {port}: {e}"}))
            await ws.close()
            return ws
        await ws.send_str("{}")  # connected: from here on the messages are the connection's bytes

        async def upload() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                writer.write(msg.data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        up = asyncio.create_task(upload())
        try:
            while chunk := await reader.read(64 * 1024):
                await ws.send_bytes(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            writer.close()
            await ws.close()
        return ws


async def _read_into(ws: web.WebSocketResponse, io: WebSocketIO) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            io.feed(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
    io.feed(bytes([CLOSE, STDIN]))


async def _finish(ws: web.WebSocketResponse, status: Obj) -> None:
    with contextlib.suppress(ConnectionResetError):
        await ws.send_bytes(bytes([STATUS]) + json.dumps(status).encode())
    await ws.close()
