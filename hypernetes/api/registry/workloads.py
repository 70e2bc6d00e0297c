"""What the workload kinds whose pods always restart share (StatefulSet, DaemonSet,
ReplicationController): the pod template rules, worded per kind as upstream words them."""

from __future__ import annotations

from hypernetes.api.registry.kind import Errs
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.validation import pod_template
from hypernetes.objects import Obj as JSON


def workload_template(spec: JSON, errs: Errs, kind_name: str) -> None:
    """`validation.pod_template` with restartPolicy Always, the kind named in the
    activeDeadlineSeconds message ("activeDeadlineSeconds in StatefulSet is not Supported")."""
    mine: Errs = []
    pod_template(spec, mine, restart=("Always",))
    for e in mine:
        if e.field == "spec.template.spec.activeDeadlineSeconds":
            e = FieldError(e.type, e.field, f"activeDeadlineSeconds in {kind_name} is not Supported")
        errs.append(e)
