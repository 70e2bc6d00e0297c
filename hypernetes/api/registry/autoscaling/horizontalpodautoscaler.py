"""HorizontalPodAutoscaler (autoscaling/v2): scales a workload's scale subresource on its pods'
CPU and memory use (controllers/hpa.py). Defaults and validation as upstream's
(pkg/apis/autoscaling/v2/defaults.go, validation.ValidateHorizontalPodAutoscaler); metric
sources other than Resource are refused: this cluster serves no custom or external metrics."""

from __future__ import annotations

import copy
from typing import Any

from hypernetes.api.registry.groups import AUTOSCALING
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.controllers.hpascale import (
    DEFAULT_CPU_UTILIZATION,
    SCALE_DOWN_RULES,
    SCALE_UP_RULES,
    SELECT_POLICIES,
    target_ref_problems,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.quantity import QuantityError, parse_quantity

MAX_WINDOW = 3600  # upstream's MaxStabilizationWindowSeconds
MAX_PERIOD = 1800  # upstream's MaxPeriodSeconds
RESOURCES = ("cpu", "memory")


def _rules(rules: Any, default: JSON) -> JSON:
    """upstream's GenerateHPAScale{Up,Down}Rules: absent fields take the default's."""
    out = copy.deepcopy(default)
    if isinstance(rules, dict):
        for k in ("stabilizationWindowSeconds", "selectPolicy", "policies"):
            if rules.get(k) is not None:
                out[k] = rules[k]
    return out


def _defaults(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }
        ]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):  # only a given behavior is filled in (nil stays nil)
        behavior["scaleUp"] = _rules(behavior.get("scaleUp"), SCALE_UP_RULES)
        behavior["scaleDown"] = _rules(behavior.get("scaleDown"), SCALE_DOWN_RULES)


