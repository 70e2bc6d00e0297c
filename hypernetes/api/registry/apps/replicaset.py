"""ReplicaSet: keeps a number of pods of one template running."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import APPS
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.workloads import replica_counts_row
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import template_defaults
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    SELECTOR,
    Column,
    Context,
    selector_string,
)
from hypernetes.api.schema.validation import (
    non_negative,
    pod_template,
    selector_immutable,
)
from hypernetes.objects import Obj as JSON


def _defaults(obj: JSON) -> None:
    template_defaults(obj).setdefault("replicas", 1)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("replicas", "minReadySeconds"), errs)
    pod_template(spec, errs, restart=("Always",))


COLUMNS = (
    NAME,
    Column("Desired", "integer", "", "Replicas is the number of desired pods."),
    Column("Current", "integer", "", "Replicas is the most recently observed number of replicas."),
    Column("Ready", "integer", "", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return replica_counts_row(obj, ctx, selector_string(_d(obj.get("spec")).get("selector")))


KIND = kind(
    APPS,
    "ReplicaSet",
    "replicasets",
    short=("rs",),
    cats=("all",),
    subs=("status", "scale"),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    validate_update=selector_immutable,
    field_selectors={
        "status.replicas": "status.replicas",
    },
    printer=Printer(COLUMNS, _row),
)
