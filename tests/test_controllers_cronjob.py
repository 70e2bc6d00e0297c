"""CronJob: the schedule parser (robfig/cron's standard schedules, time zones), the registry's
422s, and the controller against the real API server with a clock the test moves (no sleeping
until a minute comes): Jobs on schedule, status, concurrency policies, starting deadline,
suspend, history limits; and `kubectl create cronjob` / `create job --from=cronjob/...` with
kubectl 1.32 and 1.33 (protobuf)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hypernetes.apiclient import ApiException
from hypernetes.controllers.cronjob import SCHEDULED_ANNOTATION, CronJobController
from hypernetes.controllers.manager import ControllerManager
from hypernetes.objects import Obj
from hypernetes.objects.cron import ScheduleError, parse_schedule, parse_zone
from tests.support.apifixtures import api, have_kubectl  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, quick_backoff
from tests.support.waiting import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


CLOCK = Clock()


@pytest.fixture(scope="module")
def controllers(api: ApiServerThread) -> Iterator[ControllersThread]:
    def tune(manager: ControllerManager) -> None:
        quick_backoff(manager)
        manager["cronjob"].clock = CLOCK  # type: ignore[attr-defined]

    h = ControllersThread(api, only=("cronjob", "job", "garbagecollector"), tune=tune).start()
    try:
        yield h
    finally:
        h.stop()


def cronjob(name: str, schedule: str = "*/5 * * * *", exit_code: str | None = "0", **spec: object) -> Obj:
    notes = {f"{FAKE}exit-code": exit_code, f"{FAKE}run-seconds": "0.1"} if exit_code is not None else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"labels": {"cron": name}},
                "spec": {
                    "template": {
                        "metadata": {"annotations": notes},
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
                    }
                },
            },
            **spec,
        },
    }


def at(c: ControllersThread, when: datetime) -> None:
    """Move the controller's clock and let it look at every CronJob."""
    CLOCK.now = when
    ctl = c.manager["cronjob"]
    assert isinstance(ctl, CronJobController)
    c.loop.call_soon_threadsafe(ctl.resync)


def created(c: ControllersThread, ns: str, name: str) -> datetime:
    cj = c.get("batch/v1", "cronjobs", name, ns)
    assert cj is not None
    return datetime.fromisoformat(cj["metadata"]["creationTimestamp"])


def next_slot(after: datetime, minutes: int = 5) -> datetime:
    """The first multiple of `minutes` past the hour strictly after `after`."""
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t.minute % minutes:
        t += timedelta(minutes=1)
    return t


def jobs_of(c: ControllersThread, ns: str, name: str) -> list[Obj]:
    return c.items("batch/v1", "jobs", ns, f"cron={name}")


def status(c: ControllersThread, ns: str, name: str) -> Obj:
    return (c.get("batch/v1", "cronjobs", name, ns) or {}).get("status") or {}


