"""The node's resource usage in the kubelet's Summary API shape (`/stats/summary`, the subset
metrics-server reads): cumulative CPU time and memory working set of the node and of each pod VM.

Measured on the host, never asked of the guest: a pod's figures are its VM's (runtime.usage:
the VM's cgroup, else QEMU's process), so they include the guest kernel and the agent, as a
container's include its runtime's shim on upstream's nodes. The host cannot see inside a VM, so a
pod of several containers has its VM's use shared equally among its running containers: their
sum, the pod's figure (what `kubectl top pods` and the HPA read), is exact; the split is not.

The node's figures: CPU time of all CPUs but idle and iowait (/proc/stat), and memory as
MemTotal - MemAvailable (/proc/meminfo): what the host could not give back without swapping.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from hypernetes.objects import Obj
from hypernetes.runtime.interface import ContainerState, Runtime, SandboxState, SandboxStatus, Usage

PROC = Path("/proc")
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
BUSY = slice(0, 8)  # user nice system idle iowait irq softirq steal: all but idle (3) and iowait (4)


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_usage(proc: Path = PROC) -> Usage:
    cpu = (proc / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in cpu[BUSY]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    info = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024
    return Usage(busy * TICK_NS, max(0, info["MemTotal"] - info.get("MemAvailable", info["MemFree"])))


def _figures(u: Usage, now: str) -> tuple[Obj, Obj]:
    return (
        {"time": now, "usageCoreNanoSeconds": u.cpu_ns},
        {"time": now, "workingSetBytes": u.memory_working_set},
    )


class NodeStats:
    def __init__(self, runtime: Runtime, node_name: str, proc: Path = PROC) -> None:
        self.runtime, self.node_name, self.proc = runtime, node_name, proc
        self.started = time.time()

    async def summary(self) -> Obj:
        pods = []
        for sandbox in await self.runtime.list_sandboxes():
            if sandbox.state is not SandboxState.READY:
                continue
            usage = await self.runtime.usage(sandbox.id)
            if usage is not None:
                pods.append(self._pod(sandbox, usage))
        now = time.time()
        cpu, memory = _figures(host_usage(self.proc), rfc3339(now))
        node = {"nodeName": self.node_name, "startTime": rfc3339(self.started), "cpu": cpu, "memory": memory}
        return {"node": node, "pods": pods}

    @staticmethod
    def _pod(sandbox: SandboxStatus, usage: Usage) -> Obj:
        now = rfc3339(time.time())
        cpu, memory = _figures(usage, now)
        running = [c for c in sandbox.containers if c.state is ContainerState.RUNNING]
        containers = []
        for i, c in enumerate(running):
            # equal shares, the remainder to the first, so that the containers sum to the VM
            n = len(running)
            share = Usage(
                usage.cpu_ns // n + (usage.cpu_ns % n if i == 0 else 0),
                usage.memory_working_set // n + (usage.memory_working_set % n if i == 0 else 0),
            )
            c_cpu, c_memory = _figures(share, now)
            started = rfc3339(c.started_at) if c.started_at else now
            containers.append({"name": c.name, "startTime": started, "cpu": c_cpu, "memory": c_memory})
        return {
            "podRef": {"name": sandbox.name, "namespace": sandbox.namespace, "uid": sandbox.id},
            "startTime": rfc3339(sandbox.created_at),
            "cpu": cpu,
            "memory": memory,
            "containers": containers,
        }
