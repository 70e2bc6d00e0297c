"""IngressClass: which controller serves the Ingresses naming it (operators'; cluster-scoped).
Hypernetes' own controller is `hypernetes.io/ingress` (hypernetes/network/ingress.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import NETWORKING
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    controller = _d(obj.get("spec")).get("controller")
    if isinstance(controller, str) and controller:
        if len(controller) > 250:
            errs.append(E.too_long("spec.controller", 250))
        errs.extend(
            E.invalid("spec.controller", controller, m) for m in formats.qualified_name(controller.lower())
        )


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if _d(new.get("spec")).get("controller") != _d(old.get("spec")).get("controller"):
        errs.append(E.immutable("spec.controller"))


def _parameters(spec: JSON) -> str:
    p = spec.get("parameters")
    if not isinstance(p, dict):
        return "<none>"
    kind_ = str(p.get("kind") or "")
    if p.get("apiGroup"):
        kind_ += f".{p['apiGroup']}"
    return f"{kind_}/{p.get('name') or ''}"


COLUMNS = (
    NAME,
    Column("Controller", "string", "", "Controller that is responsible for handling this class."),
    Column("Parameters", "string", "", "A reference to a resource with additional parameters."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [name_of(obj), spec.get("controller") or "", _parameters(spec), age_of(obj, ctx)]


KIND = kind(
    NETWORKING,
    "IngressClass",
    "ingressclasses",
    namespaced=False,
    defaults=no_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
