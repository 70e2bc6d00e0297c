"""Building blocks of the OpenAPI definitions the hypernetes.io kinds bring (each kind's module
holds its own), in the same form as the vendored upstream ones so validation, patching, /openapi
and `kubectl explain` treat them alike."""

from __future__ import annotations

from typing import Any

from hypernetes.objects import Obj as JSON

PREFIX = "io.hypernetes.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def string(description: str, **kw: Any) -> JSON:
    return {"type": "string", "description": description, **kw}


def object_definition(kind: str, description: str, spec: str | None, status: str | None) -> JSON:
    props: JSON = {
        "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
        "kind": string("Kind is a string value representing the REST resource this object represents."),
        "metadata": {"$ref": META + "ObjectMeta", "description": "Standard object's metadata."},
    }
    if spec:
        props["spec"] = {"$ref": PREFIX + spec, "description": f"The desired state of the {kind}."}
    if status:
        props["status"] = {"$ref": PREFIX + status, "description": f"The observed state of the {kind}."}
    return {
        "type": "object",
        "description": description,
        "properties": props,
        "x-kubernetes-group-version-kind": [{"group": "hypernetes.io", "kind": kind, "version": "v1"}],
    }


def list_definition(kind: str) -> JSON:
    return {
        "type": "object",
        "description": f"A list of {kind} objects.",
        "required": ["items"],
        "properties": {
            "apiVersion": string("APIVersion of this representation."),
            "kind": string("Kind of this list."),
            "items": {
                "type": "array",
                "items": {"$ref": PREFIX + kind},
                "description": f"The {kind} objects.",
            },
            "metadata": {"$ref": META + "ListMeta", "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [
            {"group": "hypernetes.io", "kind": kind + "List", "version": "v1"}
        ],
    }


AMOUNTS = (
    "Amounts by name: pods, vcpus (whole vCPUs of the pods' VMs), memory (the VMs' memory, "
    "guest overhead included), namespaces, storage, persistentvolumeclaims, services.nodeports, "
    "and object counts count/<resource>[.<group>] (count/secrets, count/deployments.apps, "
    "count/networks.hypernetes.io, ...)."
)
RESOURCE_LIST: JSON = {"type": "object", "additionalProperties": {"$ref": QUANTITY}, "description": AMOUNTS}
