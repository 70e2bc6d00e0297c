"""Ceph RBD classes through the real API server, the volume controller and a real Ceph cluster
(tests/support/ceph.py): validation (422 with field paths), provisioning (an image per claim, a PV
any node may attach), growth, deletion per reclaim policy, quota, and what a claim says when the
Secret is wrong or Ceph is away. No node agent: tests/test_volumes_rbd_vm.py attaches images."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.objects import Obj
from tests.support.apiserver import ApiServerThread
from tests.support.ceph import CephCluster
from tests.support.controllers import ControllersThread
from tests.support.tenants import MERGE, TenantWorld
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
CLASSES = "/apis/storage.k8s.io/v1/storageclasses"
PVS = "/api/v1/persistentvolumes"
SECRET = "csi.storage.k8s.io/{}-secret-{}"


def rbd_secret(name: str, ceph: CephCluster, key: str | None = None) -> Obj:
    def b(v: str) -> str:
        return base64.b64encode(v.encode()).decode()

    data = {"userID": b(ceph.user), "userKey": b(key or ceph.user_key()), "monitors": b(ceph.monitors)}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}


def rbd_class(name: str, secret: str, ns: str = "ceph-system", **params: str) -> Obj:
    p = {"pool": "rbd", "imageFeatures": "layering,exclusive-lock,object-map,fast-diff", **params}
    for role in ("provisioner", "node-stage", "controller-expand"):
        p[SECRET.format(role, "name")] = secret
        p[SECRET.format(role, "namespace")] = ns
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "rbd.hypernetes.io",
        "allowVolumeExpansion": True,
        "parameters": p,
    }


class World:
    def __init__(self, w: TenantWorld, ctl: ControllersThread, ceph: CephCluster) -> None:
        self.w, self.ctl, self.ceph = w, ctl, ceph

    def claim(self, ns: str, name: str, cls: str, size: str = "1Gi", **spec: Any) -> Obj:
        body: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": cls,
                "resources": {"requests": {"storage": size}},
                **spec,
            },
        }
        r = self.w.http("acme-admin").post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get_claim(self, ns: str, name: str) -> Obj | None:
        return self.ctl.get("v1", "persistentvolumeclaims", name, ns)

    def bound(self, ns: str, name: str) -> Obj:
        def done() -> Obj | None:
            c = self.get_claim(ns, name)
            return c if c and (c.get("status") or {}).get("phase") == "Bound" else None

        return wait_for(done, timeout=60, what=f"claim {ns}/{name} bound")

    def events(self, ns: str, name: str) -> list[tuple[str, str, str]]:
        return [
            (e["type"], e["reason"], e["message"])
            for e in self.ctl.items("v1", "events", ns)
            if e["involvedObject"]["name"] == name
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, ceph: CephCluster) -> Iterator[World]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("rbdapi")), tenancy=True).start()
    tw = TenantWorld(api)
    ctl = ControllersThread(api, only=["persistentvolume", "tenant"], kubelet=False).start()
    try:
        tw.fresh_tenant("acme", {"quota": {"storage": "5Gi"}})
        tw.op("POST", "/api/v1/namespaces", {"metadata": {"name": "ceph-system"}})
        tw.op("POST", "/api/v1/namespaces/ceph-system/secrets", rbd_secret("ceph", ceph))
        tw.op("POST", CLASSES, rbd_class("ceph", "ceph"))
        yield World(tw, ctl, ceph)
    finally:
        ctl.stop()
        tw.close()
        api.stop()


def _422(r: Any) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    return [(c["field"], c["message"]) for c in r.json()["details"]["causes"]]


def test_classes_and_volumes_are_validated(world: World) -> None:
    http = world.w.http("operator")
    bad = rbd_class("bad", "ceph", imageFeatures="layering,object-map", colour="blue")
    del bad["parameters"]["pool"]
    del bad["parameters"][SECRET.format("node-stage", "namespace")]
    causes: dict[str, str] = {}
    for f, msg in _422(http.post(CLASSES, json=bad)):
        causes[f] = causes.get(f, "") + msg + "\n"
    assert "parameters[colour]" in causes
    assert "object-map needs exclusive-lock" in causes["parameters[imageFeatures]"]
    assert "must include exclusive-lock" in causes["parameters[imageFeatures]"]
    assert causes["parameters[pool]"].startswith("Required value")
    assert causes["parameters[csi.storage.k8s.io/node-stage-secret-namespace]"].startswith("Required value")
    pv: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "static"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "csi": {
                "driver": "rbd.hypernetes.io",
                "volumeHandle": "Bad_Name",
                "fsType": "xfs",
                "volumeAttributes": {"pool": "rbd", "monitors": "x"},
                "nodePublishSecretRef": {"name": "s", "namespace": "n"},
            },
        },
    }
    fields = [f for f, _ in _422(http.post(PVS, json=pv))]
    assert "spec.csi.nodePublishSecretRef" in fields  # refused by the schema policy
    pv["spec"]["csi"].pop("nodePublishSecretRef")
    fields = [f for f, _ in _422(http.post(PVS, json=pv))]
    assert {
        "spec.csi.volumeHandle",
        "spec.csi.fsType",
        "spec.csi.volumeAttributes[monitors]",
        "spec.csi.nodeStageSecretRef",
    } <= set(fields)
    # the local driver still takes no secrets
    local = {**pv, "spec": {**pv["spec"], "csi": {"driver": "local.hypernetes.io", "volumeHandle": "x"}}}
    local["spec"]["csi"]["nodeStageSecretRef"] = {"name": "s", "namespace": "n"}
    assert "spec.csi.nodeStageSecretRef" in [f for f, _ in _422(http.post(PVS, json=local))]


def test_provision_grow_delete(world: World) -> None:
    made = world.claim("acme-a", "db", "ceph", "1Gi")
    claim = world.bound("acme-a", "db")
    name = f"pvc-{made['metadata']['uid']}"
    assert claim["spec"]["volumeName"] == name
    pv = world.ctl.get("v1", "persistentvolumes", name)
    assert pv is not None
    assert pv["metadata"]["labels"] == {"hypernetes.io/tenant": "acme"}
    assert pv["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    spec = pv["spec"]
    assert "nodeAffinity" not in spec  # any node
    assert spec["csi"] == {
        "driver": "rbd.hypernetes.io",
        "volumeHandle": name,
        "fsType": "ext4",
        "volumeAttributes": {"pool": "rbd", "imageFeatures": "layering,exclusive-lock,object-map,fast-diff"},
        "nodeStageSecretRef": {"name": "ceph", "namespace": "ceph-system"},
        "controllerExpandSecretRef": {"name": "ceph", "namespace": "ceph-system"},
    }
    info = world.ceph.rbd("info", "--format", "json", f"rbd/{name}")
    assert '"size": 1073741824' in info.replace(":1073741824", ": 1073741824")
    # the key is in no object or event the tenant or the API stores besides the Secret
    key = world.ceph.user_key()
    assert key not in str(pv) and key not in str(world.events("acme-a", "db"))

    # growth: the image grows at once (live), the PV follows; a filesystem waits for the guest
    world.w.op(
        "PATCH",
        "/api/v1/namespaces/acme-a/persistentvolumeclaims/db",
        {"spec": {"resources": {"requests": {"storage": "2Gi"}}}},
        headers=MERGE,
    )
    wait_for(
        lambda: (
            (world.ctl.get("v1", "persistentvolumes", name) or {})["spec"]["capacity"]["storage"] == "2Gi"
        ),
        what="PV grown",
    )
    assert '"size":2147483648' in world.ceph.rbd("info", "--format", "json", f"rbd/{name}").replace(" ", "")

    # a block claim's growth is complete once the image grew
    blk = world.claim("acme-a", "raw", "ceph", "1Gi", volumeMode="Block")
    world.bound("acme-a", "raw")
    world.w.op(
        "PATCH",
        "/api/v1/namespaces/acme-a/persistentvolumeclaims/raw",
        {"spec": {"resources": {"requests": {"storage": "1536Mi"}}}},
        headers=MERGE,
    )
    wait_for(
        lambda: (
            (world.get_claim("acme-a", "raw") or {}).get("status", {}).get("capacity", {}).get("storage")
            == "1536Mi"
        ),
        what="block claim grown",
    )

    # quota counts RBD storage: 2Gi + 1536Mi used of 5Gi
    r = world.w.http("acme-admin").post(
        "/api/v1/namespaces/acme-a/persistentvolumeclaims",
        json={
            "metadata": {"name": "big"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "ceph",
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
    )
    assert r.status_code == 403 and "exceeded quota" in r.text, r.text

    # deletion (reclaim policy Delete): the image, then the PV
    for claim_name, pv_name in (("db", name), ("raw", f"pvc-{blk['metadata']['uid']}")):
        world.w.op("DELETE", f"/api/v1/namespaces/acme-a/persistentvolumeclaims/{claim_name}")
        wait_for(_pv_gone(world, pv_name), timeout=60, what="PV gone")
        assert pv_name not in world.ceph.images()


def _pv_gone(world: World, name: str) -> Callable[[], bool]:
    return lambda: world.ctl.get("v1", "persistentvolumes", name) is None


def test_wrong_key_and_outage_show_on_the_claim(world: World) -> None:
    wrong = subprocess.check_output(["ceph-authtool", "--gen-print-key"], text=True).strip()
    world.w.op("POST", "/api/v1/namespaces/ceph-system/secrets", rbd_secret("wrong", world.ceph, wrong))
    world.w.op("POST", CLASSES, rbd_class("ceph-wrong", "wrong"))
    world.claim("acme-a", "w", "ceph-wrong")

    def failed(ns: str, name: str, text: str) -> list[str] | None:
        said = [m for t, r, m in world.events(ns, name) if r == "ProvisioningFailed" and text in m]
        return said or None

    said = wait_for(lambda: failed("acme-a", "w", "wrong key"), timeout=60, what="ProvisioningFailed")
    assert wrong not in str(said)
    claim = world.get_claim("acme-a", "w")
    assert claim is not None and claim["status"]["phase"] == "Pending"
    world.w.op("DELETE", "/api/v1/namespaces/acme-a/persistentvolumeclaims/w")

    world.ceph.stop_mon()
    try:
        world.claim("acme-a", "out", "ceph")
        wait_for(lambda: failed("acme-a", "out", "is the Ceph cluster up?"), timeout=60, what="outage event")
    finally:
        world.ceph.start_mon()
    world.bound("acme-a", "out")  # retried with back-off: it provisions once Ceph is back
    world.w.op("DELETE", "/api/v1/namespaces/acme-a/persistentvolumeclaims/out")


def test_a_node_reads_the_stage_secret_only_for_its_pods(world: World) -> None:
    """NodeRestriction's PV -> Secret edge: a node may read the node-stage Secret of an RBD PV
    bound to a claim one of its pods uses; no other node, and no other Secret."""
    w = world.w
    for n in ("node-a", "node-b"):
        w.op("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
    w.op("POST", "/api/v1/namespaces/ceph-system/secrets", rbd_secret("other", world.ceph))
    world.claim("acme-a", "used", "ceph")
    world.bound("acme-a", "used")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "user"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "volumeMounts": [{"name": "d", "mountPath": "/d"}],
                }
            ],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}],
        },
    }
    r = w.http("acme-admin").post("/api/v1/namespaces/acme-a/pods", json=pod)
    assert r.status_code == 201, r.text
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "user"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
    }
    w.op("POST", "/api/v1/namespaces/acme-a/pods/user/binding", binding)
    for n in ("node-a", "node-b"):
        w.node_token(n)
    path = "/api/v1/namespaces/ceph-system/secrets/"
    assert w.http("node-a").get(path + "ceph").status_code == 200
    assert w.http("node-b").get(path + "ceph").status_code == 403
    assert w.http("node-a").get(path + "other").status_code == 403
    w.op("DELETE", "/api/v1/namespaces/acme-a/pods/user", params={"gracePeriodSeconds": 0})
    w.op("DELETE", "/api/v1/namespaces/acme-a/persistentvolumeclaims/used")
