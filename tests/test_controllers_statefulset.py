"""The StatefulSet controller against the real API server, with the real kubectl 1.32: ordered
creation (sampled while it happens), stable names and DNS identity, a claim per replica kept on
scale-down and reused on scale-up, Parallel, partitioned RollingUpdate and OnDelete, revision
history with `kubectl rollout status/history/undo`; validation as upstream."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hypernetes.apiclient import ApiException
from hypernetes.network.dns import records_for
from hypernetes.objects import Obj
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, controllers  # noqa: F401
from tests.support.waiting import wait_for

STS = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: {name}}}
  ports: [{{name: web, port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  serviceName: {name}
  replicas: {replicas}
  {extra}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{notes}}}
    spec:
      containers:
      - name: c
        image: "nginx:1"
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"""


def apply(
    server: ApiServerThread, name: str, ns: str, replicas: int = 3, extra: str = "", notes: str = ""
) -> None:
    body = STS.format(name=name, ns=ns, replicas=replicas, extra=extra, notes=notes)
    server.kubectl("apply", "-f", "-", input=body)


def names(c: ControllersThread, ns: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in c.pods(ns) if not p["metadata"].get("deletionTimestamp"))


def ready(pod: Obj) -> bool:
    return any(
        x["type"] == "Ready" and x["status"] == "True"
        for x in (pod.get("status") or {}).get("conditions") or []
    )


def sts(c: ControllersThread, ns: str, name: str = "web") -> Obj:
    got = c.get("apps/v1", "statefulsets", name, ns)
    assert got is not None
    return got


def status(c: ControllersThread, ns: str, name: str = "web") -> Obj:
    out: Obj = sts(c, ns, name).get("status") or {}
    return out


def images(c: ControllersThread, ns: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in c.pods(ns)}


