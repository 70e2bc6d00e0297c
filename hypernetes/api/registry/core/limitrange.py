"""LimitRange: a namespace's defaults and bounds for containers, pods and claims (upstream
pkg/registry/core/limitrange, pkg/apis/core/validation ValidateLimitRange, v1 defaults).
Enforced by admission (auth/limitranger.py). No printer upstream: `kubectl get limits` shows the
default table (Name, Created At), spelled out here."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema import resourcenames as names
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import dicts
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, name_of
from hypernetes.api.schema.volumes import canonical_quantities
from hypernetes.objects import Obj as JSON
from hypernetes.objects.quantity import Quantity, QuantityError

FIELDS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


def _defaults(obj: JSON) -> None:
    """SetDefaults_LimitRangeItem: a container's default limit is its max, its default request
    the default limit, else its min. Quantities are stored canonical ("2000m" is "2"), as the
    Go types write them back."""
    for item in dicts(_d(obj.get("spec")).get("limits")):
        for field in FIELDS:
            canonical_quantities(item.get(field))
        if item.get("type") != "Container":
            continue
        default = dict(_d(item.get("default")))
        request = dict(_d(item.get("defaultRequest")))
        for k, v in _d(item.get("max")).items():
            default.setdefault(k, v)
        for k, v in default.items():
            request.setdefault(k, v)
        for k, v in _d(item.get("min")).items():
            request.setdefault(k, v)
        if default:
            item["default"] = default
        if request:
            item["defaultRequest"] = request


def _q(v: Any) -> Quantity | None:
    try:
        return Quantity.from_json(v)
    except QuantityError:
        return None  # the schema walk reports it


def _type_name(ltype: str, path: str, errs: Errs) -> None:
    """validateLimitRangeTypeName: a qualified name, and unprefixed only if a standard type."""
    msgs = formats.qualified_name(ltype)
    errs.extend(E.invalid(path, ltype, msg) for msg in msgs)
    if not msgs and "/" not in ltype and ltype not in names.STANDARD_LIMIT_RANGE_TYPES:
        errs.append(E.invalid(path, ltype, "must be a standard limit type or fully qualified"))


def _resource_name(ltype: str, name: str, path: str, errs: Errs) -> None:
    """validateLimitRangeResourceName: container resources for Pod and Container limits."""
    if ltype in ("Pod", "Container"):
        errs.extend(names.container_resource_name(name, path))
    else:
        errs.extend(names.resource_name(name, path))


def _validate(obj: JSON, errs: Errs) -> None:
    seen: set[str] = set()
    for i, item in enumerate(dicts(_d(obj.get("spec")).get("limits"))):
        p = f"spec.limits[{i}]"
        ltype = str(item.get("type") or "")
        if not ltype:
            errs.append(E.required(f"{p}.type"))
        else:
            _type_name(ltype, f"{p}.type", errs)
            if ltype in seen:
                errs.append(E.duplicate(f"{p}.type", ltype))
            seen.add(ltype)
        q: dict[str, dict[str, Quantity]] = {}
        for field in FIELDS:
            q[field] = {}
            if ltype == "Pod" and field in ("default", "defaultRequest"):
                continue  # forbidden below, not otherwise checked (upstream)
            for k, v in _d(item.get(field)).items():
                _resource_name(ltype, k, f"{p}.{field}[{k}]", errs)
                parsed = _q(v)
                if parsed is None:
                    continue
                if parsed.sign() < 0:
                    errs.append(E.invalid(f"{p}.{field}[{k}]", v, "must be greater than or equal to 0"))
                q[field][k] = parsed
        if ltype == "Pod":
            for field in ("default", "defaultRequest"):
                if _d(item.get(field)):
                    errs.append(E.forbidden(f"{p}.{field}", "may not be specified when `type` is 'Pod'"))
        if ltype == "PersistentVolumeClaim" and "storage" not in q["min"] and "storage" not in q["max"]:
            errs.append(
                E.required(
                    f"{p}.limits",
                    "either minimum or maximum storage value is required, but neither was provided",
                )
            )
        keys = set().union(*(q[f] for f in FIELDS))
        for k in sorted(keys):
            lo, hi = q["min"].get(k), q["max"].get(k)
            dflt, dreq, ratio = (
                q["default"].get(k),
                q["defaultRequest"].get(k),
                q["maxLimitRequestRatio"].get(k),
            )
            if lo is not None and hi is not None and lo > hi:
                errs.append(
                    E.invalid(f"{p}.min[{k}]", str(lo), f"min value {lo} is greater than max value {hi}")
                )
            if dreq is not None and lo is not None and lo > dreq:
                errs.append(
                    E.invalid(
                        f"{p}.defaultRequest[{k}]",
                        str(dreq),
                        f"min value {lo} is greater than default request value {dreq}",
                    )
                )
            if dreq is not None and hi is not None and dreq > hi:
                errs.append(
                    E.invalid(
                        f"{p}.defaultRequest[{k}]",
                        str(dreq),
                        f"default request value {dreq} is greater than max value {hi}",
                    )
                )
            if dreq is not None and dflt is not None and dreq > dflt:
                errs.append(
                    E.invalid(
                        f"{p}.defaultRequest[{k}]",
                        str(dreq),
                        f"default request value {dreq} is greater than default limit value {dflt}",
                    )
                )
            if dflt is not None and lo is not None and lo > dflt:
                errs.append(
                    E.invalid(
                        f"{p}.default[{k}]", str(lo), f"min value {lo} is greater than default value {dflt}"
                    )
                )
            if dflt is not None and hi is not None and dflt > hi:
                errs.append(
                    E.invalid(
                        f"{p}.default[{k}]", str(hi), f"default value {dflt} is greater than max value {hi}"
                    )
                )
            if ratio is not None and ratio < Quantity(1):
                errs.append(
                    E.invalid(f"{p}.maxLimitRequestRatio[{k}]", str(ratio), f"ratio {ratio} is less than 1")
                )
            if ratio is not None and lo is not None and hi is not None and lo.milli_value() > 0:
                bound = hi.milli_value() / lo.milli_value()
                if ratio.milli_value() / 1000 > bound:
                    errs.append(
                        E.invalid(
                            f"{p}.maxLimitRequestRatio[{k}]",
                            str(ratio),
                            f"ratio {ratio} is greater than max/min = {bound:f}",
                        )
                    )
            # resources that may not be overcommitted (hugepages, extended): default == request
            if not names.is_overcommit_allowed(k) and dflt is not None and dreq is not None and dflt != dreq:
                errs.append(
                    E.invalid(
                        f"{p}.defaultRequest[{k}]",
                        str(dreq),
                        f"default value {dflt} must equal to defaultRequest value {dreq} in {k}",
                    )
                )


# rest.NewDefaultTableConvertor's columns and cells: the creation time as RFC 3339, not an age
COLUMNS = (NAME, Column("Created At", "date", "", AGE.description))


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), _d(obj.get("metadata")).get("creationTimestamp") or ""]


KIND = kind(
    CORE,
    "LimitRange",
    "limitranges",
    short=("limits",),
    defaults=_defaults,
    validate=_validate,
    printer=Printer(COLUMNS, _row),
)
