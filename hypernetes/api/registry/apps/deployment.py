"""Deployment: rolls a pod template out through ReplicaSets (upstream
pkg/registry/apps/deployment)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import APPS
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.workloads import READY, ready_of_desired
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, set_default, template_defaults
from hypernetes.api.schema.percent import int_or_percent
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    SELECTOR,
    Column,
    Context,
    age_of,
    containers_images,
    int_or_zero,
    name_of,
    selector_string,
)
from hypernetes.api.schema.validation import (
    non_negative,
    pod_template,
    selector_immutable,
)
from hypernetes.objects import Obj as JSON


def _defaults(obj: JSON) -> None:
    spec = template_defaults(obj)
    spec.setdefault("replicas", 1)
    strategy = child(spec, "strategy")
    set_default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = child(strategy, "rollingUpdate")
        set_default(ru, "maxUnavailable", "25%")
        set_default(ru, "maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("replicas", "minReadySeconds", "revisionHistoryLimit"), errs)
    pod_template(spec, errs, restart=("Always",))
    strategy = _d(spec.get("strategy"))
    ru = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and ru is not None:
        errs.append(
            E.forbidden(
                "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
            )
        )
    elif isinstance(ru, dict):
        zero_u = int_or_percent(ru.get("maxUnavailable"), "spec.strategy.rollingUpdate.maxUnavailable", errs)
        zero_s = int_or_percent(ru.get("maxSurge"), "spec.strategy.rollingUpdate.maxSurge", errs)
        if zero_u and zero_s and "maxUnavailable" in ru and "maxSurge" in ru:
            errs.append(
                E.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    ru.get("maxUnavailable"),
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    pds, mrs = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds") or 0
    if isinstance(pds, int) and isinstance(mrs, int) and pds <= mrs:
        errs.append(E.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))


COLUMNS = (
    NAME,
    READY,
    Column(
        "Up-to-date",
        "integer",
        "",
        "Total number of non-terminated pods targeted by this deployment "
        "that have the desired template spec.",
    ),
    Column(
        "Available",
        "integer",
        "",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        name_of(obj),
        ready_of_desired(obj),
        int_or_zero(status.get("updatedReplicas")),
        int_or_zero(status.get("availableReplicas")),
        age_of(obj, ctx),
        *containers_images(obj),
        selector_string(spec.get("selector")),
    ]


KIND = kind(
    APPS,
    "Deployment",
    "deployments",
    short=("deploy",),
    cats=("all",),
    subs=("status", "scale"),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    validate_update=selector_immutable,
    printer=Printer(COLUMNS, _row),
)
