"""What PersistentVolumeClaim, PersistentVolume and StorageClass share, narrowed to what the
local volume driver can do (docs/volumes.md): access modes, positive sizes, canonical quantities,
the local driver's filesystems and formats. Each kind's rules are in its registry entry
(registry/core/persistentvolume*.py, registry/storage/storageclass.py); the schema walk
(policy.py) already refused the other volume sources and unsupported fields.

Rules that need other objects (the default class, whether a class allows expansion, quotas) are
admission's (hypernetes/auth/admission.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.errors import FieldError
from hypernetes.objects import Obj as JSON
from hypernetes.volumes.rbd_objects import (
    FSTYPE,
    IMAGE_FEATURES,
    IMAGE_NAME,
    NODE_SECRET,
    PARAMETERS,
    POOL,
    POOL_NAME,
    REQUIRED_SECRETS,
    SECRET_ROLES,
    check_features,
    secret_param,
)

Errs = list[FieldError]

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
OUR_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany")
FS_TYPES = ("ext2", "ext3", "ext4")  # what resize2fs grows offline: the host never mounts a volume
FORMATS = ("raw", "qcow2")
LOCAL_PARAMETERS = ("fsType", "format")
RBD_ATTRIBUTES = (POOL, IMAGE_FEATURES)
# secret references an RBD PV may carry: the node's (required) and the expander's
RBD_PV_SECRETS = ("nodeStageSecretRef", "controllerExpandSecretRef")
CSI_SECRETS = (
    "controllerExpandSecretRef",
    "controllerPublishSecretRef",
    "nodeExpandSecretRef",
    "nodePublishSecretRef",
    "nodeStageSecretRef",
)


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def positive_quantity(value: Any, path: str, errs: Errs) -> None:
    try:
        amount = formats.parse_quantity(value)[0]
    except ValueError:
        return  # the schema walk reported it
    if amount <= 0:
        errs.append(E.invalid(path, value, "must be greater than zero"))


def check_access_modes(modes: Any, path: str, errs: Errs) -> None:
    if not _l(modes):
        errs.append(E.required(path, "at least 1 access mode is required"))
        return
    for mode in _l(modes):
        if mode in OUR_ACCESS_MODES:
            continue
        if mode in ACCESS_MODES:
            errs.append(
                E.not_supported(
                    path,
                    mode,
                    detail=(
                        f"{E.UNSUPPORTED_BY_US}: a volume is a block device attached read-write to one "
                        'pod VM at a time; supported values: "ReadWriteOnce", "ReadOnlyMany"'
                    ),
                )
            )
        else:
            errs.append(E.not_supported(path, mode, ACCESS_MODES))


# -- claims ------------------------------------------------------------------------------------


def canonical_quantities(quantities: Any) -> None:
    if isinstance(quantities, dict):
        for k, v in quantities.items():
            with contextlib.suppress(ValueError):  # validation reports it
                quantities[k] = formats.canonical_quantity(v)


# -- volumes -----------------------------------------------------------------------------------


# -- classes -----------------------------------------------------------------------------------


def check_fs_type(value: Any, path: str, errs: Errs) -> None:
    if isinstance(value, str) and value and value not in FS_TYPES:
        errs.append(
            E.not_supported(
                path,
                value,
                detail=(
                    f"{E.UNSUPPORTED_BY_US}: a volume's filesystem is made by the control plane or "
                    "the node, never mounted on a host; supported values: "
                    + ", ".join(f'"{t}"' for t in FS_TYPES)
                ),
            )
        )


def _check_pool(value: Any, path: str, errs: Errs) -> None:
    if not isinstance(value, str) or not value:
        errs.append(E.required(path, "the Ceph pool the images go to"))
    elif not POOL_NAME.fullmatch(value):
        errs.append(E.invalid(path, value, "a Ceph pool name: letters, digits, '_', '.', '-'"))


def _check_features(value: Any, path: str, errs: Errs) -> None:
    errs.extend(E.invalid(path, value, msg) for msg in check_features(str(value)))


def check_rbd_parameters(params: JSON, errs: Errs) -> None:
    """A `rbd.hypernetes.io` class's parameters (docs/volumes.md, "Ceph RBD")."""
    for key, value in params.items():
        path = f"parameters[{key}]"
        if key not in PARAMETERS:
            errs.append(E.not_supported(path, key, PARAMETERS))
        elif key == IMAGE_FEATURES:
            _check_features(value, path, errs)
        elif key == FSTYPE:
            check_fs_type(value, path, errs)
        elif key.endswith("-secret-name") and value:
            errs.extend(E.invalid(path, value, m) for m in formats.dns1123_subdomain(str(value)))
        elif key.endswith("-secret-namespace") and value:
            errs.extend(E.invalid(path, value, m) for m in formats.dns1123_label(str(value)))
    _check_pool(params.get(POOL), f"parameters[{POOL}]", errs)
    for role in SECRET_ROLES:
        name, ns = secret_param(role, "name"), secret_param(role, "namespace")
        if role in REQUIRED_SECRETS or params.get(name) or params.get(ns):
            for key in (name, ns):
                if not params.get(key):
                    errs.append(
                        E.required(f"parameters[{key}]", "the Secret holding userID, userKey and monitors")
                    )


def check_rbd_source(csi: JSON, errs: Errs) -> None:
    """A `rbd.hypernetes.io` PV's spec.csi: the image, its pool, the node's Secret."""
    handle = csi.get("volumeHandle")
    if isinstance(handle, str) and (not IMAGE_NAME.fullmatch(handle) or ".." in handle):
        errs.append(
            E.invalid(
                "spec.csi.volumeHandle",
                handle,
                "an RBD image name: lower-case letters, digits, '-' and '.' (not '..'), starting "
                "with a letter or digit, at most 253 characters",
            )
        )
    check_fs_type(csi.get("fsType"), "spec.csi.fsType", errs)
    attrs = _d(csi.get("volumeAttributes"))
    for key, value in attrs.items():
        path = f"spec.csi.volumeAttributes[{key}]"
        if key not in RBD_ATTRIBUTES:
            errs.append(E.not_supported(path, key, RBD_ATTRIBUTES))
        elif key == IMAGE_FEATURES:
            _check_features(value, path, errs)
    _check_pool(attrs.get(POOL), f"spec.csi.volumeAttributes[{POOL}]", errs)
    for field in CSI_SECRETS:
        ref = csi.get(field)
        path = f"spec.csi.{field}"
        if field not in RBD_PV_SECRETS:
            if ref is not None:
                errs.append(
                    E.forbidden(path, "an RBD volume takes nodeStageSecretRef and controllerExpandSecretRef")
                )
            continue
        if ref is None:
            if field == "nodeStageSecretRef":
                errs.append(E.required(path, f"the Secret a node opens the image with ({NODE_SECRET})"))
            continue
        for part in ("name", "namespace"):
            if not _d(ref).get(part):
                errs.append(E.required(f"{path}.{part}"))


def check_no_secrets(csi: JSON, errs: Errs) -> None:
    """The local driver takes no secrets."""
    for field in CSI_SECRETS:
        if csi.get(field) is not None:
            errs.append(
                E.forbidden(
                    f"spec.csi.{field}",
                    f"{E.UNSUPPORTED_BY_US}: the local.hypernetes.io driver takes no secrets",
                )
            )
