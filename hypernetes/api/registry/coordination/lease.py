"""Lease: node heartbeats and leader election."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import COORDINATION
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
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
    non_negative,
)
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    d = spec.get("leaseDurationSeconds")
    if isinstance(d, int) and d <= 0:
        errs.append(E.invalid("spec.leaseDurationSeconds", d, "must be greater than 0"))
    non_negative(spec, ("leaseTransitions",), errs)


COLUMNS = (
    NAME,
    Column("Holder", "string", "", "holderIdentity contains the identity of the holder of a current lease."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), _d(obj.get("spec")).get("holderIdentity") or "", age_of(obj, ctx)]


KIND = kind(
    COORDINATION,
    "Lease",
    "leases",
    defaults=no_defaults,
    validate=_validate,
    printer=Printer(COLUMNS, _row),
)
