"""Wire-level differences from kube-apiserver that real clients tripped over (issue 18): Status
field order byte for byte, WebSocket text frames on exec and port-forward (the official Python
client sends string stdin that way), Service status and clusterIP in the create response, and
the protobuf bodies kubectl 1.32+ sends for `kubectl create service|job|...`."""

from __future__ import annotations

import gc
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


# -- WebSocket text frames on exec and port-forward: kube-apiserver reads both kinds of frame,
# the channel being the first byte of either


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_python_client_exec_with_string_stdin(api: ApiServerThread) -> None:
    from kubernetes import client as kc
    from kubernetes.stream import stream

    v1 = kc.CoreV1Api(api.python_client())
    resp = stream(
        v1.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["cat"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("echo hi\n")  # a str: the client sends it as a text frame
    out = ""
    for _ in range(50):
        resp.update(timeout=0.2)
        out += resp.read_stdout(timeout=0.1) if resp.peek_stdout() else ""
        if out:
            break
    resp.write_stdin(b"bytes too\n")  # and bytes as a binary frame
    for _ in range(50):
        resp.update(timeout=0.2)
        out += resp.read_stdout(timeout=0.1) if resp.peek_stdout() else ""
        if out.endswith("too\n"):
            break
    resp.close()
    del resp
    gc.collect()
    assert out == "echo hi\nbytes too\n"


def test_port_forward_channels_read_text_frames(api: ApiServerThread) -> None:
    import websocket  # websocket-client, the Python client's own WebSocket library

    url = api.url.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/box/portforward?ports=80"
    ws = websocket.create_connection(
        url,
        header=[f"Authorization: Bearer {api.token}"],
        subprotocols=["v4.channel.k8s.io"],
        sslopt={"ca_certs": str(api.ca.ca_cert)},
        timeout=10,
    )
    try:
        port = (80).to_bytes(2, "little")
        assert ws.recv() == b"\x00" + port and ws.recv() == b"\x01" + port  # data, error channels
        ws.send("\x00hello")  # a text frame, as the Python client writes a str
        assert ws.recv() == b"\x00HELLO"
        ws.send_binary(b"\x00again")
        assert ws.recv() == b"\x00AGAIN"
    finally:
        ws.close()


# -- protobuf bodies: kubectl 1.32+ sends what its `create` generators build as
# application/vnd.kubernetes.protobuf (1.27-1.31 sent JSON for Service and Job). The server must
# store what the generator built: the same command with --dry-run=client -o json is the oracle.

CREATE_COMMANDS = {
    "svc-clusterip": ["service", "clusterip", "{n}", "--tcp=80:8080", "--tcp=443"],
    "svc-headless": ["service", "clusterip", "{n}", "--clusterip=None"],
    "svc-nodeport": ["service", "nodeport", "{n}", "--tcp=80:http"],
    "svc-external": ["service", "externalname", "{n}", "--external-name=db.example.com"],
    "job": ["job", "{n}", "--image=busybox", "--", "sleep", "1"],
    "deployment": ["deployment", "{n}", "--image=busybox", "--replicas=2", "--port=80"],
    "configmap": ["configmap", "{n}", "--from-literal=a=b"],
    "secret": ["secret", "generic", "{n}", "--from-literal=a=b"],
    "docker-secret": [
        "secret",
        "docker-registry",
        "{n}",
        "--docker-server=r.example.com",
        "--docker-username=u",
        "--docker-password=p",
    ],
    "serviceaccount": ["serviceaccount", "{n}"],
    "namespace": ["namespace", "{n}"],
}


def _contains(expected: object, got: object, path: str = "") -> list[str]:
    """Where `got` lacks or differs from what `expected` says (null and {} say nothing)."""
    if expected is None or expected == {}:
        return []
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r}"]
        return [d for k, v in expected.items() for d in _contains(v, got.get(k), f"{path}.{k}")]
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{path}: {got!r} (expected {expected!r})"]
        return [
            d
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            for d in _contains(e, g, f"{path}[{i}]")
        ]
    return [] if expected == got else [f"{path}: {got!r} (expected {expected!r})"]


@pytest.mark.parametrize("version", ["1.27", "1.31", "1.32", "1.33"])
def test_kubectl_create_generators_every_served_kind(api: ApiServerThread, version: str) -> None:
    for what, args in CREATE_COMMANDS.items():
        name = f"{what}-{version.replace('.', '')}"
        cmd = [a.format(n=name) for a in args]
        cut = cmd.index("--") if "--" in cmd else len(cmd)  # flags go before the job's command
        flags, command = cmd[:cut], cmd[cut:]
        dry = api.kubectl("create", *flags, "--dry-run=client", "-o", "json", *command, version=version)
        want = json.loads(dry.stdout)
        p = api.kubectl("create", *flags, "-o", "json", *command, version=version, check=False)
        assert p.returncode == 0, f"kubectl {version} create {what}: {p.stderr}"
        assert not _contains(want, json.loads(p.stdout)), (what, _contains(want, json.loads(p.stdout)))


@pytest.mark.parametrize("version", ["1.32", "1.33"])
def test_kubectl_create_of_a_kind_not_served_is_refused_clearly(api: ApiServerThread, version: str) -> None:
    p = api.kubectl("create", "role", "r", "--verb=get", "--resource=pods", version=version, check=False)
    assert p.returncode != 0 and "the server could not find the requested resource" in p.stderr


def test_protobuf_kind_not_decoded_is_a_clear_415(api: ApiServerThread) -> None:
    # a served kind whose protobuf form this server does not decode: 415 naming the kinds it does
    envelope = b"k8s\x00" + _pb(1, _pb(1, b"v1") + _pb(2, b"Endpoints")) + _pb(2, b"")
    ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
    req = urllib.request.Request(
        api.url + "/api/v1/namespaces/default/endpoints",
        data=envelope,
        method="POST",
        headers={
            "Authorization": f"Bearer {api.token}",
            "Content-Type": "application/vnd.kubernetes.protobuf",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=30)
    body = json.loads(err.value.read())
    assert err.value.code == 415 and body["reason"] == "UnsupportedMediaType"
    assert "Service" in body["message"] and "Job" in body["message"] and "v1 Endpoints" in body["message"]


def _pb(field: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (short values only)."""
    assert len(value) < 128
    return bytes([field << 3 | 2, len(value)]) + value
