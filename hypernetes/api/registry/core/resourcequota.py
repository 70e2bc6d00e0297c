"""ResourceQuota: hard limits on what one namespace may hold (upstream pkg/registry/core/
resourcequota, ValidateResourceQuota). Enforced by admission (auth/namespacequota.py) within the
tenant's own quota; status.used is the ResourceQuota controller's (controllers/resourcequota.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
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
# what a scoped quota may track: pod counts under BestEffort, compute resources too under the others
POD_COUNTS = ("pods", "count/pods")
POD_COMPUTE = (
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "ephemeral-storage",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
)
# integer-valued resources (IsIntegerResourceName)
INTEGER = (
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
)


def _quantities(values: Any, path: str, errs: Errs) -> None:
    for k, v in _d(values).items():
        p = f"{path}[{k}]"
        if "/" in k and not k.startswith("count/"):
            for msg in formats.qualified_name(k):
                errs.append(E.invalid(p, k, msg))
        try:
            q = Quantity.from_json(v)
        except QuantityError:
            continue  # the schema walk reports it
        if q.sign() < 0:
            errs.append(E.invalid(p, v, "must be greater than or equal to 0"))
        if (k in INTEGER or k.startswith("count/")) and q.amount != q.amount.to_integral_value():
            errs.append(E.invalid(p, v, "must be an integer"))


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _quantities(spec.get("hard"), "spec.hard", errs)
    scopes = [str(s) for s in _l(spec.get("scopes"))]
    for s in scopes:
        if s not in SCOPES:
            errs.append(E.not_supported("spec.scopes", s, SCOPES))
        elif s in ("PriorityClass", "CrossNamespacePodAffinity"):
            errs.append(
                E.forbidden(
                    "spec.scopes",
                    f"{s}: {E.UNSUPPORTED_BY_US} (no PriorityClass API, no pod affinity across namespaces)",
                )
            )
    for a, b in (("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating")):
        if a in scopes and b in scopes:
            errs.append(E.invalid("spec.scopes", scopes, "conflicting scopes"))
    allowed = POD_COUNTS if "BestEffort" in scopes else POD_COUNTS + POD_COMPUTE
    if scopes:
        for k in _d(spec.get("hard")):
            if k not in allowed:
                errs.append(E.invalid("spec.hard", k, "unsupported scope applied to resource"))
    if spec.get("scopeSelector") is not None:
        errs.append(E.forbidden("spec.scopeSelector", f"{E.UNSUPPORTED_BY_US}: use spec.scopes"))
    status = _d(obj.get("status"))
    _quantities(status.get("hard"), "status.hard", errs)
    _quantities(status.get("used"), "status.used", errs)


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
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    used, hard = _d(status.get("used")), _d(status.get("hard"))
    requests: list[str] = []
    limits: list[str] = []
    for name in sorted(_d(spec.get("hard"))):
        cell = f"{name}: {used.get(name, '0')}/{hard.get(name, '0')}"
        pieces = name.split(".")
        (limits if len(pieces) > 1 and pieces[0] == "limits" else requests).append(cell)
    return [name_of(obj), age_of(obj, ctx), ", ".join(requests), ", ".join(limits)]


KIND = kind(
    CORE,
    "ResourceQuota",
    "resourcequotas",
    short=("quota",),
    subs=("status",),
    defaults=no_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    printer=Printer(COLUMNS, _row),
)
