"""The persistent volume controller against a real multi-tenant API server: provisioning per the
contract in docs/volumes.md, binding to static volumes (never across tenants), expansion,
pvc-protection (`kubectl delete pvc` waits for the pods using the claim), pv-protection, reclaim
(Delete and Retain), the events `kubectl describe` shows, and the tenant's storage usage.

No node agent runs here: Node objects stand in for nodes, and the tests play the node's part
where the contract gives it one (growing a claim's status.capacity, removing the backing-file
finalizer)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.objects import Obj
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread
from tests.support.tenants import MERGE, TenantWorld
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

PVS = "/api/v1/persistentvolumes"
CLASSES = "/apis/storage.k8s.io/v1/storageclasses"
BACKING_FILE = "local.hypernetes.io/backing-file"


class Cluster:
    def __init__(self, world: TenantWorld, ctl: ControllersThread) -> None:
        self.w, self.ctl = world, ctl

    def claim(self, ns: str, name: str, size: str = "1Gi", who: str = "operator", **spec: Any) -> Obj:
        body: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec},
        }
        r = self.w.http(who).post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get_claim(self, ns: str, name: str) -> Obj | None:
        return self.ctl.get("v1", "persistentvolumeclaims", name, ns)

    def pv(self, name: str) -> Obj | None:
        return self.ctl.get("v1", "persistentvolumes", name)

    def bound(self, ns: str, name: str) -> Obj:
        def done() -> Obj | None:
            c = self.get_claim(ns, name)
            return c if c and (c.get("status") or {}).get("phase") == "Bound" else None

        return wait_for(done, what=f"claim {ns}/{name} bound")

    def events(self, ns: str, name: str) -> list[tuple[str, str, str]]:
        return [
            (e["type"], e["reason"], e["message"])
            for e in self.ctl.items("v1", "events", ns)
            if e["involvedObject"]["name"] == name
        ]

    def static_pv(self, name: str, node: str, tenant: str | None, size: str, **spec: Any) -> Obj:
        meta: Obj = {"name": name, **({"labels": {"hypernetes.io/tenant": tenant}} if tenant else {})}
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": meta,
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "csi": {"driver": "local.hypernetes.io", "volumeHandle": name},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                },
                **spec,
            },
        }
        return self.w.op("POST", PVS, body)

    def node_removes_backing_file(self, pv: str) -> None:
        """The node's part once a PV is deleted: the disk goes, then its finalizer."""
        cur = self.pv(pv)
        assert cur is not None and cur["metadata"].get("deletionTimestamp"), cur
        rest = [f for f in cur["metadata"]["finalizers"] if f != BACKING_FILE]
        self.w.op("PATCH", f"{PVS}/{pv}", {"metadata": {"finalizers": rest or None}}, headers=MERGE)


def node(name: str, ready: bool = True, unschedulable: bool = False) -> tuple[Obj, Obj]:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"unschedulable": unschedulable},
    }
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return body, status


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("volumes")), tenancy=True).start()
    world = TenantWorld(api)
    ctl = ControllersThread(api, only=["persistentvolume", "tenant"], kubelet=False).start()
    try:
        for tenant in ("acme", "globex"):
            world.fresh_tenant(tenant)
        for body, status in (node("n1"), node("n2"), node("n3", ready=False), node("n4", unschedulable=True)):
            world.op("POST", "/api/v1/nodes", body)
            world.op(
                "PATCH", f"/api/v1/nodes/{body['metadata']['name']}/status", {"status": status}, headers=MERGE
            )
        yield Cluster(world, ctl)
    finally:
        ctl.stop()
        world.close()
        api.stop()


