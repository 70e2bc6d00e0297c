"""The metrics.k8s.io/v1beta1 definitions (metrics-server's, k8s.io/metrics/pkg/apis/metrics),
which the vendored upstream schemas lack: the group is served by an aggregated server upstream."""

from __future__ import annotations

from typing import Any

from hypernetes.objects import Obj as JSON

PREFIX = "io.k8s.metrics.pkg.apis.metrics.v1beta1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
GROUP, VERSION = "metrics.k8s.io", "v1beta1"


def _s(description: str, **kw: Any) -> JSON:
    return {"type": "string", "description": description, **kw}


USAGE: JSON = {
    "type": "object",
    "additionalProperties": {"$ref": QUANTITY},
    "description": "The memory working set and the CPU rate (cores) over the window.",
}


def _object(kind: str, description: str, extra: JSON) -> JSON:
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": _s("APIVersion defines the versioned schema of this representation of an object."),
            "kind": _s("Kind is a string value representing the REST resource this object represents."),
            "metadata": {"$ref": META + "ObjectMeta", "description": "Standard object's metadata."},
            "timestamp": _s("The end of the window the figures were measured over.", format="date-time"),
            "window": _s("The length of the window, a duration (e.g. 15s)."),
            **extra,
        },
        "required": ["timestamp", "window"],
        "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": kind, "version": VERSION}],
    }


def _list(kind: str) -> JSON:
    return {
        "type": "object",
        "description": f"A list of {kind} objects.",
        "required": ["items"],
        "properties": {
            "apiVersion": _s("APIVersion of this representation."),
            "kind": _s("Kind of this list."),
            "items": {
                "type": "array",
                "items": {"$ref": PREFIX + kind},
                "description": f"The {kind} objects.",
            },
            "metadata": {"$ref": META + "ListMeta", "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": kind + "List", "version": VERSION}],
    }


DEFINITIONS: dict[str, JSON] = {
    PREFIX + "NodeMetrics": _object("NodeMetrics", "The resource usage of a node.", {"usage": USAGE}),
    PREFIX + "NodeMetricsList": _list("NodeMetrics"),
    PREFIX + "PodMetrics": _object(
        "PodMetrics",
        "The resource usage of a pod: its VM's, shared among its containers.",
        {
            "containers": {
                "type": "array",
                "items": {"$ref": PREFIX + "ContainerMetrics"},
                "description": "The usage of each running container.",
            }
        },
    ),
    PREFIX + "PodMetricsList": _list("PodMetrics"),
    PREFIX + "ContainerMetrics": {
        "type": "object",
        "description": "The resource usage of a container.",
        "required": ["name", "usage"],
        "properties": {"name": _s("The container's name."), "usage": USAGE},
    },
}