def reasons(c: ControllersThread, ns: str, name: str) -> list[str]:
    return [
        e.get("reason", "")
        for e in c.items("v1", "events", ns)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


# -- the schedule --------------------------------------------------------------------------------


def test_schedules_as_robfig_cron() -> None:
    t = datetime(2026, 3, 28, 12, 3, tzinfo=UTC)  # a Saturday; Paris enters summer time tomorrow
    assert parse_schedule("*/5 * * * *").next_after(t) == datetime(2026, 3, 28, 12, 5, tzinfo=UTC)
    assert parse_schedule("@hourly").next_after(t) == datetime(2026, 3, 28, 13, tzinfo=UTC)
    assert parse_schedule("0 9 * * mon-FRI").next_after(t) == datetime(2026, 3, 30, 9, tzinfo=UTC)
    assert parse_schedule("15 10 1 JAN *").next_after(t) == datetime(2027, 1, 1, 10, 15, tzinfo=UTC)
    # both day fields restricted: either matches (the 1st, or a Monday)
    assert parse_schedule("0 0 1 * 1").next_after(t) == datetime(2026, 3, 30, tzinfo=UTC)
    # in a zone: 02:30 does not exist in Paris on 29 March 2026, so the next is the 30th
    paris = parse_zone("Europe/Paris")
    assert paris is not None
    assert parse_schedule("30 2 * * *").next_after(t, paris) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    assert parse_schedule("0 9 * * *").next_after(t, parse_zone("Asia/Tokyo") or UTC) == datetime(
        2026, 3, 29, 0, tzinfo=UTC
    )
    assert parse_schedule("0 0 30 2 *").next_after(t) is None  # never
    assert parse_schedule("@every 90s").next_after(t) == t + timedelta(seconds=90)
    for bad, message in (
        ("bad", "expected exactly 5 fields, found 1: [bad]"),
        ("* * * * 7", "end of range (7) above maximum (6): 7"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
        # Go's errors quote with strconv.Quote: double quotes
        ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
        ("@every abc", 'failed to parse duration @every abc: time: invalid duration "abc"'),
    ):
        with pytest.raises(ScheduleError) as e:
            parse_schedule(bad)
        assert str(e.value) == message
    assert parse_zone("Mars/Olympus") is None and parse_zone("../etc/passwd") is None


# -- the registry ------------------------------------------------------------------------------


def test_validation_and_defaults(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("cj-valid")
    cases: list[tuple[Obj, str, str]] = [
        (cronjob("a", "61 * * * *"), "spec.schedule", "end of range (61) above maximum (59): 61"),
        (cronjob("b", "TZ=UTC * * * * *"), "spec.schedule", "cannot use TZ or CRON_TZ in schedule"),
        (cronjob("c", timeZone="Mars/Olympus"), "spec.timeZone", "unknown time zone Mars/Olympus"),
        (cronjob("d", timeZone="Local"), "spec.timeZone", "must be an explicit time zone"),
        (cronjob("e", concurrencyPolicy="Sometimes"), "spec.concurrencyPolicy", 'supported values: "Allow"'),
        (
            cronjob("f", startingDeadlineSeconds=-1),
            "spec.startingDeadlineSeconds",
            "greater than or equal to 0",
        ),
        (cronjob("g" * 53), "metadata.name", "must be no more than 52 characters"),
    ]
    always = cronjob("h")
    always["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    cases.append((always, "spec.jobTemplate.spec.template.spec.restartPolicy", 'Unsupported value: "Always"'))
    no_schedule = cronjob("i")
    del no_schedule["spec"]["schedule"]
    cases.append((no_schedule, "spec.schedule", "Required value"))
    # ValidateJobTemplateSpec: the Jobs' selector is generated, a template may not set one
    chosen = cronjob("j")
    chosen["spec"]["jobTemplate"]["spec"]["selector"] = {"matchLabels": {"cron": "j"}}
    cases.append((chosen, "spec.jobTemplate.spec.selector", "`selector` will be auto-generated"))
    for obj, field, text in cases:
        with pytest.raises(ApiException) as e:
            controllers.create("batch/v1", "cronjobs", obj, ns)
        assert e.value.status == 422, e.value.body
        causes = {c["field"]: c["message"] for c in e.value.body["details"]["causes"]}
        assert field in causes and text in causes[field], causes
    made = controllers.create("batch/v1", "cronjobs", cronjob("ok", timeZone="Asia/Tokyo", suspend=True), ns)
    spec = made["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Allow", True)
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["dnsPolicy"] == "ClusterFirst"


# -- the controller ----------------------------------------------------------------------------


def test_runs_on_schedule_and_tracks_status(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("cj-run")
    controllers.create("batch/v1", "cronjobs", cronjob("tick", timeZone="Asia/Tokyo"), ns)
    born = created(controllers, ns, "tick")
    at(controllers, born + timedelta(seconds=30))
    slot = next_slot(born)
    if slot > born + timedelta(seconds=30):  # not due yet: nothing made
        wait_for(lambda: "lastScheduleTime" not in status(controllers, ns, "tick"), 2)
        assert jobs_of(controllers, ns, "tick") == []
    at(controllers, slot + timedelta(seconds=1))
    name = f"tick-{int(slot.timestamp()) // 60}"
    jobs = wait_for(lambda: jobs_of(controllers, ns, "tick"), 10)
    job = jobs[0]
    assert job["metadata"]["name"] == name
    assert (
        job["metadata"]["annotations"][SCHEDULED_ANNOTATION]
        == slot.astimezone(parse_zone("Asia/Tokyo")).isoformat()
    )
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", "tick", True)
    st = wait_for(lambda: (s := status(controllers, ns, "tick")).get("active") and s, 10)
    assert st["lastScheduleTime"] == slot.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [a["name"] for a in st["active"]] == [name]
    # the Job completes (the fake kubelet runs its pod): it leaves status.active
    done = wait_for(
        lambda: "active" not in (s := status(controllers, ns, "tick")) and s.get("lastSuccessfulTime") and s,
        20,
    )
    assert "lastSuccessfulTime" in done
    assert "SuccessfulCreate" in reasons(controllers, ns, "tick")
    out = api.kubectl("get", "cronjob", "tick", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert out[1].split()[:6] == ["tick", "*/5", "*", "*", "*", "*"] and "Asia/Tokyo" in out[1]


def test_concurrency_deadline_suspend_history(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("cj-policy")
    # Forbid: a Job that never finishes blocks the next time; Replace: it is deleted for the new one
    controllers.create(
        "batch/v1", "cronjobs", cronjob("forbid", exit_code=None, concurrencyPolicy="Forbid"), ns
    )
    controllers.create(
        "batch/v1", "cronjobs", cronjob("replace", exit_code=None, concurrencyPolicy="Replace"), ns
    )
    controllers.create("batch/v1", "cronjobs", cronjob("late", startingDeadlineSeconds=60), ns)
    controllers.create("batch/v1", "cronjobs", cronjob("paused", suspend=True), ns)
    controllers.create("batch/v1", "cronjobs", cronjob("history", successfulJobsHistoryLimit=1), ns)
    born = max(created(controllers, ns, n) for n in ("forbid", "replace", "late", "paused", "history"))
    first = next_slot(born)
    at(controllers, first + timedelta(seconds=1))
    for n in ("forbid", "replace", "history"):

        def one_job(n: str = n) -> bool:
            return len(jobs_of(controllers, ns, n)) == 1

        wait_for(one_job, 10)
    # the history job's first run completes before the next slot
    wait_for(lambda: "active" not in status(controllers, ns, "history"), 20)
    second = first + timedelta(minutes=5)
    at(controllers, second + timedelta(seconds=1))
    replaced = f"replace-{int(second.timestamp()) // 60}"
    wait_for(lambda: [j["metadata"]["name"] for j in jobs_of(controllers, ns, "replace")] == [replaced], 15)
    assert [a["name"] for a in status(controllers, ns, "replace")["active"]] == [replaced]
    wait_for(lambda: len(jobs_of(controllers, ns, "history")) == 2, 10)
    wait_for(lambda: "active" not in status(controllers, ns, "history"), 20)
    third = second + timedelta(minutes=5)
    at(controllers, third + timedelta(seconds=1))
    # history: three runs, one kept (successfulJobsHistoryLimit: 1)
    wait_for(
        lambda: (
            status(controllers, ns, "history").get("lastScheduleTime") == third.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        10,
    )
    wait_for(lambda: "active" not in status(controllers, ns, "history"), 20)
    at(controllers, third + timedelta(seconds=2))
    wait_for(
        lambda: (
            len(
                [j for j in jobs_of(controllers, ns, "history") if not j["metadata"].get("deletionTimestamp")]
            )
            == 1
        ),
        15,
    )
    forbid = jobs_of(controllers, ns, "forbid")
    assert [j["metadata"]["name"] for j in forbid] == [f"forbid-{int(first.timestamp()) // 60}"]
    assert status(controllers, ns, "paused") == {} and jobs_of(controllers, ns, "paused") == []
    # late (startingDeadlineSeconds 60): a time the clock passed by 3 minutes is skipped, the
    # next one on time runs
    fourth, fifth = third + timedelta(minutes=5), third + timedelta(minutes=10)
    at(controllers, fourth + timedelta(minutes=3))
    at(controllers, fifth + timedelta(seconds=1))
    on_time = f"late-{int(fifth.timestamp()) // 60}"
    wait_for(lambda: on_time in [j["metadata"]["name"] for j in jobs_of(controllers, ns, "late")], 10)
    assert f"late-{int(fourth.timestamp()) // 60}" not in [
        j["metadata"]["name"] for j in jobs_of(controllers, ns, "late")
    ]


@pytest.mark.parametrize("version", ["1.32", "1.33"])
def test_kubectl_create_cronjob_and_job_from(
    api: ApiServerThread, controllers: ControllersThread, version: str
) -> None:
    if not have_kubectl(version):
        pytest.fail(f"kubectl {version} missing")
    ns = controllers.namespace(f"cj-kubectl-{version.replace('.', '-')}")
    api.kubectl(
        "create",
        "cronjob",
        "nightly",
        "-n",
        ns,
        "--image=busybox",
        "--schedule=0 3 * * *",
        "--",
        "echo",
        "hi",
        version=version,
    )
    cj = json.loads(api.kubectl("get", "cronjob", "nightly", "-n", ns, "-o", "json", version=version).stdout)
    assert cj["spec"]["schedule"] == "0 3 * * *"
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    api.kubectl("create", "job", "by-hand", "-n", ns, "--from=cronjob/nightly", version=version)
    job = json.loads(api.kubectl("get", "job", "by-hand", "-n", ns, "-o", "json", version=version).stdout)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["name"] == "nightly"
    wide = api.kubectl("get", "cj", "-n", ns, "-o", "wide", version=version).stdout
    assert "nightly" in wide and "busybox" in wide
