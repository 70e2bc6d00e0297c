"""The Job controller with the real kubectl: completions and parallelism, backoffLimit
(restartPolicy Never and OnFailure), activeDeadlineSeconds, suspend and ttlSecondsAfterFinished;
pods are owned, labelled and tracked with the job-tracking finalizer."""

from __future__ import annotations

import threading
import time

from hypernetes.controllers.jobindex import INDEX_KEY as INDEX
from hypernetes.controllers.jobindex import format_ranges, parse_ranges
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {spec}
  template:
    metadata:
      annotations: {{{notes}}}
    spec:
      restartPolicy: {restart}
      containers: [{{name: c, image: busybox}}]
"""


def make_job(
    server: ApiServerThread, name: str, ns: str, spec: str, notes: str, restart: str = "Never"
) -> None:
    server.kubectl(
        "apply", "-f", "-", input=JOB.format(name=name, ns=ns, spec=spec, notes=notes, restart=restart)
    )


def job_status(c: ControllersThread, ns: str, name: str) -> Obj:
    return (c.get("batch/v1", "jobs", name, ns) or {}).get("status") or {}


def condition_types(status: Obj) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c.get("reason", "")) for c in status.get("conditions") or []]


def test_completions_and_parallelism(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-ok")
    make_job(
        api,
        "work",
        ns,
        "completions: 4\n  parallelism: 2",
        f'"{FAKE}exit-code": "0", "{FAKE}run-seconds": "0.3"',
    )
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            running = [
                p
                for p in controllers.pods(ns)
                if (p.get("status") or {}).get("phase") != "Succeeded"
                and not p["metadata"].get("deletionTimestamp")
            ]
            peak[0] = max(peak[0], len(running))
            time.sleep(0.03)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = api.kubectl("wait", "--for=condition=complete", "job/work", "-n", ns, "--timeout=60s", timeout=90)
    stop.set()
    t.join()
    assert "job.batch/work condition met" in out.stdout
    assert 1 <= peak[0] <= 2
    status = job_status(controllers, ns, "work")
    assert status["succeeded"] == 4 and status.get("failed", 0) == 0
    assert status["active"] == 0 and status["ready"] == 0 and status["uncountedTerminatedPods"] == {}
    assert status["startTime"] and status["completionTime"]
    assert condition_types(status) == [
        ("SuccessCriteriaMet", "True", "CompletionsReached"),
        ("Complete", "True", "CompletionsReached"),
    ]
    job = controllers.get("batch/v1", "jobs", "work", ns) or {}
    pods = controllers.pods(ns)
    assert len(pods) == 4
    for p in pods:
        meta = p["metadata"]
        assert meta["name"].startswith("work-")
        assert meta["labels"]["job-name"] == meta["labels"]["batch.kubernetes.io/job-name"] == "work"
        assert meta["labels"]["controller-uid"] == job["metadata"]["uid"]
        assert meta["ownerReferences"][0]["kind"] == "Job" and meta["ownerReferences"][0]["controller"]
        assert not meta.get("finalizers")  # counted, so no longer tracked
    row = api.kubectl("get", "job", "work", "-n", ns).stdout.splitlines()[1].split()
    assert row[1] == "Complete" and row[2] == "4/4", row
    described = api.kubectl("describe", "job", "work", "-n", ns).stdout
    assert "SuccessfulCreate" in described and "Job completed" in described, described


def test_backoff_limit_never(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-fail")
    make_job(api, "bad", ns, "backoffLimit: 2", f'"{FAKE}exit-code": "1", "{FAKE}run-seconds": "0.1"')
    out = api.kubectl("wait", "--for=condition=failed", "job/bad", "-n", ns, "--timeout=60s", timeout=90)
    assert "condition met" in out.stdout
    status = job_status(controllers, ns, "bad")
    assert status["failed"] == 3 and status.get("succeeded", 0) == 0 and status["active"] == 0
    assert condition_types(status) == [
        ("FailureTarget", "True", "BackoffLimitExceeded"),
        ("Failed", "True", "BackoffLimitExceeded"),
    ]
    assert "completionTime" not in status
    failed = [p for p in controllers.pods(ns) if p["status"]["phase"] == "Failed"]
    assert len(failed) == 3  # failed pods are kept for their logs, as upstream
    time.sleep(0.5)
    assert len(controllers.pods(ns)) == 3  # and none is created after the verdict


def test_backoff_limit_on_failure_counts_restarts(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("job-restarts")
    make_job(
        api,
        "crashy",
        ns,
        "backoffLimit: 2",
        f'"{FAKE}exit-code": "1", "{FAKE}run-seconds": "0.2"',
        restart="OnFailure",
    )
    api.kubectl("wait", "--for=condition=failed", "job/crashy", "-n", ns, "--timeout=60s", timeout=90)
    status = job_status(controllers, ns, "crashy")
    assert ("Failed", "True", "BackoffLimitExceeded") in condition_types(status)
    wait_for(lambda: not controllers.pods(ns), what="the restarting pod deleted")


def test_active_deadline(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-deadline")
    make_job(api, "slow", ns, "activeDeadlineSeconds: 1\n  parallelism: 2\n  completions: 2", "")
    api.kubectl("wait", "--for=condition=failed", "job/slow", "-n", ns, "--timeout=30s", timeout=60)
    status = job_status(controllers, ns, "slow")
    assert ("Failed", "True", "DeadlineExceeded") in condition_types(status)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["message"] == "Job was active longer than specified deadline"
    wait_for(lambda: not controllers.pods(ns), what="running pods deleted")
    assert job_status(controllers, ns, "slow").get("failed", 0) == 0  # deleted by us: not failures


def test_suspend_and_resume(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-suspend")
    make_job(api, "later", ns, "suspend: true", f'"{FAKE}exit-code": "0"')
    wait_for(
        lambda: (
            ("Suspended", "True", "JobSuspended") in condition_types(job_status(controllers, ns, "later"))
        ),
        what="Suspended",
    )
    assert controllers.pods(ns) == [] and "startTime" not in job_status(controllers, ns, "later")
    api.kubectl("patch", "job", "later", "-n", ns, "-p", '{"spec":{"suspend":false}}')
    api.kubectl("wait", "--for=condition=complete", "job/later", "-n", ns, "--timeout=30s", timeout=60)
    assert ("Suspended", "False", "JobResumed") in condition_types(job_status(controllers, ns, "later"))


def test_ttl_after_finished(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-ttl")
    make_job(api, "brief", ns, "ttlSecondsAfterFinished: 1", f'"{FAKE}exit-code": "0"')
    wait_for(lambda: controllers.get("batch/v1", "jobs", "brief", ns) is None, timeout=30, what="job deleted")
    wait_for(lambda: not controllers.pods(ns), what="its pod collected")


def test_indexed_completions(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("job-indexed")
    make_job(
        api,
        "idx",
        ns,
        "completionMode: Indexed\n  completions: 3\n  parallelism: 2",
        f'"{FAKE}exit-code": "0", "{FAKE}run-seconds": "0.2"',
    )
    api.kubectl("wait", "--for=condition=complete", "job/idx", "-n", ns, "--timeout=60s", timeout=90)
    status = job_status(controllers, ns, "idx")
    assert status["completedIndexes"] == "0-2" and status["succeeded"] == 3
    pods = sorted(controllers.pods(ns), key=lambda p: int(p["metadata"]["labels"][INDEX]))
    # one pod per index, none twice
    assert [p["metadata"]["annotations"][INDEX] for p in pods] == ["0", "1", "2"]
    for i, p in enumerate(pods):
        assert p["metadata"]["name"].startswith(f"idx-{i}-")
        assert p["spec"]["hostname"] == f"idx-{i}"
        env = p["spec"]["containers"][0]["env"]
        assert env == [
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX}']"}
                },
            }
        ]


def test_index_ranges() -> None:
    assert format_ranges({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_ranges("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_ranges("") == set() and format_ranges(set()) == ""