def test_provisioned_volume_follows_the_contract(cluster: Cluster) -> None:
    made = cluster.claim(
        "acme-a",
        "data",
        "2Gi",
        who="acme-admin",
        volumeMode="Block",
        accessModes=["ReadWriteOnce", "ReadOnlyMany"],
    )
    uid = made["metadata"]["uid"]
    claim = cluster.bound("acme-a", "data")
    name = f"pvc-{uid}"
    assert claim["spec"]["volumeName"] == name
    assert claim["spec"]["storageClassName"] == "local"  # the default class, from admission
    assert claim["status"] == {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
        "capacity": {"storage": "2Gi"},
    }
    notes = claim["metadata"]["annotations"]
    assert notes["pv.kubernetes.io/bind-completed"] == "yes"
    assert notes["volume.kubernetes.io/storage-provisioner"] == "local.hypernetes.io"
    pv = cluster.pv(name)
    assert pv is not None
    meta, spec = pv["metadata"], pv["spec"]
    assert meta["labels"] == {"hypernetes.io/tenant": "acme"}
    assert meta["annotations"] == {"pv.kubernetes.io/provisioned-by": "local.hypernetes.io"}
    assert meta["finalizers"] == ["kubernetes.io/pv-protection", BACKING_FILE]
    node_name = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
    assert node_name in ("n1", "n2")
    assert spec == {
        "capacity": {"storage": "2Gi"},
        "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
        "volumeMode": "Block",
        "persistentVolumeReclaimPolicy": "Delete",
        "storageClassName": "local",
        "claimRef": {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "namespace": "acme-a",
            "name": "data",
            "uid": uid,
        },
        "nodeAffinity": {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
                        ]
                    }
                ]
            }
        },
        "csi": {
            "driver": "local.hypernetes.io",
            "volumeHandle": name,
            "fsType": "ext4",
            "volumeAttributes": {"format": "raw"},
        },
    }
    assert pv["status"]["phase"] == "Bound"
    assert ("Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}") in cluster.events(
        "acme-a", "data"
    )
    # what the tenant sees of it
    out = cluster.w.kubectl("acme-admin", "get", "pvc", "data", "-n", "acme-a", "-o", "wide")
    assert out.returncode == 0, out.stderr
    cells = out.stdout.splitlines()[1].split()
    assert cells[:6] == ["data", "Bound", name, "2Gi", "RWO,ROX", "local"] and cells[-1] == "Block"
    listed = cluster.w.kubectl("acme-admin", "get", "pv", "-o", "name").stdout.split()
    assert listed == [f"persistentvolume/{name}"]
    assert cluster.w.kubectl("globex-admin", "get", "pv", "-o", "name").stdout.split() == []


def node_of(pv: Obj) -> str:
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    return str(term["matchExpressions"][0]["values"][0])


def test_volumes_go_to_the_ready_node_holding_least(cluster: Cluster) -> None:
    """n3 is not Ready and n4 is cordoned: never chosen. Between n1 and n2, the one holding less."""

    def held(n: str) -> int:
        return sum(
            int(pv["spec"]["capacity"]["storage"].removesuffix("Gi"))
            for pv in cluster.ctl.items("v1", "persistentvolumes")
            if node_of(pv) == n
        )

    lighter, heavier = sorted(("n1", "n2"), key=lambda n: (held(n), n))
    first = cluster.claim("globex-a", "big", f"{held(heavier) - held(lighter) + 1}Gi")
    pv1 = cluster.pv(cluster.bound("globex-a", "big")["spec"]["volumeName"])
    assert pv1 is not None and node_of(pv1) == lighter
    cluster.claim("globex-a", "next", "1Gi")
    pv2 = cluster.pv(cluster.bound("globex-a", "next")["spec"]["volumeName"])
    assert pv2 is not None and node_of(pv2) == heavier, (first, held("n1"), held("n2"))


