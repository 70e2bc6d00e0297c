"""`hypernetes up` pointed at a Ceph cluster by an operator-made StorageClass (docs/volumes.md,
"Ceph RBD"), with the real kubectl: a node-stage Secret with a wrong key, and a Ceph outage,
leave the pod ContainerCreating with a FailedMount event that says why (never a VM started that
would hang), and the pod starts by itself once the Secret is fixed. No VM is booted here but the
last one (tests/test_hypervm_rbd.py and tests/test_volumes_rbd_multihost.py boot the others)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ceph import CephCluster
from tests.support.cluster import Cluster, running_cluster

pytestmark = pytest.mark.slow


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, ceph: CephCluster, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "ceph-system"},
        "data": {"userID": b64(ceph.user), "userKey": b64(key), "monitors": b64(ceph.monitors)},
    }


def storage_class(name: str, node_secret: str) -> dict[str, Any]:
    params = {"pool": "rbd"}
    for role, sec in (("provisioner", "ceph"), ("node-stage", node_secret)):
        params[f"csi.storage.k8s.io/{role}-secret-name"] = sec
        params[f"csi.storage.k8s.io/{role}-secret-namespace"] = "ceph-system"
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "rbd.hypernetes.io",
        "parameters": params,
    }


def claim(name: str, cls: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": cls,
            "resources": {"requests": {"storage": "32Mi"}},
        },
    }


def pod(name: str, claim_name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["sh", "-c", "echo hi > /data/f && sync && cat /data/f"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ceph: CephCluster) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("rbd-up") / "data") as c:
        c.kubectl("create", "namespace", "ceph-system")
        c.kubectl("apply", "-f", "-", input=json.dumps(secret("ceph", ceph, ceph.user_key())))
        yield c


def apply(c: Cluster, obj: dict[str, Any]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps(obj))


def failed_mount(c: Cluster, name: str, text: str) -> str | None:
    events = c.get("events", "-n", "default", "--field-selector", f"involvedObject.name={name}")["items"]
    said = [e["message"] for e in events if e["reason"] == "FailedMount" and text in e["message"]]
    return said[-1] if said else None


def waiting_reason(c: Cluster, name: str) -> tuple[str, str]:
    statuses = c.get("pod", name, "-n", "default")["status"].get("containerStatuses") or []
    waiting = (statuses[0]["state"].get("waiting") or {}) if statuses else {}
    return waiting.get("reason", ""), waiting.get("message", "")


def test_wrong_key_then_outage_then_fixed(cluster: Cluster, ceph: CephCluster, busybox_ref: str) -> None:
    c = cluster
    wrong = subprocess.check_output(["ceph-authtool", "--gen-print-key"], text=True).strip()
    apply(c, secret("wrong", ceph, wrong))
    apply(c, storage_class("ceph-wrong", "wrong"))
    apply(c, claim("data", "ceph-wrong"))
    c.wait_for("claim bound", lambda: c.get("pvc", "data", "-n", "default")["status"].get("phase") == "Bound")
    apply(c, pod("app", "data", busybox_ref))
    said = c.wait_for("FailedMount: wrong key", lambda: failed_mount(c, "app", "authentication"))
    assert "cephx authentication as client.hypernetes failed: wrong key" in said and wrong not in said
    reason, message = waiting_reason(c, "app")
    assert reason == "ContainerCreating" and "wrong key" in message
    assert c.get("pod", "app", "-n", "default")["status"]["phase"] == "Pending"
    assert wrong not in (c.data.parent / "up.log").read_text()
    assert not list((c.data).rglob("rbd/pv0.key"))  # no VM was made

    # Ceph away: the node cannot reach a monitor; the pod says so
    ceph.stop_mon()
    try:
        said = c.wait_for("FailedMount: outage", lambda: failed_mount(c, "app", "is the Ceph cluster up?"))
    finally:
        ceph.start_mon()
    assert said.startswith('volume "data": ') and ceph.monitors in said

    # the operator fixes the Secret: the pod starts by itself and runs to its end
    apply(c, secret("wrong", ceph, ceph.user_key()))
    c.wait_for(
        "the pod Succeeded",
        lambda: c.get("pod", "app", "-n", "default")["status"].get("phase") == "Succeeded",
        timeout=240,
    )
    assert c.kubectl("logs", "app", "-n", "default").stdout == "hi\n"
    image = c.get("pvc", "data", "-n", "default")["spec"]["volumeName"]
    assert image in ceph.images()
    c.kubectl("delete", "pod", "app", "-n", "default", "--wait=true")
    c.kubectl("delete", "pvc", "data", "-n", "default", "--wait=true")
    c.wait_for("the image deleted", lambda: image not in ceph.images(), timeout=60)
