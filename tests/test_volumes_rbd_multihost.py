"""A claim on Ceph RBD follows its pod from host to host: a control plane and two nodes, each in
its own network namespace (tests/support/hosts.py), real VMs, the real kubectl, and a real Ceph
cluster listening on the hosts' underlay. A Deployment's pod writes and syncs on n1; n1's agent
dies with the VM still running and holding the image's exclusive lock; once n1 is NotReady the
pod comes back on n2, whose node fences n1's client (blocklist) before QEMU opens the image: the
new pod finds every synced byte and the old VM can no longer write. Deleting the claim deletes
the image."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.ceph import running_ceph
from tests.support.guests import qemu_processes_under
from tests.support.hosts import ControlPlane, hosts, node_ready, start_node
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

FAST = [
    "--node-monitor-grace-period", "8", "--default-unreachable-toleration-seconds", "3",
    "--default-not-ready-toleration-seconds", "3",
]  # fmt: skip

SCRIPT = (
    "if [ -f /data/blob ]; then echo found $(sha256sum /data/blob); "
    "else head -c 1048576 /dev/urandom > /data/blob && sync && echo made $(sha256sum /data/blob); fi; "
    "i=0; while true; do i=$((i+1)); "
    "if echo $(hostname) $i > /data/n && sync /data/n; then echo wrote $i; else echo failed $i; fi; "
    "sleep 0.5; done"
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def manifests(ceph: Any, image: str) -> list[dict[str, Any]]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ceph", "namespace": "ceph-system"},
        "data": {"userID": b64(ceph.user), "userKey": b64(ceph.user_key()), "monitors": b64(ceph.monitors)},
    }
    params = {"pool": ceph.pool}
    for role in ("provisioner", "node-stage", "controller-expand"):
        params[f"csi.storage.k8s.io/{role}-secret-name"] = "ceph"
        params[f"csi.storage.k8s.io/{role}-secret-namespace"] = "ceph-system"
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "ceph"},
        "provisioner": "rbd.hypernetes.io",
        "allowVolumeExpansion": True,
        "parameters": params,
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "app"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "ceph",
            "resources": {"requests": {"storage": "64Mi"}},
        },
    }
    labels = {"app": "db"}
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "db", "namespace": "app"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "db",
                            "image": image,
                            "command": ["sh", "-c", SCRIPT],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                },
            },
        },
    }
    ns = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("ceph-system", "app")]
    return [*ns, secret, sc, pvc, deploy]


def running(cp: ControlPlane) -> list[dict[str, Any]]:
    pods = json.loads(cp.kubectl("get", "pods", "-n", "app", "-l", "app=db", "-o", "json").stdout)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def logs(cp: ControlPlane, pod: str) -> str:
    return cp.kubectl("logs", "-n", "app", pod, check=False).stdout


def test_a_claim_follows_its_pod_to_another_host_and_the_dead_node_is_fenced(
    tmp_path: Path, registry: object, busybox_ref: str
) -> None:
    with (
        hosts(tmp_path / "hosts") as underlay,
        running_ceph(Path(tempfile.mkdtemp(prefix="hn-ceph-mh-")), underlay.gateway) as ceph,
    ):
        cp = ControlPlane(underlay, *FAST, name="cp")
        served = underlay.expose(int(busybox_ref.split("/")[0].rsplit(":", 1)[1]))
        image = served + "/" + busybox_ref.split("/", 1)[1]
        nodes = [underlay.add(n) for n in ("n1", "n2")]
        tokens: dict[str, str] = {}
        allow = ["--allow-registry", served, "--insecure-registry", served]
        for host in nodes:
            tokens[host.name] = cp.token()
            start_node(host, cp, tokens[host.name], *allow)
        for name in ("n1", "n2"):
            wait_for(lambda n=name: node_ready(cp, n), timeout=90, interval=0.5, what=f"node {name}")
        cp.kubectl("cordon", "n2")  # the first pod goes to n1
        for obj in manifests(ceph, image):
            cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
        first = wait_for(lambda: running(cp), timeout=240, interval=1, what="the db pod on n1")[0]
        assert first["spec"]["nodeName"] == "n1"
        name1 = first["metadata"]["name"]
        said = wait_for(lambda: "wrote 3" in (out := logs(cp, name1)) and out, timeout=120, interval=1)
        digest = said.split("made ", 1)[1].split()[0]
        pv = json.loads(cp.kubectl("get", "pvc", "data", "-n", "app", "-o", "json").stdout)["spec"][
            "volumeName"
        ]
        assert pv in ceph.images()
        assert "nodeAffinity" not in json.loads(cp.kubectl("get", "pv", pv, "-o", "json").stdout)["spec"]
        # nothing mapped or mounted on the host: QEMU opened the image (it is a watcher)
        assert not Path("/sys/bus/rbd/devices").exists() or not list(Path("/sys/bus/rbd/devices").iterdir())
        watchers = json.loads(ceph.rbd("status", "--format", "json", f"rbd/{pv}"))["watchers"]
        assert len(watchers) == 1

        # n1's agent dies; its VM runs on, writing, and holds the exclusive lock
        cp.kubectl("uncordon", "n2")
        orphans = qemu_processes_under(nodes[0].data)
        assert len(orphans) == 1
        nodes[0].kill(vms=False)
        wait_for(lambda: not node_ready(cp, "n1"), timeout=60, interval=1, what="n1 NotReady")
        second = wait_for(
            lambda: [p for p in running(cp) if p["spec"]["nodeName"] == "n2"],
            timeout=300,
            interval=1,
            what="the db pod on n2",
        )[0]
        name2 = second["metadata"]["name"]
        out = wait_for(lambda: "wrote 2" in (o := logs(cp, name2)) and o, timeout=120, interval=1)
        assert out.split("found ", 1)[1].split()[0] == digest  # every synced byte
        events = cp.kubectl(
            "get", "events", "-n", "app", "--field-selector", f"involvedObject.name={name2}"
        ).stdout
        assert "VolumeFenced" in events and 'node "n1" is not Ready' in events
        # the old VM still runs, but its client is blocklisted (its writes fail: the guest sees
        # I/O errors, tests/test_hypervm_rbd.py) and no longer has the image open
        assert qemu_processes_under(nodes[0].data) == orphans
        old = watchers[0]["address"]
        assert old.split("/")[0] in ceph.ceph("osd", "blocklist", "ls")
        now = json.loads(ceph.rbd("status", "--format", "json", f"rbd/{pv}"))["watchers"]
        assert [w["address"] for w in now] != [old] and len(now) == 1
        assert "failed" not in logs(cp, name2)

        # the claim grows while attached: the image grows, n2 tells QEMU, the guest sees it
        cp.kubectl(
            "patch",
            "pvc",
            "data",
            "-n",
            "app",
            "-p",
            '{"spec":{"resources":{"requests":{"storage":"96Mi"}}}}',
        )
        size = "for d in /sys/block/vd*; do [ $(cat $d/serial) = pv0 ] && cat $d/size; done"
        wait_for(
            lambda: cp.kubectl("exec", "-n", "app", name2, "--", "sh", "-c", size).stdout == f"{96 * 2048}\n",
            timeout=90,
            interval=2,
            what="the guest sees 96 MiB",
        )
        events = cp.kubectl(
            "get", "events", "-n", "app", "--field-selector", f"involvedObject.name={name2}"
        ).stdout
        assert "VolumeResized" in events

        # n1 comes back: it stops its orphan VM (the old pod is gone), which never wrote again
        start_node(nodes[0], cp, tokens[nodes[0].name], *allow)
        wait_for(lambda: node_ready(cp, "n1"), timeout=90, interval=0.5, what="n1 back")
        wait_for(lambda: not qemu_processes_under(nodes[0].data), timeout=90, what="n1's orphan VM stopped")
        assert "failed" not in logs(cp, name2)

        # deleting the workload and the claim deletes the image
        cp.kubectl("delete", "deployment", "db", "-n", "app", "--wait=true")
        cp.kubectl("delete", "pvc", "data", "-n", "app", "--wait=true", "--timeout=120s")
        wait_for(lambda: pv not in ceph.images(), timeout=120, interval=1, what="the image deleted")
