"""validate(kind, obj, old): the schema walk (structural.py), object metadata, and the kind's
rules and update rules (its registry entry's `validate`, `validate_update`, `prepare_update`),
as upstream validates the fields Hypernetes serves. The rules several kinds share (selectors, pod
templates, data keys, immutability) are here for the entries to call."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats, structural
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.podspec import validate_labels, validate_pod_spec
from hypernetes.network.objects import NODE_PORTS  # noqa: F401  (read here by tests/test_networks_api.py)
from hypernetes.objects import Obj as JSON
from hypernetes.objects.selectors import SelectorError, from_label_selector

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind

Errs = list[FieldError]

# (and the CRD cleanup finalizer, which upstream validates with apimachinery's laxer rule)
STANDARD_FINALIZERS = (
    "kubernetes",
    "orphan",
    "foregroundDeletion",
    "customresourcecleanup.apiextensions.k8s.io",
)
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_MAX_ANNOTATIONS = 256 * 1024
_MAX_DATA = 1024 * 1024  # ConfigMap and Secret payloads


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def check_format(path: str, value: Any, msgs: list[str], errs: Errs) -> None:
    errs.extend(E.invalid(path, value, m) for m in msgs)


def validate(kind: Kind, obj: JSON, old: JSON | None = None, *, subresource: str | None = None) -> Errs:
    """Every problem with `obj` as a `kind` (an update of `old` if given, through `subresource`
    if given: "status" or "binding" skip the spec's update rules). Empty when valid.

    An update first drops, in place, what upstream's PrepareForUpdate drops because the change
    made it meaningless (a Service's node ports when its type no longer needs them)."""
    errs: Errs = []
    av, k = obj.get("apiVersion"), obj.get("kind")
    if av is not None and av != kind.api_version:
        errs.append(E.invalid("apiVersion", av, f"must be {kind.api_version}"))
    if k is not None and k != kind.kind:
        errs.append(E.invalid("kind", k, f"must be {kind.kind}"))
    structural.check({"$ref": kind.definition}, obj, "", errs)
    if any(e.type == E.TYPE_INVALID for e in errs):
        return errs  # the rules below assume the types are right
    meta = _d(obj.get("metadata"))
    _metadata(kind, meta, errs)
    if old is not None and kind.prepare_update is not None and subresource != "status":
        kind.prepare_update(obj, old)
    if kind.validate is not None:
        kind.validate(obj, errs)
    if old is not None:
        _metadata_update(meta, _d(old.get("metadata")), errs)
        if kind.validate_update is not None:
            kind.validate_update(obj, old, subresource, errs)
    return errs


def validate_body(definition: str, obj: JSON) -> Errs:
    """Schema check of a subresource body by definition name: "io.k8s.api.core.v1.Binding",
    "io.k8s.api.policy.v1.Eviction", "io.k8s.api.autoscaling.v1.Scale", DeleteOptions, ..."""
    errs: Errs = []
    structural.check({"$ref": definition}, obj, "", errs)
    return errs


def drop_unknown_fields(kind: Kind, obj: JSON) -> None:
    """Remove fields the schema does not know, in place: for fieldValidation=Ignore (and Warn,
    after reporting them)."""
    structural.drop_unknown({"$ref": kind.definition}, obj)


# -- metadata ----------------------------------------------------------------------------------


def _metadata(kind: Kind, meta: JSON, errs: Errs) -> None:
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            errs.append(E.required("metadata.name", "name or generateName is required"))
    else:
        check_format("metadata.name", name, kind.name_format(name), errs)
    gen = meta.get("generateName")
    if gen and not name:
        # the suffix makes a trailing '-' valid: check the prefix with a letter in its place
        check_format(
            "metadata.generateName",
            gen,
            kind.name_format(gen.rstrip("-") + "a" if gen.endswith("-") else gen),
            errs,
        )
    ns = meta.get("namespace")
    if kind.namespaced:
        if not ns:
            errs.append(E.required("metadata.namespace"))
        else:
            check_format("metadata.namespace", ns, formats.dns1123_label(ns), errs)
    elif ns:
        errs.append(E.forbidden("metadata.namespace", "not allowed on this type"))
    validate_labels(_d(meta.get("labels")), "metadata.labels", errs)
    annotations = _d(meta.get("annotations"))
    size = 0
    for k, v in annotations.items():
        check_format("metadata.annotations", k, formats.qualified_name(k.lower()), errs)
        size += len(k) + len(v if isinstance(v, str) else "")
    if size > _MAX_ANNOTATIONS:
        errs.append(E.too_long("metadata.annotations", _MAX_ANNOTATIONS))
    for i, f in enumerate(_l(meta.get("finalizers"))):
        if not isinstance(f, str):
            continue
        p = f"metadata.finalizers[{i}]"
        if "/" not in f:
            if f not in STANDARD_FINALIZERS:
                errs.append(
                    E.invalid(p, f, "name is neither a standard finalizer name nor is it fully qualified")
                )
        else:
            check_format(p, f, formats.qualified_name(f), errs)


def _metadata_update(meta: JSON, old: JSON, errs: Errs) -> None:
    for field in ("name", "namespace", "uid", "creationTimestamp"):
        if old.get(field) and meta.get(field) and meta[field] != old[field]:
            errs.append(E.immutable(f"metadata.{field}"))


# -- rules several kinds share (their entries call them) ---------------------------------------


def label_selector(sel: Any, path: str, errs: Errs, *, required: bool = True) -> None:
    if sel is None:
        if required:
            errs.append(E.required(path))
        return
    s = _d(sel)
    if required and not s.get("matchLabels") and not s.get("matchExpressions"):
        # upstream's words for Deployments and ReplicaSets alike; registry/workloads.py rewords it
        errs.append(E.invalid(path, s, "empty selector is invalid for deployment"))
    validate_labels(_d(s.get("matchLabels")), f"{path}.matchLabels", errs)
    for i, r in enumerate(_l(s.get("matchExpressions"))):
        r = _d(r)
        p = f"{path}.matchExpressions[{i}]"
        op, values = r.get("operator"), _l(r.get("values"))
        if op in ("In", "NotIn") and not values:
            errs.append(E.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        if op in ("Exists", "DoesNotExist") and values:
            errs.append(
                E.forbidden(
                    f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                )
            )
        key = r.get("key")
        if isinstance(key, str):
            check_format(f"{p}.key", key, formats.qualified_name(key), errs)


def selector_matches(sel: JSON, labels: JSON) -> bool:
    """Whether a LabelSelector selects a template's `labels`. One that does not convert is not
    checked (its own errors are reported), as upstream's ValidateDeploymentSpec."""
    try:
        return from_label_selector(sel).matches(labels)
    except SelectorError:
        return True


def pod_template(spec: JSON, errs: Errs, *, restart: tuple[str, ...], selector_required: bool = True) -> None:
    sel = spec.get("selector")
    label_selector(sel, "spec.selector", errs, required=selector_required)
    tmpl = spec.get("template")
    if tmpl is None:
        return
    tmeta = _d(_d(tmpl).get("metadata"))
    validate_labels(_d(tmeta.get("labels")), "spec.template.metadata.labels", errs)
    if (
        isinstance(sel, dict)
        and (sel.get("matchLabels") or sel.get("matchExpressions"))
        and not selector_matches(sel, _d(tmeta.get("labels")))
    ):
        errs.append(
            E.invalid(
                "spec.template.metadata.labels",
                _d(tmeta.get("labels")),
                "`selector` does not match template `labels`",
            )
        )
    tspec = _d(_d(tmpl).get("spec"))
    if _d(tmpl).get("spec") is None:
        errs.append(E.required("spec.template.spec.containers"))
    validate_pod_spec(tspec, "spec.template.spec", errs)
    rp = tspec.get("restartPolicy")
    if rp is not None and rp not in restart:
        errs.append(E.not_supported("spec.template.spec.restartPolicy", rp, restart))
    elif rp is None and "Always" not in restart:
        errs.append(
            E.required(
                "spec.template.spec.restartPolicy",
                "valid values: " + ", ".join(json.dumps(r) for r in restart),
            )
        )
    if tspec.get("activeDeadlineSeconds") is not None and restart == ("Always",):
        errs.append(
            E.forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        )


def non_negative(spec: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    for f in fields:
        v = spec.get(f)
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            errs.append(E.invalid(f"spec.{f}", v, "must be greater than or equal to 0"))


def data_keys(obj: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    seen: set[str] = set()
    size = 0
    for field in fields:
        for k, v in _d(obj.get(field)).items():
            check_format(f"{field}[{k}]", k, formats.config_key(k), errs)
            if k in seen:
                errs.append(E.invalid(f"{field}[{k}]", k, "duplicate of key present in data"))
            seen.add(k)
            size += len(v) if isinstance(v, str) else 0
    if size > _MAX_DATA:
        errs.append(E.too_long(fields[0], _MAX_DATA))


def immutable_data(new: JSON, old: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.append(E.forbidden("immutable", "field is immutable when `immutable` is set"))
        for f in fields:
            if _d(new.get(f)) != _d(old.get(f)):
                errs.append(E.forbidden(f, "field is immutable when `immutable` is set"))


def selector_immutable(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub in ("status", "scale"):
        return
    if _d(new.get("spec")).get("selector") != _d(old.get("spec")).get("selector"):
        errs.append(E.immutable("spec.selector"))
