"""The CronJob controller (upstream pkg/controller/cronjob, the v2 controller): at each time the
schedule names (in spec.timeZone), creates a Job from spec.jobTemplate named
`<cronjob>-<scheduled minute since the epoch>` (so a time is never run twice), owned by the
CronJob; keeps status.active, lastScheduleTime and lastSuccessfulTime; honours suspend,
startingDeadlineSeconds (a start later than that is missed, with a MissSchedule event) and
concurrencyPolicy (Allow; Forbid: skip while a Job runs; Replace: delete the running ones
first); deletes finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit.

The controller writes Jobs as an operator, but in the CronJob's namespace: tenant admission
follows the namespace, so a tenant's Jobs pass the tenant's pod policy and quota as its own
would. Time comes from `clock` (tests set it); each CronJob is requeued for its next time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Retry, namespace_terminating, update_status
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj
from hypernetes.objects.cron import Schedule, ScheduleError, parse_schedule, parse_zone

log = logging.getLogger(__name__)

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_DELTA = 0.1  # seconds after the scheduled time to wake up (upstream's nextScheduleDelta)
TOO_MANY_MISSED = 100
_JUMP_AFTER = 1000  # schedule steps walked before jumping by the mean interval


def job_finished(job: Obj) -> str | None:
    """ "Complete" or "Failed" once the Job has that condition."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def job_name(cronjob: Obj, scheduled: datetime) -> str:
    return f"{m.name(cronjob)}-{int(scheduled.timestamp()) // 60}"


