"""Helpers for runtime tests: build a PodSpec, collect a process's output, run a one-container pod."""

from __future__ import annotations

import asyncio

from hypernetes.runtime.interface import ContainerSpec, ExitStatus, PodSpec, Process, Runtime, Stream


def pod(name: str, *containers: ContainerSpec, **kw: object) -> PodSpec:
    return PodSpec(id=name, name=name, containers=containers, **kw)  # type: ignore[arg-type]


async def collect(proc: Process) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    async for stream, data in proc.output():
        (out if stream is Stream.STDOUT else err).extend(data)
    return bytes(out), bytes(err)


async def run(rt: Runtime, spec: PodSpec, timeout: float = 120) -> tuple[ExitStatus, bytes, bytes]:
    """Create the pod, start its first container attached, return its exit and output."""
    await rt.create_sandbox(spec)
    proc = await rt.start_container(spec.id, spec.containers[0].name, attach=True)
    assert proc is not None
    out, err = await asyncio.wait_for(collect(proc), timeout)
    return await proc.wait(), out, err
