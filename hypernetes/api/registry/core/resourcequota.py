"""ResourceQuota: hard limits on what one namespace may hold (upstream pkg/registry/core/
resourcequota, ValidateResourceQuota). Enforced by admission (auth/namespacequota.py) within the
tenant's own quota; status.used is the ResourceQuota controller's (controllers/resourcequota.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import resourcenames as names
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.api.schema.volumes import canonical_quantities
from hypernetes.objects import Obj as JSON
from hypernetes.objects.quantity import Quantity, QuantityError

SCOPES = (
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
)


def _quantities(values: Any, path: str, errs: Errs) -> None:
    """Each key a quota resource name, each value non-negative and whole where it counts
    (ValidateResourceQuotaResourceName, ValidateResourceQuantityValue)."""
    for k, v in _d(values).items():
        p = f"{path}[{k}]"
        errs.extend(names.quota_resource_name(k, p))
        try:
            q = Quantity.from_json(v)
        except QuantityError:
            continue  # the schema walk reports it
        if q.sign() < 0:
            errs.append(E.invalid(p, str(q), "must be greater than or equal to 0"))
        if names.is_integer(k) and q.amount != q.amount.to_integral_value():
            errs.append(E.invalid(p, v, "must be an integer"))


def _scopes(spec: JSON, errs: Errs) -> None:
    """validateResourceQuotaScopes: errors name spec.scopes and show the whole list."""
    scopes = [str(s) for s in _l(spec.get("scopes"))]
    if not scopes:
        return
    hard = sorted(_d(spec.get("hard")))
    for s in scopes:
        if s not in SCOPES:
            errs.append(E.invalid("spec.scopes", scopes, "unsupported scope"))
        elif s in ("PriorityClass", "CrossNamespacePodAffinity"):
            errs.append(
                E.forbidden(
                    "spec.scopes",
                    f"{s}: {E.UNSUPPORTED_BY_US} (no PriorityClass API, no pod affinity across namespaces)",
                )
            )
        for k in hard:
            if names.is_standard_quota(k) and not names.scope_allows(s, k):
                errs.append(E.invalid("spec.scopes", scopes, "unsupported scope applied to resource"))
    for a, b in (("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating")):
        if a in scopes and b in scopes:
            errs.append(E.invalid("spec.scopes", scopes, "conflicting scopes"))


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _quantities(spec.get("hard"), "spec.hard", errs)
    _scopes(spec, errs)
    if spec.get("scopeSelector") is not None:
        errs.append(E.forbidden("spec.scopeSelector", f"{E.UNSUPPORTED_BY_US}: use spec.scopes"))
    status = _d(obj.get("status"))
    _quantities(status.get("hard"), "status.hard", errs)
    _quantities(status.get("used"), "status.used", errs)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """ValidateResourceQuotaUpdate: the scopes (as a set) may not change."""
    scopes = [str(s) for s in _l(_d(new.get("spec")).get("scopes"))]
    if sub != "status" and set(scopes) != {str(s) for s in _l(_d(old.get("spec")).get("scopes"))}:
        errs.append(E.invalid("spec.scopes", scopes, "field is immutable"))


def _defaults(obj: JSON) -> None:
    """Quantities stored canonical ("1000m" is "1"), as the Go types write them back."""
    canonical_quantities(_d(obj.get("spec")).get("hard"))
    status = _d(obj.get("status"))
    canonical_quantities(status.get("hard"))
    canonical_quantities(status.get("used"))


def _prepare_create(obj: JSON) -> None:
    obj["status"] = {}  # the controller fills hard and used


COLUMNS = (
    NAME,
    AGE,
    Column(
        "Request",
        "string",
        "",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    Column(
        "Limit",
        "string",
        "",
        "Limits control the maximum amount of cpu/memory that a container may use independent of "
        "contention on the node.",
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    status = _d(obj.get("status"))
    used, hard = _d(status.get("used")), _d(status.get("hard"))
    requests: list[str] = []
    limits: list[str] = []
    # printResourceQuota walks status.hard: nothing until the controller has taken the quota up
    for name in sorted(hard):
        cell = f"{name}: {used.get(name, '0')}/{hard[name]}"
        pieces = name.split(".")
        (limits if len(pieces) > 1 and pieces[0] == "limits" else requests).append(cell)
    return [name_of(obj), age_of(obj, ctx), ", ".join(requests), ", ".join(limits)]


KIND = kind(
    CORE,
    "ResourceQuota",
    "resourcequotas",
    short=("quota",),
    subs=("status",),
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    prepare_create=_prepare_create,
    printer=Printer(COLUMNS, _row),
)
