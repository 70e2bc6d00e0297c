"""Node pressure conditions measured on the host, as upstream's kubelet eviction manager does.

Signals (upstream's names and meaning, `pkg/kubelet/eviction/api`):

    memory.available     MemAvailable of /proc/meminfo (upstream: capacity less the root cgroup's
                         working set; both leave out the page cache the kernel can drop)
    nodefs.available     free bytes (statvfs f_bavail) of the filesystem holding the node's data
    nodefs.inodesFree    free inodes (f_favail) of that filesystem
    imagefs.available    the same two for the filesystem holding the image store (the same
    imagefs.inodesFree   filesystem as nodefs unless the images are elsewhere)
    pid.available        min(kernel.pid_max, kernel.threads-max) less the tasks that exist now

Thresholds use kubelet's `--eviction-hard` syntax, `signal<quantity` or `signal<percent%` of the
signal's capacity, comma separated; the defaults are upstream's (`DefaultEvictionHard`, Linux).
As upstream, giving the flag replaces the whole set. A threshold met turns the condition that
signal belongs to True; the condition stays True until the threshold has not been met for the
pressure transition period (upstream's `evictionPressureTransitionPeriod`, 5 minutes), so a node
hovering at a threshold does not flap. The node lifecycle controller turns each pressure
condition into its NoSchedule taint (`node.kubernetes.io/memory-pressure`, ...), which keeps the
scheduler away; pods bound to the node anyway are refused as the kubelet's eviction manager does
(`NodePressure.admit`). Pods already running are not evicted.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypernetes.node.admission import Rejection
from hypernetes.node.podstatus import rfc3339
from hypernetes.objects import Obj
from hypernetes.objects.pod import qos_class
from hypernetes.objects.quantity import quantity_value
from hypernetes.objects.taints import MEMORY_PRESSURE, NO_SCHEDULE, tolerations_for

log = logging.getLogger(__name__)

MEMORY, NODEFS, NODEFS_INODES = "memory.available", "nodefs.available", "nodefs.inodesFree"
IMAGEFS, IMAGEFS_INODES, PIDS = "imagefs.available", "imagefs.inodesFree", "pid.available"
SIGNALS = (MEMORY, NODEFS, NODEFS_INODES, IMAGEFS, IMAGEFS_INODES, PIDS)
# upstream's DefaultEvictionHard on Linux (no pid.available: upstream sets none either)
DEFAULT_EVICTION_HARD = (
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,"
    "imagefs.available<15%,imagefs.inodesFree<5%"
)
DEFAULT_TRANSITION_PERIOD = 300.0
MEMORY_PRESSURE_TAINT: Obj = {"key": MEMORY_PRESSURE, "effect": NO_SCHEDULE}
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000  # upstream's scheduling.SystemCriticalPriority


@dataclass(frozen=True)
class PressureCondition:
    type: str
    signals: tuple[str, ...]
    # (reason, message) when the pressure is on and when it is off: upstream's nodestatus setters
    on: tuple[str, str]
    off: tuple[str, str]


CONDITIONS = (
    PressureCondition(
        "MemoryPressure",
        (MEMORY,),
        ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
        ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ),
    PressureCondition(
        "DiskPressure",
        (NODEFS, NODEFS_INODES, IMAGEFS, IMAGEFS_INODES),
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ),
    PressureCondition(
        "PIDPressure",
        (PIDS,),
        ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
        ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ),
)


@dataclass(frozen=True)
class Threshold:
    """`signal < quantity`, or `signal < percentage` of its capacity."""

    signal: str
    quantity: int | None = None
    percentage: Decimal | None = None

    def limit(self, capacity: int) -> int:
        if self.percentage is not None:
            return int(capacity * self.percentage / 100)
        assert self.quantity is not None
        return self.quantity

    def __str__(self) -> str:
        return f"{self.signal}<{self.quantity if self.percentage is None else f'{self.percentage}%'}"


def parse_thresholds(text: str) -> tuple[Threshold, ...]:
    """Thresholds in `--eviction-hard` syntax; ValueError with the offending part otherwise.
    "" means none."""
    out: dict[str, Threshold] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        signal, sep, value = part.partition("<")
        signal, value = signal.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"{part!r}: a threshold is SIGNAL<QUANTITY or SIGNAL<PERCENT%")
        if signal not in SIGNALS:
            raise ValueError(f"{part!r}: unknown signal {signal!r} (one of {', '.join(SIGNALS)})")
        if signal in out:
            raise ValueError(f"{part!r}: {signal} given twice")
        if value.endswith("%"):
            try:
                pct = Decimal(value[:-1])
            except ArithmeticError:
                raise ValueError(f"{part!r}: {value!r} is not a percentage") from None
            if not 0 <= pct <= 100:
                raise ValueError(f"{part!r}: a percentage is between 0% and 100%")
            out[signal] = Threshold(signal, percentage=pct)
            continue
        try:  # quantities, as upstream's ParseThresholdConfig: bytes, or counts for inodes and PIDs
            amount = quantity_value(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value!r} is not a quantity") from None
        if amount < 0:
            raise ValueError(f"{part!r}: a quantity is not negative")
        out[signal] = Threshold(signal, quantity=amount)
    return tuple(out.values())


@dataclass(frozen=True)
class Observation:
    available: int
    capacity: int


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def _filesystem(path: Path) -> tuple[Observation, Observation]:
    """(bytes, inodes) of the filesystem holding `path` (or its nearest existing parent)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    st = os.statvfs(existing)
    return (
        Observation(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize),
        Observation(st.f_favail, st.f_files),
    )


