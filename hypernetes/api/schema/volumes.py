"""PersistentVolumeClaim, PersistentVolume and StorageClass: upstream's validation and defaults
for the fields Hypernetes serves, narrowed to what the local volume driver can do (docs/volumes.md):
a PV is a `local.hypernetes.io` CSI volume on one node, attached read-write to one pod VM at a
time. The schema walk (policy.py) already refused the other volume sources and unsupported fields.

Rules that need other objects (the default class, whether a class allows expansion, quotas) are
admission's (hypernetes/auth/admission.py).
"""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.errors import FieldError
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import BETA_STORAGE_CLASS_ANNOTATION, HOSTNAME_LABEL
from hypernetes.volumes.objects import LOCAL_DRIVER, pv_node

Errs = list[FieldError]

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
OUR_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany")
FS_TYPES = ("ext2", "ext3", "ext4")  # what resize2fs grows offline: the host never mounts a volume
FORMATS = ("raw", "qcow2")
LOCAL_PARAMETERS = ("fsType", "format")
# a handle names a file DATA/volumes/<handle>.<format> (hypernetes/volumes/local.py)
_HANDLE = re.compile(r"[a-z0-9][a-z0-9.-]{0,248}")
_IMMUTABLE_CLAIM = "spec is immutable after creation except resources.requests and " \
                   "volumeAttributesClassName for bound claims"


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _positive(value: Any, path: str, errs: Errs) -> None:
    try:
        amount = formats.parse_quantity(value)[0]
    except ValueError:
        return  # the schema walk reported it
    if amount <= 0:
        errs.append(E.invalid(path, value, "must be greater than zero"))


def _access_modes(modes: Any, path: str, errs: Errs) -> None:
    if not _l(modes):
        errs.append(E.required(path, "at least 1 access mode is required"))
        return
    for mode in _l(modes):
        if mode in OUR_ACCESS_MODES:
            continue
        if mode in ACCESS_MODES:
            errs.append(E.not_supported(path, mode, detail=(
                f"{E.UNSUPPORTED_BY_US}: a volume is a block device attached read-write to one pod VM "
                'at a time; supported values: "ReadWriteOnce", "ReadOnlyMany"')))
        else:
            errs.append(E.not_supported(path, mode, ACCESS_MODES))


# -- claims ------------------------------------------------------------------------------------


def claim(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _access_modes(spec.get("accessModes"), "spec.accessModes", errs)
    storage = _d(_d(spec.get("resources")).get("requests")).get("storage")
    if storage is None:
        errs.append(E.required("spec.resources[storage]"))
    else:
        _positive(storage, "spec.resources[storage]", errs)
    name = spec.get("storageClassName")
    if isinstance(name, str) and name:
        errs.extend(E.invalid("spec.storageClassName", name, msg) for msg in formats.dns1123_subdomain(name))


def _storage(spec: JSON) -> Any:
    return _d(_d(spec.get("resources")).get("requests")).get("storage")


def claim_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """As upstream's ValidatePersistentVolumeClaimUpdate: the spec is fixed once made, except that
    volumeName may be set once, a claim made without a class may get one, and a bound claim may
    ask for more storage (never less)."""
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), copy.deepcopy(_d(old.get("spec")))
    if not ospec.get("volumeName") and nspec.get("volumeName"):
        ospec["volumeName"] = nspec["volumeName"]
    old_notes = _d(_d(old.get("metadata")).get("annotations"))
    if ospec.get("storageClassName") is None and BETA_STORAGE_CLASS_ANNOTATION not in old_notes \
            and nspec.get("storageClassName") is not None:
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
        errs.append(E.forbidden("spec.resources.requests.storage",
                                "field can not be less than previous value"))


