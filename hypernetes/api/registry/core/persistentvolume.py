"""PersistentVolume: a local.hypernetes.io volume on one node, or a rbd.hypernetes.io image any
node may attach (schema/volumes.py)."""

from __future__ import annotations

import re
from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
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
from hypernetes.api.schema.volumes import (
    FORMATS,
    FS_TYPES,
    canonical_quantities,
    check_access_modes,
    check_no_secrets,
    check_rbd_source,
    positive_quantity,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import HOSTNAME_LABEL
from hypernetes.volumes.objects import LOCAL_DRIVER, pv_node
from hypernetes.volumes.rbd_objects import RBD_DRIVER

# a handle names a file DATA/volumes/<handle>.<format> (hypernetes/volumes/local.py)
_HANDLE = re.compile(r"[a-z0-9][a-z0-9.-]{0,248}")


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    capacity = _d(spec.get("capacity"))
    if not capacity:
        errs.append(E.required("spec.capacity"))
    else:
        for key in capacity:
            if key != "storage":
                errs.append(E.not_supported("spec.capacity", key, ("storage",)))
        if "storage" not in capacity:
            errs.append(E.required("spec.capacity[storage]"))
        else:
            positive_quantity(capacity["storage"], "spec.capacity[storage]", errs)
    check_access_modes(spec.get("accessModes"), "spec.accessModes", errs)
    ref = spec.get("claimRef")
    if isinstance(ref, dict):
        for field in ("namespace", "name"):
            if not ref.get(field):
                errs.append(E.required(f"spec.claimRef.{field}"))
    name = spec.get("storageClassName")
    if isinstance(name, str) and name:
        errs.extend(E.invalid("spec.storageClassName", name, msg) for msg in formats.dns1123_subdomain(name))
    csi = spec.get("csi")
    if not isinstance(csi, dict):
        errs.append(E.required("spec", "must specify a volume type"))
        return
    if csi.get("driver") == RBD_DRIVER:
        check_rbd_source(csi, errs)  # any node may attach it: no node affinity needed
        return
    if csi.get("driver") != LOCAL_DRIVER:
        return  # refused by the schema walk (policy.SUPPORTED_VALUES)
    check_no_secrets(csi, errs)
    handle = csi.get("volumeHandle")
    if isinstance(handle, str) and (not _HANDLE.fullmatch(handle) or ".." in handle):
        errs.append(
            E.invalid(
                "spec.csi.volumeHandle",
                handle,
                "a local volume handle names a file: lower-case letters, digits, '-' and "
                "'.' (not '..'), starting with a letter or digit, at most 249 characters",
            )
        )
    fs = csi.get("fsType")
    if isinstance(fs, str) and fs and fs not in FS_TYPES:
        errs.append(
            E.not_supported(
                "spec.csi.fsType",
                fs,
                detail=(
                    f"{E.UNSUPPORTED_BY_US}: a volume's filesystem must grow offline (resize2fs); supported "
                    "values: " + ", ".join(f'"{t}"' for t in FS_TYPES)
                ),
            )
        )
    for key, value in _d(csi.get("volumeAttributes")).items():
        path = f"spec.csi.volumeAttributes[{key}]"
        if key != "format":
            errs.append(E.not_supported(path, key, ("format",)))
        elif value not in FORMATS:
            errs.append(E.not_supported(path, value, FORMATS))
    if pv_node({"spec": spec}) is None:
        errs.append(
            E.required(
                "spec.nodeAffinity",
                (
                    "a local.hypernetes.io volume lives on one node: a required node selector term "
                    f"{HOSTNAME_LABEL} In [<node>]"
                ),
            )
        )


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    if nspec.get("csi") != ospec.get("csi"):
        errs.append(
            E.forbidden(
                "spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation"
            )
        )
    for field in ("volumeMode", "nodeAffinity"):
        if nspec.get(field) != ospec.get(field):
            errs.append(E.immutable(f"spec.{field}"))


def _defaults(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if not spec.get("persistentVolumeReclaimPolicy"):
            spec["persistentVolumeReclaimPolicy"] = "Retain"
        if not spec.get("volumeMode"):
            spec["volumeMode"] = "Filesystem"
        canonical_quantities(spec.get("capacity"))
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Pending"


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
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
