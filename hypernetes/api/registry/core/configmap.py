"""ConfigMap: configuration data for pods; immutable once `immutable` is set."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema.access import as_dict as _d
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


def _validate(obj: JSON, errs: Errs) -> None:
    data_keys(obj, ("data", "binaryData"), errs)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    immutable_data(new, old, ("data", "binaryData"), errs)


COLUMNS = (NAME, Column("Data", "string", "", "Data contains the configuration data."), AGE)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), len(_d(obj.get("data"))) + len(_d(obj.get("binaryData"))), age_of(obj, ctx)]


KIND = kind(
    CORE,
    "ConfigMap",
    "configmaps",
    short=("cm",),
    defaults=no_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
