"""Leader election (hypernetes/leaderelection.py) against the real API server: the Lease record
and its compare-and-swap, a leader cut off from the API server that stops acting before another
starts, and schedulers and controller managers as processes whose leader is SIGKILLed while it
works: the standby takes over within the lease, and nothing is done twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.asyncwait import cancel_and_wait
from hypernetes.leaderelection import ElectionTiming, LeaderElector
from hypernetes.metrics import REGISTRY, exposition
from hypernetes.objects import Obj
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread
from tests.support.etcd import etcd_cluster, have_etcd
from tests.support.hosts import HYPERNETES
from tests.support.partition import Partition
from tests.support.waiting import wait_for, wait_for_async

# shortened, yet a renewal may take a few seconds on a loaded 2-core machine without a failover
QUICK = ElectionTiming(lease_duration=5.0, renew_deadline=3.5, retry_period=0.5)
ROOT = Path(__file__).resolve().parent.parent


def client(api: ApiServerThread, url: str = "") -> ApiClient:
    return ApiClient(url or api.url, token=api.token, ca_file=api.ca.ca_cert)


def test_timing_is_checked_as_client_go_does() -> None:
    ElectionTiming()  # 15, 10, 2
    with pytest.raises(ValueError, match="leaseDuration must be greater than renewDeadline"):
        ElectionTiming(10, 10, 2)
    with pytest.raises(ValueError, match="renewDeadline must be greater than retryPeriod"):
        ElectionTiming(15, 2.3, 2)


def test_up_refuses_lease_timings_that_do_not_fit(tmp_path: Path) -> None:
    for flags, message in (
        (["--leader-elect-renew-deadline", "20"], "leaseDuration must be greater than renewDeadline"),
        (["--leader-elect-retry-period", "9"], "renewDeadline must be greater than retryPeriod*JitterFactor"),
    ):
        up = [*HYPERNETES, "up", "--no-node", "--data-dir", str(tmp_path), *flags]
        proc = subprocess.run(up, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = subprocess.run(
        [*HYPERNETES, "up", "--node-monitor-grace-period", "soon"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "not a duration: 'soon'" in proc.stderr, proc.stderr


def test_up_on_sqlite_elects_nobody_and_on_etcd_by_default(tmp_path: Path) -> None:
    """SQLite is this process's alone: no Lease to take, none to wait out after a crash."""
    from hypernetes.cli.controlplaneflags import resolve_controller_options
    from hypernetes.cli.main import build_parser

    for argv, electing in (
        (["up"], False),
        (["up", "--store", "sqlite:///x.db"], False),
        (["up", "--store", "etcd://127.0.0.1:2379"], True),
        (["up", "--leader-elect"], True),
        (["up", "--store", "etcd://127.0.0.1:2379", "--no-leader-elect"], False),
    ):
        args = build_parser().parse_args(argv)
        assert resolve_controller_options(args) is None
        assert (args.election is not None) is electing, argv
    up = subprocess.Popen(
        [*HYPERNETES, "up", "--no-node", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        kubectl = ["kubectl", f"--kubeconfig={tmp_path / 'admin.kubeconfig'}"]

        def controllers_ran() -> bool:  # the service-account controller made default's account
            got = subprocess.run([*kubectl, "get", "serviceaccount", "default"], capture_output=True)
            return got.returncode == 0

        wait_for(controllers_ran, timeout=60, interval=0.5, what="the controllers running")
        leases = subprocess.run(
            [*kubectl, "-n", "kube-system", "get", "leases", "-o", "name"], capture_output=True
        )
        assert leases.returncode == 0 and b"kube-controller-manager" not in leases.stdout
    finally:
        up.terminate()
        up.wait(30)


async def test_lease_record_compare_and_swap_and_release(api: ApiServerThread) -> None:
    async with client(api) as c:
        electors = [LeaderElector(c, "cas", identity=f"cand-{i}", timing=QUICK) for i in range(6)]
        won = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
        assert sum(won) == 1, won  # one read-create or read-update wins; the rest see a conflict
        first = electors[won.index(True)]
        first.leader = True
        lease = await c.get("coordination.k8s.io/v1", "leases", "cas", "kube-system")
        spec = lease["spec"]
        assert spec["holderIdentity"] == first.identity
        assert spec["leaseDurationSeconds"] == 5 and spec["leaseTransitions"] == 0
        assert spec["acquireTime"] == spec["renewTime"] and spec["renewTime"].endswith("Z")
        assert len(spec["renewTime"]) == len("2026-01-01T00:00:00.000000Z")  # MicroTime
        others = [e for e in electors if e is not first]
        assert not any(await asyncio.gather(*(e.try_acquire_or_renew() for e in others)))
        await asyncio.sleep(0.01)
        assert await first.try_acquire_or_renew()  # renew: same acquireTime, later renewTime
        renewed = (await c.get("coordination.k8s.io/v1", "leases", "cas", "kube-system"))["spec"]
        assert renewed["acquireTime"] == spec["acquireTime"] and renewed["renewTime"] > spec["renewTime"]
        assert int(renewed.get("leaseTransitions", 0)) == 0
        # a stale resourceVersion is refused: the fast path falls back to a read and fails
        await first.release()
        released = (await c.get("coordination.k8s.io/v1", "leases", "cas", "kube-system"))["spec"]
        assert not released.get("holderIdentity") and released["leaseDurationSeconds"] == 1
        await asyncio.sleep(1.1)  # the released record's own duration (1 s), not the 5 s lease
        assert await others[0].try_acquire_or_renew()
        taken = (await c.get("coordination.k8s.io/v1", "leases", "cas", "kube-system"))["spec"]
        assert taken["holderIdentity"] == others[0].identity and taken["leaseTransitions"] == 1


async def test_work_that_fails_is_raised_after_the_lease_is_released(api: ApiServerThread) -> None:
    async with client(api) as c:

        async def broken() -> None:
            raise RuntimeError("controller crashed")

        elector = LeaderElector(c, "crash", identity="x", timing=QUICK)
        with pytest.raises(RuntimeError, match="controller crashed"):
            await asyncio.wait_for(elector.run(broken), 10)
        lease = await c.get("coordination.k8s.io/v1", "leases", "crash", "kube-system")
        assert not lease["spec"].get("holderIdentity") and not elector.leader


async def test_a_leader_cut_off_stops_before_another_starts(api: ApiServerThread) -> None:
    relay = Partition(api.port)
    port = await relay.start()
    spans: dict[str, list[list[float]]] = {"a": [], "b": []}

    def work(who: str) -> Any:
        async def run() -> None:
            span = [time.monotonic(), float("inf")]
            spans[who].append(span)
            try:
                await asyncio.sleep(3600)
            finally:
                span[1] = time.monotonic()

        return run

    ca, cb = client(api, f"https://127.0.0.1:{port}"), client(api)
    a = LeaderElector(ca, "partition", identity="a", timing=QUICK)
    b = LeaderElector(cb, "partition", identity="b", timing=QUICK)
    ta = asyncio.create_task(a.run(work("a")))
    tb: asyncio.Task[None] | None = None
    try:
        await wait_for_async(lambda: spans["a"], what="a leading")
        tb = asyncio.create_task(b.run(work("b")))
        await asyncio.sleep(2 * QUICK.lease_duration)
        assert not spans["b"] and a.leader and not b.leader  # one acts, the other stands by
        served = exposition(REGISTRY).decode()  # what the process's /metrics shows
        assert 'leader_election_master_status{name="partition"} 1.0' in served
        assert 'leader_election_master_status{name="partition"} 0.0' in served
        cut_at = time.monotonic()
        relay.partition()
        await wait_for_async(lambda: spans["b"], timeout=3 * QUICK.lease_duration, what="the standby leading")
        a_stopped, b_started = spans["a"][0][1], spans["b"][0][0]
        assert a_stopped < b_started, "both leaders acted at once"
        # the order above is the guarantee; these bounds only catch a leader that ignores its
        # deadline, with room for a loaded 2-core machine's scheduling delays
        assert a_stopped - cut_at <= QUICK.renew_deadline + 2 * QUICK.retry_period + 1.0
        takeover = b_started - cut_at
        assert takeover <= QUICK.lease_duration + 2 * QUICK.retry_period * 1.2 + 2.0, takeover
        print(f"\nfailover after a partition: {takeover:.2f} s (lease {QUICK.lease_duration} s)")
        events = (await cb.list("v1", "events", "kube-system"))["items"]
        said = {e["message"] for e in events if e["involvedObject"].get("name") == "partition"}
        assert {"a became leader", "b became leader"} <= said  # LeaderElection events, as client-go's
        # a is cut off for good: it keeps campaigning, never acting again
        await asyncio.sleep(QUICK.lease_duration)
        assert len(spans["a"]) == 1 and not a.leader and b.leader
        tb.cancel()
        await asyncio.gather(tb, return_exceptions=True)
        released = await cb.get("coordination.k8s.io/v1", "leases", "partition", "kube-system")
        assert not released["spec"].get("holderIdentity")  # b released on a clean stop
    finally:
        await cancel_and_wait([t for t in (ta, tb) if t is not None])
        await relay.close()
        await ca.close()
        await cb.close()


# --- processes, SIGKILLed ------------------------------------------------------------------------


class Candidates:
    """Two processes of one component electing through one Lease."""

    def __init__(self, api: ApiServerThread, component: str, lease: str) -> None:
        self.api, self.lease = api, lease
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = []
        for who in (f"{lease}-a", f"{lease}-b"):
            log = open(api.workdir / f"{who}.log", "wb")  # noqa: SIM115  closed in stop()
            self.logs.append(log)
            self.procs[who] = subprocess.Popen(
                [sys.executable, "-m", "tests.support.elected", "--server", api.url, "--token", api.token,
                 "--ca", str(api.ca.ca_cert), "--identity", who, "--lease", lease, "--component", component,
                 "--lease-duration", str(QUICK.lease_duration), "--renew-deadline", str(QUICK.renew_deadline),
                 "--retry-period", str(QUICK.retry_period)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip

    def holder(self, ctl: ControllersThread) -> str:
        lease = ctl.get("coordination.k8s.io/v1", "leases", self.lease, "kube-system") or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def kill(self, who: str) -> float:
        self.procs[who].send_signal(signal.SIGKILL)
        self.procs[who].wait(10)
        return time.monotonic()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for log in self.logs:
            log.close()


class PodLog:
    """Every pod creation and deletion in a namespace, from a watch, with who created it."""

    def __init__(self, ctl: ControllersThread, ns: str) -> None:
        self.ctl, self.ns = ctl, ns
        self.added: list[tuple[float, Obj]] = []
        self.deleted: list[Obj] = []
        self.live_max = 0
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._task = asyncio.run_coroutine_threadsafe(self._watch(), ctl.loop)

    async def _watch(self) -> None:
        async for ev in self.ctl.client.informer("v1", "pods", self.ns):
            with self._lock:
                objs = ev.object.get("items") or [] if ev.type == "SYNC" else [ev.object]
                for pod in objs:
                    uid = pod["metadata"]["uid"]
                    if ev.type in ("SYNC", "ADDED") and uid not in self._live:
                        self.added.append((time.monotonic(), pod))
                        self._live.add(uid)
                    elif ev.type == "DELETED":
                        self.deleted.append(pod)
                        self._live.discard(uid)
                    if ev.type != "DELETED" and pod["metadata"].get("deletionTimestamp"):
                        self._live.discard(uid)
                self.live_max = max(self.live_max, len(self._live))

    def creators(self, after: float = 0.0) -> set[str]:
        with self._lock:
            return {manager(p) for t, p in self.added if t >= after}

    def stop(self) -> None:
        self._task.cancel()


def manager(obj: Obj) -> str:
    """Who created the object: the first managedFields entry names the client's User-Agent."""
    fields = obj["metadata"].get("managedFields") or [{}]
    return str(fields[0].get("manager", ""))


@pytest.fixture(scope="module")
def kubelet(api: ApiServerThread) -> Iterator[ControllersThread]:
    h = ControllersThread(api, only=[]).start()  # no controllers here: only the fake kubelet
    try:
        yield h
    finally:
        h.stop()


def _failover(
    ctl: ControllersThread, cands: Candidates, log: PodLog, created_before: int
) -> tuple[str, float]:
    """Kill the leader once it has created `created_before` pods; (standby, seconds from the
    kill to the standby's first pod)."""
    leader = wait_for(lambda: cands.holder(ctl), what="a leader")
    wait_for(lambda: len(log.added) >= created_before, timeout=30, what="the leader at work")
    killed = cands.kill(leader)
    standby = next(w for w in cands.procs if w != leader)
    first = wait_for(
        lambda: next((t for t, p in list(log.added) if manager(p) == standby), None),
        timeout=QUICK.lease_duration * 4,
        what="the standby's first pod",
    )
    assert cands.holder(ctl) == standby
    return standby, first - killed


@pytest.mark.slow
def test_controller_manager_failover_never_overshoots_a_replicaset(
    api: ApiServerThread,
    kubelet: ControllersThread,
) -> None:
    ns = kubelet.namespace("cm-rs")
    cands = Candidates(api, "controller-manager", "rs-manager")
    log = PodLog(kubelet, ns)
    try:
        leader = wait_for(lambda: cands.holder(kubelet), timeout=20, what="a leader")
        labels = {"app": "web"}
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 40,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": {FAKE + "ready-delay": "0.2"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
        kubelet.create("apps/v1", "replicasets", rs, ns)
        # slow start creates 1, 2, 4, 8, 16 ...: killed in the middle of a burst
        standby, took = _failover(kubelet, cands, log, created_before=7)
        assert standby != leader
        wait_for(lambda: len([p for p in kubelet.pods(ns) if p["status"].get("phase") == "Running"]) == 40,
                 timeout=60, what="40 running pods")  # fmt: skip
        time.sleep(QUICK.lease_duration)  # anything doubled would show by now
        assert len(log.added) == 40 and not log.deleted and log.live_max == 40, (
            len(log.added),
            len(log.deleted),
            log.live_max,
        )
        assert log.creators() == {leader, standby}
        print(f"\ncontroller manager failover (SIGKILL to the standby's first pod): {took:.2f} s")
        assert took <= QUICK.lease_duration + 2 * QUICK.retry_period * 1.2 + 1.5
    finally:
        log.stop()
        cands.stop()


@pytest.mark.slow
def test_controller_manager_failover_never_runs_a_job_index_twice(
    api: ApiServerThread,
    kubelet: ControllersThread,
) -> None:
    ns = kubelet.namespace("cm-job")
    cands = Candidates(api, "controller-manager", "job-manager")
    log = PodLog(kubelet, ns)
    try:
        wait_for(lambda: cands.holder(kubelet), timeout=20, what="a leader")
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "idx"},
            "spec": {
                "completionMode": "Indexed",
                "completions": 12,
                "parallelism": 4,
                "template": {
                    "metadata": {"annotations": {FAKE + "exit-code": "0", FAKE + "run-seconds": "1"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
        kubelet.create("batch/v1", "jobs", job, ns)
        _failover(kubelet, cands, log, created_before=5)
        done = wait_for(
            lambda: (
                (kubelet.get("batch/v1", "jobs", "idx", ns) or {}).get("status", {}).get("succeeded") == 12
            ),
            timeout=90,
            what="12 indexes done",
        )
        assert done
        indexes = [
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for _, p in log.added
        ]
        assert sorted(indexes, key=int) == [str(i) for i in range(12)], indexes  # each ran once
    finally:
        log.stop()
        cands.stop()


@pytest.mark.slow
def test_scheduler_failover_one_binds_then_the_other(
    api: ApiServerThread,
    kubelet: ControllersThread,
) -> None:
    h = kubelet
    ns = h.namespace("sched")
    for name in ("sn1", "sn2"):
        h.create("v1", "nodes", {"metadata": {"name": name}})
        status = {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }
        h.patch("v1", "nodes", name, {"status": status}, subresource="status")
    cands = Candidates(api, "scheduler", "sched")

    def pod(name: str) -> Obj:
        # the fake kubelet binds pods itself unless told to leave them alone
        return {
            "metadata": {"name": name, "annotations": {FAKE + "ignore": "true"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }

    def binders() -> dict[str, str]:
        out = {}
        for p in h.pods(ns):
            if p["spec"].get("nodeName"):
                out[p["metadata"]["name"]] = next(
                    f["manager"]
                    for f in p["metadata"]["managedFields"]
                    if "f:nodeName" in str(f.get("fieldsV1"))
                )
        return out

    try:
        leader = wait_for(lambda: cands.holder(h), timeout=20, what="a leader")
        for i in range(5):
            h.create("v1", "pods", pod(f"before-{i}"), ns)
        wait_for(lambda: len(binders()) == 5, what="5 pods bound")
        assert set(binders().values()) == {leader}  # the standby binds nothing
        killed = cands.kill(leader)
        for i in range(5):
            h.create("v1", "pods", pod(f"after-{i}"), ns)
        wait_for(lambda: len(binders()) == 10, timeout=QUICK.lease_duration * 4, what="10 pods bound")
        took = time.monotonic() - killed
        standby = next(w for w in cands.procs if w != leader)
        assert {v for k, v in binders().items() if k.startswith("after")} == {standby}
        print(f"\nscheduler failover (SIGKILL to 5 pods bound by the standby): {took:.2f} s")
    finally:
        cands.stop()


# --- `hypernetes up` on two control-plane hosts sharing etcd -------------------------------------


class UpHost:
    """`hypernetes up --no-node` on a shared etcd with shortened leases, its log kept."""

    def __init__(self, data: Path, store: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.data, self.url = data, f"https://127.0.0.1:{self.port}"
        self.log_path = data.parent / f"{data.name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen(
            [*HYPERNETES, "up", "--no-node", "--store", store, "--port", str(self.port),
             "--data-dir", str(data), "--leader-elect-lease-duration", str(QUICK.lease_duration),
             "--leader-elect-renew-deadline", str(QUICK.renew_deadline),
             "--leader-elect-retry-period", str(QUICK.retry_period)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._ready, timeout=60, interval=0.3, what=f"API server on {data}")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
        try:
            return httpx.get(f"{self.url}/readyz", verify=False, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def http(self) -> httpx.Client:
        token = (self.data / "pki" / "admin.token").read_text().strip()
        ca = str(self.data / "pki" / "ca.crt")
        return httpx.Client(
            base_url=self.url, verify=ca, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def leads(self, lease: str, holder: str) -> bool:
        return f"leader election {lease}: {holder} became leader" in self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


@pytest.mark.slow
@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed (make setup)")
def test_up_on_two_hosts_the_controllers_fail_over_once(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path / "etcd") as etcd:
        store = f"{etcd.url}?prefix=/elect"
        a = UpHost(tmp_path / "a", store)
        (tmp_path / "b").mkdir(mode=0o700)
        shutil.copytree(tmp_path / "a" / "pki", tmp_path / "b" / "pki")  # as an operator copies it
        b = UpHost(tmp_path / "b", store)
        try:
            with a.http() as ha, b.http() as hb:
                lease_path = (
                    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
                )

                def holder() -> str:
                    r = hb.get(lease_path)
                    return str(r.json()["spec"].get("holderIdentity") or "") if r.status_code == 200 else ""

                first = wait_for(holder, timeout=30, what="a controller manager leader")
                leader, standby = (a, b) if a.leads("kube-controller-manager", first) else (b, a)
                assert leader.leads("kube-controller-manager", first) and not standby.leads(
                    "kube-controller-manager", first
                )
                survivor = hb if standby is b else ha
                wait_for(
                    lambda: (
                        survivor.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
                    )
                )
                events: list[tuple[str, str]] = []
                watch = threading.Thread(target=_watch_pods, args=(survivor, events), daemon=True)
                watch.start()
                rs = {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 30,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
                        },
                    },
                }
                assert (
                    survivor.post("/apis/apps/v1/namespaces/default/replicasets", json=rs).status_code == 201
                )
                wait_for(lambda: len(events) >= 3, timeout=30, what="the leader creating pods")
                leader.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                leader.proc.wait(10)
                second = wait_for(
                    lambda: (h := holder()) != first and h,
                    timeout=4 * QUICK.lease_duration,
                    what="a new leader",
                )
                took = time.monotonic() - killed
                assert standby.leads("kube-controller-manager", second)
                wait_for(
                    lambda: len([e for e in events if e[0] == "ADDED"]) >= 30, timeout=60, what="30 pods"
                )
                time.sleep(3)  # a doubled creation would show by now
                added = [n for t, n in events if t == "ADDED"]
                assert len(added) == 30 and len(set(added)) == 30, len(added)
                assert not [n for t, n in events if t == "DELETED"]
                print(
                    f"\nup on two hosts: controller manager failover after SIGKILL: {took:.2f} s "
                    f"(lease {QUICK.lease_duration} s)"
                )
        finally:
            for host in (a, b):
                with contextlib.suppress(NameError):
                    host.stop()


def _watch_pods(http: httpx.Client, events: list[tuple[str, str]]) -> None:
    with (
        contextlib.suppress(httpx.HTTPError),
        http.stream(
            "GET",
            "/api/v1/namespaces/default/pods",
            params={"watch": "true", "timeoutSeconds": "120"},
            timeout=None,
        ) as r,
    ):
        for line in r.iter_lines():
            if line.strip():
                ev = json.loads(line)
                events.append((ev["type"], ev["object"]["metadata"]["name"]))
