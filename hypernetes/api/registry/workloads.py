"""What the workload kinds whose pods always restart share (StatefulSet, DaemonSet,
ReplicationController): the pod template rules, worded per kind as upstream words them."""

from __future__ import annotations

from hypernetes.api.registry.kind import Errs
from hypernetes.api.schema.errors import FieldError
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
