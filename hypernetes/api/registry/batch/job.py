"""Job: runs pods of a template to completion (upstream pkg/registry/batch/job)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import BATCH
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.defaults import child, set_default, template_defaults
from hypernetes.api.schema.printers import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    SELECTOR,
    Column,
    Context,
    age_of,
    condition_true,
    containers_images,
    human_duration,
    int_or_zero,
    name_of,
    parse_time,
    selector_string,
)
from hypernetes.api.schema.validation import (
    non_negative,
    pod_template,
    selector_immutable,
)
from hypernetes.objects import Obj as JSON

JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _defaults(obj: JSON) -> None:
    meta = child(obj, "metadata")
    spec = template_defaults(obj)
    tmpl = spec.get("template")
    tlabels = child(child(tmpl, "metadata"), "labels") if isinstance(tmpl, dict) else {}
    if not meta.get("labels") and tlabels:
        meta["labels"] = dict(tlabels)  # batch/v1 defaults a job's labels to its template's
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    set_default(spec, "completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    # the registry generates the selector from the uid unless the user manages it
    uid = meta.get("uid")
    if spec.get("manualSelector") is not True and uid and isinstance(tmpl, dict) and "selector" not in spec:
        name = meta.get("name", "")
        for k in JOB_UID_LABELS:
            tlabels[k] = uid
        for k in JOB_NAME_LABELS:
            tlabels[k] = name
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: uid}}


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    non_negative(spec, ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"), errs)
    ads = spec.get("activeDeadlineSeconds")
    if isinstance(ads, int) and ads <= 0:
        errs.append(E.invalid("spec.activeDeadlineSeconds", ads, "must be greater than 0"))
    manual = spec.get("manualSelector") is True
    if manual and spec.get("selector") is None:
        errs.append(E.required("spec.selector"))
    pod_template(spec, errs, restart=("OnFailure", "Never"), selector_required=False)
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        errs.append(E.required("spec.completions", "when completion mode is Indexed"))


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    selector_immutable(new, old, sub, errs)
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    for f in ("completions", "completionMode", "template"):
        if f == "template" and ospec.get("suspend") is True:
            continue  # upstream lets a suspended job's template change (scheduling directives)
        if nspec.get(f) != ospec.get(f):
            errs.append(E.immutable(f"spec.{f}"))


COLUMNS = (
    NAME,
    Column("Status", "string", "", "Status of the job."),
    Column("Completions", "string", "", "The number of pods which reached phase Succeeded."),
    Column("Duration", "string", "", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    succeeded = int_or_zero(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{int_or_zero(spec['completions'])}"
    elif int_or_zero(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {int_or_zero(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or ctx.now) - start).total_seconds())
    meta = _d(obj.get("metadata"))
    if condition_true(status, "Complete"):
        state = "Complete"
    elif condition_true(status, "Failed"):
        state = "Failed"
    elif meta.get("deletionTimestamp"):
        state = "Terminating"
    elif condition_true(status, "Suspended"):
        state = "Suspended"
    elif condition_true(status, "FailureTarget"):
        state = "FailureTarget"
    elif condition_true(status, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    return [
        name_of(obj),
        state,
        completions,
        duration,
        age_of(obj, ctx),
        *containers_images(obj),
        selector_string(spec.get("selector")),
    ]


KIND = kind(
    BATCH,
    "Job",
    "jobs",
    cats=("all",),
    subs=("status",),
    pod_spec="spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    field_selectors={
        "status.successful": "status.succeeded",
    },
    printer=Printer(COLUMNS, _row),
)
