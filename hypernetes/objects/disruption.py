"""Which pods a PodDisruptionBudget covers, one copy for the eviction subresource (api/) and the
disruption controller (controllers/)."""

from __future__ import annotations

from hypernetes.objects.meta import Obj, labels
from hypernetes.objects.selectors import SelectorError, from_label_selector


def budget_selects(pdb: Obj, pod: Obj) -> bool:
    """policy/v1: a nil selector selects nothing, an empty one every pod of the namespace (the
    caller compares namespaces)."""
    sel = (pdb.get("spec") or {}).get("selector")
    if sel is None:
        return False
    try:
        return from_label_selector(sel).matches(labels(pod))
    except SelectorError:
        return False
