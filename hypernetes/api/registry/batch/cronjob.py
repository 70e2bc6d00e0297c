"""CronJob: makes Jobs from a template on a schedule (upstream pkg/registry/batch/cronjob and
pkg/apis/batch/validation ValidateCronJobCreate/Update). The schedule is parsed by the one
parser the controller uses (objects/cron.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypernetes.api.registry.groups import BATCH
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.defaults import child, pod_spec_defaults, set_default
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
    selector_string,
    since,
)
from hypernetes.api.schema.validation import non_negative, pod_template
from hypernetes.objects import Obj as JSON
from hypernetes.objects.cron import ScheduleError, parse_schedule, parse_zone

CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
# a Job's name is the CronJob's plus "-" and a minute count of up to 10 digits, within 63
MAX_NAME = 52
JOB_TEMPLATE = "spec.jobTemplate."


def _defaults(obj: JSON) -> None:
    spec = child(obj, "spec")
    set_default(spec, "concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    tmpl = _d(_d(spec.get("jobTemplate")).get("spec")).get("template")
    if isinstance(tmpl, dict):
        pod_spec_defaults(child(tmpl, "spec"), pod=False)


def _job_template(spec: JSON, errs: Errs) -> None:
    """The Job rules a template shares with a Job (ValidateJobTemplateSpec), at its own paths."""
    jt = spec.get("jobTemplate")
    if jt is None:
        errs.append(E.required("spec.jobTemplate"))
        return
    jspec = _d(_d(jt).get("spec"))
    found: Errs = []
    non_negative(jspec, ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"), found)
    ads = jspec.get("activeDeadlineSeconds")
    if isinstance(ads, int) and ads <= 0:
        found.append(E.invalid("spec.activeDeadlineSeconds", ads, "must be greater than 0"))
    # ValidateJobTemplateSpec: the Jobs get a generated selector, so a template may not name one
    if jspec.get("selector") is not None:
        found.append(E.invalid("spec.selector", jspec["selector"], "`selector` will be auto-generated"))
    if jspec.get("manualSelector") is True:
        found.append(E.not_supported("spec.manualSelector", True, ("nil", "false")))
    pod_template(jspec, found, restart=("OnFailure", "Never"), selector_required=False)
    errs.extend(dataclasses.replace(e, field=JOB_TEMPLATE + e.field) for e in found)


def _validate(obj: JSON, errs: Errs) -> None:
    name = str(_d(obj.get("metadata")).get("name") or "")
    if len(name) > MAX_NAME:
        errs.append(E.invalid("metadata.name", name, f"must be no more than {MAX_NAME} characters"))
    spec = _d(obj.get("spec"))
    schedule = spec.get("schedule")
    if not schedule:
        errs.append(E.required("spec.schedule"))
    elif isinstance(schedule, str):
        try:
            parse_schedule(schedule)
        except ScheduleError as e:
            errs.append(E.invalid("spec.schedule", schedule, str(e)))
        if "TZ" in schedule:
            errs.append(
                E.invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                )
            )
    zone = spec.get("timeZone")
    if isinstance(zone, str):
        if not zone:
            errs.append(E.invalid("spec.timeZone", zone, "timeZone must be nil or non-empty string"))
        elif zone.lower() == "local":
            errs.append(
                E.invalid(
                    "spec.timeZone",
                    zone,
                    "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
                )
            )
        elif parse_zone(zone) is None:
            errs.append(E.invalid("spec.timeZone", zone, f"unknown time zone {zone}"))
    policy = spec.get("concurrencyPolicy")
    if policy is None:
        errs.append(E.required("spec.concurrencyPolicy"))
    elif policy not in CONCURRENCY_POLICIES:
        errs.append(E.not_supported("spec.concurrencyPolicy", policy, CONCURRENCY_POLICIES))
    non_negative(
        spec, ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"), errs
    )
    _job_template(spec, errs)


def _prepare_create(obj: JSON) -> None:
    obj["status"] = {}  # upstream's PrepareForCreate: the controller writes the status


COLUMNS = (
    NAME,
    Column("Schedule", "string", "", "The schedule for running the job."),
    Column("Timezone", "string", "", "The time zone the cron job is scheduled in."),
    Column("Suspend", "boolean", "", "This flag tells the controller to suspend subsequent executions."),
    Column("Active", "integer", "", "A list of pointers to currently running jobs."),
    Column(
        "Last Schedule",
        "string",
        "",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    Column("Containers", "string", "", "Names of each container in the template.", 1),
    Column("Images", "string", "", "Images referenced by each container in the template.", 1),
    Column("Selector", "string", "", "Selector used for matching pods.", 1),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    last = status.get("lastScheduleTime")
    jspec = _d(_d(spec.get("jobTemplate")).get("spec"))
    containers = [_d(c) for c in _l(_d(_d(jspec.get("template")).get("spec")).get("containers"))]
    return [
        name_of(obj),
        str(spec.get("schedule") or ""),
        str(spec.get("timeZone") or "<none>"),
        "True" if spec.get("suspend") is True else "False",  # printBoolPtr
        len(_l(status.get("active"))),
        since(last, ctx) if last else "<none>",
        age_of(obj, ctx),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        selector_string(jspec.get("selector")),
    ]


KIND = kind(
    BATCH,
    "CronJob",
    "cronjobs",
    short=("cj",),
    cats=("all",),
    subs=("status",),
    pod_spec="spec.jobTemplate.spec.template.spec",
    defaults=_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    printer=Printer(COLUMNS, _row),
)
