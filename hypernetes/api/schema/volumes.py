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

Errs = list[FieldError]

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
OUR_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany")
FS_TYPES = ("ext2", "ext3", "ext4")  # what resize2fs grows offline: the host never mounts a volume
FORMATS = ("raw", "qcow2")
LOCAL_PARAMETERS = ("fsType", "format")


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
