"""Subresources other than status/finalize (which crud.py treats as restricted updates):
pods/log, pods/exec and pods/attach (proxied to the node agent through `PodProxy`),
pods/binding, pods/eviction, and the scale subresource of deployments and replicasets.

exec/attach speak the WebSocket channel protocol kubectl and the Python client use
(`v5.channel.k8s.io`, `v4.channel.k8s.io`): binary messages whose first byte is the channel,
0 stdin, 1 stdout, 2 stderr, 3 error (a metav1.Status, with the exit code), 4 resize
(`{"Width":W,"Height":H}`), and in v5 255 "close" (payload: the channel closed, 0 = stdin EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from hypernetes.api import bodies, deletion, disruption, objects, portforward, spdy
from hypernetes.api.audit import stream_ended, stream_started
from hypernetes.api.routing import Target, dry_run, field_manager, read_body, respond, truthy
from hypernetes.api.status import ApiError, bad_request, conflict, success, unsupported_media_type
from hypernetes.api.tokenrequest import token_request
from hypernetes.auth.builtin import BuiltinIdentity
from hypernetes.objects import Obj
from hypernetes.objects.selectors import SelectorError, selector_string

if TYPE_CHECKING:
    from hypernetes.api.crud import Resources

log = logging.getLogger(__name__)

CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class PodProxyError(Exception):
    """The node agent cannot serve the request (pod not running, no such container, ...);
    the message is shown to the user."""


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: str | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class StreamIO:
    """The client's side of an exec/attach session, as the node agent sees it."""

    def __init__(
        self,
        send: Callable[[int, bytes], Awaitable[None]],
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> None:
        self._send_raw = send  # (channel, data) onto the transport: WebSocket or SPDY
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.resize: asyncio.Queue[TerminalSize] = asyncio.Queue()
        self._eof = not stdin

    async def read_stdin(self) -> bytes | None:
        """The next chunk of stdin; None at EOF (or when stdin was not asked for)."""
        if self._eof:
            return None
        data = await self._stdin.get()
        if data is None:
            self._eof = True
        return data

    async def write_stdout(self, data: bytes) -> None:
        if self.stdout and data:
            await self._send(STDOUT, data)

    async def write_stderr(self, data: bytes) -> None:
        if data:
            # with a TTY stderr is merged into stdout; kubectl drops channel 2 then
            await self._send(STDOUT if self.tty else STDERR, data)

    async def _send(self, channel: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self._send_raw(channel, data)

    def feed(self, channel: int, payload: bytes) -> None:
        if channel == STDIN and not self._eof:
            self._stdin.put_nowait(payload)
        elif channel == RESIZE:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                size = json.loads(payload)
                self.resize.put_nowait(TerminalSize(int(size["Width"]), int(size["Height"])))
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            self._stdin.put_nowait(None)

    def close_stdin(self) -> None:
        self._stdin.put_nowait(None)


class PodProxy(Protocol):
    """What the node agent provides for a pod's streams (the apiserver → kubelet proxy)."""

    def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's log; with follow=True until the container exits. PodProxyError if the
        log cannot be read."""
        ...

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        """Run `command` in the container; return its exit code."""
        ...

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        """Attach to the container's main process; return its exit code when it ends."""
        ...


def exit_status(code: int) -> Obj:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _container(pod: Obj, wanted: str | None) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    names_all = (
        names
        + [c.get("name", "") for c in spec.get("initContainers") or []]
        + [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    )
    name = pod["metadata"]["name"]
    if wanted:
        if wanted not in names_all:
            raise bad_request(f"container {wanted} is not valid for pod {name}")
        return wanted
    if len(names) == 1:
        return str(names[0])
    raise bad_request(
        f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
    )


def _int(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"invalid {name}: {v!r}") from None


class Subresources:
    def __init__(
        self, resources: Resources, proxy: PodProxy | None, token_issuer: BuiltinIdentity | None = None
    ) -> None:
        self.res, self.proxy = resources, proxy
        self.token_issuer = token_issuer

    async def handle(self, request: web.Request, t: Target) -> web.StreamResponse:
        sub, method = t.sub, request.method
        if sub in ("status", "finalize"):
            if method == "GET":
                return await self.res.get(request, t)
            if method == "PUT":
                return await self.res.update(request, t)
            if method == "PATCH":
                return await self.res.patch(request, t)
        elif sub == "scale":
            return await self.scale(request, t)
        elif sub == "binding" and method == "POST":
            return await self.binding(request, t)
        elif sub == "eviction" and method == "POST":
            return await self.eviction(request, t)
        elif sub == "log" and method == "GET":
            return await self.logs(request, t)
        elif sub == "token" and method == "POST":
            body = await read_body(request)
            answer = await token_request(self.res.store, self.token_issuer, t, body)
            return respond(answer, 201)
        elif sub in ("exec", "attach") and method in ("GET", "POST"):
            return await self.stream(request, t)
        elif sub == "portforward" and method in ("GET", "POST"):
            pod = await self._pod(t)
            proxy = self._need_proxy()
            if not isinstance(proxy, portforward.PortForwarder):
                raise ApiError(503, "ServiceUnavailable", "the node agent does not serve port-forward")
            return await portforward.serve(request, pod, proxy)  # it audits the ports it forwards
        raise ApiError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested resource ({method} {t.resource}/{sub})",
        )

    async def _pod(self, t: Target) -> Obj:
        # read as a get is: a leftover of a namespace's earlier holder is not there for a tenant
        return objects.decode(await self.res._get_kv(t))

    def _need_proxy(self) -> PodProxy:
        if self.proxy is None:
            raise ApiError(503, "ServiceUnavailable", "no node agent is connected to serve pod streams")
        return self.proxy

    async def logs(self, request: web.Request, t: Target) -> web.StreamResponse:
        pod = await self._pod(t)
        q = request.query
        container = _container(pod, q.get("container"))
        opts = LogOptions(
            follow=truthy(q.get("follow")),
            tail_lines=_int(q, "tailLines"),
            since_seconds=_int(q, "sinceSeconds"),
            since_time=q.get("sinceTime"),
            timestamps=truthy(q.get("timestamps")),
            previous=truthy(q.get("previous")),
            limit_bytes=_int(q, "limitBytes"),
        )
        proxy = self._need_proxy()
        chunks = proxy.logs(pod, container, opts)
        try:
            first = await anext(chunks, None)  # errors before any output become a Status
        except PodProxyError as e:
            raise bad_request(str(e)) from None
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = "text/plain"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            if first:
                await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
        except PodProxyError as e:
            log.info("log stream of %s/%s ended: %s", t.namespace, t.name, e)
        except ConnectionResetError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        return resp

    async def stream(self, request: web.Request, t: Target) -> web.StreamResponse:
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade != "websocket" and not spdy.is_spdy_upgrade(request):
            raise bad_request(
                "Upgrade request required: exec and attach are served over WebSocket "
                "(v5.channel.k8s.io, v4.channel.k8s.io) or SPDY/3.1 (v4.channel.k8s.io)"
            )
        if spdy.is_spdy_upgrade(request) and spdy.chosen_protocol(request) is None:
            raise ApiError(403, "Forbidden", "SPDY exec needs the v4.channel.k8s.io protocol")
        pod = await self._pod(t)
        q = request.query
        container = _container(pod, q.get("container"))
        command = q.getall("command", [])
        if t.sub == "exec" and not command:
            raise bad_request("you must specify at least 1 command")
        stdin, stdout, stderr, tty = (truthy(q.get(k)) for k in ("stdin", "stdout", "stderr", "tty"))
        if not (stdin or stdout or stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if tty and stderr:
            stderr = False  # a TTY merges stderr into stdout, as upstream
        proxy = self._need_proxy()

        async def run(io: StreamIO) -> Obj:
            try:
                status = await serve(io)
            except asyncio.CancelledError:
                stream_ended(request, outcome="the client left; the process was stopped")
                raise
            stream_ended(request, **_outcome(status))
            return status

        async def serve(io: StreamIO) -> Obj:
            try:
                if t.sub == "exec":
                    return exit_status(await proxy.exec(pod, container, command, io))
                return exit_status(await proxy.attach(pod, container, io))
            except PodProxyError as e:
                return {
                    "metadata": {},
                    "status": "Failure",
                    "message": str(e),
                    "reason": "InternalError",
                    "code": 500,
                }
            except Exception as e:
                log.exception("%s in %s/%s failed", t.sub, t.namespace, t.name)
                return {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"{t.sub} failed: {e}",
                    "reason": "InternalError",
                    "code": 500,
                }

        detail: Obj = {"container": container, "stdin": stdin, "tty": tty}
        if t.sub == "exec":
            detail["command"] = command
        stream_started(request, **detail)

        if spdy.is_spdy_upgrade(request):
            return await spdy.serve_spdy(
                request,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                tty=tty,
                run=run,
                until=until_client_leaves,
                make_io=lambda session, streams: _spdy_io(
                    session, streams, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
                ),
            )
        ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS, autoping=True)
        await ws.prepare(request)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"

        async def send(channel: int, data: bytes) -> None:
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + data)

        io = StreamIO(send, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        reader = asyncio.create_task(self._read_client(ws, io, v5))
        status = await until_client_leaves(run(io), reader)
        if status is None:
            return ws  # the client went away: the command was cancelled
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
                await ws.close()
        return ws

    @staticmethod
    async def _read_client(ws: web.WebSocketResponse, io: StreamIO, v5: bool) -> None:
        try:
            async for msg in ws:
                if data := portforward.channel_frame(msg):
                    ch = data[0]
                    if ch == CLOSE and not v5:
                        continue
                    io.feed(ch, data[1:])
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            io.close_stdin()

    async def binding(self, request: web.Request, t: Target) -> web.StreamResponse:
        body = await read_body(request)
        target = body.get("target") or {}
        node = target.get("name")
        if not node:
            raise ApiError(422, "Invalid", 'Binding "" is invalid: target.name: Required value')
        ns = (body.get("metadata") or {}).get("namespace")
        if ns and ns != t.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )

        async def bind(cur: Obj) -> Obj:
            if cur["metadata"].get("deletionTimestamp"):
                raise conflict(
                    t.resource, t.name or "", t.group, "pod is being deleted, cannot be assigned to a host"
                )
            current = (cur.get("spec") or {}).get("nodeName")
            if current:
                raise conflict(
                    t.resource, t.name or "", t.group, f'pod {t.name} is already assigned to node "{current}"'
                )
            cur.setdefault("spec", {})["nodeName"] = node
            annotations = (body.get("metadata") or {}).get("annotations")
            if annotations:
                cur["metadata"].setdefault("annotations", {}).update(annotations)
            return cur

        await self.res.update_with(request, t, bind, field_manager(request), conditional=False)
        return respond(success(), 201)

    async def eviction(self, request: web.Request, t: Target) -> web.StreamResponse:
        """policy/v1 Eviction (`kubectl drain`): deletes the pod as a DELETE with the Eviction's
        deleteOptions would, once its PodDisruptionBudget allows (api/disruption.py: 429 if not)."""
        body = await read_body(request)
        if (body.get("metadata") or {}).get("name") != t.name:
            raise bad_request("name in URL does not match name in Eviction object")
        opts = deletion.parse_options(body.get("deleteOptions"), dict(request.query))
        dry = opts.dry_run or dry_run(request)
        await disruption.admit_eviction(self.res, Target(t.kind, t.namespace, t.name, None), dry_run=dry)
        if dry:
            return respond(success(), 201)
        await self.res.delete_one(Target(t.kind, t.namespace, t.name, None), opts)
        return respond(success(), 201)

    # -- scale (autoscaling/v1 Scale) -----------------------------------------------------------

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        sel = spec.get("selector")
        if obj.get("kind") == "ReplicationController":  # an equality selector: a plain map
            sel = {"matchLabels": sel} if isinstance(sel, dict) else None
        try:  # the whole selector, matchExpressions too, as upstream's LabelSelectorAsSelector
            selector = selector_string(sel)
        except SelectorError:
            selector = ""  # validation keeps such selectors out
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {
                "replicas": status.get("replicas", 0),
                "selector": selector,
            },
        }

    async def scale(self, request: web.Request, t: Target) -> web.StreamResponse:
        obj_t = Target(t.kind, t.namespace, t.name, None)
        if request.method == "GET":
            return respond(self._scale_of(await self._pod(obj_t)))
        if request.method not in ("PUT", "PATCH"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on scale")
        raw = await request.read()
        ctype = (request.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        try:  # bounded, as every body (hypernetes.api.bodies)
            body = bodies.json_value(raw or b"{}")
        except bodies.BodyError as e:
            raise bad_request(f"Scale: {e}") from None
        if not isinstance(body, dict):
            raise bad_request("Scale: the body must be a JSON object")

        async def set_replicas(cur: Obj) -> Obj:
            scale = self._scale_of(cur)
            if request.method == "PUT" or ctype == "application/json":
                new = body
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(copy.deepcopy(scale), body)
            else:
                raise unsupported_media_type(ctype)
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict(
                    t.resource,
                    t.name or "",
                    t.group,
                    "the object has been modified; please "
                    "apply your changes to the latest version and try again",
                )
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: '
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                )
            cur.setdefault("spec", {})["replicas"] = replicas
            return cur

        obj = await self.res.update_object(
            obj_t, set_replicas, field_manager(request), conditional=False, dry_run=dry_run(request)
        )
        return respond(self._scale_of(obj))


async def until_client_leaves(work: Awaitable[Obj], gone: asyncio.Future[Any]) -> Obj | None:
    """Run `work` (the exec/attach) unless the client leaves first (`gone` finishes): then cancel
    it, so the node agent stops the process, as the kubelet does when the stream breaks."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        gone.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


def _outcome(status: Obj) -> Obj:
    """An exec/attach's end, for its audit record: the exit code, or why it failed."""
    if status.get("status") == "Success":
        return {"exitCode": 0}
    if status.get("reason") == "NonZeroExitCode":
        causes = (status.get("details") or {}).get("causes") or [{}]
        with contextlib.suppress(ValueError, TypeError):
            return {"exitCode": int(causes[0].get("message"))}
    return {"error": str(status.get("message") or "failed")}


def _spdy_io(
    session: spdy.SpdyServerSession,
    streams: dict[str, spdy.SpdyStream],
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> StreamIO:
    """A StreamIO over SPDY streams: channels map to the client's streams by type."""
    by_channel = {STDOUT: streams.get("stdout"), STDERR: streams.get("stderr")}

    async def send(channel: int, data: bytes) -> None:
        stream = by_channel.get(channel)
        if stream is not None:
            session.send(stream.id, data)

    io = StreamIO(send, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)

    async def pump(stream: spdy.SpdyStream, channel: int) -> None:
        decoder, pending = json.JSONDecoder(), ""
        while (chunk := await stream.data.get()) is not None:
            if channel == STDIN:
                io.feed(STDIN, chunk)
                continue
            pending += chunk.decode(errors="replace")  # resize: a stream of JSON objects
            while pending.strip():
                try:
                    size, end = decoder.raw_decode(pending.lstrip())
                except ValueError:
                    break
                pending = pending.lstrip()[end:]
                io.feed(RESIZE, json.dumps(size).encode())
        if channel == STDIN:
            io.close_stdin()

    for name, channel in (("stdin", STDIN), ("resize", RESIZE)):
        if name in streams:
            task = asyncio.create_task(pump(streams[name], channel))
            _PUMPS.add(task)
            task.add_done_callback(_PUMPS.discard)
    return io


_PUMPS: set[asyncio.Task[None]] = set()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target
