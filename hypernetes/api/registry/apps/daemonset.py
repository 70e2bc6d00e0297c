"""DaemonSet: one pod of a template on every node that fits it (upstream
pkg/registry/apps/daemonset). Nodes are the operators': tenants are refused the kind
(auth/authorizer.py), so its pods run only what an operator wrote."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import APPS
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.workloads import workload_template
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, set_default, template_defaults
from hypernetes.api.schema.percent import int_or_percent
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    Column,
    Context,
    age_of,
    containers_images,
    format_labels,
    int_or_zero,
    name_of,
    selector_string,
)
from hypernetes.api.schema.validation import non_negative, selector_immutable
from hypernetes.objects import Obj as JSON

_MORE = " More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"


def _defaults(obj: JSON) -> None:
    spec = template_defaults(obj)
    strategy = child(spec, "updateStrategy")
    set_default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = child(strategy, "rollingUpdate")
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("minReadySeconds", "revisionHistoryLimit"), errs)
    mine: Errs = []
    workload_template(spec, mine, "DaemonSet")
    for e in mine:
        if spec.get("selector") is None and e.field == "spec.selector":
            # ValidateDaemonSetSpec has no Required: a nil selector matches nothing
            labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
            e = E.invalid(
                "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
            )
        errs.append(e)
    strategy = _d(spec.get("updateStrategy"))
    stype, ru = strategy.get("type"), strategy.get("rollingUpdate")
    path = "spec.updateStrategy.rollingUpdate"
    if stype == "RollingUpdate":
        if not isinstance(ru, dict):
            errs.append(E.required(path))
            return
        # upstream's ValidateRollingUpdateDaemonSet: exactly one of the two is non-zero
        zero_u = int_or_percent(ru.get("maxUnavailable"), f"{path}.maxUnavailable", errs)
        zero_s = int_or_percent(ru.get("maxSurge"), f"{path}.maxSurge", errs)
        if not zero_u and not zero_s:
            errs.append(
                E.invalid(
                    f"{path}.maxSurge", ru.get("maxSurge"), "may not be set when maxUnavailable is non-zero"
                )
            )
        elif zero_u and zero_s:
            errs.append(E.required(f"{path}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    elif stype not in (None, "OnDelete"):
        # ValidateDaemonSetUpdateStrategy names the strategy, not its type
        errs.append(E.not_supported("spec.updateStrategy", strategy, ("RollingUpdate", "OnDelete")))


COLUMNS = (
    NAME,
    Column(
        "Desired",
        "integer",
        "",
        "The total number of nodes that should be running the daemon pod (including nodes correctly "
        "running the daemon pod)." + _MORE,
    ),
    Column(
        "Current",
        "integer",
        "",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."
        + _MORE,
    ),
    Column(
        "Ready",
        "integer",
        "",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more "
        "of the daemon pod running with a Ready Condition.",
    ),
    Column("Up-to-date", "integer", "", "The total number of nodes that are running updated daemon pod"),
    Column(
        "Available",
        "integer",
        "",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon "
        "pod running and available (ready for at least spec.minReadySeconds)",
    ),
    Column(
        "Node Selector",
        "string",
        "",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must "
        "match a node's labels for the pod to be scheduled on that node. More info: "
        "https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    Column(
        "Selector",
        "string",
        "",
        "A label query over pods that are managed by the daemon set. Must match in order to be "
        "controlled. It must match the pod template's labels. More info: "
        "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        1,
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    tspec = _d(_d(spec.get("template")).get("spec"))
    return [
        name_of(obj),
        int_or_zero(status.get("desiredNumberScheduled")),
        int_or_zero(status.get("currentNumberScheduled")),
        int_or_zero(status.get("numberReady")),
        int_or_zero(status.get("updatedNumberScheduled")),
        int_or_zero(status.get("numberAvailable")),
        format_labels(tspec.get("nodeSelector")),
        age_of(obj, ctx),
        *containers_images(obj),
        selector_string(spec.get("selector")),
    ]


def _prepare_create(obj: JSON) -> None:
    """PrepareForCreate resets the status; its empty form has the four counts without omitempty."""
    obj["status"] = dict.fromkeys(
        ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"), 0
    )


KIND = kind(
    APPS,
    "DaemonSet",
    "daemonsets",
    short=("ds",),
    cats=("all",),
    subs=("status",),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    validate_update=selector_immutable,
    printer=Printer(COLUMNS, _row),
)
