"""Secret: credentials and keys for pods; its type fixes the keys it must hold."""

from __future__ import annotations

import base64
from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, set_default
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)
from hypernetes.api.schema.validation import (
    data_keys,
    immutable_data,
)
from hypernetes.objects import Obj as JSON


def _defaults(obj: JSON) -> None:
    set_default(obj, "type", "Opaque")
    # v1 conversion folds the write-only stringData into data
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict) and sd:
        data = child(obj, "data")
        for k, v in sd.items():
            if isinstance(v, str):
                data[k] = base64.b64encode(v.encode()).decode()


_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _validate(obj: JSON, errs: Errs) -> None:
    data_keys(obj, ("data", "stringData"), errs)
    stype = obj.get("type") or "Opaque"
    keys = set(_d(obj.get("data"))) | set(_d(obj.get("stringData")))
    for k in _SECRET_KEYS.get(stype, ()):
        if k not in keys:
            errs.append(E.required(f"data[{k}]"))
    if stype == "kubernetes.io/service-account-token" and not _d(
        _d(obj.get("metadata")).get("annotations")
    ).get("kubernetes.io/service-account.name"):
        errs.append(E.required("metadata.annotations[kubernetes.io/service-account.name]"))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if (new.get("type") or "Opaque") != (old.get("type") or "Opaque"):
        errs.append(E.immutable("type"))
    immutable_data(new, old, ("data",), errs)


COLUMNS = (
    NAME,
    Column("Type", "string", "", "Used to facilitate programmatic handling of secret data."),
    Column("Data", "string", "", "Data contains the secret data."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), obj.get("type") or "Opaque", len(_d(obj.get("data"))), age_of(obj, ctx)]


KIND = kind(
    CORE,
    "Secret",
    "secrets",
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    field_selectors={
        "type": "type",
    },
    printer=Printer(COLUMNS, _row),
)
