"""Startup, liveness and readiness probes of a pod's containers, as kubelet runs them.

exec probes run through the runtime's exec; tcpSocket and httpGet probes run inside the pod's own
network namespace through the runtime (the guest agent dials them), so they need no route from
the host into tenant networks. Results go to a callback: (container, kind, ok, message).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from hypernetes.objects import Obj
from hypernetes.runtime.interface import ExecSpec, PodRuntimeError, ProbeSpec, Runtime

Callback = Callable[[str, str, bool, str], Awaitable[None]]


def _port(container: Obj, port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    if str(port).isdigit():
        return int(port)
    raise PodRuntimeError(f"port {port!r} is not a number nor a named port of the container")


class ProbeRunner:
    def __init__(self, pod: Obj, runtime: Runtime, sandbox_id: str, callback: Callback) -> None:
        self.containers = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
        self.runtime = runtime
        self.sandbox_id = sandbox_id
        self.callback = callback
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def container_started(self, name: str) -> None:
        """(Re)start the probes of a container that just (re)started."""
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        self._tasks[name] = asyncio.create_task(self._container(name))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _container(self, name: str) -> None:
        c = self.containers[name]
        startup = c.get("startupProbe")
        if startup is not None and not await self._loop(name, "startup", startup, until_success=True):
            return
        await self.callback(name, "startup", True, "")
        loops = []
        if "readinessProbe" in c:
            loops.append(self._loop(name, "readiness", c["readinessProbe"]))
        else:
            await self.callback(name, "readiness", True, "")
        if "livenessProbe" in c:
            loops.append(self._loop(name, "liveness", c["livenessProbe"]))
        await asyncio.gather(*loops)

    async def _loop(self, name: str, kind: str, probe: Obj, until_success: bool = False) -> bool:
        period = float(probe.get("periodSeconds", 10))
        success_needed = int(probe.get("successThreshold", 1))
        failure_limit = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        successes = failures = 0
        state: bool | None = None
        while True:
            ok, message = await self.run_once(name, probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if ok and successes >= success_needed and state is not True:
                state = True
                if until_success:
                    return True
                await self.callback(name, kind, True, "")
            elif not ok and failures >= failure_limit and state is not False:
                state = False
                await self.callback(name, kind, False, message)
                if kind in ("liveness", "startup"):
                    return False  # the container is killed and restarted; a new runner follows
            await asyncio.sleep(period)

    async def run_once(self, name: str, probe: Obj) -> tuple[bool, str]:
        c = self.containers[name]
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "exec" in probe:
                command = tuple(probe["exec"].get("command") or ())
                return await asyncio.wait_for(self._exec(name, command), timeout)
            if "tcpSocket" in probe:
                spec = ProbeSpec(
                    "tcp",
                    _port(c, probe["tcpSocket"].get("port")),
                    host=probe["tcpSocket"].get("host") or "127.0.0.1",
                    timeout=timeout,
                )
            elif "httpGet" in probe:
                get = probe["httpGet"]
                headers = tuple((h["name"], h["value"]) for h in get.get("httpHeaders") or [])
                spec = ProbeSpec(
                    "http",
                    _port(c, get.get("port")),
                    host=get.get("host") or "127.0.0.1",
                    path=get.get("path") or "/",
                    headers=headers,
                    timeout=timeout,
                )
            else:
                return False, "probe has no handler"
            return await asyncio.wait_for(self.runtime.probe(self.sandbox_id, spec), timeout + 5)
        except TimeoutError:
            return False, f"timeout: probe did not answer within {timeout:g}s"
        except PodRuntimeError as e:
            return False, str(e)

    async def _exec(self, name: str, command: tuple[str, ...]) -> tuple[bool, str]:
        proc = await self.runtime.exec(self.sandbox_id, name, ExecSpec(command=command))
        output = bytearray()
        try:
            async for _stream, data in proc.output():
                if len(output) < 1024:
                    output += data[: 1024 - len(output)]
            status = await proc.wait()
        except asyncio.CancelledError:
            # Timed out: do not leave the probe's process running in the container.
            with contextlib.suppress(Exception):
                await proc.signal(9)
            raise
        ok = status.code == 0
        text = output.decode(errors="replace").strip()
        return ok, "" if ok else f"command {list(command)} exited with {status.shell_code}: {text}"
