"""The Deployment controller with the real kubectl: rollout status, rolling updates within
maxSurge/maxUnavailable (pod counts sampled during the rollout), rollout undo, Recreate,
pause/resume, revisionHistoryLimit, the progress deadline and proportional scaling."""

from __future__ import annotations

import json
import threading
import time

from hypernetes.controllers import rollout as r
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  {extra}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{notes}}}
    spec:
      containers: [{{name: c, image: "nginx:1"}}]
"""


def deploy(
    server: ApiServerThread, name: str, ns: str, replicas: int = 3, extra: str = "", notes: str = ""
) -> None:
    server.kubectl(
        "apply", "-f", "-", input=DEPLOY.format(name=name, ns=ns, replicas=replicas, extra=extra, notes=notes)
    )


def replica_sets(c: ControllersThread, ns: str) -> list[Obj]:
    """By creation; timestamps have whole seconds, so the first revision breaks ties."""

    def first_revision(rs: Obj) -> int:
        notes = rs["metadata"].get("annotations") or {}
        history = notes.get("deployment.kubernetes.io/revision-history")
        return int((history or notes.get("deployment.kubernetes.io/revision", "0")).split(",")[0])

    return sorted(
        c.items("apps/v1", "replicasets", ns),
        key=lambda rs: (rs["metadata"]["creationTimestamp"], first_revision(rs)),
    )


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def reason(obj: Obj, ctype: str) -> tuple[str, str]:
    c = conditions(obj).get(ctype) or {}
    return c.get("status", ""), c.get("reason", "")


def get_deploy(c: ControllersThread, ns: str, name: str) -> Obj:
    return c.get("apps/v1", "deployments", name, ns) or {}


def rollout_status(server: ApiServerThread, name: str, ns: str, timeout: str = "60s") -> str:
    return server.kubectl(
        "rollout", "status", f"deployment/{name}", "-n", ns, f"--timeout={timeout}", timeout=90
    ).stdout


class PodSampler(threading.Thread):
    """Samples (pods not being deleted, of them ready) until stopped."""

    def __init__(self, c: ControllersThread, ns: str) -> None:
        super().__init__(daemon=True)
        self.c, self.ns = c, ns
        self.samples: list[tuple[int, int, set[str]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            pods = [p for p in self.c.pods(self.ns) if not p["metadata"].get("deletionTimestamp")]
            ready = [
                p
                for p in pods
                if any(
                    cd["type"] == "Ready" and cd["status"] == "True"
                    for cd in (p.get("status") or {}).get("conditions") or []
                )
            ]
            hashes = {p["metadata"]["labels"].get("pod-template-hash", "") for p in self.c.pods(self.ns)}
            self.samples.append((len(pods), len(ready), hashes))
            time.sleep(0.03)

    def stop(self) -> list[tuple[int, int, set[str]]]:
        self.halt.set()
        self.join(10)
        return self.samples


def test_create_and_rollout_status(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("dep-create")
    deploy(api, "web", ns)
    assert 'deployment "web" successfully rolled out' in rollout_status(api, "web", ns)
    d = get_deploy(controllers, ns, "web")
    (rs,) = replica_sets(controllers, ns)
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}" and len(h) >= 8
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    notes = rs["metadata"]["annotations"]
    assert notes["deployment.kubernetes.io/revision"] == "1"
    assert notes["deployment.kubernetes.io/desired-replicas"] == "3"
    assert notes["deployment.kubernetes.io/max-replicas"] == "4"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in notes
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    for p in controllers.pods(ns):
        assert p["metadata"]["name"].startswith(f"web-{h}-")
        assert p["metadata"]["labels"]["pod-template-hash"] == h
    status = d["status"]
    assert {
        k: status[k]
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "observedGeneration")
    } == {
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }
    assert "unavailableReplicas" not in status
    cond = conditions(d)
    assert reason(d, "Available") == ("True", "MinimumReplicasAvailable")
    assert reason(d, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert cond["Progressing"]["message"] == f'ReplicaSet "web-{h}" has successfully progressed.'
    row = api.kubectl("get", "deploy", "web", "-n", ns).stdout.splitlines()[1].split()
    assert row[:4] == ["web", "3/3", "3", "3"], row
    described = api.kubectl("describe", "deploy", "web", "-n", ns).stdout
    assert f"Scaled up replica set web-{h} from 0 to 3" in described, described


def test_rolling_update_within_surge_and_unavailable(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("dep-roll")
    strategy = "strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}"
    deploy(api, "web", ns, replicas=4, extra=strategy, notes=f'"{FAKE}ready-delay": "0.4"')
    rollout_status(api, "web", ns)
    sampler = PodSampler(controllers, ns)
    sampler.start()
    api.kubectl("set", "image", "deployment/web", "-n", ns, "c=nginx:2")
    out = rollout_status(api, "web", ns)
    samples = sampler.stop()
    assert 'deployment "web" successfully rolled out' in out
    assert "Waiting for deployment" in out  # it did watch the rollout progress
    assert max(total for total, _, _ in samples) <= 5, samples  # replicas + maxSurge
    assert min(ready for _, ready, _ in samples) >= 3, samples  # replicas - maxUnavailable
    assert any(len(h) == 2 for _, _, h in samples)  # old and new pods side by side
    old, new = replica_sets(controllers, ns)
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 4)
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    d = get_deploy(controllers, ns, "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["updatedReplicas"] == 4 and d["status"]["replicas"] == 4

    # rollout undo: kubectl patches the old template back; its ReplicaSet becomes revision 3
    undo = api.kubectl("rollout", "undo", "deployment/web", "-n", ns).stdout
    assert "deployment.apps/web rolled back" in undo
    assert 'deployment "web" successfully rolled out' in rollout_status(api, "web", ns)
    rss = {rs["metadata"]["name"]: rs for rs in replica_sets(controllers, ns)}
    assert len(rss) == 2
    back = rss[old["metadata"]["name"]]
    assert back["spec"]["replicas"] == 4 and rss[new["metadata"]["name"]]["spec"]["replicas"] == 0
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    images = {
        p["spec"]["containers"][0]["image"]
        for p in controllers.pods(ns)
        if not p["metadata"].get("deletionTimestamp")
    }
    assert images == {"nginx:1"}
    history = api.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout
    assert [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()] == ["2", "3"], history


def test_recreate_never_mixes_versions(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("dep-recreate")
    deploy(api, "web", ns, replicas=3, extra="strategy: {type: Recreate}")
    rollout_status(api, "web", ns)
    sampler = PodSampler(controllers, ns)
    sampler.start()
    api.kubectl("set", "image", "deployment/web", "-n", ns, "c=nginx:2")
    assert "successfully rolled out" in rollout_status(api, "web", ns)
    samples = sampler.stop()
    assert all(len(h) <= 1 for _, _, h in samples), samples  # old pods all gone before new ones
    seen = [next(iter(h)) for _, _, h in samples if h]
    assert len(set(seen)) == 2 and seen[0] != seen[-1]
    assert [rs["spec"]["replicas"] for rs in replica_sets(controllers, ns)] == [0, 3]


def test_pause_scale_resume(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("dep-pause")
    deploy(api, "web", ns, replicas=2)
    rollout_status(api, "web", ns)
    api.kubectl("rollout", "pause", "deployment/web", "-n", ns)
    api.kubectl("set", "image", "deployment/web", "-n", ns, "c=nginx:2")
    wait_for(
        lambda: reason(get_deploy(controllers, ns, "web"), "Progressing")[1] == "DeploymentPaused",
        what="DeploymentPaused",
    )
    cond = conditions(get_deploy(controllers, ns, "web"))["Progressing"]
    assert (cond["status"], cond["message"]) == ("Unknown", "Deployment is paused")
    api.kubectl("scale", "deployment/web", "-n", ns, "--replicas=4")
    wait_for(
        lambda: get_deploy(controllers, ns, "web")["status"].get("availableReplicas") == 4, what="scaled"
    )
    (rs,) = replica_sets(controllers, ns)  # paused: no new ReplicaSet for the new template
    assert rs["spec"]["replicas"] == 4
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "4"
    api.kubectl("rollout", "resume", "deployment/web", "-n", ns)
    assert "successfully rolled out" in rollout_status(api, "web", ns)
    old, new = replica_sets(controllers, ns)
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 4)


def test_revision_history_limit(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("dep-history")
    deploy(api, "web", ns, replicas=1, extra="revisionHistoryLimit: 1")
    for tag in ("2", "3", "4"):
        rollout_status(api, "web", ns)
        api.kubectl("set", "image", "deployment/web", "-n", ns, f"c=nginx:{tag}")
    rollout_status(api, "web", ns)
    rss = wait_for(
        lambda: (lambda x: x if len(x) == 2 else None)(replica_sets(controllers, ns)), what="2 replica sets"
    )
    revisions = sorted(int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for rs in rss)
    assert revisions == [3, 4]


def test_progress_deadline_exceeded(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("dep-deadline")
    deploy(api, "stuck", ns, replicas=2, extra="progressDeadlineSeconds: 2", notes=f'"{FAKE}ready": "false"')
    proc = api.kubectl(
        "rollout", "status", "deployment/stuck", "-n", ns, "--timeout=30s", check=False, timeout=60
    )
    assert proc.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in proc.stderr
    d = get_deploy(controllers, ns, "stuck")
    assert reason(d, "Progressing") == ("False", "ProgressDeadlineExceeded")
    assert reason(d, "Available") == ("False", "MinimumReplicasUnavailable")
    assert get_deploy(controllers, ns, "stuck")["status"]["unavailableReplicas"] == 2


def test_proportional_scaling_during_a_rollout(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("dep-proportional")
    strategy = "strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 2, maxUnavailable: 0}}"
    deploy(api, "web", ns, replicas=4, extra=strategy)
    rollout_status(api, "web", ns)
    # the new version never becomes ready: the rollout stays half-way
    api.kubectl(
        "patch",
        "deployment/web",
        "-n",
        ns,
        "-p",
        json.dumps({"spec": {"template": {"metadata": {"annotations": {FAKE + "ready": "false"}}}}}),
    )
    wait_for(
        lambda: [rs["spec"]["replicas"] for rs in replica_sets(controllers, ns)] == [4, 2],
        what="surged to 4 + 2",
    )
    api.kubectl("scale", "deployment/web", "-n", ns, "--replicas=8")
    wait_for(
        lambda: [rs["spec"]["replicas"] for rs in replica_sets(controllers, ns)] == [7, 3],
        what="8 + 2 split proportionally",
    )


def _d(replicas: int, surge: int | str, unavailable: int | str) -> Obj:
    return {
        "metadata": {"name": "d"},
        "spec": {
            "replicas": replicas,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
        },
    }


def _rs(replicas: int, available: int = 0) -> Obj:
    return {
        "metadata": {"name": "rs"},
        "spec": {"replicas": replicas},
        "status": {"availableReplicas": available},
    }


def test_fenceposts_and_new_replica_set_size() -> None:
    assert r.fenceposts(_d(10, "25%", "25%")) == (3, 2)  # surge rounds up, unavailable down
    assert r.fenceposts(_d(3, 0, 0)) == (0, 1)  # both zero would never progress
    assert r.fenceposts(_d(4, 1, "0%")) == (1, 0)
    new, old = _rs(0), _rs(4, 4)
    assert r.new_rs_replicas(_d(4, 1, 1), [old, new], new) == 1
    assert r.new_rs_replicas(_d(4, "50%", 0), [old, new], new) == 2
    assert r.new_rs_replicas(_d(4, 1, 1), [_rs(5), new], new) == 0  # already at replicas + surge
    assert r.available(_rs(2, 4)) == 2  # never more than it is scaled to


def test_template_hash_is_stable_and_ignores_the_hash_label() -> None:
    t = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    h = r.template_hash(t)
    assert h == r.template_hash(json.loads(json.dumps(t))) and h != r.template_hash(t, 1)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    labelled = {**t, "metadata": {"labels": {"app": "web", "pod-template-hash": h}}}
    assert r.equal_ignore_hash(t, labelled)
    assert not r.equal_ignore_hash(t, {**t, "spec": {"containers": [{"name": "c", "image": "y"}]}})
