"""PodDisruptionBudget: how many of a set of pods voluntary disruptions (evictions, `kubectl
drain`) must leave running (upstream pkg/registry/policy/poddisruptionbudget and
pkg/apis/policy/validation). The disruption controller writes its status; the eviction
subresource reads it."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import POLICY
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.percent import int_or_percent
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, int_or_zero, name_of
from hypernetes.api.schema.validation import label_selector
from hypernetes.objects import Obj as JSON

UNHEALTHY_POD_EVICTION_POLICIES = ("AlwaysAllow", "IfHealthyBudget")
_STATUS_COUNTS = ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        errs.append(E.invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
    for field in ("minAvailable", "maxUnavailable"):
        if spec.get(field) is not None:
            int_or_percent(spec[field], f"spec.{field}", errs)
    if spec.get("selector") is not None:
        label_selector(spec["selector"], "spec.selector", errs, required=False)
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in UNHEALTHY_POD_EVICTION_POLICIES:
        errs.append(
            E.not_supported("spec.unhealthyPodEvictionPolicy", policy, UNHEALTHY_POD_EVICTION_POLICIES)
        )
    _status(obj, errs)


def _status(obj: JSON, errs: Errs) -> None:
    status = _d(obj.get("status"))
    for field in _STATUS_COUNTS:
        v = status.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            errs.append(E.invalid(f"status.{field}", v, "must be greater than or equal to 0"))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """policy/v1 lets the whole spec change (the controller recomputes the status)."""


def _prepare_create(obj: JSON) -> None:
    """The disruption controller's status; until it writes, nothing may be evicted. Upstream's
    empty status carries its four counts, which have no omitempty."""
    obj["status"] = dict.fromkeys(
        ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"), 0
    )


def _cell(v: Any) -> str:
    return "N/A" if v is None else str(v)


COLUMNS = (
    NAME,
    Column("Min Available", "string", "", "The minimum number of pods that must be available."),
    Column("Max Unavailable", "string", "", "The maximum number of pods that may be unavailable."),
    Column(
        "Allowed Disruptions", "integer", "", "Calculated number of pods that may be disrupted at this time."
    ),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [
        name_of(obj),
        _cell(spec.get("minAvailable")),
        _cell(spec.get("maxUnavailable")),
        int_or_zero(_d(obj.get("status")).get("disruptionsAllowed")),
        age_of(obj, ctx),
    ]


KIND = kind(
    POLICY,
    "PodDisruptionBudget",
    "poddisruptionbudgets",
    short=("pdb",),
    subs=("status",),
    defaults=no_defaults,
    validate=_validate,
    validate_update=_validate_update,
    prepare_create=_prepare_create,
    printer=Printer(COLUMNS, _row),
)