def _positive_int(v: Any, path: str, errs: Errs, low: int = 1, high: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        return  # the schema walk reports the type
    if v < low:
        errs.append(E.invalid(path, v, f"must be greater than or equal to {low}"))
    elif high is not None and v > high:
        errs.append(E.invalid(path, v, f"must be less than or equal to {high}"))


def _target(target: Any, path: str, errs: Errs) -> None:
    t = _d(target)
    kind_ = t.get("type")
    if kind_ == "Utilization":
        if t.get("averageUtilization") is None:
            errs.append(E.required(f"{path}.averageUtilization", "must specify averageUtilization"))
        else:
            _positive_int(t["averageUtilization"], f"{path}.averageUtilization", errs)
        for k in ("value", "averageValue"):
            if t.get(k) is not None:
                errs.append(E.forbidden(f"{path}.{k}", "may not be set when type is Utilization"))
    elif kind_ == "AverageValue":
        value = t.get("averageValue")
        if value is None:
            errs.append(E.required(f"{path}.averageValue", "must specify averageValue"))
        else:
            try:
                if parse_quantity(value).amount <= 0:
                    errs.append(E.invalid(f"{path}.averageValue", value, "must be positive"))
            except QuantityError:
                pass  # the schema walk reports a malformed quantity
        for k in ("value", "averageUtilization"):
            if t.get(k) is not None:
                errs.append(E.forbidden(f"{path}.{k}", "may not be set when type is AverageValue"))
    elif kind_ == "Value":
        errs.append(E.invalid(f"{path}.type", kind_, "must be either Utilization or AverageValue"))
    elif kind_ is None:
        errs.append(E.required(f"{path}.type", "must specify a metric target type"))
    else:
        errs.append(E.not_supported(f"{path}.type", kind_, ("AverageValue", "Utilization", "Value")))


def _behavior(behavior: Any, errs: Errs) -> None:
    for side in ("scaleUp", "scaleDown"):
        rules, path = _d(_d(behavior).get(side)), f"spec.behavior.{side}"
        window = rules.get("stabilizationWindowSeconds")
        if window is not None:
            _positive_int(window, f"{path}.stabilizationWindowSeconds", errs, 0, MAX_WINDOW)
        select = rules.get("selectPolicy")
        if select is not None and select not in SELECT_POLICIES:
            errs.append(E.not_supported(f"{path}.selectPolicy", select, SELECT_POLICIES))
        policies = rules.get("policies")
        if isinstance(policies, list) and not policies and select != "Disabled":
            errs.append(E.required(f"{path}.policies", "must specify at least one Policy"))
        for i, p in enumerate(policies if isinstance(policies, list) else []):
            p, at = _d(p), f"{path}.policies[{i}]"
            if p.get("type") not in ("Pods", "Percent"):
                errs.append(E.not_supported(f"{at}.type", p.get("type"), ("Percent", "Pods")))
            _positive_int(p.get("value"), f"{at}.value", errs)
            _positive_int(p.get("periodSeconds"), f"{at}.periodSeconds", errs, 1, MAX_PERIOD)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    ref = _d(spec.get("scaleTargetRef"))
    for k in ("kind", "name"):
        if not ref.get(k):
            errs.append(E.required(f"spec.scaleTargetRef.{k}"))
    for k, value, message in target_ref_problems(ref):
        errs.append(E.invalid(f"spec.scaleTargetRef.{k}", value, message))
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if low is not None:
        _positive_int(low, "spec.minReplicas", errs)
    if high is None:
        errs.append(E.required("spec.maxReplicas"))
    else:
        _positive_int(high, "spec.maxReplicas", errs)
        if isinstance(low, int) and isinstance(high, int) and high < low:
            errs.append(E.invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    for i, m in enumerate(spec.get("metrics") or []):
        m, path = _d(m), f"spec.metrics[{i}]"
        if m.get("type") != "Resource":
            errs.append(
                E.not_supported(
                    f"{path}.type",
                    m.get("type"),
                    detail="only Resource metrics (cpu, memory) are served by this cluster",
                )
            )
            continue
        res = _d(m.get("resource"))
        if not res:
            errs.append(E.required(f"{path}.resource", "must populate resource information"))
            continue
        if res.get("name") not in RESOURCES:
            errs.append(E.not_supported(f"{path}.resource.name", res.get("name"), RESOURCES))
        _target(res.get("target"), f"{path}.resource.target", errs)
    if spec.get("behavior") is not None:
        _behavior(spec["behavior"], errs)


# -- printer: upstream's printHorizontalPodAutoscaler (kubectl 1.32's TARGETS format) -----------

COLUMNS = (
    NAME,
    Column("Reference", "string", "", "The target of the autoscaler: Kind/name."),
    Column("Targets", "string", "", "The current and desired value of each metric."),
    Column("MinPods", "string", "", "The lower limit of replicas."),
    Column("MaxPods", "integer", "", "The upper limit of replicas."),
    Column("Replicas", "integer", "", "The current number of replicas."),
    AGE,
)
MAX_SHOWN = 2


def _metric(spec: JSON, status: JSON | None) -> str:
    res = _d(spec.get("resource"))
    target = _d(res.get("target"))
    current = _d(_d(_d(status).get("resource")).get("current"))
    name = res.get("name", "")
    if target.get("type") == "Utilization":
        now = current.get("averageUtilization")
        shown = f"{now}%" if now is not None else "<unknown>"
        return f"{name}: {shown}/{target.get('averageUtilization')}%"
    now = current.get("averageValue")
    return f"{name}: {now if now is not None else '<unknown>'}/{target.get('averageValue')}"


def targets(obj: JSON) -> str:
    specs = [_d(m) for m in _d(obj.get("spec")).get("metrics") or []]
    if not specs:
        return "<none>"
    statuses = [_d(m) for m in _d(obj.get("status")).get("currentMetrics") or []]
    cells = []
    for i, m in enumerate(specs[:MAX_SHOWN]):
        cells.append(_metric(m, statuses[i] if i < len(statuses) else None))
    more = f" + {len(specs) - MAX_SHOWN} more..." if len(specs) > MAX_SHOWN else ""
    return ", ".join(cells) + more


def row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    ref = _d(spec.get("scaleTargetRef"))
    low = spec.get("minReplicas")
    return [
        name_of(obj),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        targets(obj),
        str(low) if low is not None else "<unset>",
        spec.get("maxReplicas") or 0,
        status.get("currentReplicas") or 0,
        age_of(obj, ctx),
    ]


KIND = kind(
    AUTOSCALING,
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
    version="v2",
    short=("hpa",),
    cats=("all",),
    subs=("status",),
    defaults=_defaults,
    validate=_validate,
    printer=Printer(COLUMNS, row),
)
