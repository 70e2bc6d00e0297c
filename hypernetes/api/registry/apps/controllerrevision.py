"""ControllerRevision: an immutable snapshot of a StatefulSet's or DaemonSet's pod template, the
history `kubectl rollout history/undo` reads (upstream pkg/registry/apps/controllerrevision)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import APPS
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects.meta import controller_ref


def _validate(obj: JSON, errs: Errs) -> None:
    if obj.get("data") is None:
        errs.append(E.required("data", "data is mandatory"))
    rev = obj.get("revision")
    if isinstance(rev, int) and rev < 0:
        errs.append(E.invalid("revision", rev, "must be greater than or equal to 0"))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if new.get("data") != old.get("data"):
        errs.append(E.immutable("data"))


COLUMNS = (
    NAME,
    Column("Controller", "string", "", "Controller of the object"),
    Column("Revision", "string", "", "Revision indicates the revision of the state represented by Data."),
    AGE,
)


def _controller(obj: JSON) -> str:
    """upstream's printControllerRevision: `<kind>.<group>/<name>` of its controller."""
    ref = controller_ref(obj)
    if ref is None:
        return "<none>"
    group = str(ref.get("apiVersion") or "").rpartition("/")[0]
    kind_name = str(ref.get("kind") or "").lower()
    return f"{kind_name}.{group}/{ref.get('name')}" if group else f"{kind_name}/{ref.get('name')}"


def _row(obj: JSON, ctx: Context) -> list[Any]:
    rev = obj.get("revision")
    return [name_of(obj), _controller(obj), rev if isinstance(rev, int) else 0, age_of(obj, ctx)]


KIND = kind(
    APPS,
    "ControllerRevision",
    "controllerrevisions",
    defaults=no_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
