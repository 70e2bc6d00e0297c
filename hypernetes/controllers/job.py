"""The Job controller (upstream pkg/controller/job, 1.31+ behaviour): runs pods until
`completions` of them succeeded, `parallelism` at a time; counts failures (Never: failed pods,
OnFailure: container restarts) against backoffLimit, with exponential back-off before a
failed pod is replaced; activeDeadlineSeconds; suspend; ttlSecondsAfterFinished.

Finished pods are counted exactly once through the `batch.kubernetes.io/job-tracking`
finalizer: a finished pod's uid goes to status.uncountedTerminatedPods, then its finalizer is
removed, then it moves into status.succeeded/failed. A job first gets SuccessCriteriaMet or
FailureTarget; Complete or Failed follow once none of its pods is still terminating."""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Expectations, namespace_terminating, update_status
from hypernetes.controllers.claim import claim, fresh_owner_check
from hypernetes.controllers.informer import Handler, InformerFactory, key_of
from hypernetes.controllers.jobindex import format_ranges, indexed, parse_ranges, pod_index, template_for
from hypernetes.controllers.replicaset import pods_to_delete
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

TRACKING = "batch.kubernetes.io/job-tracking"
POD_KEY = "pod:"  # queue keys of pods whose tracking finalizer may have to go


def finished(job: Obj) -> str | None:
    """ "Complete" or "Failed" once the job has that condition."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def pod_failed(pod: Obj) -> bool:
    # a pod deleted before it finished counts as failed (podReplacementPolicy TerminatingOrFailed)
    return m.pod_phase(pod) == "Failed" or (m.deleting(pod) and m.pod_phase(pod) != "Succeeded")


def tracked(pod: Obj) -> bool:
    return TRACKING in (m.meta(pod).get("finalizers") or [])


class JobController(Controller):
    name = "job"
    workers = 4
    backoff_base = 10.0  # seconds before a failed pod is replaced, doubling per failure
    backoff_max = 360.0

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.jobs = self.informer("batch/v1", "jobs")
        self.pods = self.informer("v1", "pods")
        self.expectations = Expectations()
        self._failures: dict[str, tuple[int, float]] = {}  # key: (failures since a success, when)
        self.jobs.add_handler(
            Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n), delete=self._job_deleted)
        )
        self.pods.add_handler(
            Handler(add=self._pod_added, update=self._pod_updated, delete=self._pod_deleted)
        )

    # -- events --------------------------------------------------------------------------------

    def _job_deleted(self, job: Obj) -> None:
        key = key_of(job)
        self.expectations.forget(key)
        self._failures.pop(key, None)

    def _job_key(self, pod: Obj) -> str | None:
        ref = m.controller_ref(pod)
        if ref is None or ref.get("kind") != "Job":
            return None
        key = f"{m.namespace(pod)}/{ref.get('name')}"
        job = self.jobs.get(key)
        return key if job is not None and m.uid(job) == ref.get("uid") else None

    def _pod_added(self, pod: Obj) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.created(key)
            self.queue.add(key)
        elif tracked(pod):
            self.queue.add(POD_KEY + key_of(pod))
        elif m.controller_ref(pod) is None:
            for job in self.jobs.list(m.namespace(pod)):
                if m.selector_matches((job.get("spec") or {}).get("selector"), m.labels(pod)):
                    self.enqueue(job)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = self._job_key(new)
        if m.deleting(new) and not m.deleting(old) and key is not None:
            self.expectations.deleted(key, m.uid(new))
        if key is not None:
            self.queue.add(key)
        elif tracked(new):
            self.queue.add(POD_KEY + key_of(new))

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.deleted(key, m.uid(pod))
            self.queue.add(key)

    # -- sync ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        if key.startswith(POD_KEY):
            await self._orphan_pod(key[len(POD_KEY) :])
            return
        cached = self.jobs.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        job = copy.deepcopy(cached)
        spec = job.get("spec") or {}
        candidates = self.pods.list(m.namespace(job))
        pods = await claim(
            self.client,
            self.pods,
            job,
            spec.get("selector"),
            candidates,
            fresh_owner_check(self.client, job, "jobs"),
        )
        if m.deleting(job) or finished(job):
            await self._untrack(key, [p for p in pods if tracked(p)])
            if finished(job) and not m.deleting(job):
                await self._ttl(key, job)
            return
        await self._sync(key, job, pods)

    async def _sync(self, key: str, job: Obj, pods: list[Obj]) -> None:
        spec, status = job.get("spec") or {}, copy.deepcopy(job.get("status") or {})
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        known = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        new_ok = [p for p in pods if tracked(p) and m.pod_phase(p) == "Succeeded" and m.uid(p) not in known]
        new_failed = [p for p in pods if tracked(p) and pod_failed(p) and m.uid(p) not in known]
        if new_ok or new_failed:
            uncounted["succeeded"] = sorted({*uncounted.get("succeeded", []), *map(m.uid, new_ok)})
            uncounted["failed"] = sorted({*uncounted.get("failed", []), *map(m.uid, new_failed)})
            self._record_failures(key, len(new_ok), len(new_failed))
        active = [p for p in pods if m.pod_active(p)]
        succeeded = int(status.get("succeeded") or 0) + len(uncounted.get("succeeded") or [])
        if indexed(job):  # an index counts once, however many of its pods succeeded
            done = parse_ranges(status.get("completedIndexes"))
            done.update(i for i in map(pod_index, new_ok) if i is not None and i < int(spec["completions"]))
            if done:
                status["completedIndexes"] = format_ranges(done)
            succeeded = len(done)
        failed = int(status.get("failed") or 0) + len(uncounted.get("failed") or [])
        terminating = sum(1 for p in pods if m.deleting(p) and m.pod_phase(p) not in ("Succeeded", "Failed"))
        suspended = bool(spec.get("suspend"))
        if not status.get("startTime") and not suspended:
            status["startTime"] = m.rfc3339()

        failure: ApiException | None = None
        target = self._finish_target(job, status, active, succeeded, failed)
        if target is not None:
            m.set_condition(status, target)
        ending = m.get_condition(status, "FailureTarget") or m.get_condition(status, "SuccessCriteriaMet")
        if ending is not None:
            await self._delete_pods(key, job, active)  # the job is decided: stop what still runs
            active = []
        elif suspended:
            await self._delete_pods(key, job, active)
            active = []
        else:
            try:
                active = await self._manage(key, job, status, active, succeeded, terminating)
            except ApiException as e:
                failure = e  # the status is still written, then the key backs off
        self._set_suspended(status, suspended and ending is None)

        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if m.pod_ready(p))
        status["terminating"] = terminating
        job = await self._write(job, status)
        job = await self._count(job, pods)
        if ending is not None and not self._still_running(pods):
            await self._terminal(job, ending)
        if failure is not None:
            raise failure

    def _finish_target(
        self, job: Obj, status: Obj, active: list[Obj], succeeded: int, failed: int
    ) -> Obj | None:
        """The first terminal verdict (FailureTarget or SuccessCriteriaMet), if reached now."""
        if m.get_condition(status, "FailureTarget") or m.get_condition(status, "SuccessCriteriaMet"):
            return None
        spec = job.get("spec") or {}
        completions = spec.get("completions")
        limit = int(spec.get("backoffLimit", 6))
        if (completions is not None and succeeded >= int(completions)) or (
            completions is None and succeeded > 0 and not active
        ):
            return m.condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        if failed > limit or self._past_backoff_on_failure(job, active, limit):
            return m.condition(
                "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        deadline = spec.get("activeDeadlineSeconds")
        started = m.parse_time(status.get("startTime"))
        if deadline is not None and started is not None and not spec.get("suspend"):
            left = started.timestamp() + int(deadline) - time.time()
            if left <= 0:
                return m.condition(
                    "FailureTarget",
                    "True",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            self.queue.add_after(key_of(job), left + 0.5)
        return None

    @staticmethod
    def _past_backoff_on_failure(job: Obj, active: list[Obj], limit: int) -> bool:
        """restartPolicy OnFailure: container restarts are the failures."""
        template_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = sum(m.restart_count(p) for p in active if m.pod_phase(p) in ("Running", "Pending"))
        return restarts > 0 if limit == 0 else restarts >= limit

    def _record_failures(self, key: str, ok: int, failed: int) -> None:
        count, _ = self._failures.get(key, (0, 0.0))
        count = 0 if ok else count
        if failed:
            self._failures[key] = (count + failed, time.monotonic())
        else:
            self._failures[key] = (count, 0.0)

    def _backoff_left(self, key: str) -> float:
        count, at = self._failures.get(key, (0, 0.0))
        if not count:
            return 0.0
        delay = min(self.backoff_base * float(2 ** (count - 1)), self.backoff_max)
        return at + delay - time.monotonic()

    async def _manage(
        self, key: str, job: Obj, status: Obj, active: list[Obj], succeeded: int, terminating: int
    ) -> list[Obj]:
        """Create or delete pods towards the wanted number running; the active pods after."""
        if not self.expectations.satisfied(key):
            return active  # earlier creations or deletions not seen yet: counts would be off
        spec = job.get("spec") or {}
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None:
            want = len(active) if succeeded > 0 else parallelism
        else:
            want = max(min(parallelism, int(completions) - succeeded), 0)
        done = parse_ranges(status.get("completedIndexes"))  # this sync's, not the cached one
        victims = self._surplus(job, done, active, want)
        if victims:
            await self._delete_pods(key, job, victims)
            gone = {m.uid(p) for p in victims}
            return [p for p in active if m.uid(p) not in gone]
        # podReplacementPolicy Failed: a replacement waits until its predecessor is gone
        busy = len(active) + (terminating if spec.get("podReplacementPolicy") == "Failed" else 0)
        if busy < want:
            left = self._backoff_left(key)
            if left > 0:
                self.queue.add_after(key, left)
                return active
            await self._create(key, job, self._next_indexes(job, done, active, want - busy))
        return active

    @staticmethod
    def _surplus(job: Obj, done: set[int], active: list[Obj], want: int) -> list[Obj]:
        """Active pods to delete: beyond `want`; for indexed jobs also pods of a done or invalid
        index and second pods of one index."""
        if not indexed(job):
            return pods_to_delete(active, len(active) - want) if len(active) > want else []
        completions = int((job.get("spec") or {}).get("completions") or 0)
        seen: set[int] = set()
        extra, keep = [], []
        for p in sorted(active, key=lambda p: (pod_index(p) or 0, not m.pod_ready(p))):
            i = pod_index(p)
            if i is None or i >= completions or i in done or i in seen:
                extra.append(p)
            else:
                seen.add(i)
                keep.append(p)
        if len(keep) > want:  # parallelism went down: the highest indexes wait
            extra += sorted(keep, key=lambda p: pod_index(p) or 0)[want:]
        return extra

    @staticmethod
    def _next_indexes(job: Obj, done: set[int], active: list[Obj], count: int) -> list[int | None]:
        """What to create: `count` pods, for indexed jobs the lowest indexes not done nor running."""
        if not indexed(job):
            return [None] * count
        running = {pod_index(p) for p in active}
        free = [
            i
            for i in range(int((job.get("spec") or {}).get("completions") or 0))
            if i not in done and i not in running
        ]
        out: list[int | None] = list(free[:count])
        return out

    def _pod(self, job: Obj, index: int | None) -> Obj:
        if index is None:
            return m.pod_from_template(
                (job.get("spec") or {}).get("template") or {}, job, finalizers=[TRACKING]
            )
        return m.pod_from_template(
            template_for(job, index), job, finalizers=[TRACKING], generate_name=f"{m.name(job)}-{index}-"
        )

    async def _create(self, key: str, job: Obj, indexes: list[int | None]) -> None:
        count = len(indexes)
        if not count:
            return
        self.expectations.expect(key, adds=count)
        done, batch = 0, 1
        while done < count:  # slow start, as the ReplicaSet controller
            n = min(batch, count - done)
            results = await asyncio.gather(
                *(
                    self.client.create("v1", "pods", self._pod(job, i), m.namespace(job))
                    for i in indexes[done : done + n]
                ),
                return_exceptions=True,
            )
            done += n
            for res in results:
                if isinstance(res, dict):
                    await self.events.normal(job, "SuccessfulCreate", f"Created pod: {m.name(res)}")
            errors = [e for e in results if isinstance(e, BaseException)]
            if errors:
                self.expectations.created(key, len(errors) + count - done)
                if isinstance(errors[0], ApiException):
                    if namespace_terminating(errors[0]):
                        return
                    await self.events.warning(job, "FailedCreate", f"Error creating: {errors[0].message}")
                raise errors[0]
            batch *= 2

    async def _delete_pods(self, key: str, job: Obj, pods: list[Obj]) -> None:
        """Pods the controller deletes itself are not failures: untrack them first."""
        if not pods:
            return
        self.expectations.expect(key, deletes=[m.uid(p) for p in pods])
        failure: ApiException | None = None
        for p in pods:
            try:
                await self._untrack(key, [p])
                await self.client.delete(
                    "v1", "pods", m.name(p), m.namespace(p), {"preconditions": {"uid": m.uid(p)}}
                )
            except ApiException as e:
                self.expectations.deleted(key, m.uid(p))  # no deletion to wait for
                if e.status not in (404, 409):
                    failure = failure or e
                continue
            await self.events.normal(job, "SuccessfulDelete", f"Deleted pod: {m.name(p)}")
        if failure is not None:
            raise failure

    async def _untrack(self, key: str, pods: list[Obj]) -> None:
        for p in pods:
            if not tracked(p):
                continue
            finalizers = [f for f in m.meta(p).get("finalizers") or [] if f != TRACKING]
            try:
                out = await self.client.patch(
                    "v1",
                    "pods",
                    m.name(p),
                    {
                        "metadata": {
                            "finalizers": finalizers or None,
                            "resourceVersion": m.meta(p)["resourceVersion"],
                        }
                    },
                    m.namespace(p),
                )
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            if out is not None:
                self.pods.written(out)

    async def _count(self, job: Obj, pods: list[Obj]) -> Obj:
        """Remove the finalizers of the pods recorded as uncounted, then count them."""
        status = copy.deepcopy(job.get("status") or {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        uids = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        if not uids:
            return job
        await self._untrack(key_of(job), [p for p in pods if m.uid(p) in uids])
        for field in ("succeeded", "failed"):
            n = len(uncounted.get(field) or [])
            if n:
                status[field] = int(status.get(field) or 0) + n
        if indexed(job):
            status["succeeded"] = len(parse_ranges(status.get("completedIndexes")))
        status["uncountedTerminatedPods"] = {}
        return await self._write(job, status)

    def _still_running(self, pods: list[Obj]) -> bool:
        return any(
            m.pod_active(p) or (m.deleting(p) and m.pod_phase(p) not in ("Succeeded", "Failed")) for p in pods
        )

    async def _terminal(self, job: Obj, ending: Obj) -> None:
        status = copy.deepcopy(job.get("status") or {})
        if ending["type"] == "SuccessCriteriaMet":
            m.set_condition(status, m.condition("Complete", "True", ending["reason"], ending["message"]))
            status["completionTime"] = m.rfc3339()
        else:
            m.set_condition(status, m.condition("Failed", "True", ending["reason"], ending["message"]))
        status["active"] = 0
        status["ready"] = 0
        out = await self._write(job, status)
        if ending["type"] == "SuccessCriteriaMet":
            await self.events.normal(out, "Completed", "Job completed")
        else:
            await self.events.warning(out, ending["reason"], ending["message"])
        if (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None:
            await self._ttl(key_of(out), out)

    @staticmethod
    def _set_suspended(status: Obj, suspended: bool) -> None:
        cur = m.get_condition(status, "Suspended")
        if suspended and (cur is None or cur.get("status") != "True"):
            m.set_condition(status, m.condition("Suspended", "True", "JobSuspended", "Job suspended"))
        elif not suspended and cur is not None and cur.get("status") == "True":
            m.set_condition(status, m.condition("Suspended", "False", "JobResumed", "Job resumed"))

    async def _write(self, job: Obj, status: Obj) -> Obj:
        if status == (job.get("status") or {}):
            return job
        out = await update_status(self.client, "batch/v1", "jobs", job, status)
        if out is None:
            return job
        self.jobs.written(out)
        return out

    async def _ttl(self, key: str, job: Obj) -> None:
        """ttlSecondsAfterFinished: the finished job (and, in the foreground, its pods) goes."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        done = m.get_condition(status, "Complete") or m.get_condition(status, "Failed") or {}
        at = m.parse_time(status.get("completionTime") or done.get("lastTransitionTime"))
        left = (at.timestamp() + int(ttl) - time.time()) if at else 0.0
        if left > 0:
            self.queue.add_after(key, left)
            return
        log.info("job %s: deleting %ss after it finished", key, ttl)
        try:
            await self.client.delete(
                "batch/v1",
                "jobs",
                m.name(job),
                m.namespace(job),
                {"propagationPolicy": "Foreground", "preconditions": {"uid": m.uid(job)}},
            )
        except ApiException as e:
            if e.status != 409:
                raise

    async def _orphan_pod(self, key: str) -> None:
        """A tracked pod whose job is gone keeps its finalizer no longer (upstream does the same)."""
        pod = self.pods.get(key)
        if pod is None or not tracked(pod) or self._job_key(pod) is not None:
            return
        ref = m.controller_ref(pod)
        if ref is not None and ref.get("kind") == "Job":
            job = await self.client.get_or_none("batch/v1", "jobs", str(ref.get("name")), m.namespace(pod))
            if job is not None and m.uid(job) == ref.get("uid") and not finished(job) and not m.deleting(job):
                return  # its job exists; our cache was behind
        await self._untrack(key, [pod])
