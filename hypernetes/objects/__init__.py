"""The Kubernetes object model every room shares, one upstream-exact copy of each part.

A leaf package: it imports no room of hypernetes, and every room may import it.

- `meta`: the object type (`Obj`) and its metadata, owner reference and condition accessors;
- `names`: well-known labels, annotations and finalizers;
- `quantity`: resource quantities (k8s.io/apimachinery/pkg/api/resource);
- `selectors`: label selectors (k8s.io/apimachinery/pkg/labels and metav1.LabelSelector).
"""

from hypernetes.objects.meta import (
    Obj,
    annotations_of,
    condition_true,
    controlled_by,
    controller_ref,
    deleting,
    finalizers,
    get_condition,
    labels,
    meta,
    name,
    namespace,
    owner_ref,
    owner_refs,
    uid,
)

__all__ = [
    "Obj",
    "annotations_of",
    "condition_true",
    "controlled_by",
    "controller_ref",
    "deleting",
    "finalizers",
    "get_condition",
    "labels",
    "meta",
    "name",
    "namespace",
    "owner_ref",
    "owner_refs",
    "uid",
]
