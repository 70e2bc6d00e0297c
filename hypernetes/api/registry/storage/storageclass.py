"""StorageClass: how claims of a class are provisioned (schema/volumes.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import STORAGE
from hypernetes.api.registry.kind import Printer, kind
from hypernetes.api.schema import volumes
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)

JSON = dict[str, Any]


COLUMNS = (
    NAME,
    Column("Provisioner", "string", "", "provisioner indicates the type of the provisioner."),
    Column(
        "ReclaimPolicy",
        "string",
        "",
        "reclaimPolicy controls the reclaimPolicy for dynamically "
        "provisioned PersistentVolumes of this storage class. Defaults to Delete.",
    ),
    Column(
        "VolumeBindingMode",
        "string",
        "",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  "
        "When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable "
        "the VolumeScheduling feature.",
    ),
    Column(
        "AllowVolumeExpansion",
        "string",
        "",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    notes = _d(_d(obj.get("metadata")).get("annotations"))
    name = name_of(obj)
    if "true" in (
        notes.get("storageclass.kubernetes.io/is-default-class"),
        notes.get("storageclass.beta.kubernetes.io/is-default-class"),
    ):
        name += " (default)"
    return [
        name,
        obj.get("provisioner") or "",
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        obj.get("allowVolumeExpansion") is True,  # a bool cell, as upstream: kubectl prints true/false
        age_of(obj, ctx),
    ]


KIND = kind(
    STORAGE,
    "StorageClass",
    "storageclasses",
    namespaced=False,
    short=("sc",),
    defaults=volumes.storage_class_defaults,
    validate=volumes.storage_class,
    validate_update=volumes.storage_class_update,
    printer=Printer(COLUMNS, _row),
)
