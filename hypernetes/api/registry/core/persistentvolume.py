"""PersistentVolume: a local.hypernetes.io volume on one node (schema/volumes.py)."""

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
    Column(
        "Capacity",
        "string",
        "",
        "capacity is the description of the persistent volume's resources and "
        f"capacity. {PV_MORE_INFO}#capacity",
    ),
    Column(
        "Access Modes",
        "string",
        "",
        f"accessModes contains all ways the volume can be mounted. {PV_MORE_INFO}#access-modes",
    ),
    Column(
        "Reclaim Policy",
        "string",
        "",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from "
        "its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete "
        "(default for dynamically provisioned PersistentVolumes), and Recycle "
        "(deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. "
        f"{PV_MORE_INFO}#reclaiming",
    ),
    Column(
        "Status",
        "string",
        "",
        "phase indicates if a volume is available, bound to a claim, or released "
        f"by a claim. {PV_MORE_INFO}#phase",
    ),
    Column(
        "Claim",
        "string",
        "",
        "claimRef is part of a bi-directional binding between PersistentVolume and "
        "PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative "
        f"bind between PV and PVC. {PV_MORE_INFO}#binding",
    ),
    Column("StorageClass", "string", "", "StorageClass of the pv"),
    Column("VolumeAttributesClass", "string", "", "VolumeAttributesClass of the pv"),
    Column(
        "Reason",
        "string",
        "",
        "reason is a brief CamelCase string that describes any failure and is "
        "meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    Column(
        "VolumeMode",
        "string",
        "",
        "volumeMode defines if a volume is intended to be used with a "
        "formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not "
        "included in spec.",
        1,
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    ref = spec.get("claimRef")
    claim = f"{_d(ref).get('namespace') or ''}/{_d(ref).get('name') or ''}" if isinstance(ref, dict) else ""
    return [
        name_of(obj),
        storage_string(spec.get("capacity")),
        access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy") or "",
        phase_of(obj),
        claim,
        storage_class_of(obj),
        spec.get("volumeAttributesClassName") or "<unset>",
        _d(obj.get("status")).get("reason") or "",
        age_of(obj, ctx),
        spec.get("volumeMode") or "<unset>",
    ]


KIND = kind(
    CORE,
    "PersistentVolume",
    "persistentvolumes",
    namespaced=False,
    short=("pv",),
    subs=("status",),
    defaults=volumes.volume_defaults,
    validate=volumes.volume,
    validate_update=volumes.volume_update,
    printer=Printer(COLUMNS, _row),
)
