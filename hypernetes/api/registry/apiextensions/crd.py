"""CustomResourceDefinition (apiextensions.k8s.io/v1): as upstream's apiextensions-apiserver
validates and defaults it (ValidateCustomResourceDefinition, SetDefaults_*), with the status its
controllers keep (acceptedNames, the NamesAccepted and Established conditions, storedVersions)
set by the API server on every write. A CRD's objects are served by hypernetes/api/customresources.

Refused beyond upstream, with the reason: conversion webhooks (versions convert by apiVersion
only), groups of built-in kinds, and groups upstream protects (*.k8s.io, *.kubernetes.io)
without the api-approved.kubernetes.io annotation."""

from __future__ import annotations

import copy
import re
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
_KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
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


def _names(names: JSON, path: str, errs: Errs) -> None:
    for f in ("plural", "singular"):
        v = names.get(f)
        if not v and f == "plural":
            errs.append(E.required(f"{path}.plural"))
        elif isinstance(v, str) and v:
            errs.extend(E.invalid(f"{path}.{f}", v, m) for m in dns1035_label(v))
    for f in ("kind", "listKind"):
        v = names.get(f)
        if not v:
            errs.append(E.required(f"{path}.{f}"))
        elif isinstance(v, str) and not _KIND.fullmatch(v):
            errs.append(
                E.invalid(
                    f"{path}.{f}",
                    v,
                    "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
                )
            )
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(E.invalid(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same"))
    for f in ("shortNames", "categories"):
        seen: set[str] = set()
        for i, v in enumerate(_l(names.get(f))):
            if isinstance(v, str):
                errs.extend(E.invalid(f"{path}.{f}[{i}]", v, m) for m in dns1035_label(v))
                if v in seen:
                    errs.append(E.duplicate(f"{path}.{f}[{i}]", v))
                seen.add(v)


def _version(v: JSON, path: str, errs: Errs) -> None:
    name = v.get("name")
    if isinstance(name, str) and name:
        errs.extend(E.invalid(f"{path}.name", name, m) for m in dns1035_label(name))
    schema = _d(v.get("schema")).get("openAPIV3Schema")
    if schema is None:
        errs.append(E.required(f"{path}.schema.openAPIV3Schema", "schemas are required"))
    else:
        structural_errors(schema, f"{path}.schema.openAPIV3Schema", errs)
    subs = _d(v.get("subresources"))
    scale = subs.get("scale")
    if isinstance(scale, dict):
        for f in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
            p = scale.get(f)
            if p is None:
                continue
            if not isinstance(p, str) or not p.startswith("."):
                errs.append(
                    E.invalid(
                        f"{path}.subresources.scale.{f}", p, "should be a json path under .spec or .status"
                    )
                )
            elif f == "specReplicasPath" and not p.startswith(".spec."):
                errs.append(
                    E.invalid(f"{path}.subresources.scale.{f}", p, "should be a json path under .spec")
                )
            elif f == "statusReplicasPath" and not p.startswith(".status."):
                errs.append(
                    E.invalid(f"{path}.subresources.scale.{f}", p, "should be a json path under .status")
                )
    for i, col in enumerate(_l(v.get("additionalPrinterColumns"))):
        c, cp = _d(col), f"{path}.additionalPrinterColumns[{i}]"
        t = c.get("type")
        if t is not None and t not in ("integer", "number", "string", "boolean", "date"):
            errs.append(E.not_supported(f"{cp}.type", t, ("boolean", "date", "integer", "number", "string")))
        jp = c.get("jsonPath")
        if isinstance(jp, str) and not jp.startswith("."):
            errs.append(E.invalid(f"{cp}.jsonPath", jp, "must be a simple json path starting with ."))
        if isinstance(c.get("priority"), int) and c["priority"] < 0:
            errs.append(E.invalid(f"{cp}.priority", c["priority"], "must be greater than or equal to 0"))


def _validate(obj: JSON, errs: Errs) -> None:
    meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    group, names = spec.get("group"), _d(spec.get("names"))
    if not group:
        errs.append(E.required("spec.group"))
    elif isinstance(group, str):
        errs.extend(E.invalid("spec.group", group, m) for m in dns1123_subdomain(group))
        if "." not in group:
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
    if not versions:
        errs.append(E.required("spec.versions", "must have exactly one version marked as storage version"))
    seen: set[str] = set()
    for i, v in enumerate(versions):
        v = _d(v)
        if v.get("name") in seen:
            errs.append(E.duplicate(f"spec.versions[{i}].name", v.get("name")))
        seen.add(str(v.get("name")))
        _version(v, f"spec.versions[{i}]", errs)
    storage = [v for v in versions if _d(v).get("storage") is True]
    if versions and len(storage) != 1:
        errs.append(
            E.invalid(
                "spec.versions", _summary(versions), "must have exactly one version marked as storage version"
            )
        )
    if versions and not any(_d(v).get("served") is True for v in versions):
        errs.append(
            E.invalid("spec.versions", _summary(versions), "must have at least one version marked as served")
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
    if spec.get("preserveUnknownFields") is True:
        errs.append(
            E.invalid(
                "spec.preserveUnknownFields", True, "must be false in order to use defaults in the schema"
            )
        )


def _summary(versions: list[Any]) -> str:
    return ", ".join(str(_d(v).get("name")) for v in versions)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    ns, os_ = _d(new.get("spec")), _d(old.get("spec"))
    if ns.get("scope") != os_.get("scope"):
        errs.append(E.immutable("spec.scope"))
    stored = _l(_d(new.get("status")).get("storedVersions"))
    served = {_d(v).get("name") for v in _l(ns.get("versions"))}
    for i, v in enumerate(stored):
        if v not in served:
            errs.append(E.invalid(f"status.storedVersions[{i}]", v, "must appear in spec.versions"))


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