def claim_defaults(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if not spec.get("volumeMode"):
            spec["volumeMode"] = "Filesystem"
        res = _d(spec.get("resources"))
        for field in ("requests", "limits"):
            _canonical(res.get(field))
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        if not status.get("phase"):
            status["phase"] = "Pending"
        _canonical(status.get("capacity"))
        _canonical(status.get("allocatedResources"))


def _canonical(quantities: Any) -> None:
    if isinstance(quantities, dict):
        for k, v in quantities.items():
            with contextlib.suppress(ValueError):  # validation reports it
                quantities[k] = formats.canonical_quantity(v)


# -- volumes -----------------------------------------------------------------------------------


def volume(obj: JSON, errs: Errs) -> None:
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
            _positive(capacity["storage"], "spec.capacity[storage]", errs)
    _access_modes(spec.get("accessModes"), "spec.accessModes", errs)
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
    if csi.get("driver") != LOCAL_DRIVER:
        return  # refused by the schema walk (policy.SUPPORTED_VALUES)
    handle = csi.get("volumeHandle")
    if isinstance(handle, str) and (not _HANDLE.fullmatch(handle) or ".." in handle):
        errs.append(E.invalid("spec.csi.volumeHandle", handle,
                              "a local volume handle names a file: lower-case letters, digits, '-' and "
                              "'.' (not '..'), starting with a letter or digit, at most 249 characters"))
    fs = csi.get("fsType")
    if isinstance(fs, str) and fs and fs not in FS_TYPES:
        errs.append(E.not_supported("spec.csi.fsType", fs, detail=(
            f"{E.UNSUPPORTED_BY_US}: a volume's filesystem must grow offline (resize2fs); supported "
            "values: " + ", ".join(f'"{t}"' for t in FS_TYPES))))
    for key, value in _d(csi.get("volumeAttributes")).items():
        path = f"spec.csi.volumeAttributes[{key}]"
        if key != "format":
            errs.append(E.not_supported(path, key, ("format",)))
        elif value not in FORMATS:
            errs.append(E.not_supported(path, value, FORMATS))
    if pv_node({"spec": spec}) is None:
        errs.append(E.required("spec.nodeAffinity", (
            "a local.hypernetes.io volume lives on one node: a required node selector term "
            f"{HOSTNAME_LABEL} In [<node>]")))


def volume_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    if nspec.get("csi") != ospec.get("csi"):
        errs.append(E.forbidden("spec.persistentvolumesource",
                                "spec.persistentvolumesource is immutable after creation"))
    for field in ("volumeMode", "nodeAffinity"):
        if nspec.get(field) != ospec.get(field):
            errs.append(E.immutable(f"spec.{field}"))


def volume_defaults(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if not spec.get("persistentVolumeReclaimPolicy"):
            spec["persistentVolumeReclaimPolicy"] = "Retain"
        if not spec.get("volumeMode"):
            spec["volumeMode"] = "Filesystem"
        _canonical(spec.get("capacity"))
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Pending"


# -- classes -----------------------------------------------------------------------------------


def storage_class(obj: JSON, errs: Errs) -> None:
    provisioner = obj.get("provisioner")
    if isinstance(provisioner, str) and provisioner:
        errs.extend(E.invalid("provisioner", provisioner, msg)
                    for msg in formats.qualified_name(provisioner.lower()))
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


def storage_class_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if _d(new.get("parameters")) != _d(old.get("parameters")):
        errs.append(E.forbidden("parameters", "updates to parameters are forbidden."))
    if new.get("provisioner") != old.get("provisioner"):
        errs.append(E.forbidden("provisioner", "updates to provisioner are forbidden."))
    if new.get("reclaimPolicy") != old.get("reclaimPolicy"):
        errs.append(E.forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
    if new.get("volumeBindingMode") != old.get("volumeBindingMode"):
        errs.append(E.immutable("volumeBindingMode"))


def storage_class_defaults(obj: JSON) -> None:
    if not obj.get("reclaimPolicy"):
        obj["reclaimPolicy"] = "Delete"
    if not obj.get("volumeBindingMode"):
        obj["volumeBindingMode"] = "Immediate"
