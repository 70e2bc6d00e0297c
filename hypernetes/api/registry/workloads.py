"""What the workload kinds whose pods always restart share: the pod template rules of
StatefulSet, DaemonSet and ReplicationController, worded per kind as upstream words them, and the
Table pieces kube-apiserver prints alike (Deployment's and StatefulSet's READY, ReplicaSet's and
ReplicationController's counts)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.kind import Errs
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.printers import Column, Context, age_of, containers_images, int_or_zero, name_of
from hypernetes.api.schema.validation import pod_template
from hypernetes.objects import Obj as JSON

EMPTY_SELECTOR = "empty selector is invalid for deployment"  # validation.label_selector's


def workload_template(spec: JSON, errs: Errs, kind_name: str) -> None:
    """`validation.pod_template` with restartPolicy Always, the kind named in the
    activeDeadlineSeconds message ("activeDeadlineSeconds in StatefulSet is not Supported") and
    in the empty selector's ("empty selector is invalid for statefulset"); a
    ReplicationController's empty selector is only ValidateNonEmptySelector's Required."""
    mine: Errs = []
    pod_template(spec, mine, restart=("Always",))
    for e in mine:
        if e.field == "spec.template.spec.activeDeadlineSeconds":
            e = FieldError(e.type, e.field, f"activeDeadlineSeconds in {kind_name} is not Supported")
        elif e.field == "spec.selector" and e.message.endswith(EMPTY_SELECTOR):
            if kind_name == "ReplicationController":
                continue
            e = FieldError(e.type, e.field, e.message.replace("deployment", kind_name.lower()))
        errs.append(e)


READY = Column("Ready", "string", "", "Number of the pod with ready state")


def ready_of_desired(obj: JSON) -> str:
    """READY as `kubectl get deploy/sts` shows it: ready pods of the desired ones ("2/3")."""
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return f"{int_or_zero(status.get('readyReplicas'))}/{int_or_zero(spec.get('replicas', 1))}"


def replica_counts_row(obj: JSON, ctx: Context, selector: str) -> list[Any]:
    """A ReplicaSet's or ReplicationController's row: name, desired, current, ready, age,
    containers, images and the selector (each kind prints its own selector form)."""
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        name_of(obj),
        int_or_zero(spec.get("replicas", 1)),
        int_or_zero(status.get("replicas")),
        int_or_zero(status.get("readyReplicas")),
        age_of(obj, ctx),
        *containers_images(obj),
        selector,
    ]