def test_static_volumes_bind_within_the_tenant(cluster: Cluster) -> None:
    cluster.static_pv("acme-5g", "n1", "acme", "5Gi")
    cluster.static_pv("acme-2g", "n2", "acme", "2Gi")
    cluster.static_pv("acme-ro", "n2", "acme", "1Gi", accessModes=["ReadOnlyMany"])
    cluster.static_pv("globex-1g", "n1", "globex", "1Gi")
    cluster.claim("acme-a", "static", "1Gi", who="acme-admin", storageClassName="manual")
    claim = cluster.bound("acme-a", "static")
    assert claim["spec"]["volumeName"] == "acme-2g"  # the smallest that fits, of its own tenant
    assert claim["status"]["capacity"] == {"storage": "2Gi"}
    pv = cluster.pv("acme-2g")
    assert pv is not None and pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["metadata"]["annotations"] == {"pv.kubernetes.io/bound-by-controller": "yes"}
    wait_for(
        lambda: (cluster.pv("acme-5g") or {}).get("status", {}).get("phase") == "Available",
        what="acme-5g Available",
    )
    # the only volume big enough for this claim is another tenant's: it waits
    cluster.claim("globex-a", "wants-5g", "3Gi", who="globex-admin", storageClassName="manual")
    wait_for(lambda: cluster.events("globex-a", "wants-5g"), what="an event")
    time.sleep(0.5)
    assert (cluster.get_claim("globex-a", "wants-5g") or {})["status"] == {"phase": "Pending"}
    assert cluster.events("globex-a", "wants-5g") == [
        ("Warning", "ProvisioningFailed", 'storageclass.storage.k8s.io "manual" not found')
    ]
    assert "claimRef" not in (cluster.pv("acme-5g") or {})["spec"]


def test_another_tenants_volume_is_as_good_as_absent(cluster: Cluster) -> None:
    """A claim naming another tenant's volume waits exactly like one naming no volume: no event,
    no status, nothing on the volume tells them apart."""
    cluster.static_pv("acme-secret-disk", "n1", "acme", "1Gi")
    before = cluster.pv("acme-secret-disk")
    for name, volume in (("foreign", "acme-secret-disk"), ("absent", "no-such-disk")):
        cluster.claim(
            "globex-a", name, "1Gi", who="globex-admin", storageClassName="manual", volumeName=volume
        )
    cluster.claim(
        "acme-a", "owner", "1Gi", who="acme-admin", storageClassName="manual", volumeName="acme-secret-disk"
    )
    assert cluster.bound("acme-a", "owner")["spec"]["volumeName"] == "acme-secret-disk"  # the control
    time.sleep(0.5)
    for name in ("foreign", "absent"):
        claim = cluster.get_claim("globex-a", name)
        assert claim is not None and claim["status"] == {"phase": "Pending"}
        assert cluster.events("globex-a", name) == []
    after = cluster.pv("acme-secret-disk")
    assert after is not None and after["spec"]["claimRef"]["namespace"] == "acme-a"
    assert before is not None and before["spec"].get("claimRef") is None


def test_expansion(cluster: Cluster) -> None:
    cluster.claim("acme-a", "grows", "1Gi", who="acme-admin")
    claim = cluster.bound("acme-a", "grows")
    pv_name = claim["spec"]["volumeName"]
    out = cluster.w.kubectl(
        "acme-admin",
        "patch",
        "pvc",
        "grows",
        "-n",
        "acme-a",
        "-p",
        '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}',
    )
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (cluster.pv(pv_name) or {})["spec"]["capacity"]["storage"] == "3Gi", what="PV grown")

    def pending() -> Obj | None:
        c = cluster.get_claim("acme-a", "grows") or {}
        conds = (c.get("status") or {}).get("conditions") or []
        return c if any(x["type"] == "FileSystemResizePending" for x in conds) else None

    claim = wait_for(pending, what="FileSystemResizePending")
    status = claim["status"]
    assert status["capacity"] == {"storage": "1Gi"}  # until the node has grown the disk
    assert status["allocatedResources"] == {"storage": "3Gi"}
    assert status["allocatedResourceStatuses"] == {"storage": "NodeResizePending"}
    cond = status["conditions"][0]
    assert (cond["status"], cond["message"]) == (
        "True",
        "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
    )
    reasons = [r for _, r, _ in cluster.events("acme-a", "grows")]
    assert {"ExternalExpanding", "Resizing", "FileSystemResizeRequired"} <= set(reasons)
    # the node's part: the disk grew, the claim says so (hypernetes/node/agent.py resized_claim_status)
    cluster.w.op(
        "PATCH",
        "/api/v1/namespaces/acme-a/persistentvolumeclaims/grows/status",
        {
            "status": {
                "capacity": {"storage": "3Gi"},
                "conditions": None,
                "allocatedResourceStatuses": {"storage": None},
            }
        },
        headers=MERGE,
    )
    time.sleep(0.5)
    claim = cluster.get_claim("acme-a", "grows") or {}
    assert claim["status"]["capacity"] == {"storage": "3Gi"} and "conditions" not in claim["status"]
    out = cluster.w.kubectl("acme-admin", "get", "pvc", "grows", "-n", "acme-a")
    assert out.stdout.splitlines()[1].split()[3] == "3Gi"


