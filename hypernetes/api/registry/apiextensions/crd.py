"""CustomResourceDefinition (apiextensions.k8s.io/v1): as upstream's apiextensions-apiserver
validates and defaults it (ValidateCustomResourceDefinition, SetDefaults_*), with the status its
controllers keep (acceptedNames, the NamesAccepted and Established conditions, storedVersions)
set by the API server on every write. A CRD's objects are served by hypernetes/api/customresources.

Refused beyond upstream, with the reason: conversion webhooks (versions convert by apiVersion
only), groups of built-in kinds, and groups upstream protects (*.k8s.io, *.kubernetes.io)
without the api-approved.kubernetes.io annotation."""

from __future__ import annotations

import copy
from typing import Any

from hypernetes.api.customresources.schema import structural_errors
from hypernetes.api.objects import now
from hypernetes.api.registry.apiextensions.definitions import DEFINITIONS, P
from hypernetes.api.registry.kind import Errs, Group, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import Column, Context, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects.formats import dns1035_label, dns1123_subdomain

APIEXTENSIONS = Group(
    "apiextensions.k8s.io", "Apiextensions", "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions"
)
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
APPROVAL = "api-approved.kubernetes.io"
SCOPES = ("Cluster", "Namespaced")
_PROTECTED = ("k8s.io", "kubernetes.io")


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _defaults(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    names = _d(spec.get("names"))
    kind_name = names.get("kind")
    if isinstance(kind_name, str) and kind_name:
        names.setdefault("singular", kind_name.lower())
        names.setdefault("listKind", kind_name + "List")
    if not isinstance(spec.get("conversion"), dict):
        spec["conversion"] = {"strategy": "None"}


def _builtin_groups() -> frozenset[str]:
    from hypernetes.api.registry import builtin_groups  # the registry lists this entry: import late

    return builtin_groups()


def _joined(field: str, v: str, msgs: list[str], errs: Errs, prefix: str = "") -> None:
    """Upstream joins a name's format errors into one, with ","."""
    if msgs:
        errs.append(E.invalid(field, v, prefix + ",".join(msgs)))


def _names(names: JSON, path: str, errs: Errs) -> None:
    """The spec's required names, then ValidateCustomResourceDefinitionNames."""
    for f in ("plural", "singular", "kind", "listKind"):
        if not names.get(f):
            errs.append(E.required(f"{path}.{f}"))
    for f in ("plural", "singular"):
        v = names.get(f)
        if isinstance(v, str) and v:
            _joined(f"{path}.{f}", v, dns1035_label(v), errs)
    for f in ("kind", "listKind"):
        v = names.get(f)
        if isinstance(v, str) and v:
            _joined(
                f"{path}.{f}",
                v,
                dns1035_label(v.lower()),
                errs,
                "may have mixed case, but should otherwise match: ",
            )
    for f in ("shortNames", "categories"):
        for i, v in enumerate(_l(names.get(f))):
            if isinstance(v, str):
                _joined(f"{path}.{f}[{i}]", v, dns1035_label(v), errs)
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(E.invalid(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same"))


_COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")  # printerColumnDatatypes, sorted
_COLUMN_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")


def _json_path(path: str, v: Any, errs: Errs) -> bool:
    """validateSimpleJSONPath; whether it passed."""
    if v == "" or v is None:
        errs.append(E.invalid(path, "", "must not be empty"))
    elif isinstance(v, str) and not v.startswith("."):
        errs.append(E.invalid(path, v, "must be a simple json path starting with ."))
    else:
        return True
    return False


def _scale(scale: JSON, path: str, errs: Errs) -> None:
    """ValidateCustomResourceDefinitionSubresources' scale: replicas paths required, under .spec and
    .status; a label selector path under either."""
    for f, under in (("specReplicasPath", ".spec."), ("statusReplicasPath", ".status.")):
        p, fp = scale.get(f), f"{path}.{f}"
        if not p:
            errs.append(E.required(fp))
        elif _json_path(fp, p, errs) and not str(p).startswith(under):
            errs.append(E.invalid(fp, p, f"should be a json path under {under.rstrip('.')}"))
    sel, fp = scale.get("labelSelectorPath"), f"{path}.labelSelectorPath"
    if sel and _json_path(fp, sel, errs) and not str(sel).startswith((".spec.", ".status.")):
        errs.append(E.invalid(fp, sel, "should be a json path under either .spec or .status"))


def _column(c: JSON, path: str, errs: Errs) -> None:
    """ValidateCustomResourceColumnDefinition, at the internal type's paths (JSONPath)."""
    if not c.get("name"):
        errs.append(E.required(f"{path}.name"))
    t = c.get("type")
    if not t:
        errs.append(E.required(f"{path}.type", "must be one of " + ",".join(_COLUMN_TYPES)))
    elif t not in _COLUMN_TYPES:
        errs.append(E.invalid(f"{path}.type", t, "must be one of " + ",".join(_COLUMN_TYPES)))
    f = c.get("format")
    if f and f not in _COLUMN_FORMATS:
        errs.append(E.invalid(f"{path}.format", f, "must be one of " + ",".join(_COLUMN_FORMATS)))
    jp = c.get("jsonPath")
    if not jp:
        errs.append(E.required(f"{path}.JSONPath"))
    else:
        _json_path(f"{path}.JSONPath", jp, errs)


def _version(v: JSON, path: str, errs: Errs) -> None:
    name = v.get("name")
    if isinstance(name, str):
        _joined(f"{path}.name", name, dns1035_label(name), errs)
    schema = _d(v.get("schema")).get("openAPIV3Schema")
    if schema is None:
        errs.append(E.required(f"{path}.schema.openAPIV3Schema", "schemas are required"))
    else:
        structural_errors(schema, f"{path}.schema.openAPIV3Schema", errs)
    scale = _d(v.get("subresources")).get("scale")
    if isinstance(scale, dict):
        _scale(scale, f"{path}.subresources.scale", errs)
    for i, col in enumerate(_l(v.get("additionalPrinterColumns"))):
        _column(_d(col), f"{path}.additionalPrinterColumns[{i}]", errs)


def _validate(obj: JSON, errs: Errs) -> None:
    meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    group, names = spec.get("group"), _d(spec.get("names"))
    if not group:
        errs.append(E.required("spec.group"))
    elif isinstance(group, str):
        bad = dns1123_subdomain(group)
        _joined("spec.group", group, bad, errs)
        if bad:
            pass
        elif "." not in group:
            errs.append(E.invalid("spec.group", group, "should be a domain with at least one dot"))
        elif group in _builtin_groups():
            errs.append(E.invalid("spec.group", group, "is the group of built-in kinds"))
        elif any(group == p or group.endswith("." + p) for p in _PROTECTED) and not _d(
            meta.get("annotations")
        ).get(APPROVAL):
            errs.append(
                E.required(
                    f"metadata.annotations[{APPROVAL}]",
                    f'protected groups must have approval annotation "{APPROVAL}", see '
                    "https://github.com/kubernetes/enhancements/pull/1111",
                )
            )
        plural = names.get("plural")
        if meta.get("name") and meta.get("name") != f"{plural}.{group}":
            errs.append(E.invalid("metadata.name", meta["name"], 'must be spec.names.plural+"."+spec.group'))
    _names(names, "spec.names", errs)
    scope = spec.get("scope")
    if not scope:
        errs.append(E.required("spec.scope"))
    elif scope not in SCOPES:
        errs.append(E.not_supported("spec.scope", scope, SCOPES))
    versions = _l(spec.get("versions"))
    for i, v in enumerate(versions):
        _version(_d(v), f"spec.versions[{i}]", errs)
    names_of = [_d(v).get("name") for v in versions]
    if len(set(map(str, names_of))) != len(names_of):
        errs.append(E.invalid("spec.versions", _summary(versions), "must contain unique version names"))
    if len([v for v in versions if _d(v).get("storage") is True]) != 1:
        errs.append(
            E.invalid(
                "spec.versions", _summary(versions), "must have exactly one version marked as storage version"
            )
        )
    strategy = _d(spec.get("conversion")).get("strategy")
    if strategy not in (None, "None"):
        errs.append(
            E.not_supported(
                "spec.conversion.strategy",
                strategy,
                detail=f'{E.UNSUPPORTED_BY_US}; supported values: "None" '
                "(versions differ in apiVersion only)",
            )
        )
    if spec.get("preserveUnknownFields") is True:  # validatePreserveUnknownFields (v1)
        errs.append(
            E.invalid(
                "spec.preserveUnknownFields",
                True,
                "cannot set to true, set x-preserve-unknown-fields to true in spec.versions[*].schema "
                "instead",
            )
        )
    _as_upstream(errs)


def _as_upstream(errs: Errs) -> None:
    """The schema walk's Required errors (v1 paths) where this validation reports upstream's own:
    a column's missing jsonPath is upstream's `JSONPath` (its internal type's field), and a
    scale path's Required is said once."""
    seen: set[E.FieldError] = set()
    mine = {e.field.removesuffix(".JSONPath") for e in errs if e.field.endswith(".JSONPath")}
    kept = []
    for e in errs:
        dup = e in seen or (e.type == E.REQUIRED and e.field.removesuffix(".jsonPath") in mine)
        if not dup:
            kept.append(e)
        seen.add(e)
    errs[:] = kept


def _summary(versions: list[Any]) -> str:
    return ", ".join(str(_d(v).get("name")) for v in versions)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    """validateCustomResourceDefinitionSpecUpdate (the CRD is established at once, so its scope
    and kind are fixed too) and ValidateCustomResourceDefinitionStoredVersions."""
    ns, os_ = _d(new.get("spec")), _d(old.get("spec"))
    nn, on = _d(ns.get("names")), _d(os_.get("names"))
    for field, now_, was in (
        ("spec.scope", ns.get("scope"), os_.get("scope")),
        ("spec.names.kind", nn.get("kind"), on.get("kind")),
        ("spec.group", ns.get("group"), os_.get("group")),
        ("spec.names.plural", nn.get("plural"), on.get("plural")),
    ):
        if now_ != was:
            errs.append(E.invalid(field, now_, "field is immutable"))
    stored = _l(_d(new.get("status")).get("storedVersions"))
    served = {_d(v).get("name") for v in _l(ns.get("versions"))}
    for i, v in enumerate(stored):
        if v not in served:
            errs.append(
                E.invalid(
                    f"status.storedVersions[{i}]",
                    v,
                    f"missing from spec.versions; {v} was previously a storage version, and must remain in "
                    f"spec.versions until a storage migration ensures no data remains persisted in {v} and "
                    f"removes {v} from status.storedVersions",
                )
            )


def _condition(ctype: str, reason: str, message: str, old: JSON | None) -> JSON:
    prev = next(
        (c for c in _l(_d(_d(old).get("status")).get("conditions")) if _d(c).get("type") == ctype), None
    )
    cond = {
        "type": ctype,
        "status": "True",
        "lastTransitionTime": now(),
        "reason": reason,
        "message": message,
    }
    if isinstance(prev, dict) and prev.get("status") == "True" and prev.get("lastTransitionTime"):
        cond["lastTransitionTime"] = prev["lastTransitionTime"]
    return cond


def _status(obj: JSON, old: JSON | None) -> None:
    """What upstream's naming and establishing controllers write: the names are accepted (a CRD's
    name is plural.group, unique by construction), established at once, and every storage
    version kept in storedVersions."""
    spec = _d(obj.get("spec"))
    status = obj["status"] = copy.deepcopy(_d(_d(old).get("status")))
    names = _d(spec.get("names"))
    status["acceptedNames"] = {k: copy.deepcopy(v) for k, v in names.items()}
    conditions = [
        _condition("NamesAccepted", "NoConflicts", "no conflicts found", old),
        _condition("Established", "InitialNamesAccepted", "the initial names have been accepted", old),
    ]
    terminating = [c for c in _l(status.get("conditions")) if _d(c).get("type") == "Terminating"]
    status["conditions"] = conditions + terminating
    stored = [v for v in _l(status.get("storedVersions")) if isinstance(v, str)]
    for v in _l(spec.get("versions")):
        name = _d(v).get("name")
        if _d(v).get("storage") is True and isinstance(name, str) and name not in stored:
            stored.append(name)
    status["storedVersions"] = stored


def _prepare_create(obj: JSON) -> None:
    _defaults(obj)  # (prepare_create runs before the defaults: the accepted names are the defaulted ones)
    finalizers = obj.setdefault("metadata", {}).setdefault("finalizers", [])
    if isinstance(finalizers, list) and CLEANUP_FINALIZER not in finalizers:
        finalizers.append(CLEANUP_FINALIZER)  # its objects go before it does (customresources)
    _status(obj, None)


def _prepare_update(obj: JSON, old: JSON) -> None:
    _status(obj, old)


COLUMNS = (
    Column("Name", "string", "name", "Name must be unique within a namespace."),
    Column(
        "Created At",
        "date",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), _d(obj.get("metadata")).get("creationTimestamp", "")]


KIND = kind(
    APIEXTENSIONS,
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
    short=("crd", "crds"),
    cats=("api-extensions",),
    subs=("status",),
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    prepare_create=_prepare_create,
    prepare_update=_prepare_update,
    printer=Printer(COLUMNS, _row),
    definitions={k: v for k, v in DEFINITIONS.items() if k.startswith(P)},
)
