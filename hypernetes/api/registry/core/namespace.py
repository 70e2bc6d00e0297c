"""Namespace: where namespaced objects live; deleted through its finalizers (upstream
pkg/registry/core/namespace)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
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
    STANDARD_FINALIZERS,
    check_format,
)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import METADATA_NAME_LABEL


def _defaults(obj: JSON) -> None:
    meta = child(obj, "metadata")
    name = meta.get("name")
    if isinstance(name, str) and name:
        # forced, on create and update, as upstream's namespace strategy: namespace selectors trust it
        child(meta, "labels")[METADATA_NAME_LABEL] = name
    spec = child(obj, "spec")
    spec.setdefault("finalizers", ["kubernetes"])
    set_default(child(obj, "status"), "phase", "Active")


def _prepare_create(obj: JSON) -> None:
    """A new namespace is Active, whatever its body says, and finalized by the namespace
    controller (upstream's PrepareForCreate)."""
    child(obj, "spec").setdefault("finalizers", ["kubernetes"])
    child(obj, "status")["phase"] = "Active"


def _validate(obj: JSON, errs: Errs) -> None:
    for i, f in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        if isinstance(f, str) and "/" not in f and f not in STANDARD_FINALIZERS:
            errs.append(
                E.invalid(
                    f"spec.finalizers[{i}]",
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
        elif isinstance(f, str) and "/" in f:
            check_format(f"spec.finalizers[{i}]", f, formats.qualified_name(f), errs)


COLUMNS = (
    NAME,
    Column("Status", "string", "", "The status of the namespace"),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), _d(obj.get("status")).get("phase", ""), age_of(obj, ctx)]


KIND = kind(
    CORE,
    "Namespace",
    "namespaces",
    namespaced=False,
    short=("ns",),
    subs=("status", "finalize"),
    # no deletecollection upstream; status and finalize drive a namespace's deletion
    verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    prepare_create=_prepare_create,
    defaults=_defaults,
    validate=_validate,
    name_format=formats.dns1123_label,
    field_selectors={
        "status.phase": "status.phase",
    },
    printer=Printer(COLUMNS, _row),
)