class Sampler:
    """Samples the namespace's pods in the background while the controller works."""

    def __init__(self, c: ControllersThread, ns: str) -> None:
        self.c, self.ns, self.samples = c, ns, list[list[Obj]]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.c.pods(self.ns))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_ordered_creation_identity_claims_and_status(
    api: ApiServerThread, controllers: ControllersThread
) -> None:
    ns = controllers.namespace("sts-ordered")
    with Sampler(controllers, ns) as sampler:
        # every pod becomes Ready 0.3 s after it runs: time for a wrong controller to jump ahead
        apply(api, "web", ns, notes=f'"{FAKE}ready-delay": "0.3"')
        out = api.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=60s").stdout
    assert "partitioned roll out complete: 3 new pods have been updated..." in out, out
    # OrderedReady: pod N exists only once pods 0..N-1 exist and are Ready
    for pods in sampler.samples:
        by_name = {p["metadata"]["name"]: p for p in pods}
        ordinals = sorted(int(n.rsplit("-", 1)[1]) for n in by_name)
        assert ordinals == list(range(len(ordinals))), ordinals
        for o in ordinals[:-1]:
            assert ready(by_name[f"web-{o}"]), (o, sorted(by_name))
    assert any(len(s) == 1 for s in sampler.samples) and any(len(s) == 2 for s in sampler.samples)
    s = sts(controllers, ns)
    st = s["status"]
    rev = st["updateRevision"]
    assert st == {
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "currentReplicas": 3,
        "updatedReplicas": 3,
        "currentRevision": rev,
        "updateRevision": rev,
        "collisionCount": 0,
    }
    # defaults as upstream's
    spec = s["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert spec["volumeClaimTemplates"][0]["status"] == {"phase": "Pending"}
    for o in range(3):
        pod = next(p for p in controllers.pods(ns) if p["metadata"]["name"] == f"web-{o}")
        assert pod["spec"]["hostname"] == f"web-{o}" and pod["spec"]["subdomain"] == "web"
        assert pod["metadata"]["labels"] == {
            "app": "web",
            "statefulset.kubernetes.io/pod-name": f"web-{o}",
            "apps.kubernetes.io/pod-index": str(o),
            "controller-revision-hash": rev,
        }
        assert {"name": "data", "persistentVolumeClaim": {"claimName": f"data-web-{o}"}} in pod["spec"][
            "volumes"
        ]
        claim = controllers.get("v1", "persistentvolumeclaims", f"data-web-{o}", ns)
        assert claim is not None and claim["metadata"]["labels"] == {"app": "web"}
        assert not claim["metadata"].get("ownerReferences")  # Retain: the claim outlives the set
    (revision,) = controllers.items("apps/v1", "controllerrevisions", ns)
    assert revision["metadata"]["name"] == rev and revision["revision"] == 1
    assert revision["data"]["spec"]["template"]["$patch"] == "replace"
    # each pod's stable DNS name: the endpoints controller gives the headless service its
    # hostnames, and the DNS server's records answer <pod>.<service>.<ns>.svc.cluster.local
    wait_for(
        lambda: (
            len(
                ((controllers.get("v1", "endpoints", "web", ns) or {}).get("subsets") or [{}])[0].get(
                    "addresses"
                )
                or []
            )
            == 3
        ),
        what="3 endpoint addresses",
    )
    service, endpoints = (
        controllers.get("v1", "services", "web", ns),
        controllers.get("v1", "endpoints", "web", ns),
    )
    assert service is not None and endpoints is not None
    records = records_for([service], [endpoints])
    by_pod = {p["metadata"]["name"]: p["status"]["podIP"] for p in controllers.pods(ns)}
    for pod_name, ip in by_pod.items():
        assert [str(a) for a in records[f"{pod_name}.web.{ns}.svc.cluster.local"]] == [ip]
    row = api.kubectl("get", "sts", "web", "-n", ns).stdout.splitlines()
    assert row[0].split() == ["NAME", "READY", "AGE"] and row[1].split()[:2] == ["web", "3/3"], row
    described = api.kubectl("describe", "sts", "web", "-n", ns).stdout
    assert "create Pod web-2 in StatefulSet web successful" in described, described
    assert "create Claim data-web-0 Pod web-0 in StatefulSet web success" in described, described


def test_scale_down_in_reverse_keeps_claims_and_scale_up_reuses_them(
    api: ApiServerThread, controllers: ControllersThread
) -> None:
    ns = controllers.namespace("sts-scale")
    apply(api, "web", ns)
    wait_for(lambda: status(controllers, ns).get("readyReplicas") == 3, what="3 ready")
    claims = {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in controllers.items("v1", "persistentvolumeclaims", ns)
    }
    assert sorted(claims) == ["data-web-0", "data-web-1", "data-web-2"]
    with Sampler(controllers, ns) as sampler:
        api.kubectl("scale", "sts", "web", "-n", ns, "--replicas=1")
        wait_for(
            lambda: names(controllers, ns) == ["web-0"] and len(controllers.pods(ns)) == 1, what="web-0 only"
        )
    # web-2 went before web-1: no sample holds web-2 without web-1
    for pods in sampler.samples:
        present = {p["metadata"]["name"] for p in pods}
        assert "web-2" not in present or "web-1" in present, present
    wait_for(lambda: status(controllers, ns).get("replicas") == 1, what="status replicas 1")
    kept = {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in controllers.items("v1", "persistentvolumeclaims", ns)
    }
    assert kept == claims  # whenScaled: Retain
    api.kubectl("scale", "sts", "web", "-n", ns, "--replicas=3")
    wait_for(lambda: status(controllers, ns).get("readyReplicas") == 3, what="3 ready again")
    again = {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in controllers.items("v1", "persistentvolumeclaims", ns)
    }
    assert again == claims  # the same claims, not new ones


def test_parallel_does_not_wait_but_ordered_does(
    api: ApiServerThread, controllers: ControllersThread
) -> None:
    ns = controllers.namespace("sts-parallel")
    never = f'"{FAKE}ready": "false"'
    apply(api, "ordered", ns, notes=never)
    apply(api, "par", ns, extra="podManagementPolicy: Parallel", notes=never)
    wait_for(
        lambda: (
            sorted(n for n in names(controllers, ns) if n.startswith("par-")) == ["par-0", "par-1", "par-2"]
        ),
        what="every Parallel pod, none of them Ready",
    )
    # the ordered set, synced as often, never went past its first pod
    wait_for(lambda: status(controllers, ns, "ordered").get("replicas") == 1, what="ordered status")
    assert [n for n in names(controllers, ns) if n.startswith("ordered-")] == ["ordered-0"]
    # Parallel scale-down removes them all at once, ready or not
    api.kubectl("scale", "sts", "par", "-n", ns, "--replicas=0")
    wait_for(lambda: not [n for n in names(controllers, ns) if n.startswith("par-")], what="par gone")


def rollout_status(server: ApiServerThread, ns: str) -> str:
    return server.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=60s").stdout


def test_partitioned_rolling_update_history_and_undo(
    api: ApiServerThread, controllers: ControllersThread
) -> None:
    ns = controllers.namespace("sts-roll")
    apply(api, "web", ns)
    rollout_status(api, ns)
    first = status(controllers, ns)["currentRevision"]
    # partition 2: only web-2 moves to the new template
    api.kubectl(
        "patch",
        "sts",
        "web",
        "-n",
        ns,
        "-p",
        json.dumps({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}}),
    )
    api.kubectl("set", "image", "sts/web", "c=nginx:2", "-n", ns)
    out = rollout_status(api, ns)
    assert "partitioned roll out complete: 1 new pods have been updated..." in out, out
    assert images(controllers, ns) == {"web-0": "nginx:1", "web-1": "nginx:1", "web-2": "nginx:2"}
    st = status(controllers, ns)
    assert st["currentRevision"] == first and st["updateRevision"] != first
    assert st["updatedReplicas"] == 1 and st["currentReplicas"] == 2
    second = st["updateRevision"]
    # a deleted pod below the partition comes back at the current revision
    # (--wait=false: the pod comes back under its name within milliseconds, faster than
    # kubectl's wait can tell the new one from the old)
    api.kubectl("delete", "pod", "web-0", "-n", ns, "--wait=false")
    wait_for(
        lambda: status(controllers, ns).get("readyReplicas") == 3 and "web-0" in names(controllers, ns),
        what="web-0 back",
    )
    assert images(controllers, ns)["web-0"] == "nginx:1"
    # partition 0: the rest follow, highest ordinal first, one at a time
    with Sampler(controllers, ns) as sampler:
        api.kubectl(
            "patch",
            "sts",
            "web",
            "-n",
            ns,
            "-p",
            json.dumps({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
        )
        out = rollout_status(api, ns)
        wait_for(
            lambda: status(controllers, ns).get("currentRevision") == second, what="current revision moves"
        )
    assert "partitioned roll out complete: 3 new pods have been updated..." in out, out
    assert images(controllers, ns) == {"web-0": "nginx:2", "web-1": "nginx:2", "web-2": "nginx:2"}
    for pods in sampler.samples:  # never two pods down at once
        assert (
            sum(1 for p in pods if not ready(p) or p["metadata"].get("deletionTimestamp")) + (3 - len(pods))
            <= 1
        )
    st = status(controllers, ns)
    assert st["currentRevision"] == st["updateRevision"] == second and st["currentReplicas"] == 3
    history = api.kubectl("rollout", "history", "sts/web", "-n", ns).stdout
    lines = [line.split()[0] for line in history.splitlines()[2:] if line.strip()]
    assert lines == ["1", "2"], history
    shown = api.kubectl("rollout", "history", "sts/web", "-n", ns, "--revision=1").stdout
    assert "nginx:1" in shown, shown
    out = api.kubectl("rollout", "undo", "sts/web", "-n", ns).stdout
    assert "rolled back" in out, out
    rollout_status(api, ns)
    wait_for(
        lambda: (
            set(images(controllers, ns).values()) == {"nginx:1"}
            and status(controllers, ns).get("currentRevision") == first
        ),
        what="rolled back",
    )
    # the old revision came back under the next number, as upstream renumbers it
    revs = {
        r["metadata"]["name"]: r["revision"] for r in controllers.items("apps/v1", "controllerrevisions", ns)
    }
    assert revs == {first: 3, second: 2}, revs


def test_on_delete_replaces_only_deleted_pods(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("sts-ondelete")
    apply(api, "web", ns, replicas=2, extra="updateStrategy: {type: OnDelete}")
    wait_for(lambda: status(controllers, ns).get("readyReplicas") == 2, what="2 ready")
    api.kubectl("set", "image", "sts/web", "c=nginx:2", "-n", ns)
    wait_for(lambda: status(controllers, ns).get("observedGeneration") == 2, what="generation 2 seen")
    assert images(controllers, ns) == {"web-0": "nginx:1", "web-1": "nginx:1"}
    api.kubectl("delete", "pod", "web-1", "-n", ns, "--wait=false")
    wait_for(
        lambda: images(controllers, ns) == {"web-0": "nginx:1", "web-1": "nginx:2"}, what="web-1 replaced"
    )
    st = status(controllers, ns)
    assert (
        st["updatedReplicas"] == 1
        and st["currentReplicas"] == 1
        and st["currentRevision"] != st["updateRevision"]
    )
    out = api.kubectl("rollout", "status", "sts/web", "-n", ns, check=False)
    assert (
        out.returncode != 0
        and "rollout status is only available for RollingUpdate strategy type" in out.stderr
    )


def invalid(c: ControllersThread, body: Obj, ns: str) -> list[tuple[str, str]]:
    with pytest.raises(ApiException) as e:
        c.create("apps/v1", "statefulsets", body, ns)
    assert e.value.status == 422, e.value.body
    return [(x["field"], x["message"]) for x in e.value.body["details"]["causes"]]


def test_validation(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("sts-invalid")
    good: Obj = {
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }

    def spec(**kw: object) -> Obj:
        return {**good, "spec": {**good["spec"], **kw}}

    # ValidateStatefulSetName: a DNS label (its pods' hostnames), not a subdomain
    causes = invalid(controllers, {**good, "metadata": {"name": "db.v1"}}, ns)
    assert causes[0][0] == "metadata.name" and "a lowercase RFC 1123 label must consist of" in causes[0][1]
    causes = invalid(controllers, spec(selector={"matchLabels": {}}), ns)
    assert causes == [
        ("spec.selector", 'Invalid value: {"matchLabels":{}}: empty selector is invalid for statefulset')
    ]
    causes = invalid(controllers, spec(podManagementPolicy="Sometimes"), ns)
    assert causes == [
        ("spec.podManagementPolicy", "Invalid value: \"Sometimes\": must be 'OrderedReady' or 'Parallel'")
    ]
    causes = invalid(
        controllers, spec(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}), ns
    )
    assert causes == [
        (
            "spec.updateStrategy.rollingUpdate.partition",
            "Invalid value: -1: must be greater than or equal to 0",
        )
    ]
    causes = invalid(
        controllers, spec(updateStrategy={"type": "OnDelete", "rollingUpdate": {"partition": 1}}), ns
    )
    assert (
        causes[0][0] == "spec.updateStrategy.rollingUpdate"
        and "only allowed for updateStrategy 'RollingUpdate'" in causes[0][1]
    )
    causes = invalid(
        controllers,
        spec(volumeClaimTemplates=[{"metadata": {"name": "d"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]),
        ns,
    )
    assert causes == [("spec.volumeClaimTemplates[0].spec.resources[storage]", "Required value")]
    causes = invalid(controllers, spec(persistentVolumeClaimRetentionPolicy={"whenScaled": "Keep"}), ns)
    assert causes[0][0] == "spec.persistentVolumeClaimRetentionPolicy.whenScaled"
    tmpl = {
        **good["spec"]["template"],
        "spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Never"},
    }
    causes = invalid(controllers, spec(template=tmpl), ns)
    assert causes[0][0] == "spec.template.spec.restartPolicy"
    controllers.create("apps/v1", "statefulsets", good, ns)
    with pytest.raises(ApiException) as e:
        controllers.patch("apps/v1", "statefulsets", "db", {"spec": {"serviceName": "other"}}, ns)
    assert e.value.status == 422
    (cause,) = e.value.body["details"]["causes"]
    assert (
        cause["field"] == "spec"
        and "updates to statefulset spec for fields other than 'replicas'" in cause["message"]
    )
    # what may change does
    controllers.patch("apps/v1", "statefulsets", "db", {"spec": {"replicas": 0, "minReadySeconds": 5}}, ns)
    # defaults as upstream's: an explicit RollingUpdate gets no rollingUpdate (nor partition)
    explicit = controllers.create(
        "apps/v1",
        "statefulsets",
        {**spec(updateStrategy={"type": "RollingUpdate"}, replicas=0), "metadata": {"name": "explicit"}},
        ns,
    )
    assert explicit["spec"]["updateStrategy"] == {"type": "RollingUpdate"}


def test_claim_retention_delete(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("sts-retention")
    retention = "persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}"
    apply(api, "web", ns, replicas=2, extra=retention)
    wait_for(lambda: status(controllers, ns).get("readyReplicas") == 2, what="2 ready")

    def claims() -> list[str]:
        return sorted(
            c["metadata"]["name"]
            for c in controllers.items("v1", "persistentvolumeclaims", ns)
            if not c["metadata"].get("deletionTimestamp")
        )

    owner = controllers.get("v1", "persistentvolumeclaims", "data-web-0", ns) or {}
    assert owner["metadata"]["ownerReferences"][0]["uid"] == sts(controllers, ns)["metadata"]["uid"]
    api.kubectl("scale", "sts", "web", "-n", ns, "--replicas=1")
    wait_for(lambda: claims() == ["data-web-0"], what="the scaled-away replica's claim deleted")
    api.kubectl("delete", "sts", "web", "-n", ns)
    wait_for(lambda: claims() == [], what="the set's claims deleted with it")