def pod_using(name: str, claim: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "registry.invalid/busybox:1"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def test_delete_waits_for_the_pods_using_the_claim(cluster: Cluster) -> None:
    w = cluster.w
    cluster.claim("acme-a", "in-use", who="acme-admin")
    pv_name = cluster.bound("acme-a", "in-use")["spec"]["volumeName"]
    assert (
        w.http("acme-admin")
        .post("/api/v1/namespaces/acme-a/pods", json=pod_using("user", "in-use"))
        .status_code
        == 201
    )
    done = w.http("acme-admin").post("/api/v1/namespaces/acme-a/pods", json=pod_using("done", "in-use"))
    assert done.status_code == 201
    w.op(
        "PATCH",
        "/api/v1/namespaces/acme-a/pods/done/status",
        {"status": {"phase": "Succeeded"}},
        headers=MERGE,
    )  # a finished pod holds nothing
    proc = w.kubectl_popen("acme-admin", "delete", "pvc", "in-use", "-n", "acme-a")
    try:
        wait_for(
            lambda: (
                (cluster.get_claim("acme-a", "in-use") or {}).get("metadata", {}).get("deletionTimestamp")
            ),
            what="claim marked deleted",
        )
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()  # kubectl waits
        out = w.kubectl("acme-admin", "get", "pvc", "in-use", "-n", "acme-a")
        assert out.stdout.splitlines()[1].split()[1] == "Terminating"
        assert (cluster.pv(pv_name) or {})["status"]["phase"] == "Bound"
        assert w.http("acme-admin").delete("/api/v1/namespaces/acme-a/pods/user").status_code == 200
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == 'persistentvolumeclaim "in-use" deleted'
    assert cluster.get_claim("acme-a", "in-use") is None
    # reclaim policy Delete: the PV is deleted; its backing-file finalizer waits for the node
    wait_for(
        lambda: (cluster.pv(pv_name) or {}).get("metadata", {}).get("finalizers") == [BACKING_FILE],
        what="PV deleted, waiting for its node",
    )
    pv = cluster.pv(pv_name)
    assert pv is not None and pv["status"]["phase"] == "Released" and pv["metadata"]["deletionTimestamp"]
    cluster.node_removes_backing_file(pv_name)
    wait_for(lambda: cluster.pv(pv_name) is None, what="PV gone")


def test_retain_keeps_the_released_volume(cluster: Cluster) -> None:
    keep = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "keep"},
        "provisioner": "local.hypernetes.io",
        "reclaimPolicy": "Retain",
        "parameters": {"format": "qcow2"},
    }
    cluster.w.op("POST", CLASSES, keep)
    cluster.claim("acme-a", "precious", who="acme-admin", storageClassName="keep")
    pv_name = cluster.bound("acme-a", "precious")["spec"]["volumeName"]
    pv = cluster.pv(pv_name) or {}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["csi"]["volumeAttributes"] == {"format": "qcow2"}
    out = cluster.w.kubectl("acme-admin", "delete", "pvc", "precious", "-n", "acme-a")
    assert out.returncode == 0, out.stderr
    wait_for(
        lambda: (cluster.pv(pv_name) or {}).get("status", {}).get("phase") == "Released", what="Released"
    )
    time.sleep(0.5)
    pv = cluster.pv(pv_name) or {}
    assert not pv["metadata"].get("deletionTimestamp")  # kept, with its data and its claimRef
    assert pv["spec"]["claimRef"]["name"] == "precious"
    row = cluster.w.kubectl("acme-admin", "get", "pv", pv_name).stdout.splitlines()[1].split()
    assert row[3:6] == ["Retain", "Released", "acme-a/precious"]
    # a new claim of that name is another claim: it does not get the old data
    cluster.claim("acme-a", "precious", who="acme-admin", storageClassName="keep")
    assert cluster.bound("acme-a", "precious")["spec"]["volumeName"] != pv_name
    # the operator deletes it when done: not Bound, so pv-protection lets go; the node's finalizer stays
    cluster.w.op("DELETE", f"{PVS}/{pv_name}")
    wait_for(
        lambda: (cluster.pv(pv_name) or {}).get("metadata", {}).get("finalizers") == [BACKING_FILE],
        what="pv-protection removed",
    )


