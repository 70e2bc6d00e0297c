"""The API server's side of pod streams on other hosts: it dials the node's server
(hypernetes/node/server.py, upstream's apiserver → kubelet connection).

The node is found by the pod's `spec.nodeName`: its Node object's InternalIP and
`status.daemonEndpoints.kubeletEndpoint.Port`. The connection is mutual TLS: our client
certificate (`hypernetes:apiserver`), and the node's certificate must be the cluster CA's with the
node's *name*, so a Node object that claims another host's address reaches nothing it should not.

`NodeStreams` picks, per pod, this process's own node agent (the all-in-one `hypernetes up`) or
the remote node; likewise, per node, for the usage figures metrics are made of (`node_stats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from hypernetes.api.subresources import LogOptions, PodProxy, PodProxyError, StreamIO
from hypernetes.objects import Obj
from hypernetes.store.interface import Store
from hypernetes.store.keys import object_key

STDOUT, STDERR, STATUS = 1, 2, 3
CONNECT_TIMEOUT = 10.0
STATS_TIMEOUT = 10.0
MAX_STATS = 16 * 1024 * 1024  # a node's usage summary: ~400 bytes a pod


def client_ssl(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _camel(options: LogOptions) -> Obj:
    names = {
        "tail_lines": "tailLines",
        "since_seconds": "sinceSeconds",
        "since_time": "sinceTime",
        "limit_bytes": "limitBytes",
    }
    return {names.get(k, k): v for k, v in asdict(options).items() if v is not None}


class RemotePods:
    """PodProxy (and port-forward) for pods on nodes reached over the network."""

    def __init__(self, store: Store, tls: ssl.SSLContext) -> None:
        self.store, self.tls = store, tls
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _endpoint(self, pod: Obj) -> tuple[str, str]:
        """(base URL, node name) of the node server the pod is on."""
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise PodProxyError(f"pod {pod['metadata']['name']} is not scheduled to a node yet")
        return await self._node_endpoint(node)

    async def _node_endpoint(self, node: str) -> tuple[str, str]:
        kv = await self.store.get(object_key("", "nodes", None, node))
        status = (json.loads(kv.value).get("status") or {}) if kv is not None else {}
        address = next(
            (a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None
        )
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not isinstance(port, int):
            raise PodProxyError(f"node {node} does not serve pod streams (no address or port on its Node)")
        host = f"[{address}]" if ":" in address else address
        return f"https://{host}:{port}", node

    async def node_stats(self, node: str) -> Obj:
        """The node's usage summary (node/stats.py); PodProxyError if it cannot be had."""
        base, _ = await self._node_endpoint(node)
        timeout = aiohttp.ClientTimeout(total=STATS_TIMEOUT)
        try:
            async with self._http().get(
                f"{base}/stats/summary", server_hostname=node, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise PodProxyError(await _message(resp, node))
                body = await resp.content.read(MAX_STATS + 1)
        except (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError) as e:
            raise PodProxyError(f"cannot reach node {node}: {e}") from None
        summary = _json_object(body) if len(body) <= MAX_STATS else None
        if summary is None:
            raise PodProxyError(f"node {node} sent no usage summary")
        return summary

    async def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        base, node = await self._endpoint(pod)
        body = {"pod": pod, "container": container, "options": _camel(options)}
        try:
            async with self._http().post(f"{base}/v1/logs", json=body, server_hostname=node) as resp:
                if resp.status != 200:
                    raise PodProxyError(await _message(resp, node))
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            raise PodProxyError(f"cannot reach node {node}: {e}") from None

    async def _stream(self, pod: Obj, path: str, opening: Obj) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        base, node = await self._endpoint(pod)
        try:
            ws = await self._http().ws_connect(
                f"{base}{path}", server_hostname=node, max_msg_size=4 * 1024 * 1024
            )
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            raise PodProxyError(f"cannot reach node {node}: {e}") from None
        await ws.send_str(json.dumps({"pod": pod, **opening}))
        return ws, node

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        return await self._session_io(pod, container, command, io)

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        return await self._session_io(pod, container, None, io)

    async def _session_io(self, pod: Obj, container: str, command: list[str] | None, io: StreamIO) -> int:
        opening = {
            "container": container,
            "command": command,
            "stdin": io.stdin,
            "stdout": io.stdout,
            "stderr": io.stderr,
            "tty": io.tty,
        }
        ws, node = await self._stream(pod, "/v1/exec", opening)
        pump = asyncio.create_task(_client_to_node(ws, io))
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    break
                channel, payload = msg.data[0], msg.data[1:]
                if channel == STDOUT:
                    await io.write_stdout(payload)
                elif channel == STDERR:
                    await io.write_stderr(payload)
                elif channel == STATUS:
                    status = json.loads(payload)
                    if "exitCode" in status:
                        return int(status["exitCode"])
                    raise PodProxyError(str(status.get("message", "the node ended the stream")))
            raise PodProxyError(f"node {node} closed the stream")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await ws.close()

    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A local socket pair whose far end is spliced to the node's connection to the pod's port."""
        ws, node = await self._stream(pod, "/v1/portforward", {"port": port})
        first = await ws.receive(timeout=CONNECT_TIMEOUT + 20)
        answer = _json_object(first.data) if first.type == aiohttp.WSMsgType.TEXT else None
        if answer != {}:
            await ws.close()
            raise PodProxyError(str((answer or {}).get("message", f"node {node} refused the connection")))
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        far_reader, far_writer = await asyncio.open_connection(sock=theirs)
        task = asyncio.create_task(_splice(ws, far_reader, far_writer))
        _keep.add(task)
        task.add_done_callback(_keep.discard)
        return reader, writer


def _json_object(text: Any) -> Obj | None:
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    return None


_keep: set[asyncio.Task[None]] = set()


async def _splice(
    ws: aiohttp.ClientWebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async def up() -> None:
        while chunk := await reader.read(64 * 1024):
            await ws.send_bytes(chunk)

    sender = asyncio.create_task(up())
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            writer.write(msg.data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()
        await ws.close()


async def _client_to_node(ws: aiohttp.ClientWebSocketResponse, io: StreamIO) -> None:
    """stdin and resizes from the client, forwarded in the node server's channel framing."""

    async def stdin() -> None:
        while (data := await io.read_stdin()) is not None:
            await ws.send_bytes(b"\x00" + data)
        await ws.send_bytes(b"\xff\x00")

    async def resize() -> None:
        while True:
            size = await io.resize.get()
            await ws.send_bytes(b"\x04" + json.dumps({"Width": size.width, "Height": size.height}).encode())

    await asyncio.gather(stdin(), resize())


async def _message(resp: aiohttp.ClientResponse, node: str) -> str:
    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
        return str((await resp.json()).get("message"))
    return f"node {node} answered {resp.status}"


class NodeStreams:
    """Pod streams: this process's node agent for its own pods, the node's server for others."""

    def __init__(
        self,
        remote: RemotePods,
        local: PodProxy | None = None,
        local_node: str = "",
        local_stats: Callable[[], Awaitable[Obj]] | None = None,
    ) -> None:
        """`local_stats`: this process's node agent's usage summary (NodeStats.summary)."""
        self.remote, self.local, self.local_node = remote, local, local_node
        self.local_stats = local_stats

    async def node_stats(self, node: str) -> Obj:
        if self.local_stats is not None and node == self.local_node:
            return await self.local_stats()
        return await self.remote.node_stats(node)

    def _for(self, pod: Obj) -> Any:
        if self.local is not None and (pod.get("spec") or {}).get("nodeName") == self.local_node:
            return self.local
        return self.remote

    def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        return self._for(pod).logs(pod, container, options)  # type: ignore[no-any-return]

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        return int(await self._for(pod).exec(pod, container, command, io))

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        return int(await self._for(pod).attach(pod, container, io))

    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self._for(pod)
        forward = getattr(target, "port_forward", None)
        if forward is None:
            raise PodProxyError("port-forward is not served for pods on this node")
        result: tuple[asyncio.StreamReader, asyncio.StreamWriter] = await forward(pod, port)
        return result
