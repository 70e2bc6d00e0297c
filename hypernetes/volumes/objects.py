"""What the API objects of local volumes say, read the same way by the API's validation, the
volume controller, the authorizer and the node agent (docs/volumes.md, "The objects")."""

from __future__ import annotations

from typing import Any

from hypernetes.objects.names import HOSTNAME_LABEL

LOCAL_DRIVER = "local.hypernetes.io"  # the CSI driver name and the StorageClass provisioner


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def pv_node(pv: dict[str, Any]) -> str | None:
    """The node a local PV lives on: the one value of its required node affinity on
    kubernetes.io/hostname; None when it names no single node."""
    required = _dict(_dict(_dict(pv.get("spec")).get("nodeAffinity")).get("required"))
    for term in _list(required.get("nodeSelectorTerms")):
        for expr in _list(_dict(term).get("matchExpressions")):
            expr = _dict(expr)
            values = _list(expr.get("values"))
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and len(values) == 1:
                return str(values[0])
    return None