def test_a_bound_volume_is_protected(cluster: Cluster) -> None:
    cluster.claim("globex-a", "holds", who="globex-admin")
    pv_name = cluster.bound("globex-a", "holds")["spec"]["volumeName"]
    cluster.w.op("DELETE", f"{PVS}/{pv_name}")
    time.sleep(0.5)
    pv = cluster.pv(pv_name) or {}
    assert pv["metadata"]["deletionTimestamp"]
    assert "kubernetes.io/pv-protection" in pv["metadata"]["finalizers"]
    row = cluster.w.kubectl("operator", "get", "pv", pv_name).stdout.splitlines()[1].split()
    assert row[4] == "Terminating"
    cluster.w.op("DELETE", "/api/v1/namespaces/globex-a/persistentvolumeclaims/holds")
    wait_for(
        lambda: (cluster.pv(pv_name) or {}).get("metadata", {}).get("finalizers") == [BACKING_FILE],
        what="pv-protection removed once the claim is gone",
    )
    cluster.node_removes_backing_file(pv_name)
    wait_for(lambda: cluster.pv(pv_name) is None, what="PV gone")


def test_classes_without_our_provisioner(cluster: Cluster) -> None:
    other = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "ebs"},
        "provisioner": "ebs.csi.aws.com",
    }
    cluster.w.op("POST", CLASSES, other)
    cluster.claim("globex-a", "external", who="globex-admin", storageClassName="ebs")
    cluster.claim("globex-a", "no-class", who="globex-admin", storageClassName="")
    wait_for(
        lambda: cluster.events("globex-a", "external") and cluster.events("globex-a", "no-class"),
        what="events",
    )
    ((etype, reason, message),) = cluster.events("globex-a", "external")
    assert (etype, reason) == ("Normal", "ExternalProvisioning")
    assert "external provisioner 'ebs.csi.aws.com'" in message
    assert cluster.events("globex-a", "no-class") == [
        (
            "Normal",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
    ]
    out = cluster.w.kubectl("globex-admin", "describe", "pvc", "external", "-n", "globex-a")
    assert "ExternalProvisioning" in out.stdout and "Pending" in out.stdout


def test_a_claim_whose_volume_vanished_is_lost(cluster: Cluster) -> None:
    cluster.claim("acme-a", "fragile", who="acme-admin")
    pv_name = cluster.bound("acme-a", "fragile")["spec"]["volumeName"]
    # forced: finalizers removed by hand, then deleted
    cluster.w.op("PATCH", f"{PVS}/{pv_name}", {"metadata": {"finalizers": None}}, headers=MERGE)
    cluster.w.op("DELETE", f"{PVS}/{pv_name}")
    wait_for(
        lambda: (cluster.get_claim("acme-a", "fragile") or {}).get("status", {}).get("phase") == "Lost",
        what="claim Lost",
    )
    lost = ("Warning", "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!")
    assert lost in cluster.events("acme-a", "fragile")


def test_tenant_status_counts_its_claims(cluster: Cluster) -> None:
    def used() -> Obj:
        return dict(
            (cluster.w.op("GET", "/apis/hypernetes.io/v1/tenants/globex").get("status") or {}).get("used")
            or {}
        )

    def claims() -> list[Obj]:
        return cluster.ctl.items("v1", "persistentvolumeclaims", "globex-a")

    def expected() -> tuple[str, int]:
        total = sum(int(c["spec"]["resources"]["requests"]["storage"].removesuffix("Gi")) for c in claims())
        return f"{total}Gi", len(claims())

    cluster.claim("globex-a", "counted", "4Gi", who="globex-admin")
    storage, count = expected()
    wait_for(
        lambda: used().get("storage") == storage and used().get("persistentvolumeclaims") == str(count),
        what=f"used storage {storage}, {count} claims: {json.dumps(used())}",
    )
