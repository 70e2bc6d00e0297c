"""Pod: the unit the scheduler places and a node runs as one micro-VM (upstream
pkg/registry/core/pod). Its spec rules and defaults are shared with every pod template
(schema/podspec.py, schema/defaults.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.defaults import child, pod_spec_defaults, set_default
from hypernetes.api.schema.podspec import pod_spec_update, validate_pod_spec
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    condition_true,
    human_duration,
    name_of,
    parse_time,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.pod import qos_class


def _defaults(obj: JSON) -> None:
    spec = child(obj, "spec")
    pod_spec_defaults(spec, pod=True)
    # what the pod registry sets at creation: a pod starts Pending, with its QoS class
    status = child(obj, "status")
    set_default(status, "phase", "Pending")
    set_default(status, "qosClass", qos_class(spec))


def _validate(obj: JSON, errs: Errs) -> None:
    validate_pod_spec(_d(obj.get("spec")), "spec", errs)
    if obj.get("spec") is None:
        errs.append(E.required("spec.containers"))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    if sub == "binding":
        if ospec.get("nodeName"):
            errs.append(E.invalid("spec.nodeName", ospec["nodeName"], "pod is already assigned to a node"))
        ospec = {**ospec, "nodeName": nspec.get("nodeName")}
    pod_spec_update(nspec, ospec, "spec", errs)


COLUMNS = (
    NAME,
    Column("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", "string", "", "The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        "string",
        "",
        "The number of times the containers in this pod have been restarted "
        "and when the last container in this pod has restarted.",
    ),
    AGE,
    Column("IP", "string", "", "podIP address allocated to the pod.", 1),
    Column("Node", "string", "", "NodeName indicates in which node this pod is scheduled.", 1),
    Column(
        "Nominated Node",
        "string",
        "",
        "nominatedNodeName is set when this pod preempts other pods on the node.",
        1,
    ),
    Column(
        "Readiness Gates",
        "string",
        "",
        "If specified, all readiness gates will be evaluated for pod readiness.",
        1,
    ),
)


def _terminated_at(cs: JSON) -> datetime | None:
    return parse_time(_d(_d(cs.get("lastState")).get("terminated")).get("finishedAt"))


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _row(pod: JSON, ctx: Context) -> list[Any]:
    spec, status, meta = _d(pod.get("spec")), _d(pod.get("status")), _d(pod.get("metadata"))
    init_specs = {_d(c).get("name"): _d(c) for c in _l(spec.get("initContainers"))}
    total = len(_l(spec.get("containers")))
    total += sum(1 for c in init_specs.values() if c.get("restartPolicy") == "Always")
    ready = restarts = sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for c in _l(status.get("conditions")):
        if _d(c).get("type") == "PodScheduled" and _d(c).get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    initializing = False
    init_statuses = [_d(c) for c in _l(status.get("initContainerStatuses"))]
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        last_restart = _later(last_restart, _terminated_at(cs))
        sidecar = init_specs.get(cs.get("name"), {}).get("restartPolicy") == "Always"
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            last_sidecar_restart = _later(last_sidecar_restart, _terminated_at(cs))
        state = _d(cs.get("state"))
        term, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and term.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready"):
                ready += 1
            continue
        if isinstance(term, dict):
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif isinstance(waiting, dict) and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or condition_true(status, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed([_d(c) for c in _l(status.get("containerStatuses"))]):
            restarts += int(cs.get("restartCount") or 0)
            last_restart = _later(last_restart, _terminated_at(cs))
            state = _d(cs.get("state"))
            waiting, term = _d(state.get("waiting")), state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif isinstance(term, dict) and term.get("reason"):
                reason = term["reason"]
            elif isinstance(term, dict):
                reason = (
                    f"Signal:{term['signal']}"
                    if term.get("signal")
                    else f"ExitCode:{term.get('exitCode', 0)}"
                )
            elif cs.get("ready") and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if condition_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration((ctx.now - last_restart).total_seconds())} ago)"

    ips = _l(status.get("podIPs"))
    ip = _d(ips[0]).get("ip") if ips else status.get("podIP")
    gates = _l(spec.get("readinessGates"))
    gates_cell = "<none>"
    if gates:
        conds = {_d(c).get("type"): _d(c).get("status") for c in _l(status.get("conditions"))}
        true = sum(1 for g in gates if conds.get(_d(g).get("conditionType")) == "True")
        gates_cell = f"{true}/{len(gates)}"
    return [
        name_of(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        age_of(pod, ctx),
        ip or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


def _row_conditions(obj: JSON) -> list[JSON]:
    """A finished pod's row says so: kubectl hides Completed pods only when asked."""
    phase = _d(obj.get("status")).get("phase")
    if phase == "Succeeded":
        return [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


KIND = kind(
    CORE,
    "Pod",
    "pods",
    short=("po",),
    cats=("all",),
    subs=("status", "binding", "log", "exec", "eviction"),
    pod_spec="spec",
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    field_selectors={
        "spec.nodeName": "spec.nodeName",
        "spec.restartPolicy": "spec.restartPolicy",
        "spec.schedulerName": "spec.schedulerName",
        "spec.serviceAccountName": "spec.serviceAccountName",
        "spec.hostNetwork": "spec.hostNetwork",
        "status.phase": "status.phase",
        "status.podIP": "status.podIP",
        "status.nominatedNodeName": "status.nominatedNodeName",
    },
    printer=Printer(COLUMNS, _row, _row_conditions),
)
