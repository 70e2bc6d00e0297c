"""The Pod `status` a node reports, from what it knows about each container.

Phase and conditions follow upstream kubelet (`getPhase`, `GeneratePodReadyCondition`); container
states are the CRI shapes kubectl prints (Running, Completed, Error, CrashLoopBackOff, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hypernetes.objects import Obj
from hypernetes.objects.pod import qos_class
from hypernetes.runtime.interface import ContainerState, ContainerStatus

TERMINAL_PHASES = ("Succeeded", "Failed")  # a pod in one of these never runs again


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


@dataclass
class ContainerRecord:
    """What the node agent tracks per container across restarts."""

    name: str
    image: str
    runtime: ContainerStatus | None = None  # the current instance, once started
    waiting: tuple[str, str] = ("ContainerCreating", "")  # reason, message while not running
    restart_count: int = 0
    last_terminated: Obj | None = None
    ready: bool = False
    started: bool = False
    container_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def terminated_state(status: ContainerStatus) -> Obj:
    exit_ = status.exit
    code = 137 if exit_ is None else exit_.shell_code if exit_.signal else (exit_.code or 0)
    reason = (
        status.reason
        if status.reason in ("VMExited", "StartError", "OOMKilled")
        else ("Completed" if code == 0 else "Error")
    )
    state: Obj = {
        "exitCode": code,
        "reason": reason,
        "startedAt": rfc3339(status.started_at) if status.started_at else None,
        "finishedAt": rfc3339(status.finished_at or time.time()),
    }
    if exit_ is not None and exit_.signal:
        state["signal"] = exit_.signal
    if status.message:
        state["message"] = status.message[:1024]
    return state


def container_status(rec: ContainerRecord) -> Obj:
    rt = rec.runtime
    if rt is not None and rt.state is ContainerState.RUNNING:
        state: Obj = {"running": {"startedAt": rfc3339(rt.started_at)}}
    elif rt is not None and rt.state is ContainerState.EXITED and rec.waiting[0] in ("", "Terminated"):
        state = {"terminated": terminated_state(rt)}
    else:
        reason, message = rec.waiting
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    out: Obj = {
        "name": rec.name,
        "image": rec.image,
        "imageID": rt.image_id if rt is not None else "",
        "state": state,
        "lastState": {"terminated": rec.last_terminated} if rec.last_terminated else {},
        "ready": rec.ready and "running" in state,
        "restartCount": rec.restart_count,
        "started": "running" in state and rec.started,
    }
    if rec.container_id:
        out["containerID"] = rec.container_id
    return out


def pod_phase(pod: Obj, statuses: list[Obj]) -> str:
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    waiting = running = succeeded = failed = 0
    for s in statuses:
        st = s["state"]
        if "running" in st:
            running += 1
        elif "terminated" in st:
            if st["terminated"]["exitCode"] == 0:
                succeeded += 1
            else:
                failed += 1
        elif s.get("lastState", {}).get("terminated") and policy != "Never":
            running += 1  # restarting after a crash (CrashLoopBackOff): upstream stays Running
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if policy == "Always":
        return "Running"
    if failed and policy == "Never":
        return "Failed"
    if failed:  # OnFailure: it will be restarted
        return "Running"
    return "Succeeded"


def _condition(kind: str, ok: bool, now: str, old: list[Obj], reason: str = "") -> Obj:
    status = "True" if ok else "False"
    prev = next((c for c in old if c.get("type") == kind), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status else now
    cond: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason and not ok:
        cond["reason"] = reason
    return cond


def pod_status(
    pod: Obj,
    records: list[ContainerRecord],
    *,
    pod_ip: str | None,
    host_ip: str,
    start_time: float | None,
    sandbox_ready: bool,
    message: str = "",
) -> Obj:
    statuses = [container_status(r) for r in records]
    phase = pod_phase(pod, statuses)
    old = (pod.get("status") or {}).get("conditions") or []
    now = rfc3339()
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    not_ready = "PodCompleted" if phase in TERMINAL_PHASES else "ContainersNotReady"
    status: Obj = {
        "phase": phase,
        "conditions": [
            _condition("PodReadyToStartContainers", sandbox_ready, now, old),
            _condition("Initialized", True, now, old),
            _condition("Ready", all_ready, now, old, not_ready),
            _condition("ContainersReady", all_ready, now, old, not_ready),
            _condition("PodScheduled", True, now, old),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "containerStatuses": statuses,
        "qosClass": qos_class(pod.get("spec") or {}),
    }
    if pod_ip:
        status["podIP"], status["podIPs"] = pod_ip, [{"ip": pod_ip}]
    if start_time is not None:
        status["startTime"] = rfc3339(start_time)
    if message:
        status["message"] = message
    return status
