"""The DaemonSet controller with fake nodes (tests/support/nodes.py), the real scheduler and the
real kubectl 1.32: one pod per node matching the nodeSelector and tolerated taints, following
labels and taints as they change, a RollingUpdate within maxUnavailable (sampled while it
runs), `kubectl rollout status/history ds`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
from hypernetes.objects import Obj
from tests.support.apiserver import ApiServerThread
from tests.support.nodes import NodesCluster
from tests.support.waiting import wait_for

NODES = ("n1", "n2", "n3")

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  {extra}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{role: edge}}
      containers: [{{name: c, image: "agent:1"}}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesCluster]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("ds"))).start()
    c = NodesCluster(api, NodeLifecycleConfig(), controllers=("daemonset",))
    for n in NODES:
        c.start_node(n)
    wait_for(lambda: all(c.ctl.get("v1", "nodes", n) for n in NODES), what="nodes registered")
    try:
        yield c
    finally:
        c.stop()
        api.stop()


def label(c: NodesCluster, node: str, value: str | None) -> None:
    c.ctl.patch("v1", "nodes", node, {"metadata": {"labels": {"role": value}}})


def placed(c: NodesCluster, ns: str) -> dict[str, list[str]]:
    """node -> the images of the live daemon pods bound to it."""
    out: dict[str, list[str]] = {}
    for p in c.ctl.pods(ns):
        if not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName"):
            out.setdefault(p["spec"]["nodeName"], []).append(p["spec"]["containers"][0]["image"])
    return out


def available(pod: Obj) -> bool:
    ready = any(x["type"] == "Ready" and x["status"] == "True" for x in pod["status"].get("conditions") or [])
    return ready and not pod["metadata"].get("deletionTimestamp")


def test_one_pod_per_matching_node_following_labels_and_taints(cluster: NodesCluster) -> None:
    c = cluster
    ns = c.ctl.namespace("ds-place")
    for n in ("n1", "n2"):
        label(c, n, "edge")
    c.api.kubectl("apply", "-f", "-", input=DS.format(name="agent", ns=ns, extra=""))
    out = c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s").stdout
    assert 'daemon set "agent" successfully rolled out' in out, out
    assert placed(c, ns) == {"n1": ["agent:1"], "n2": ["agent:1"]}
    pod = c.pods_on(ns, "n1")[0]
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
    }
    tolerated = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tolerated
    assert ("node.kubernetes.io/not-ready", "NoExecute") in tolerated
    assert pod["metadata"]["labels"]["controller-revision-hash"]
    ds = c.ctl.get("apps/v1", "daemonsets", "agent", ns) or {}
    assert ds["status"] == {
        "currentNumberScheduled": 2,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 2,
        "numberReady": 2,
        "observedGeneration": 1,
        "updatedNumberScheduled": 2,
        "numberAvailable": 2,
    }
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    rows = c.api.kubectl("get", "ds", "agent", "-n", ns).stdout.splitlines()
    assert rows[0].split() == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE",
        "SELECTOR",
        "AGE",
    ]
    assert rows[1].split()[:7] == ["agent", "2", "2", "2", "2", "2", "role=edge"], rows
    # a node that gains the label gets the daemon; one that loses it loses it
    label(c, "n3", "edge")
    wait_for(lambda: sorted(placed(c, ns)) == ["n1", "n2", "n3"], what="a pod on n3")
    label(c, "n1", None)
    wait_for(lambda: sorted(placed(c, ns)) == ["n2", "n3"], what="n1's pod gone")
    # a NoSchedule taint the daemon does not tolerate takes it off the node; a cordon does not
    c.ctl.patch(
        "v1",
        "nodes",
        "n2",
        {"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}},
    )
    wait_for(lambda: sorted(placed(c, ns)) == ["n3"], what="n2's pod gone")
    c.ctl.patch("v1", "nodes", "n3", {"spec": {"unschedulable": True}})
    c.ctl.patch("v1", "nodes", "n2", {"spec": {"taints": None}})
    wait_for(lambda: sorted(placed(c, ns)) == ["n2", "n3"], what="back on n2, still on cordoned n3")
    c.ctl.patch("v1", "nodes", "n3", {"spec": {"unschedulable": None}})
    # a deleted daemon pod is replaced
    victim = c.pods_on(ns, "n2")[0]["metadata"]["name"]
    c.ctl.delete("v1", "pods", victim, ns)
    wait_for(
        lambda: [p["metadata"]["name"] for p in c.pods_on(ns, "n2") if available(p)] not in ([], [victim]),
        what="n2's replacement",
    )
    c.api.kubectl("delete", "ds", "agent", "-n", ns)
    for n in NODES:
        label(c, n, None)


def test_rolling_update_within_max_unavailable_and_history(cluster: NodesCluster) -> None:
    c = cluster
    ns = c.ctl.namespace("ds-roll")
    for n in NODES:
        label(c, n, "edge")
    c.api.kubectl("apply", "-f", "-", input=DS.format(name="agent", ns=ns, extra=""))
    c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
    samples: list[list[Obj]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(c.ctl.pods(ns))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        c.api.kubectl("set", "image", "ds/agent", "c=agent:2", "-n", ns)
        out = c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s").stdout
    finally:
        stop.set()
        sampler.join(10)
    assert 'daemon set "agent" successfully rolled out' in out, out
    assert placed(c, ns) == {n: ["agent:2"] for n in NODES}
    # maxUnavailable 1: never two nodes without an available daemon at once
    for pods in samples:
        up = {p["spec"].get("nodeName") for p in pods if available(p)}
        assert len(set(NODES) - up) <= 1, sorted(up)
    history = c.api.kubectl("rollout", "history", "ds/agent", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"], history
    revs = c.ctl.items("apps/v1", "controllerrevisions", ns)
    assert sorted(r["revision"] for r in revs) == [1, 2]
    rows = c.api.kubectl("get", "controllerrevisions", "-n", ns).stdout.splitlines()
    assert rows[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert all(r.split()[1] == "daemonset.apps/agent" for r in rows[1:]), rows
    # the ControllerRevision's data is immutable
    proc = c.api.kubectl(
        "patch",
        "controllerrevision",
        revs[0]["metadata"]["name"],
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"data": {"replaced": True}}),
        check=False,
    )
    assert (
        proc.returncode != 0 and "data: Invalid value" in proc.stderr and "field is immutable" in proc.stderr
    ), proc.stderr
    # kubectl rollout undo ds applies revision 1's template; that revision comes back as 3
    out = c.api.kubectl("rollout", "undo", "ds/agent", "-n", ns).stdout
    assert "rolled back" in out, out
    c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
    wait_for(lambda: placed(c, ns) == {n: ["agent:1"] for n in NODES}, what="agent:1 everywhere again")
    assert sorted(r["revision"] for r in c.ctl.items("apps/v1", "controllerrevisions", ns)) == [2, 3]
    for n in NODES:
        label(c, n, None)


def test_validation(cluster: NodesCluster) -> None:
    c = cluster
    ns = c.ctl.namespace("ds-invalid")
    bad = DS.format(
        name="x",
        ns=ns,
        extra="updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}",
    )
    proc = c.api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert (
        "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: "
        "may not be set when maxUnavailable is non-zero" in proc.stderr
    ), proc.stderr
    bad = DS.format(
        name="x",
        ns=ns,
        extra="updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 0}}",
    )
    proc = c.api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert (
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
        in proc.stderr
    ), proc.stderr
    bad = DS.format(name="x", ns=ns, extra="").replace("nodeSelector: {role: edge}", "restartPolicy: Never")
    proc = c.api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert (
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
        in proc.stderr
    ), proc.stderr
    # ValidateDaemonSetUpdateStrategy names the strategy (upstream's order of values); an empty
    # selector is "invalid for daemonset"; a missing one matches no template labels
    bad = DS.format(name="x", ns=ns, extra="updateStrategy: {type: Sometimes}")
    proc = c.api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert (
        'spec.updateStrategy: Unsupported value: {"type":"Sometimes"}: '
        'supported values: "RollingUpdate", "OnDelete"' in proc.stderr
    ), proc.stderr
    bad = DS.format(name="x", ns=ns, extra="").replace("selector: {matchLabels: {app: x}}", "selector: {}")
    proc = c.api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert "spec.selector: Invalid value: {}: empty selector is invalid for daemonset" in proc.stderr, (
        proc.stderr
    )
    bad = DS.format(name="x", ns=ns, extra="").replace(
        "selector: {matchLabels: {app: x}}", "minReadySeconds: 0"
    )
    proc = c.api.kubectl("create", "-f", "-", "--validate=false", input=bad, check=False)
    assert (
        'spec.template.metadata.labels: Invalid value: {"app":"x"}: '
        "`selector` does not match template `labels`" in proc.stderr
    ), proc.stderr


def test_the_templates_node_affinity_is_honoured(cluster: NodesCluster) -> None:
    c = cluster
    ns = c.ctl.namespace("ds-affinity")
    for n in NODES:
        label(c, n, "edge")
    c.ctl.patch("v1", "nodes", "n2", {"metadata": {"labels": {"zone": "a"}}})
    affinity = (
        "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        "{nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}"
    )
    body = DS.format(name="zonal", ns=ns, extra="").replace("nodeSelector: {role: edge}", affinity)
    c.api.kubectl("apply", "-f", "-", input=body)
    out = c.api.kubectl("rollout", "status", "ds/zonal", "-n", ns, "--timeout=60s").stdout
    assert 'daemon set "zonal" successfully rolled out' in out, out
    # one pod, on the only node in zone a (a pod pinned to another node would run outside it)
    assert [p["spec"].get("nodeName") for p in c.ctl.pods(ns)] == ["n2"]
    assert (c.ctl.get("apps/v1", "daemonsets", "zonal", ns) or {})["status"]["desiredNumberScheduled"] == 1
    c.ctl.patch("v1", "nodes", "n2", {"metadata": {"labels": {"zone": None}}})
    for n in NODES:
        label(c, n, None)


def test_surge_update_never_leaves_a_node_without_its_daemon(cluster: NodesCluster) -> None:
    c = cluster
    ns = c.ctl.namespace("ds-surge")
    for n in NODES:
        label(c, n, "edge")
    surge = "updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}"
    c.api.kubectl("apply", "-f", "-", input=DS.format(name="agent", ns=ns, extra=surge))
    c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
    samples: list[list[Obj]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(c.ctl.pods(ns))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        c.api.kubectl("set", "image", "ds/agent", "c=agent:2", "-n", ns)
        c.api.kubectl("rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
        wait_for(lambda: placed(c, ns) == {n: ["agent:2"] for n in NODES}, what="agent:2 alone everywhere")
    finally:
        stop.set()
        sampler.join(10)
    # the new pod starts beside the old one, which goes once the new one is available; at most
    # maxSurge nodes have two at once
    for pods in samples:
        up = {p["spec"].get("nodeName") for p in pods if available(p)}
        assert up >= set(NODES), sorted(up)
        doubled = [n for n in NODES if sum(1 for p in pods if p["spec"].get("nodeName") == n) > 1]
        assert len(doubled) <= 1, doubled
    assert any(len(p) > len(NODES) for p in samples)  # a surge was seen
    for n in NODES:
        label(c, n, None)
