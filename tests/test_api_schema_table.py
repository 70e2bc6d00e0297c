"""table(): upstream printer columns and cells, for pods in each state and the other kinds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hypernetes.api import schema
from hypernetes.api.schema.printers import human_duration, selector_string

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
T0 = "2026-11-25T11:54:50Z"  # 5m10s before NOW


def kind(api_version: str, name: str) -> schema.Kind:
    k = schema.kind_by_name(api_version, name)
    assert k is not None
    return k


POD = kind("v1", "Pod")


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": T0, **meta},
        "spec": {
            "containers": [{"name": "web", "image": "nginx"}, {"name": "log", "image": "busybox"}],
            "nodeName": "node-1",
        },
        "status": status,
    }


def running(name: str, ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": T0}},
        **extra,
    }


def cells(k: schema.Kind, obj: dict[str, Any], wide: bool = True) -> list[Any]:
    t = schema.table(k, [obj], wide, now=NOW)
    return list(t["rows"][0]["cells"])


def test_columns_and_body_shape() -> None:
    t = schema.table(POD, [pod({"phase": "Pending"})], True, now=NOW)
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert [(c["name"], c["priority"]) for c in t["columnDefinitions"]] == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ]
    assert t["columnDefinitions"][0]["format"] == "name"
    obj = t["rows"][0]["object"]
    assert obj["kind"] == "PartialObjectMetadata" and obj["metadata"]["namespace"] == "default"
    narrow = schema.table(POD, [pod({"phase": "Pending"})], False, now=NOW)
    assert len(narrow["columnDefinitions"]) == 5 and len(narrow["rows"][0]["cells"]) == 5


def test_running_pod() -> None:
    p = pod(
        {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [running("web"), running("log")],
        }
    )
    assert cells(POD, p) == ["web", "2/2", "Running", "0", "5m10s", "10.0.0.5", "node-1", "<none>", "<none>"]


def test_crashlooping_pod() -> None:
    p = pod(
        {
            "phase": "Running",
            "containerStatuses": [
                running("web"),
                {
                    "name": "log",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-25T11:59:00Z"}},
                },
            ],
        }
    )
    assert cells(POD, p)[:4] == ["web", "1/2", "CrashLoopBackOff", "4 (60s ago)"]


def test_image_pull_error_and_exit_code() -> None:
    p = pod(
        {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "web",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull"}},
                },
                {
                    "name": "log",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                },
            ],
        }
    )
    assert cells(POD, p)[2] == "ErrImagePull"  # the first container wins: upstream walks them backwards
    p["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 3}}
    assert cells(POD, p)[2] == "ExitCode:3"


def test_completed_pod_has_row_condition() -> None:
    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    p = pod(
        {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "web", "ready": False, "restartCount": 0, "state": done},
                {"name": "log", "ready": False, "restartCount": 0, "state": done},
            ],
        }
    )
    t = schema.table(POD, [p], True, now=NOW)
    assert t["rows"][0]["cells"][:3] == ["web", "0/2", "Completed"]
    assert t["rows"][0]["conditions"][0]["type"] == "Completed"


def test_terminating_pod() -> None:
    p = pod(
        {"phase": "Running", "containerStatuses": [running("web"), running("log")]},
        deletionTimestamp="2026-11-25T11:59:30Z",
    )
    assert cells(POD, p)[2] == "Terminating"
    p["status"]["phase"] = "Succeeded"
    assert cells(POD, p)[2] != "Terminating"


def test_init_containers() -> None:
    p = pod(
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "migrate", "ready": False, "restartCount": 0, "state": {"running": {}}}
            ],
        }
    )
    p["spec"]["initContainers"] = [{"name": "migrate", "image": "x"}]
    assert cells(POD, p)[2] == "Init:0/1"
    p["status"]["initContainerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert cells(POD, p)[2] == "Init:CrashLoopBackOff"
    p["status"]["initContainerStatuses"][0]["state"] = {"terminated": {"exitCode": 2}}
    assert cells(POD, p)[2] == "Init:ExitCode:2"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (310, "5m10s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 120, "3h2m"),
        (8 * 3600, "8h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_deployment_replicaset_job() -> None:
    template = {"spec": {"containers": [{"name": "a", "image": "i1"}, {"name": "b", "image": "i2"}]}}
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}],
    }
    d = {
        "metadata": {"name": "d", "creationTimestamp": T0},
        "spec": {"replicas": 3, "selector": sel, "template": template},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert cells(kind("apps/v1", "Deployment"), d) == [
        "d",
        "2/3",
        3,
        2,
        "5m10s",
        "a,b",
        "i1,i2",
        "app=web,env in (a,b)",
    ]
    rs = {**d, "status": {"replicas": 3, "readyReplicas": 1}}
    assert cells(kind("apps/v1", "ReplicaSet"), rs)[:4] == ["d", 3, 3, 1]
    j = {
        "metadata": {"name": "pi", "creationTimestamp": T0},
        "spec": {"completions": 1, "template": template},
        "status": {
            "succeeded": 1,
            "startTime": T0,
            "completionTime": "2026-11-25T11:55:30Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    assert cells(kind("batch/v1", "Job"), j)[:5] == ["pi", "Complete", "1/1", "40s", "5m10s"]
    j["status"] = {"startTime": T0}
    assert cells(kind("batch/v1", "Job"), j)[:4] == ["pi", "Running", "0/1", "5m10s"]


def test_service_endpoints_node_namespace() -> None:
    s = {
        "metadata": {"name": "web", "creationTimestamp": T0},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"},
        },
    }
    assert cells(kind("v1", "Service"), s) == [
        "web",
        "ClusterIP",
        "10.96.0.10",
        "<none>",
        "80/TCP,53/UDP",
        "5m10s",
        "app=web",
    ]
    ep = {
        "metadata": {"name": "web", "creationTimestamp": T0},
        "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}],
    }
    assert cells(kind("v1", "Endpoints"), ep)[1] == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."
    n = {
        "metadata": {
            "name": "n1",
            "creationTimestamp": T0,
            "labels": {"node-role.kubernetes.io/control-plane": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-hypernetes", "osImage": "Debian"},
        },
    }
    assert cells(kind("v1", "Node"), n) == [
        "n1",
        "Ready,SchedulingDisabled",
        "control-plane",
        "5m10s",
        "v1.32.0-hypernetes",
        "192.0.2.1",
        "<none>",
        "Debian",
        "<unknown>",
        "<unknown>",
    ]
    ns = {"metadata": {"name": "team-a", "creationTimestamp": T0}, "status": {"phase": "Active"}}
    assert cells(kind("v1", "Namespace"), ns) == ["team-a", "Active", "5m10s"]


def test_event_config_and_others() -> None:
    ev = {
        "metadata": {"name": "web.1", "creationTimestamp": T0},
        "type": "Warning",
        "reason": "BackOff",
        "message": " Back-off restarting \n",
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": T0,
        "lastTimestamp": "2026-11-25T11:59:00Z",
        "count": 7,
    }
    assert cells(kind("v1", "Event"), ev) == [
        "60s",
        "Warning",
        "BackOff",
        "pod/web",
        "spec.containers{web}",
        "kubelet, node-1",
        "Back-off restarting",
        "5m10s",
        7,
        "web.1",
    ]
    assert cells(kind("v1", "Event"), ev, wide=False) == [
        "60s",
        "Warning",
        "BackOff",
        "pod/web",
        "Back-off restarting",
    ]
    cm = {"metadata": {"name": "c", "creationTimestamp": T0}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    assert cells(kind("v1", "ConfigMap"), cm) == ["c", 2, "5m10s"]
    sec = {
        "metadata": {"name": "s", "creationTimestamp": T0},
        "type": "kubernetes.io/tls",
        "data": {"a": "", "b": ""},
    }
    assert cells(kind("v1", "Secret"), sec) == ["s", "kubernetes.io/tls", 2, "5m10s"]
    sa = {"metadata": {"name": "default", "creationTimestamp": T0}}
    assert cells(kind("v1", "ServiceAccount"), sa) == ["default", 0, "5m10s"]
    lease = {"metadata": {"name": "l", "creationTimestamp": T0}, "spec": {"holderIdentity": "node-1"}}
    assert cells(kind("coordination.k8s.io/v1", "Lease"), lease) == ["l", "node-1", "5m10s"]


def test_every_kind_has_a_table() -> None:
    for k in schema.KINDS:
        t = schema.table(k, [{"metadata": {"name": "x"}}], True, now=NOW)
        assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"])


def test_selector_string() -> None:
    assert (
        selector_string(
            {
                "matchExpressions": [
                    {"key": "b", "operator": "Exists"},
                    {"key": "a", "operator": "DoesNotExist"},
                    {"key": "c", "operator": "NotIn", "values": ["x"]},
                ]
            }
        )
        == "!a,b,c notin (x)"
    )
    assert selector_string({}) == "<none>" == selector_string(None)  # metav1.FormatLabelSelector
