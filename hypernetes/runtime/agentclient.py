"""Asyncio client for the guest agent over the VM's virtio-serial control socket.

Shape borrowed from qemu.qmp: an explicit run state, one reader task (the "bottom half") that
dispatches replies by id and stream frames by process id, and every pending request failed with
the root cause when the channel drops. The guest is hostile: frames are bounded by
`guestproto.decode_header` before their payload is read, every field is validated, every request
has a timeout, and output is handed to bounded consumers so a flooding guest only slows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime.interface import ExitStatus, Process, Stream

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0
MAX_PENDING_OUTPUT = 64  # chunks queued per attached process before the reader waits
MAX_LOG_LINES = 200  # agent LOG frames kept per VM; more are dropped and counted


class Runstate(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    RUNNING = "running"
    DISCONNECTED = "disconnected"


class AgentError(Exception):
    """The agent answered a request with ERROR."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class AgentUnavailable(Exception):
    """The channel is down, timed out, or the guest broke the protocol."""


@dataclass
class ProcessSpec:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    terminal: bool = False
    stdin: bool = False
    rows: int = 24
    cols: int = 80

    def encode(self, process_id: int) -> gp.TLV:
        tlv = gp.TLV().add_u32(gp.TAG_PROCESS_ID, process_id)
        tlv.add_strs(gp.TAG_ARG, self.args).add_strs(gp.TAG_ENV, self.env)
        tlv.add_str(gp.TAG_CWD, self.cwd).add_u32(gp.TAG_UID, self.uid).add_u32(gp.TAG_GID, self.gid)
        for g in self.groups:
            tlv.add_u32(gp.TAG_GROUP, g)
        tlv.add_bool(gp.TAG_TERMINAL, self.terminal).add_bool(gp.TAG_STDIN, self.stdin)
        return tlv.add_u32(gp.TAG_ROWS, self.rows).add_u32(gp.TAG_COLS, self.cols)


OutputSink = Callable[[Stream, bytes], None]


class GuestProcess(Process):
    """A process in the guest. Output goes to `sink` (e.g. a log) and, if attached, to a queue."""

    def __init__(
        self, client: AgentClient, process_id: int, sink: OutputSink | None, attach: bool, stdin: bool
    ) -> None:
        self.client = client
        self.id = process_id
        self.pid: int | None = None
        self._sink = sink
        self._queue: asyncio.Queue[tuple[Stream, bytes] | None] | None = (
            asyncio.Queue(MAX_PENDING_OUTPUT) if attach else None
        )
        self._exit: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._window = gp.PROTO_STDIN_WINDOW if stdin else 0
        self._window_changed = asyncio.Condition()
        self._stdin_open = stdin

    async def _deliver(self, stream: Stream, data: bytes) -> None:
        if self._sink is not None:
            self._sink(stream, data)
        if self._queue is not None:
            await self._queue.put((stream, data))

    async def _finish(self, status: ExitStatus) -> None:
        if not self._exit.done():
            self._exit.set_result(status)
        if self._queue is not None:
            await self._queue.put(None)
        async with self._window_changed:
            self._window_changed.notify_all()

    async def _credit(self, nbytes: int) -> None:
        async with self._window_changed:
            # A guest cannot grant more credit than the window it was given.
            self._window = min(gp.PROTO_STDIN_WINDOW, self._window + nbytes)
            self._window_changed.notify_all()

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        if self._queue is None:
            raise ValueError("process is not attached")
        while (item := await self._queue.get()) is not None:
            yield item

    async def write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            async with self._window_changed:
                await self._window_changed.wait_for(lambda: self._window > 0 or self._exit.done())
                if self._exit.done() or not self._stdin_open:
                    raise BrokenPipeError("process stdin is closed")
                n = min(len(view), self._window, gp.PROTO_MAX_CHUNK)
                self._window -= n
            await self.client.send_stream(gp.MSG_STDIN, self.id, bytes(view[:n]))
            view = view[n:]

    async def close_stdin(self) -> None:
        if self._stdin_open and not self._exit.done():
            self._stdin_open = False
            await self.client.send_stream(gp.MSG_STDIN, self.id, b"")

    async def resize(self, rows: int, cols: int) -> None:
        tlv = gp.TLV().add_u32(gp.TAG_PROCESS_ID, self.id)
        await self.client.request(gp.MSG_RESIZE, tlv.add_u32(gp.TAG_ROWS, rows).add_u32(gp.TAG_COLS, cols))

    async def signal(self, signum: int) -> None:
        tlv = gp.TLV().add_u32(gp.TAG_PROCESS_ID, self.id).add_u32(gp.TAG_SIGNAL, signum)
        await self.client.request(gp.MSG_SIGNAL, tlv)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exit)

    @property
    def exited(self) -> ExitStatus | None:
        return self._exit.result() if self._exit.done() else None


