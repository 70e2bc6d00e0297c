"""StatefulSet: pods with stable names and claims, made and updated in ordinal order (upstream
pkg/registry/apps/statefulset, validation in pkg/apis/apps/validation)."""

from __future__ import annotations

import copy
from typing import Any

from hypernetes.api.registry.core import persistentvolumeclaim
from hypernetes.api.registry.groups import APPS
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.workloads import READY, ready_of_desired, workload_template
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, set_default, template_defaults
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    Context,
    age_of,
    containers_images,
    name_of,
)
from hypernetes.api.schema.validation import non_negative
from hypernetes.objects import Obj as JSON

# spec fields an update may change (upstream's ValidateStatefulSetUpdate); the rest are fixed
MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _defaults(obj: JSON) -> None:
    spec = template_defaults(obj)
    set_default(spec, "podManagementPolicy", "OrderedReady")
    strategy = child(spec, "updateStrategy")
    if not strategy.get("type"):  # an explicit RollingUpdate gets no rollingUpdate, as upstream
        strategy["type"] = "RollingUpdate"
        child(strategy, "rollingUpdate")
    ru = strategy.get("rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(ru, dict):
        ru.setdefault("partition", 0)
    retention = child(spec, "persistentVolumeClaimRetentionPolicy")
    set_default(retention, "whenDeleted", "Retain")
    set_default(retention, "whenScaled", "Retain")
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    for tmpl in spec.get("volumeClaimTemplates") or []:
        if isinstance(tmpl, dict):
            # a claim template is defaulted as a claim is (volumeMode, status.phase Pending)
            persistentvolumeclaim.KIND.defaults(tmpl)  # type: ignore[misc]


def _claim_templates(spec: JSON, errs: Errs) -> None:
    seen: set[str] = set()
    for i, tmpl in enumerate(spec.get("volumeClaimTemplates") or []):
        path = f"spec.volumeClaimTemplates[{i}]"
        name = _d(_d(tmpl).get("metadata")).get("name")
        if not name:
            errs.append(E.required(f"{path}.metadata.name"))
        elif name in seen:
            errs.append(E.duplicate(f"{path}.metadata.name", name))
        else:
            seen.add(str(name))
        mine: Errs = []
        persistentvolumeclaim.KIND.validate(_d(tmpl), mine)  # type: ignore[misc]
        errs.extend(FieldError(e.type, f"{path}.{e.field}", e.message) for e in mine)


def _with_claim_volumes(spec: JSON) -> JSON:
    """The spec as its pods will have it: each claim template a volume (the pods' mounts name
    them), so the template's pod spec is checked as the controller will create it."""
    tmpl, claims = spec.get("template"), spec.get("volumeClaimTemplates")
    if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict) or not isinstance(claims, list):
        return spec
    tspec = tmpl["spec"]
    have = {v.get("name") for v in tspec.get("volumes") or [] if isinstance(v, dict)}
    extra = [
        {"name": n, "persistentVolumeClaim": {"claimName": n}}
        for n in (_d(_d(c).get("metadata")).get("name") for c in claims)
        if isinstance(n, str) and n and n not in have
    ]
    if not extra:
        return spec
    volumes = [*(tspec.get("volumes") or []), *extra]
    return {**spec, "template": {**tmpl, "spec": {**tspec, "volumes": volumes}}}


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("replicas", "minReadySeconds", "revisionHistoryLimit"), errs)
    policy = spec.get("podManagementPolicy")
    if policy is not None and policy not in ("OrderedReady", "Parallel"):
        errs.append(E.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'"))
    strategy = _d(spec.get("updateStrategy"))
    stype, ru = strategy.get("type"), strategy.get("rollingUpdate")
    if stype == "OnDelete":
        if ru is not None:
            errs.append(
                E.invalid(
                    "spec.updateStrategy.rollingUpdate", ru, "only allowed for updateStrategy 'RollingUpdate'"
                )
            )
    elif stype == "RollingUpdate":
        partition = _d(ru).get("partition")
        if isinstance(partition, int) and partition < 0:
            errs.append(
                E.invalid(
                    "spec.updateStrategy.rollingUpdate.partition",
                    partition,
                    "must be greater than or equal to 0",
                )
            )
    elif stype is not None:
        errs.append(E.invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'"))
    retention = _d(spec.get("persistentVolumeClaimRetentionPolicy"))
    for f in ("whenDeleted", "whenScaled"):
        v = retention.get(f)
        if v is not None and v not in ("Retain", "Delete"):
            errs.append(
                E.not_supported(f"spec.persistentVolumeClaimRetentionPolicy.{f}", v, ("Retain", "Delete"))
            )
    start = _d(spec.get("ordinals")).get("start")
    if isinstance(start, int) and start < 0:
        errs.append(E.invalid("spec.ordinals.start", start, "must be greater than or equal to 0"))
    workload_template(_with_claim_volumes(spec), errs, "StatefulSet")
    _claim_templates(spec, errs)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub in ("status", "scale"):
        return
    nspec, ospec = copy.copy(_d(new.get("spec"))), copy.copy(_d(old.get("spec")))
    for f in MUTABLE:
        nspec.pop(f, None)
        ospec.pop(f, None)
    if nspec != ospec:
        errs.append(
            E.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'revisionHistoryLimit', "
                "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )
        )


COLUMNS = (
    NAME,
    READY,
    AGE,
    CONTAINERS,
    IMAGES,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [
        name_of(obj),
        ready_of_desired(obj),
        age_of(obj, ctx),
        *containers_images(obj),
    ]


def _prepare_create(obj: JSON) -> None:
    """PrepareForCreate resets the status; its empty form has the two counts without omitempty."""
    obj["status"] = {"replicas": 0, "availableReplicas": 0}


KIND = kind(
    APPS,
    "StatefulSet",
    "statefulsets",
    short=("sts",),
    cats=("all",),
    subs=("status", "scale"),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
    name_format=formats.dns1123_label,  # ValidateStatefulSetName: its pods' hostnames are "<name>-N"
)
