"""Pod object → runtime spec (env, $(VAR), users, limits) and runtime state → Pod status."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from hypernetes.node.podspec import ConfigError, expand, pod_spec
from hypernetes.node.podstatus import ContainerRecord, pod_phase, pod_status
from hypernetes.runtime.interface import ContainerState, ContainerStatus, ExitStatus

OBJECTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("ConfigMap", "ns", "cfg"): {"data": {"MODE": "fast", "LEVEL": "3"}},
    ("Secret", "ns", "sec"): {"data": {"TOKEN": base64.b64encode(b"s3cret").decode()}},
}


def lookup(kind: str, ns: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, ns, name))


def make_pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": "1234-ABCD",
            "labels": {"app": "w"},
            "annotations": {"hypernetes.io/kernel": "debian-cloud"},
        },
        "spec": {
            "nodeName": "n1",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsUser": 1000},
            "containers": [{"name": "c", "image": "busybox", **container}],
        },
    }


def test_env_sources_and_expansion() -> None:
    pod = make_pod(
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        env=[
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(CFG_MODE)-$(NOPE)-$$(A)"},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        command=["sh", "-c", "echo $(B)"],
        resources={"limits": {"memory": "256Mi", "cpu": "1500m"}},
    )
    spec = pod_spec(pod, lookup)
    env = dict(spec.containers[0].env)
    assert env["B"] == "x-fast-$(NOPE)-$(A)"
    assert env["T"] == "s3cret" and env["POD"] == "web" and env["APP"] == "w" and env["MEM"] == "256"
    assert env["CFG_LEVEL"] == "3"
    c = spec.containers[0]
    assert c.command == ("sh", "-c", "echo x-fast-$(NOPE)-$(A)")
    assert c.user == "1000" and c.memory_limit == 256 << 20 and c.cpu_limit_millis == 1500
    assert spec.id == "1234-abcd" and spec.kernel == "debian-cloud" and spec.termination_grace_seconds == 5


def test_missing_references_are_config_errors() -> None:
    with pytest.raises(ConfigError, match='configmap "nope" not found'):
        pod_spec(make_pod(envFrom=[{"configMapRef": {"name": "nope"}}]), lookup)
    with pytest.raises(ConfigError, match="couldn't find key X in Secret ns/sec"):
        pod_spec(
            make_pod(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "X"}}}]), lookup
        )
    optional = make_pod(
        env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}}]
    )
    assert dict(pod_spec(optional, lookup).containers[0].env) == {}


def test_expand_matches_upstream() -> None:
    assert expand("$(A)$(B)$$", {"A": "1"}) == "1$(B)$"


def rec(state: ContainerState | None, exit_code: int | None = None, **kw: Any) -> ContainerRecord:
    runtime = None
    if state is not None:
        runtime = ContainerStatus(
            name="c",
            state=state,
            started_at=1.0,
            finished_at=2.0,
            exit=ExitStatus(code=exit_code) if exit_code is not None else None,
        )
    waiting = kw.pop("waiting", ("", "") if state is not None else ("ContainerCreating", ""))
    return ContainerRecord(name="c", image="busybox", runtime=runtime, waiting=waiting, **kw)


@pytest.mark.parametrize(
    "policy, record, phase",
    [
        ("Always", rec(None), "Pending"),
        ("Always", rec(ContainerState.RUNNING), "Running"),
        ("Never", rec(ContainerState.EXITED, 0), "Succeeded"),
        ("Never", rec(ContainerState.EXITED, 1), "Failed"),
        ("OnFailure", rec(ContainerState.EXITED, 0), "Succeeded"),
        (
            "Always",
            rec(
                ContainerState.EXITED,
                1,
                waiting=("CrashLoopBackOff", "back-off"),
                restart_count=2,
                last_terminated={"exitCode": 1},
            ),
            "Running",
        ),
    ],
)
def test_phase(policy: str, record: ContainerRecord, phase: str) -> None:
    pod = make_pod()
    pod["spec"]["restartPolicy"] = policy
    status = pod_status(pod, [record], pod_ip=None, host_ip="10.0.0.1", start_time=1.0, sandbox_ready=True)
    assert status["phase"] == phase
    assert pod_phase(pod, status["containerStatuses"]) == phase


def test_status_shapes() -> None:
    pod = make_pod()
    running = rec(ContainerState.RUNNING, ready=True, started=True)
    status = pod_status(
        pod, [running], pod_ip="10.1.0.5", host_ip="10.0.0.1", start_time=1.0, sandbox_ready=True
    )
    cs = status["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": "1970-01-01T00:00:01Z"}} and cs["ready"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["podIP"] == "10.1.0.5" and status["qosClass"] == "BestEffort"
    crash = rec(
        ContainerState.EXITED,
        2,
        waiting=("CrashLoopBackOff", "back-off 10s"),
        restart_count=1,
        last_terminated={"exitCode": 2, "reason": "Error"},
    )
    cs = pod_status(pod, [crash], pod_ip=None, host_ip="h", start_time=None, sandbox_ready=True)[
        "containerStatuses"
    ][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert cs["lastState"] == {"terminated": {"exitCode": 2, "reason": "Error"}}


def test_volumes_from_configmaps_secrets_and_downward_api() -> None:
    from hypernetes.node.podspec import referenced_objects

    pod = make_pod(
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
            {"name": "all", "mountPath": "/all", "subPath": "x"},
        ]
    )
    pod["spec"]["securityContext"]["fsGroup"] = 2000
    pod["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "MODE", "path": "mode.txt"}]}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
        {
            "name": "all",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {"secret": {"name": "sec"}},
                    {
                        "downwardAPI": {
                            "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                        }
                    },
                ],
            },
        },
    ]
    spec = pod_spec(pod, lookup)
    cfg, scratch, projected = spec.volumes
    assert [(f.path, f.data, f.mode) for f in cfg.files] == [("mode.txt", b"fast", 0o644)]
    assert scratch.kind == "emptyDir" and scratch.size_limit == 64 << 20
    assert {(f.path, f.data, f.mode) for f in projected.files} == {
        ("TOKEN", b"s3cret", 0o440),
        ("labels", b'app="w"\n', 0o440),
    }
    assert spec.fs_group == 2000
    assert [(m.volume, m.path, m.read_only, m.sub_path) for m in spec.containers[0].mounts] == [
        ("cfg", "/etc/cfg", True, ""),
        ("all", "/all", False, "x"),
    ]
    assert referenced_objects(pod) == {("ConfigMap", "cfg"), ("Secret", "sec")}
    pod["spec"]["volumes"][0]["configMap"]["name"] = "missing"
    with pytest.raises(ConfigError, match='configmap "missing" not found'):
        pod_spec(pod, lookup)
