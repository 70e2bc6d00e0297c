"""`hypernetes up` end to end with the real kubectl: pods are real VMs under TCG, images come from
the real local registry, and the cluster is restarted mid-way to check adoption."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, phase, pod_manifest, running_cluster
from tests.support.guests import qemu_processes_under

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster") / "data") as c:
        yield c


def test_pod_lifecycle_logs_exec_delete(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=pod_manifest("hello", busybox_ref, "echo hello from $(hostname); while true; do sleep 1; done"),
    )
    cluster.wait_for("hello running", lambda: phase(cluster, "hello") == "Running")
    wide = cluster.kubectl("get", "pods", "-o", "wide").stdout
    assert "hello" in wide and "Running" in wide and "node1" in wide
    assert cluster.wait_for("logs", lambda: "hello from hello" in cluster.kubectl("logs", "hello").stdout)
    out = cluster.kubectl(
        "exec", "hello", "--", "sh", "-c", "echo exec-ok; cat /proc/cpuinfo | grep -c processor"
    )
    assert out.stdout.split() == ["exec-ok", "1"]
    piped = cluster.kubectl("exec", "-i", "hello", "--", "sha256sum", input="through stdin\n")
    assert piped.stdout.split()[0] == hashlib.sha256(b"through stdin\n").hexdigest()
    assert _python_client_cat(cluster, "hello", "text frames\n") == "text frames\n"
    tty = subprocess.run(
        [
            "script",
            "-qec",
            " ".join(cluster.kubectl_args("exec", "-it", "hello", "--", "sh", "-c", "'tty; stty size'")),
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "/dev/pts/" in tty.stdout, tty.stdout + tty.stderr
    with subprocess.Popen(
        cluster.kubectl_args("logs", "-f", "hello"), stdout=subprocess.PIPE, text=True
    ) as follow:
        assert follow.stdout is not None
        assert "hello from hello" in follow.stdout.readline()
        follow.kill()
    for version in ("27", "33"):
        assert "Running" in cluster.kubectl("get", "pod", "hello", version=version).stdout
    # apply twice with a change: the image field is mutable, an annotation too
    changed = json.loads(
        pod_manifest("hello", busybox_ref, "echo hello from $(hostname); while true; do sleep 1; done")
    )
    changed["metadata"]["annotations"] = {"note": "second"}
    assert "configured" in cluster.kubectl("apply", "-f", "-", input=json.dumps(changed)).stdout
    assert qemu_processes_under(cluster.data)
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "hello")
    assert time.monotonic() - started < 60
    assert cluster.kubectl("get", "pod", "hello", check=False).returncode != 0
    assert not qemu_processes_under(cluster.data), "delete returned before the VM was gone"


def _python_client_cat(cluster: Cluster, pod: str, text: str) -> str:
    """`cat` in the pod through the official Python client, its stdin a str: the client sends
    that as WebSocket text frames, which the API server must read as kube-apiserver does."""
    from kubernetes import config
    from kubernetes.client import CoreV1Api
    from kubernetes.stream import stream

    with config.new_client_from_config(str(cluster.data / "admin.kubeconfig")) as client:
        resp = stream(
            CoreV1Api(client).connect_get_namespaced_pod_exec,
            pod,
            "default",
            command=["cat"],
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        resp.write_stdin(text)
        out, deadline = "", time.monotonic() + 60
        while len(out) < len(text) and time.monotonic() < deadline:
            resp.update(timeout=1)
            if resp.peek_stdout():
                out += resp.read_stdout()
        resp.close()
    return out


def test_failed_pull_and_crash_loop_and_unschedulable(cluster: Cluster, busybox_ref: str) -> None:
    registry = busybox_ref.split("/")[0]
    cluster.kubectl("apply", "-f", "-", input=pod_manifest("nopull", f"{registry}/does/not:exist", "true"))
    cluster.kubectl("apply", "-f", "-", input=pod_manifest("crasher", busybox_ref, "echo crashing; exit 3"))
    huge = json.loads(pod_manifest("huge", busybox_ref, "true"))
    huge["spec"]["containers"][0]["resources"]["limits"] = {"memory": "900Gi"}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(huge))

    def waiting_reason(name: str) -> str:
        statuses = cluster.get("pod", name)["status"].get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    cluster.wait_for("ErrImagePull", lambda: waiting_reason("nopull") in ("ErrImagePull", "ImagePullBackOff"))
    cluster.wait_for("CrashLoopBackOff", lambda: waiting_reason("crasher") == "CrashLoopBackOff")
    crasher = cluster.get("pod", "crasher")["status"]["containerStatuses"][0]
    assert crasher["lastState"]["terminated"]["exitCode"] == 3
    events = cluster.wait_for(
        "FailedScheduling",
        lambda: [
            e
            for e in cluster.get("events", "--field-selector", "involvedObject.name=huge")["items"]
            if e["reason"] == "FailedScheduling"
        ],
    )
    assert "Insufficient memory" in events[0]["message"]
    describe = cluster.kubectl("describe", "pod", "nopull").stdout
    assert "Failed" in describe and "does/not" in describe
    cluster.kubectl("delete", "pod", "nopull", "crasher", "huge", "--wait=true")


def test_deployment_rollout_and_job(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl(
        "create",
        "deployment",
        "web",
        f"--image={busybox_ref}",
        "--replicas=2",
        "--",
        "sh",
        "-c",
        "while true; do sleep 1; done",
    )
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=240s", timeout=260)
    assert cluster.get("deployment", "web")["status"]["readyReplicas"] == 2
    cluster.kubectl("set", "env", "deployment/web", "ROLLED=yes")
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=240s", timeout=260)
    cluster.kubectl("rollout", "undo", "deployment/web")
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=240s", timeout=260)
    template = cluster.get("deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert "ROLLED" not in json.dumps(template.get("env", []))
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "completions": 2,
            "parallelism": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": busybox_ref, "command": ["sh", "-c", "echo done"]}
                    ],
                }
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
    cluster.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=240s", timeout=260)
    cluster.kubectl("delete", "deployment", "web")
    cluster.kubectl("delete", "job", "once")


def test_restart_adopts_running_pods(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=pod_manifest("survivor", busybox_ref, "while true; do sleep 1; done")
    )
    cluster.wait_for("survivor running", lambda: phase(cluster, "survivor") == "Running")
    uid = cluster.get("pod", "survivor")["metadata"]["uid"]
    vm = qemu_processes_under(cluster.data / "runtime" / "hypervm" / uid)
    assert len(vm) == 1
    cluster.stop()
    assert qemu_processes_under(cluster.data / "runtime" / "hypervm" / uid) == vm, "VMs must outlive `up`"
    cluster.start()
    assert cluster.kubectl("exec", "survivor", "--", "echo", "adopted").stdout.strip() == "adopted"
    assert qemu_processes_under(cluster.data / "runtime" / "hypervm" / uid) == vm
    cluster.kubectl("delete", "pod", "survivor")
    assert not qemu_processes_under(cluster.data / "runtime" / "hypervm" / uid)


def test_env_and_volumes_from_configmap_and_secret(cluster: Cluster, busybox_ref: str) -> None:
    cluster.kubectl("create", "configmap", "settings", "--from-literal=mode=fast")
    cluster.kubectl("create", "secret", "generic", "creds", "--from-literal=token=s3cret")
    pod = json.loads(
        pod_manifest(
            "withvols",
            busybox_ref,
            "cat /etc/settings/mode; echo; cat /creds/token; echo; echo $MODE; "
            "echo hi > /scratch/f && cat /scratch/f; sleep 600",
        )
    )
    c = pod["spec"]["containers"][0]
    c["env"] = [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}]
    c["volumeMounts"] = [
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "creds", "mountPath": "/creds", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    pod["spec"]["volumes"] = [
        {"name": "settings", "configMap": {"name": "settings"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    logs = cluster.wait_for(
        "volume contents",
        lambda: (
            cluster.kubectl("logs", "withvols", check=False).stdout
            if "hi" in cluster.kubectl("logs", "withvols", check=False).stdout
            else None
        ),
    )
    assert logs.split() == ["fast", "s3cret", "fast", "hi"]
    cluster.kubectl("delete", "pod", "withvols")