def most_recent(
    sched: Schedule, zone: tzinfo, earliest: datetime, now: datetime
) -> tuple[datetime | None, int]:
    """(the latest scheduled time in (earliest, now], how many there were) as upstream's
    mostRecentScheduleTime: a long gap is crossed by the interval between two times."""
    t = sched.next_after(earliest, zone)
    if t is None or t > now:
        return None, 0
    recent, count = t, 1
    while count < _JUMP_AFTER:
        nxt = sched.next_after(recent, zone)
        if nxt is None or nxt > now:
            return recent, count
        recent, count = nxt, count + 1
    # years of minutes: jump close to now, then walk the rest
    second = sched.next_after(t, zone)
    step = max(((second or t) - t).total_seconds(), 1.0)
    missed = int((now - t).total_seconds() // step)
    walk = sched.next_after(max(recent, t + timedelta(seconds=step * (missed - 2))), zone)
    while walk is not None and walk <= now:
        recent, walk = walk, sched.next_after(walk, zone)
    return recent, missed + 1


class CronJobController(Controller):
    name = "cronjob"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.clock: Callable[[], datetime] = m.now
        self.cronjobs = self.informer("batch/v1", "cronjobs")
        self.jobs = self.informer("batch/v1", "jobs")
        self.cronjobs.add_handler(Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n)))
        self.jobs.add_handler(
            Handler(add=self._job_changed, update=lambda o, n: self._job_changed(n), delete=self._job_changed)
        )

    def _job_changed(self, job: Obj) -> None:
        ref = m.controller_ref(job)
        if ref is not None and ref.get("kind") == "CronJob":
            self.queue.add(f"{m.namespace(job)}/{ref.get('name')}")

    def resync(self) -> None:
        """Queue every CronJob now (after the clock moved)."""
        for cj in self.cronjobs.list():
            self.enqueue(cj)

    def _owned(self, cj: Obj) -> list[Obj]:
        return [j for j in self.jobs.list(m.namespace(cj)) if m.controlled_by(j, cj)]

    async def reconcile(self, key: str) -> None:
        cj = self.cronjobs.get(key)
        if cj is None:
            return
        status: Obj = dict(cj.get("status") or {})
        before = dict(status)
        jobs = self._owned(cj)
        await self._track(cj, status, jobs)
        delay: float | None = None
        try:
            delay = await self._schedule(cj, status)
        finally:
            if status != before:
                out = await update_status(self.client, "batch/v1", "cronjobs", cj, status)
                if out is not None:
                    self.cronjobs.written(out)
                    cj = out
        await self._cleanup(cj, self._owned(cj))
        if delay is not None:
            self.queue.add_after(key, delay)

    async def _track(self, cj: Obj, status: Obj, jobs: list[Obj]) -> None:
        """status.active follows the Jobs: finished ones leave it, vanished ones too;
        lastSuccessfulTime is the latest completion."""
        active = list(status.get("active") or [])
        uids = {a.get("uid") for a in active}
        for j in jobs:
            finished = job_finished(j)
            if m.uid(j) not in uids and finished is None:
                await self.events.warning(
                    cj,
                    "UnexpectedJob",
                    f"Saw a job that the controller did not create or forgot: {m.name(j)}",
                )
            elif m.uid(j) in uids and finished is not None:
                active = [a for a in active if a.get("uid") != m.uid(j)]
                await self.events.normal(
                    cj, "SawCompletedJob", f"Saw completed job: {m.name(j)}, condition: {finished}"
                )
            if finished == "Complete":
                done = m.parse_time((j.get("status") or {}).get("completionTime"))
                last = m.parse_time(status.get("lastSuccessfulTime"))
                if done is not None and (last is None or done > last):
                    status["lastSuccessfulTime"] = m.rfc3339(done)
        present = {m.uid(j) for j in jobs}
        for a in list(active):
            if a.get("uid") in present:
                continue
            # the informer may be behind our own create: ask the API before dropping it
            got = await self.client.get_or_none("batch/v1", "jobs", str(a.get("name")), m.namespace(cj))
            if got is None or m.uid(got) != a.get("uid"):
                active = [x for x in active if x.get("uid") != a.get("uid")]
                await self.events.normal(cj, "MissingJob", f"Active job went missing: {a.get('name')}")
        if active:
            status["active"] = active
        else:
            status.pop("active", None)

    async def _schedule(self, cj: Obj, status: Obj) -> float | None:
        """Start the Job due now, if any; the seconds until the next time (None: no next time)."""
        spec = cj.get("spec") or {}
        if m.deleting(cj) or spec.get("suspend") is True:
            return None
        zone = parse_zone(str(spec.get("timeZone") or ""))
        if zone is None:
            await self.events.warning(cj, "UnknownTimeZone", f"invalid timeZone: {spec.get('timeZone')!r}")
            return None
        try:
            sched = parse_schedule(str(spec.get("schedule") or ""))
        except ScheduleError as e:
            await self.events.warning(
                cj, "UnparseableSchedule", f"unparseable schedule: {spec.get('schedule')!r} : {e}"
            )
            return None
        now = self.clock()
        earliest = (
            m.parse_time(status.get("lastScheduleTime"))
            or m.parse_time(m.meta(cj).get("creationTimestamp"))
            or now
        )
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int) and now - timedelta(seconds=deadline) > earliest:
            earliest = now - timedelta(seconds=deadline)
        scheduled, missed = most_recent(sched, zone, earliest, now)

        def until_next() -> float | None:
            nxt = sched.next_after(now, zone)
            return None if nxt is None else (nxt - now).total_seconds() + NEXT_DELTA

        if scheduled is None:
            return until_next()
        if missed > TOO_MANY_MISSED:
            await self.events.warning(
                cj,
                "TooManyMissedTimes",
                f"too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds "
                "or check clock skew",
            )
        if isinstance(deadline, int) and scheduled + timedelta(seconds=deadline) < now:
            when = scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
            await self.events.warning(cj, "MissSchedule", f"Missed scheduled time to start a job: {when}")
            return until_next()
        name = job_name(cj, scheduled)
        active = list(status.get("active") or [])
        if (
            any(a.get("name") == name for a in active)
            or m.parse_time(status.get("lastScheduleTime")) == scheduled
        ):
            return until_next()
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            return until_next()
        if policy == "Replace":
            for a in active:
                await self._delete_job(cj, str(a.get("name")))
            status.pop("active", None)
            active = []
        job = self._job_for(cj, scheduled, zone)
        try:
            made = await self.client.create("batch/v1", "jobs", job, m.namespace(cj))
        except ApiException as e:
            if namespace_terminating(e):
                return None
            if e.status == 409:  # made before (by us, with a status write lost): nothing new
                raise Retry(f"job {name} already exists") from None
            await self.events.warning(cj, "FailedCreate", f"Error creating job: {e.message}")
            raise
        await self.events.normal(cj, "SuccessfulCreate", f"Created job {m.name(made)}")
        self.jobs.written(made)
        active.append(
            {
                "kind": "Job",
                "namespace": m.namespace(made),
                "name": m.name(made),
                "uid": m.uid(made),
                "apiVersion": "batch/v1",
                "resourceVersion": m.meta(made).get("resourceVersion", ""),
            }
        )
        status["active"] = active
        status["lastScheduleTime"] = m.rfc3339(scheduled)
        return until_next()

    @staticmethod
    def _job_for(cj: Obj, scheduled: datetime, zone: tzinfo) -> Obj:
        """upstream's getJobFromTemplate2: the template's labels and annotations, the scheduled
        time in the CronJob's zone, owned by the CronJob."""
        template = (cj.get("spec") or {}).get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        notes = {**(tmeta.get("annotations") or {})}
        notes[SCHEDULED_ANNOTATION] = scheduled.astimezone(zone).isoformat().replace("+00:00", "Z")
        meta: Obj = {
            "name": job_name(cj, scheduled),
            "namespace": m.namespace(cj),
            "annotations": notes,
            "ownerReferences": [m.owner_ref(cj)],
        }
        if tmeta.get("labels"):
            meta["labels"] = dict(tmeta["labels"])
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template.get("spec") or {}}

    async def _delete_job(self, cj: Obj, name: str) -> None:
        try:
            await self.client.delete(
                "batch/v1", "jobs", name, m.namespace(cj), {"propagationPolicy": "Background"}
            )
        except ApiException as e:
            if e.status != 404:
                await self.events.warning(cj, "FailedDelete", f"Deleted job: {e.message}")
                raise
            return
        await self.events.normal(cj, "SuccessfulDelete", f"Deleted job {name}")

    async def _cleanup(self, cj: Obj, jobs: list[Obj]) -> None:
        """Finished Jobs beyond the history limits go, oldest first."""
        spec = cj.get("spec") or {}
        for state, field in (
            ("Complete", "successfulJobsHistoryLimit"),
            ("Failed", "failedJobsHistoryLimit"),
        ):
            limit = spec.get(field)
            if not isinstance(limit, int):
                continue
            done = [j for j in jobs if job_finished(j) == state and not m.deleting(j)]
            done.sort(
                key=lambda j: (
                    (j.get("status") or {}).get("startTime") or m.meta(j).get("creationTimestamp") or ""
                )
            )
            for j in done[: max(len(done) - limit, 0)]:
                await self._delete_job(cj, m.name(j))