def _pids() -> Observation:
    """As upstream's `rlimit` stats: the most tasks the kernel allows and the tasks there are
    (the total of /proc/loadavg's running/total field, what sysinfo(2) calls procs)."""
    limits = [int(Path(f"/proc/sys/kernel/{k}").read_text()) for k in ("pid_max", "threads-max")]
    tasks = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    cap = min(limits)
    return Observation(max(cap - tasks, 0), cap)


def observe(nodefs: Path, imagefs: Path) -> dict[str, Observation]:
    """Every signal, measured now."""
    mem = _meminfo()
    node_bytes, node_inodes = _filesystem(nodefs)
    image_bytes, image_inodes = _filesystem(imagefs)
    return {
        MEMORY: Observation(mem["MemAvailable"], mem["MemTotal"]),
        NODEFS: node_bytes,
        NODEFS_INODES: node_inodes,
        IMAGEFS: image_bytes,
        IMAGEFS_INODES: image_inodes,
        PIDS: _pids(),
    }


@dataclass
class NodePressure:
    """This node's pressure conditions, kept across heartbeats so that a condition's
    lastTransitionTime moves only when its status does."""

    nodefs: Path
    imagefs: Path
    thresholds: tuple[Threshold, ...] = field(default_factory=lambda: parse_thresholds(DEFAULT_EVICTION_HARD))
    transition_period: float = DEFAULT_TRANSITION_PERIOD
    clock: Any = time.time
    _last_met: dict[str, float] = field(default_factory=dict)  # condition type -> when a threshold last was
    _status: dict[str, tuple[bool, float]] = field(default_factory=dict)  # type -> (pressure, since)
    _met: frozenset[str] = frozenset()

    def seed(self, conditions: list[Obj]) -> None:
        """Start from the conditions the Node has (an agent restarted): one whose status is
        still what it was keeps its lastTransitionTime, as the kubelet's."""
        for c in conditions:
            if c.get("type") in {p.type for p in CONDITIONS} and c.get("status") in ("True", "False"):
                with contextlib.suppress(TypeError, ValueError):
                    since = calendar.timegm(
                        time.strptime(str(c.get("lastTransitionTime")), "%Y-%m-%dT%H:%M:%SZ")
                    )
                    self._status[c["type"]] = (c["status"] == "True", float(since))

    def update(self) -> dict[str, bool]:
        """Measure, and return each condition's pressure (True: under pressure)."""
        now = self.clock()
        observed = observe(self.nodefs, self.imagefs)
        met = set()
        for t in self.thresholds:
            obs = observed[t.signal]
            if obs.capacity and obs.available < t.limit(obs.capacity):
                met.add(str(t))
                for c in CONDITIONS:
                    if t.signal in c.signals:
                        self._last_met[c.type] = now
        if met != self._met:
            if met:
                log.warning("eviction thresholds met: %s", ", ".join(sorted(met)))
            else:
                log.info("no eviction threshold met")
            self._met = frozenset(met)
        out = {}
        for c in CONDITIONS:
            last = self._last_met.get(c.type)
            pressure = last is not None and now - last <= self.transition_period
            before = self._status.get(c.type)
            if before is None or before[0] != pressure:
                self._status[c.type] = (pressure, now)
            out[c.type] = pressure
        return out

    def threshold(self, signal: str, capacity: int) -> int:
        """How much of `signal` its threshold keeps back, for a resource of `capacity` (0: none)."""
        return next((t.limit(capacity) for t in self.thresholds if t.signal == signal), 0)

    def event_reasons(self, types: list[str]) -> list[str]:
        """The kubelet's Node event reasons for these conditions as they are now
        (NodeHasDiskPressure, NodeHasSufficientMemory, ...)."""
        out = []
        for c in CONDITIONS:
            if c.type in types:
                reason = (c.on if self._status.get(c.type, (False, 0.0))[0] else c.off)[0]
                out.append(reason.replace("Kubelet", "Node", 1))
        return out

    def conditions(self, heartbeat: str) -> list[Obj]:
        """The pressure conditions as Node status conditions, from the last `update`."""
        out = []
        for c in CONDITIONS:
            pressure, since = self._status.get(c.type, (False, self.clock()))
            reason, message = c.on if pressure else c.off
            out.append(
                {
                    "type": c.type,
                    "status": "True" if pressure else "False",
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": rfc3339(since),
                }
            )
        return out

    def admit(self, pod: Obj) -> Rejection | None:
        """Upstream's eviction-manager admission: under memory pressure alone a node still takes
        pods that are not BestEffort (or tolerate the memory-pressure taint); under any other
        pressure it takes no new pod. System-critical pods are always taken."""
        under = [c.type for c in CONDITIONS if self._status.get(c.type, (False, 0.0))[0]]
        spec = pod.get("spec") or {}
        if not under or int(spec.get("priority") or 0) >= SYSTEM_CRITICAL_PRIORITY:
            return None
        if under == ["MemoryPressure"] and (
            qos_class(pod.get("spec") or {}) != "BestEffort"
            or tolerations_for(MEMORY_PRESSURE_TAINT, spec.get("tolerations") or [])
        ):
            return None
        return Rejection("Evicted", f"The node had condition: [{' '.join(under)}]. ")
