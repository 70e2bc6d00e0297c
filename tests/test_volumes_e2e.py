"""Persistent volumes end to end on `hypernetes up` with real VMs and the real kubectl, as tenant
users: data survives pod deletion, a claim grows, quota and tenancy hold, a claim in use waits for
its pod, Delete removes the backing file and Retain keeps it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster, as_user, make_user
from tests.support.guests import qemu_processes_under

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("volume-cluster") / "data")
    c.start()
    yield c
    c.stop()
    for pid in qemu_processes_under(c.data):
        os.kill(pid, signal.SIGKILL)


def claim(name: str, size: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec},
        }
    )


def pod_with_claim(name: str, image: str, command: str, claim_name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "command": ["sh", "-c", command],
                        "resources": {"limits": {"memory": "64Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
            },
        }
    )


def get(cluster: Cluster, token: str, *args: str) -> Any:
    return json.loads(as_user(cluster, token, "get", *args, "-o", "json").stdout)


def run_to_end(cluster: Cluster, token: str, ns: str, manifest: str, name: str) -> str:
    """Apply a run-once pod, wait for it to finish, return its logs, delete it."""
    as_user(cluster, token, "apply", "-n", ns, "-f", "-", input=manifest)

    def finished() -> str | None:
        phase = (get(cluster, token, "pod", name, "-n", ns).get("status") or {}).get("phase")
        return str(phase) if phase in ("Succeeded", "Failed") else None

    try:
        phase = cluster.wait_for(f"{name} finished", finished, timeout=120)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.kubectl('describe', 'pod', name, '-n', ns).stdout}") from None
    logs = as_user(cluster, token, "logs", name, "-n", ns).stdout
    assert phase == "Succeeded", logs
    as_user(cluster, token, "delete", "pod", name, "-n", ns, "--wait=true")
    return str(logs)


def test_persistent_volume_lifecycle_as_tenants(cluster: Cluster, busybox_ref: str) -> None:
    alice = make_user(cluster, "acme", "alice", "admin", {"storage": "1Gi", "persistentvolumeclaims": "2"})
    bob = make_user(cluster, "globex", "bob", "admin")
    ns = "acme-data"
    as_user(cluster, alice, "create", "ns", ns)
    as_user(cluster, alice, "apply", "-n", ns, "-f", "-", input=claim("data", "64Mi"))
    bound = cluster.wait_for(
        "claim bound",
        lambda: (
            get(cluster, alice, "pvc", "data", "-n", ns).get("status", {}).get("phase") == "Bound"
            and get(cluster, alice, "pvc", "data", "-n", ns)
        ),
    )
    pv_name = bound["spec"]["volumeName"]
    volumes = cluster.data / "volumes"

    # written and synced in one pod VM, read back in the next
    run_to_end(
        cluster,
        alice,
        ns,
        pod_with_claim("writer", busybox_ref, "echo persisted-$((6*7)) > /data/note; sync", "data"),
        "writer",
    )
    assert any(volumes.glob(f"{pv_name}.*")), "the node made the backing file"
    assert "persisted-42" in run_to_end(
        cluster, alice, ns, pod_with_claim("reader", busybox_ref, "cat /data/note", "data"), "reader"
    )

    # a claim grows (the default class allows it); the next pod sees the larger filesystem
    as_user(
        cluster,
        alice,
        "patch",
        "pvc",
        "data",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}',
    )
    df = run_to_end(
        cluster, alice, ns, pod_with_claim("sizer", busybox_ref, "df -k /data | tail -1", "data"), "sizer"
    )
    assert int(df.split()[1]) > 100 * 1024, df  # KiB: > 100 MiB after growing from 64 MiB
    assert get(cluster, alice, "pvc", "data", "-n", ns)["status"]["capacity"]["storage"] == "128Mi"

    # quota: storage counted across the tenant's claims
    over = as_user(cluster, alice, "apply", "-n", ns, "-f", "-", input=claim("big", "2Gi"), check=False)
    assert over.returncode != 0 and 'exceeded quota of tenant "acme": storage' in over.stderr, over.stderr

    # another tenant learns nothing of it and cannot take it
    assert pv_name not in as_user(cluster, bob, "get", "pv", check=False).stdout
    assert as_user(cluster, bob, "get", "pv", pv_name, check=False).returncode != 0
    as_user(cluster, bob, "create", "ns", "globex-steal")
    as_user(
        cluster,
        bob,
        "apply",
        "-n",
        "globex-steal",
        "-f",
        "-",
        input=claim("steal", "64Mi", volumeName=pv_name),
    )
    time.sleep(3)
    steal = get(cluster, bob, "pvc", "steal", "-n", "globex-steal")
    assert steal.get("status", {}).get("phase") != "Bound"

    # a claim in use is deleted only after its pod
    as_user(
        cluster,
        alice,
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=pod_with_claim("holder", busybox_ref, "sleep 600", "data"),
    )
    cluster.wait_for(
        "holder running",
        lambda: get(cluster, alice, "pod", "holder", "-n", ns).get("status", {}).get("phase") == "Running",
    )
    as_user(cluster, alice, "delete", "pvc", "data", "-n", ns, "--wait=false")
    time.sleep(3)
    assert get(cluster, alice, "pvc", "data", "-n", ns)["metadata"].get("deletionTimestamp")
    assert any(volumes.glob(f"{pv_name}.*"))
    as_user(cluster, alice, "delete", "pod", "holder", "-n", ns, "--wait=true")
    cluster.wait_for(
        "claim gone",
        lambda: as_user(cluster, alice, "get", "pvc", "data", "-n", ns, check=False).returncode != 0,
    )
    # reclaim Delete: the PV and its backing file go
    cluster.wait_for("backing file deleted", lambda: not any(volumes.glob(f"{pv_name}.*")))
    assert cluster.kubectl("get", "pv", pv_name, check=False).returncode != 0


def test_retain_keeps_the_data(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "keep"},
                "provisioner": "local.hypernetes.io",
                "reclaimPolicy": "Retain",
                "allowVolumeExpansion": True,
            }
        ),
    )
    carol = make_user(cluster, "initech", "carol", "admin")
    as_user(cluster, carol, "create", "ns", "initech-a")
    as_user(
        cluster,
        carol,
        "apply",
        "-n",
        "initech-a",
        "-f",
        "-",
        input=claim("kept", "32Mi", storageClassName="keep"),
    )
    pv_name = cluster.wait_for(
        "bound",
        lambda: get(cluster, carol, "pvc", "kept", "-n", "initech-a").get("spec", {}).get("volumeName"),
    )
    run_to_end(
        cluster,
        carol,
        "initech-a",
        pod_with_claim("w", busybox_ref, "echo kept > /data/f; sync", "kept"),
        "w",
    )
    as_user(cluster, carol, "delete", "pvc", "kept", "-n", "initech-a")
    released = cluster.wait_for(
        "released", lambda: cluster.get("pv", pv_name)["status"].get("phase") == "Released"
    )
    assert released
    assert any((cluster.data / "volumes").glob(f"{pv_name}.*")), "Retain keeps the backing file"
