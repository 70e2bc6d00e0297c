"""StorageClass: how claims of a class are provisioned (schema/volumes.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import STORAGE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)
from hypernetes.api.schema.volumes import (
    FORMATS,
    FS_TYPES,
    LOCAL_PARAMETERS,
    check_rbd_parameters,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import BETA_DEFAULT_CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION
from hypernetes.volumes.objects import LOCAL_DRIVER
from hypernetes.volumes.rbd_objects import RBD_DRIVER


def _validate(obj: JSON, errs: Errs) -> None:
    provisioner = obj.get("provisioner")
    if isinstance(provisioner, str) and provisioner:
        errs.extend(
            E.invalid("provisioner", provisioner, msg) for msg in formats.qualified_name(provisioner.lower())
        )
    if provisioner == RBD_DRIVER:
        check_rbd_parameters(_d(obj.get("parameters")), errs)
        return
    if provisioner != LOCAL_DRIVER:
        return  # another provisioner's parameters are its own business
    for key, value in _d(obj.get("parameters")).items():
        path = f"parameters[{key}]"
        if key not in LOCAL_PARAMETERS:
            errs.append(E.not_supported(path, key, LOCAL_PARAMETERS))
        elif key == "fsType" and value not in FS_TYPES:
            errs.append(E.not_supported(path, value, FS_TYPES))
        elif key == "format" and value not in FORMATS:
            errs.append(E.not_supported(path, value, FORMATS))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if _d(new.get("parameters")) != _d(old.get("parameters")):
        errs.append(E.forbidden("parameters", "updates to parameters are forbidden."))
    if new.get("provisioner") != old.get("provisioner"):
        errs.append(E.forbidden("provisioner", "updates to provisioner are forbidden."))
    if new.get("reclaimPolicy") != old.get("reclaimPolicy"):
        errs.append(E.forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
    if new.get("volumeBindingMode") != old.get("volumeBindingMode"):
        errs.append(E.immutable("volumeBindingMode"))


def _defaults(obj: JSON) -> None:
    if not obj.get("reclaimPolicy"):
        obj["reclaimPolicy"] = "Delete"
    if not obj.get("volumeBindingMode"):
        obj["volumeBindingMode"] = "Immediate"


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
        notes.get(DEFAULT_CLASS_ANNOTATION),
        notes.get(BETA_DEFAULT_CLASS_ANNOTATION),
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
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
