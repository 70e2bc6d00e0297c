"""A pod's QoS class, one copy (objects/pod.py): the API server sets it at creation and the node
reports it in the pod's status; the two used to disagree (the node compared quantities as strings
and ignored init containers)."""

from __future__ import annotations

from typing import Any

import pytest

from hypernetes.api.registry.core.pod import KIND as POD
from hypernetes.node.podstatus import pod_status
from hypernetes.objects.pod import qos_class


def spec(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    named = [{"name": f"c{i}", "image": "x", "resources": r} for i, r in enumerate(containers)]
    inits = [{"name": f"i{i}", "image": "x", "resources": r} for i, r in enumerate(init)]
    return {"containers": named, **({"initContainers": inits} if inits else {})}


EQUAL = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}
LIMITS_ONLY = {"limits": {"cpu": "500m", "memory": "128Mi"}}


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        (spec({}), "BestEffort"),
        (spec(EQUAL), "Guaranteed"),  # equal as quantities, not as strings
        (spec(LIMITS_ONLY), "Guaranteed"),  # requests default to limits
        (spec({"requests": {"cpu": "1"}}), "Burstable"),
        (spec(EQUAL, {}), "Burstable"),
        (spec(EQUAL, init=({"requests": {"memory": "1Mi"}},)), "Burstable"),  # init containers count
        (spec({}, init=({"limits": {"cpu": "1", "memory": "1Mi"}},)), "Burstable"),
    ],
)
def test_qos_class_as_upstream(pod_spec: dict[str, Any], expected: str) -> None:
    assert qos_class(pod_spec) == expected


def test_the_api_server_and_the_node_agree() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec(EQUAL)}
    assert POD.defaults is not None
    POD.defaults(pod)
    reported = pod_status(pod, [], pod_ip=None, host_ip="10.0.0.1", start_time=None, sandbox_ready=False)
    assert pod["status"]["qosClass"] == reported["qosClass"] == "Guaranteed"
