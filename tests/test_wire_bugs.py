"""Wire-level differences from kube-apiserver that real clients tripped over (issue 18): Status
field order byte for byte, WebSocket text frames on exec and port-forward (the official Python
client sends string stdin that way), Service status and clusterIP in the create response, and
the protobuf bodies kubectl 1.32+ sends for `kubectl create service|job|...`."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.apifixtures import running_api
from tests.support.apiserver import ApiServerThread
from tests.support.podproxy import ScriptedProxy


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    for server in running_api(tmp_path_factory, pod_proxy=ScriptedProxy()):
        server.kubectl("run", "box", "--image=busybox")
        yield server


def _raw(api: ApiServerThread, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
    req = urllib.request.Request(
        api.url + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# -- Status bodies: metav1.Status's field order (kind, apiVersion, metadata, status, message,
# reason, details, code), StatusDetails' (name, group, kind, uid, causes) and StatusCause's
# (reason, message, field), as kube-apiserver 1.32 writes them


def test_status_not_found_bytes_as_upstream(api: ApiServerThread) -> None:
    code, body = _raw(api, "GET", "/api/v1/namespaces/default/pods/nope")
    assert code == 404
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"pods \\"nope\\" not found","reason":"NotFound",'
        b'"details":{"name":"nope","kind":"pods"},"code":404}'
    )
    code, body = _raw(api, "GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"deployments.apps \\"nope\\" not found","reason":"NotFound",'
        b'"details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}'
    )


def test_status_invalid_bytes_as_upstream(api: ApiServerThread) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}
    code, body = _raw(api, "POST", "/api/v1/namespaces/default/configmaps", json.dumps(cm).encode())
    assert code == 422
    got = json.loads(body)
    assert list(got) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]
    assert list(got["details"]) == ["name", "kind", "causes"]
    assert all(list(c) == ["reason", "message", "field"] for c in got["details"]["causes"])
    code, body = _raw(
        api,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        json.dumps(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}
        ).encode(),
    )
    assert code == 422
    assert list(json.loads(body)["details"]) == ["name", "group", "kind", "causes"]
