"""HorizontalPodAutoscaler autoscaling/v1: what `kubectl autoscale` (1.32) creates. Stored as
v2 (the v2 entry's defaults and validation apply), served converted (api/hpaversions.py) for
create, get, list, update and patch (kubectl apply of a v1 manifest); kubectl reads and edits
HPAs in the preferred version, v2. Not served through v1: watch and delete."""

from __future__ import annotations

import copy
from typing import Any

from hypernetes.api.registry.autoscaling import horizontalpodautoscaler as v2
from hypernetes.api.registry.groups import AUTOSCALING
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import Context
from hypernetes.objects import Obj as JSON

ANNOTATION_PREFIX = "autoscaling.alpha.kubernetes.io/"  # v1's home for v2-only fields upstream


def to_v2(obj: JSON) -> JSON:
    """A v1 object as the v2 one upstream's conversion makes (what v1 cannot say stays unset)."""
    spec = _d(obj.get("spec"))
    out: JSON = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    percent = spec.get("targetCPUUtilizationPercentage")
    if percent is not None:
        target = {"type": "Utilization", "averageUtilization": percent}
        out["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    meta = dict(_d(obj.get("metadata")))
    notes = {k: v for k, v in _d(meta.get("annotations")).items() if not k.startswith(ANNOTATION_PREFIX)}
    if notes:
        meta["annotations"] = notes
    else:
        meta.pop("annotations", None)
    return {"apiVersion": v2.KIND.api_version, "kind": v2.KIND.kind, "metadata": meta, "spec": out}


def onto_v2(cur: JSON, new_v1: JSON) -> JSON:
    """An update through v1 applied to the stored v2 object: what v1 says replaces what v1 can
    say (metadata, target, min and max, the CPU utilization target); the rest (behavior, other
    metrics) stays as it was."""
    out = copy.deepcopy(cur)
    out["metadata"] = copy.deepcopy(_d(new_v1.get("metadata")))
    spec, given = out.setdefault("spec", {}), _d(new_v1.get("spec"))
    for k in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if k in given:
            spec[k] = given[k]
        else:
            spec.pop(k, None)
    percent = given.get("targetCPUUtilizationPercentage")
    if percent is not None:
        target = {"type": "Utilization", "averageUtilization": percent}
        metrics = [m for m in spec.get("metrics") or [] if not _is_cpu_utilization(m)]
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}, *metrics]
    return out


def _is_cpu_utilization(metric: Any) -> bool:
    res = _d(_d(metric).get("resource"))
    return res.get("name") == "cpu" and _d(res.get("target")).get("type") == "Utilization"


def _cpu(metrics: Any, field: str, key: str) -> Any:
    for m in metrics if isinstance(metrics, list) else []:
        res = _d(_d(m).get("resource"))
        if _d(m).get("type") == "Resource" and res.get("name") == "cpu":
            value = _d(res.get(field)).get(key)
            if value is not None:
                return value
    return None


def to_v1(obj: JSON) -> JSON:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    out_spec: JSON = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    percent = _cpu(spec.get("metrics"), "target", "averageUtilization")
    if percent is not None:
        out_spec["targetCPUUtilizationPercentage"] = percent
    out_status: JSON = {
        k: status[k]
        for k in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")
        if k in status
    }
    out_status.setdefault("currentReplicas", 0)
    out_status.setdefault("desiredReplicas", 0)
    current = _cpu(status.get("currentMetrics"), "current", "averageUtilization")
    if current is not None:
        out_status["currentCPUUtilizationPercentage"] = current
    return {
        "kind": KIND.kind,
        "apiVersion": KIND.api_version,
        "metadata": obj.get("metadata") or {},
        "spec": out_spec,
        "status": out_status,
    }


def _row(obj: JSON, ctx: Context) -> list[Any]:
    status = _d(obj.get("status"))
    shown: JSON = {"currentReplicas": status.get("currentReplicas", 0)}
    if status.get("currentCPUUtilizationPercentage") is not None:
        current = {"averageUtilization": status["currentCPUUtilizationPercentage"]}
        shown["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": current}}]
    return v2.row({**to_v2(obj), "status": shown}, ctx)


KIND = kind(
    AUTOSCALING,
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
    version="v1",
    short=("hpa",),
    cats=("all",),
    verbs=("create", "get", "list", "patch", "update"),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(v2.COLUMNS, _row),
)
