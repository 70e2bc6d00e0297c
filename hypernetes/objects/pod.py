"""What a pod's spec implies that several rooms need: its QoS class (upstream's GetPodQOS)."""

from __future__ import annotations

from typing import Any

from hypernetes.objects.meta import Obj
from hypernetes.objects.quantity import Quantity, QuantityError


def _dicts(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _same(a: Any, b: Any) -> bool:
    """Equal as quantities ("1" and "1000m" are one CPU); as written if either does not parse."""
    try:
        return Quantity.from_json(a) == Quantity.from_json(b)
    except (QuantityError, ValueError, TypeError):
        return bool(a == b)


def qos_class(spec: Obj) -> str:
    """Guaranteed (every container's, init containers' too, cpu and memory limits set and equal to
    its requests), BestEffort (no requests or limits at all) or Burstable."""
    containers = _dicts(spec.get("containers")) + _dicts(spec.get("initContainers"))
    resources = [c["resources"] if isinstance(c.get("resources"), dict) else {} for c in containers]
    requests = [r["requests"] if isinstance(r.get("requests"), dict) else {} for r in resources]
    limits = [r["limits"] if isinstance(r.get("limits"), dict) else {} for r in resources]
    if not any(requests) and not any(limits):
        return "BestEffort"
    for req, lim in zip(requests, limits, strict=True):
        for name in ("cpu", "memory"):
            if name not in lim or not _same(req.get(name, lim[name]), lim[name]):
                return "Burstable"
    return "Guaranteed"