HELLO_RESEND = 5.0  # seconds between HELLOs while waiting for the agent


class AgentClient:
    def __init__(self, name: str = "agent") -> None:
        self.name = name
        self.state = Runstate.IDLE
        self.agent_version = ""
        self.disconnect_reason = ""
        self.dropped_frames = 0
        self.agent_log: list[str] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[gp.Frame]] = {}
        self._processes: dict[int, GuestProcess] = {}
        self._next_id = 1
        self._next_process = 1
        self._write_lock = asyncio.Lock()
        self.on_disconnect: Callable[[str], Awaitable[None]] | None = None

    # --- connection ----------------------------------------------------------------------------

    async def connect(self, path: str, timeout: float, alive: Callable[[], bool]) -> None:
        """Connect to the VM's control socket and wait for the agent's READY.

        `alive` says whether the VM process still runs, so a dead VM fails fast, not at timeout.
        """
        if self.state is not Runstate.IDLE:
            raise AgentUnavailable(f"connect in state {self.state.value}")
        self.state = Runstate.CONNECTING
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    self._reader, self._writer = await asyncio.open_unix_connection(path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if not alive():
                        raise AgentUnavailable("the VM exited before its control socket opened") from None
                    if time.monotonic() > deadline:
                        raise AgentUnavailable("timed out waiting for the VM's control socket") from None
                    await asyncio.sleep(0.02)
            self.state = Runstate.RUNNING
            self._task = asyncio.create_task(self._read_loop(), name=f"{self.name}-reader")
            reply = await self._hello(deadline, alive)
            if reply.type != gp.MSG_READY:
                raise AgentUnavailable(f"agent answered HELLO with message type {reply.type}")
            tlv = gp.TLV.decode(reply.payload)
            version = tlv.u32(gp.TAG_VERSION)
            if version != gp.PROTO_VERSION:
                raise AgentUnavailable(f"agent speaks protocol {version}, host speaks {gp.PROTO_VERSION}")
            self.agent_version = tlv.string(gp.TAG_AGENT, 128) or ""
        except (AgentUnavailable, AgentError, gp.ProtocolError, OSError) as e:
            await self.close(str(e))
            raise AgentUnavailable(str(e)) from e

    async def _hello(self, deadline: float, alive: Callable[[], bool]) -> gp.Frame:
        """HELLO until READY. A HELLO written just as an earlier host's connection closes can be
        lost in the guest (the protocol has no acknowledgements), so it is sent again every few
        seconds; HELLO is idempotent and late READYs for earlier ones are dropped."""
        while True:
            wait = min(HELLO_RESEND, deadline - time.monotonic())
            try:
                return await self._await_reply(gp.MSG_HELLO, gp.TLV(), wait, alive)
            except AgentUnavailable:
                if time.monotonic() >= deadline or self.state is not Runstate.RUNNING or not alive():
                    raise

    async def close(self, reason: str = "closed") -> None:
        await self._disconnect(reason)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _disconnect(self, reason: str) -> None:
        if self.state is Runstate.DISCONNECTED:
            return
        self.state = Runstate.DISCONNECTED
        self.disconnect_reason = reason
        if self._writer is not None:
            self._writer.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AgentUnavailable(f"agent channel closed: {reason}"))
        self._pending.clear()
        for proc in list(self._processes.values()):
            await proc._finish(ExitStatus())  # exit unknown: the VM is gone or lying
        self._processes.clear()
        if self.on_disconnect is not None:
            await self.on_disconnect(reason)

    # --- requests ------------------------------------------------------------------------------

    async def request(self, mtype: int, tlv: gp.TLV, timeout: float = REQUEST_TIMEOUT) -> gp.TLV:
        reply = await self._await_reply(mtype, tlv, timeout, None)
        return gp.TLV.decode(reply.payload)

    async def _await_reply(
        self, mtype: int, tlv: gp.TLV, timeout: float, alive: Callable[[], bool] | None
    ) -> gp.Frame:
        if self.state is not Runstate.RUNNING:
            raise AgentUnavailable(f"agent channel is {self.state.value}: {self.disconnect_reason}")
        ident = self._next_id
        self._next_id += 1
        fut: asyncio.Future[gp.Frame] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        try:
            try:
                # the write too: a guest that stops reading its channel fills it, and a write
                # then waits (flow control) for as long as the guest hangs
                async with asyncio.timeout(max(timeout, 0.1)):
                    await self._send(gp.encode_frame(mtype, ident, tlv.encode()))
                    frame = await asyncio.shield(fut)
            except TimeoutError:
                raise AgentUnavailable(
                    f"agent did not answer message {mtype} within {timeout:.0f}s"
                ) from None
        finally:
            self._pending.pop(ident, None)
        if frame.type == gp.MSG_ERROR:
            err = gp.TLV.decode(frame.payload)
            raise AgentError(err.u32(gp.TAG_ERRNO) or 0, err.string(gp.TAG_MESSAGE, 1024) or "agent error")
        return frame

    async def send_stream(self, mtype: int, ident: int, data: bytes) -> None:
        if self.state is not Runstate.RUNNING:
            raise AgentUnavailable(f"agent channel is {self.state.value}")
        await self._send(gp.encode_frame(mtype, ident, data))

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        async with self._write_lock:
            self._writer.write(data)
            await self._writer.drain()

    # --- processes -----------------------------------------------------------------------------

    def new_process(self, sink: OutputSink | None, attach: bool, stdin: bool) -> GuestProcess:
        proc = GuestProcess(self, self._next_process, sink, attach, stdin)
        self._next_process += 1
        self._processes[proc.id] = proc
        return proc

    def adopt_process(self, process_id: int, sink: OutputSink | None) -> GuestProcess:
        """Re-attach a process started by an earlier client of the same VM (agent restart)."""
        proc = GuestProcess(self, process_id, sink, attach=False, stdin=False)
        self._processes[process_id] = proc
        self._next_process = max(self._next_process, process_id + 1)
        return proc

    def reserve_process_ids(self, next_id: int) -> None:
        """Never reuse a process id an earlier client issued: the guest may still know it."""
        self._next_process = max(self._next_process, next_id)

    @property
    def next_process_id(self) -> int:
        return self._next_process

    async def start(self, mtype: int, tlv: gp.TLV, proc: GuestProcess, timeout: float) -> None:
        """Send CREATE or EXEC for `proc`; on ACK record the guest pid."""
        try:
            reply = await self.request(mtype, tlv, timeout)
        except BaseException:
            self._processes.pop(proc.id, None)
            raise
        pid = reply.u32(gp.TAG_PID)
        proc.pid = pid if pid is not None and 0 < pid < 2**22 else None

    # --- bottom half ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "guest closed the channel"
        try:
            while True:
                header = gp.decode_header(await self._reader.readexactly(gp.PROTO_HEADER_SIZE))
                payload = await self._reader.readexactly(header.length)
                await self._dispatch(gp.Frame(header.type, header.id, payload))
        except asyncio.IncompleteReadError:
            pass
        except gp.ProtocolError as e:
            reason = f"guest broke the protocol: {e}"
            log.warning("%s: %s", self.name, reason)
        except (ConnectionError, OSError) as e:
            reason = f"channel error: {e}"
        await self._disconnect(reason)

    async def _dispatch(self, frame: gp.Frame) -> None:
        if frame.type in (gp.MSG_READY, gp.MSG_ACK, gp.MSG_ERROR):
            fut = self._pending.get(frame.id)
            if fut is None or fut.done():
                self.dropped_frames += 1
                return
            fut.set_result(frame)
            return
        if frame.type == gp.MSG_LOG:
            if len(self.agent_log) < MAX_LOG_LINES:
                text = gp.TLV([(0, frame.payload)]).string(0, 512) or ""
                self.agent_log.append(text)
                log.debug("%s guest: %s", self.name, text)
            else:
                self.dropped_frames += 1
            return
        proc = self._processes.get(frame.id)
        if proc is None:
            self.dropped_frames += 1
            return
        if frame.type in (gp.MSG_STDOUT, gp.MSG_STDERR):
            stream = Stream.STDOUT if frame.type == gp.MSG_STDOUT else Stream.STDERR
            await proc._deliver(stream, frame.payload)
        elif frame.type == gp.MSG_WINDOW:
            nbytes = gp.TLV.decode(frame.payload).u32(gp.TAG_BYTES)
            if nbytes is None:
                raise gp.ProtocolError("WINDOW without BYTES")
            await proc._credit(nbytes)
        elif frame.type == gp.MSG_EXIT:
            status = parse_exit(gp.TLV.decode(frame.payload))
            del self._processes[frame.id]
            await proc._finish(status)


def parse_exit(tlv: gp.TLV) -> ExitStatus:
    code, sig = tlv.u32(gp.TAG_EXIT_CODE), tlv.u32(gp.TAG_EXIT_SIGNAL)
    if sig is not None:
        if not 1 <= sig <= 64:
            raise gp.ProtocolError(f"EXIT with signal {sig}")
        return ExitStatus(signal=sig)
    if code is None or code > 255:
        raise gp.ProtocolError(f"EXIT with code {code}")
    return ExitStatus(code=code)
