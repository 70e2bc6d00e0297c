"""PersistentVolumeClaim: a pod's request for a block volume; its rules are the local
driver's (schema/volumes.py, docs/volumes.md)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Printer, kind
from hypernetes.api.schema import volumes
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    PV_MORE_INFO,
    Column,
    Context,
    access_modes,
    age_of,
    name_of,
    phase_of,
    storage_class_of,
    storage_string,
)

JSON = dict[str, Any]


COLUMNS = (
    NAME,
    Column("Status", "string", "", "phase represents the current phase of PersistentVolumeClaim."),
    Column(
        "Volume",
        "string",
        "",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    Column("Capacity", "string", "", "capacity represents the actual resources of the underlying volume."),
    Column(
        "Access Modes",
        "string",
        "",
        "accessModes contains the actual access modes the volume backing the PVC has. "
        f"{PV_MORE_INFO}#access-modes-1",
    ),
    Column("StorageClass", "string", "", "StorageClass of the pvc"),
    Column("VolumeAttributesClass", "string", "", "VolumeAttributesClass of the pvc"),
    AGE,
    Column(
        "VolumeMode",
        "string",
        "",
        "volumeMode defines what type of volume is required by the claim. Value of Filesystem is "
        "implied when not included in claim spec.",
        1,
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    volume = spec.get("volumeName") or ""
    # capacity and modes are the bound volume's: blank until the claim names one
    capacity = storage_string(status.get("capacity")) if volume else ""
    modes = access_modes(status.get("accessModes")) if volume else ""
    return [
        name_of(obj),
        phase_of(obj),
        volume,
        capacity,
        modes,
        storage_class_of(obj),
        spec.get("volumeAttributesClassName") or "<unset>",
        age_of(obj, ctx),
        spec.get("volumeMode") or "<unset>",
    ]


KIND = kind(
    CORE,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    short=("pvc",),
    subs=("status",),
    defaults=volumes.claim_defaults,
    validate=volumes.claim,
    validate_update=volumes.claim_update,
    printer=Printer(COLUMNS, _row),
)
