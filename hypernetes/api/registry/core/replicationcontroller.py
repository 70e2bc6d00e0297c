"""ReplicationController: the ReplicaSet's ancestor, with an equality-only selector (a plain map)
(upstream pkg/registry/core/replicationcontroller). The ReplicaSet controller runs it."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.workloads import replica_counts_row, workload_template
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, template_defaults
from hypernetes.api.schema.podspec import validate_labels
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    Column,
    Context,
    format_labels,
)
from hypernetes.api.schema.validation import non_negative
from hypernetes.objects import Obj as JSON

_MORE = " More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller"


def _defaults(obj: JSON) -> None:
    """SetDefaults_ReplicationController: selector and labels from the template's labels."""
    spec = template_defaults(obj)
    tmpl = spec.get("template")
    tlabels = _d(_d(tmpl).get("metadata")).get("labels") if isinstance(tmpl, dict) else None
    if tlabels:
        if not spec.get("selector"):
            spec["selector"] = dict(tlabels)
        meta = child(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(tlabels)
    spec.setdefault("replicas", 1)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("replicas", "minReadySeconds"), errs)
    selector = _d(spec.get("selector"))
    if not selector:
        errs.append(E.required("spec.selector"))
    validate_labels(selector, "spec.selector", errs)
    if spec.get("template") is None:
        errs.append(E.required("spec.template"))
        return
    # the shared template rules read a LabelSelector: an equality selector is its matchLabels
    workload_template({**spec, "selector": {"matchLabels": selector}}, errs, "ReplicationController")


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """Unlike a ReplicaSet's, an RC's selector may change (upstream allows it)."""


COLUMNS = (
    NAME,
    Column(
        "Desired",
        "integer",
        "",
        "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit "
        "zero and unspecified. Defaults to 1." + _MORE + "#what-is-a-replicationcontroller",
    ),
    Column(
        "Current",
        "integer",
        "",
        "Replicas is the most recently observed number of replicas."
        + _MORE
        + "#what-is-a-replicationcontroller",
    ),
    Column("Ready", "integer", "", "The number of ready replicas for this replication controller."),
    AGE,
    CONTAINERS,
    IMAGES,
    Column(
        "Selector",
        "string",
        "",
        "Selector is a label query over pods that should match the Replicas count. If Selector is "
        "empty, it is defaulted to the labels present on the Pod template. Label keys and values that "
        "must match in order to be controlled by this replication controller, if empty defaulted to "
        "labels on Pod template. More info: "
        "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        1,
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return replica_counts_row(obj, ctx, format_labels(_d(obj.get("spec")).get("selector")))


def _prepare_create(obj: JSON) -> None:
    """PrepareForCreate resets the status; its empty form keeps replicas (no omitempty)."""
    obj["status"] = {"replicas": 0}


KIND = kind(
    CORE,
    "ReplicationController",
    "replicationcontrollers",
    short=("rc",),
    cats=("all",),
    subs=("status", "scale"),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    validate_update=_validate_update,
    field_selectors={"status.replicas": "status.replicas"},
    printer=Printer(COLUMNS, _row),
)
