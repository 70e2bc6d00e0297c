"""PersistentVolumeClaim: a pod's request for a block volume; its rules are the local
driver's (schema/volumes.py, docs/volumes.md)."""

from __future__ import annotations

import copy
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
    canonical_quantities,
    check_access_modes,
    positive_quantity,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import BETA_STORAGE_CLASS_ANNOTATION

_IMMUTABLE_CLAIM = (
    "spec is immutable after creation except resources.requests and "
    "volumeAttributesClassName for bound claims"
)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    check_access_modes(spec.get("accessModes"), "spec.accessModes", errs)
    storage = _d(_d(spec.get("resources")).get("requests")).get("storage")
    if storage is None:
        errs.append(E.required("spec.resources[storage]"))
    else:
        positive_quantity(storage, "spec.resources[storage]", errs)
    name = spec.get("storageClassName")
    if isinstance(name, str) and name:
        errs.extend(E.invalid("spec.storageClassName", name, msg) for msg in formats.dns1123_subdomain(name))


def _storage(spec: JSON) -> Any:
    return _d(_d(spec.get("resources")).get("requests")).get("storage")


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """As upstream's ValidatePersistentVolumeClaimUpdate: the spec is fixed once made, except that
    volumeName may be set once, a claim made without a class may get one, and a bound claim may
    ask for more storage (never less)."""
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), copy.deepcopy(_d(old.get("spec")))
    if not ospec.get("volumeName") and nspec.get("volumeName"):
        ospec["volumeName"] = nspec["volumeName"]
    old_notes = _d(_d(old.get("metadata")).get("annotations"))
    if (
        ospec.get("storageClassName") is None
        and BETA_STORAGE_CLASS_ANNOTATION not in old_notes
        and nspec.get("storageClassName") is not None
    ):
        ospec["storageClassName"] = nspec["storageClassName"]  # the retroactive default class
    bound = _d(new.get("status")).get("phase") == "Bound"
    if bound and _storage(nspec) is not None:
        _d(ospec.setdefault("resources", {})).setdefault("requests", {})["storage"] = _storage(nspec)
    for field in sorted(set(nspec) | set(ospec)):
        if nspec.get(field) != ospec.get(field):
            errs.append(E.forbidden(f"spec.{field}", _IMMUTABLE_CLAIM))
    before, after = _storage(_d(old.get("spec"))), _storage(nspec)
    if not bound or before is None or after is None:
        return
    try:
        shrinks = formats.parse_quantity(after)[0] < formats.parse_quantity(before)[0]
    except ValueError:
        return
    if shrinks:
        errs.append(
            E.forbidden("spec.resources.requests.storage", "field can not be less than previous value")
        )


def _defaults(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if not spec.get("volumeMode"):
            spec["volumeMode"] = "Filesystem"
        res = _d(spec.get("resources"))
        for field in ("requests", "limits"):
            canonical_quantities(res.get(field))
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        if not status.get("phase"):
            status["phase"] = "Pending"
        canonical_quantities(status.get("capacity"))
        canonical_quantities(status.get("allocatedResources"))


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
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
