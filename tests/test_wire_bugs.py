"""Wire-level differences from kube-apiserver that real clients tripped over (issue 18): Status
field order byte for byte, WebSocket text frames on exec and port-forward (the official Python
client sends string stdin that way), Service status and clusterIP in the create response, and
the protobuf bodies kubectl 1.32+ sends for `kubectl create service|job|...`."""

from __future__ import annotations

import gc
import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
    # (scheduling.k8s.io is not served; `create role` was the example until RBAC was served)
    p = api.kubectl("create", "priorityclass", "p", "--value=1", version=version, check=False)
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


def test_protobuf_field_not_decoded_is_refused_not_dropped(api: ApiServerThread) -> None:
    # a Deployment whose pod template sets hostNetwork (PodSpec field 11), which this server does
    # not decode: refused with the field's place, rather than created without it
    labels = _pb(11, _pb(1, b"app") + _pb(2, b"hostnet"))  # map<string, string> entry
    container = _pb(1, b"c") + _pb(2, b"busybox")
    pod_spec = _pb(2, container) + bytes([11 << 3, 1])
    template = _pb(1, labels) + _pb(2, pod_spec)
    selector = _pb(1, _pb(1, b"app") + _pb(2, b"hostnet"))
    raw = _pb(1, _pb(1, b"hostnet")) + _pb(2, _pb(2, selector) + _pb(3, template))
    envelope = b"k8s\x00" + _pb(1, _pb(1, b"apps/v1") + _pb(2, b"Deployment")) + _pb(2, raw)
    ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
    req = urllib.request.Request(
        api.url + "/apis/apps/v1/namespaces/default/deployments",
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
    assert err.value.code == 415, body
    assert "spec.template.spec: field number 11 is not decoded" in body["message"]
    assert api.kubectl("get", "deployment", "hostnet", check=False).returncode == 1


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_expose_makes_a_service(api: ApiServerThread, version: str) -> None:
    name = f"exposed-{version.replace('.', '')}"
    api.kubectl("create", "deployment", name, "--image=busybox", "--port=8080", version=version)
    api.kubectl("expose", "deployment", name, "--port=80", "--target-port=8080", version=version)
    svc = json.loads(api.kubectl("get", "service", name, "-o", "json").stdout)
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["selector"] == {"app": name}


def _pb(field: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (short values only)."""
    assert len(value) < 128
    return bytes([field << 3 | 2, len(value)]) + value


# -- Services: status and clusterIP in the create response, as upstream's service REST storage


def _network_namespace(api: ApiServerThread, ns: str, service_cidr: str) -> None:
    """A namespace on a network of its own (what the network controller would have made)."""
    net = {
        "apiVersion": "hypernetes.io/v1",
        "kind": "Network",
        "metadata": {"name": ns},
        "spec": {"cidr": "10.0.0.0/16", "serviceCIDR": service_cidr},
    }
    api.kubectl("create", "-f", "-", input=json.dumps(net))
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "annotations": {"hypernetes.io/network": ns}},
    }
    api.kubectl("create", "-f", "-", input=json.dumps(namespace))


def _records(api: ApiServerThread, ns: str) -> dict[str, str]:
    """Service name -> the address its IPAllocation record holds, for services of `ns`."""
    items = json.loads(api.kubectl("get", "ipallocations", "-o", "json").stdout)["items"]
    return {
        a["spec"]["owner"]["name"]: a["spec"]["ip"]
        for a in items
        if (a["spec"].get("owner") or {}).get("namespace") == ns and a["spec"].get("ip")
    }


def test_service_create_response_has_cluster_ip_and_status(api: ApiServerThread) -> None:
    _network_namespace(api, "svc-wide", "10.97.0.0/16")
    for version in ("1.27", "1.33"):
        out = api.kubectl(
            "create",
            "service",
            "clusterip",
            f"web{version[2:]}",
            "--tcp=80",
            "-n",
            "svc-wide",
            "-o",
            "json",
            version=version,
        ).stdout
        svc = json.loads(out)
        ip = svc["spec"]["clusterIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.97.0.0/16")
        assert svc["spec"]["clusterIPs"] == [ip] and svc["status"] == {"loadBalancer": {}}
        assert _records(api, "svc-wide")[svc["metadata"]["name"]] == ip
    # a headless service gets no address; the Python client reads the status it is given
    from kubernetes import client as kc

    v1 = kc.CoreV1Api(api.python_client())
    body = kc.V1Service(
        metadata=kc.V1ObjectMeta(name="headless"),
        spec=kc.V1ServiceSpec(cluster_ip="None", selector={"a": "b"}),
    )
    made = v1.create_namespaced_service("svc-wide", body)
    assert made.spec.cluster_ip == "None" and made.status.load_balancer is not None
    assert "headless" not in _records(api, "svc-wide")


def test_service_create_never_gives_one_address_twice(api: ApiServerThread) -> None:
    # 14 addresses in a /28, 20 creates at once: 14 get distinct ones, 6 are refused
    _network_namespace(api, "svc-tiny", "10.98.0.0/28")
    from kubernetes import client as kc

    v1 = kc.CoreV1Api(api.python_client())

    def create(i: int) -> str:
        body = kc.V1Service(
            metadata=kc.V1ObjectMeta(name=f"s{i}"), spec=kc.V1ServiceSpec(ports=[kc.V1ServicePort(port=80)])
        )
        try:
            return str(v1.create_namespaced_service("svc-tiny", body).spec.cluster_ip)
        except kc.ApiException as e:
            assert e.status == 500 and "range is full" in e.body, e.body
            return ""

    with ThreadPoolExecutor(8) as pool:
        ips = [ip for ip in pool.map(create, range(20)) if ip]
    assert len(ips) == 14 and len(set(ips)) == 14
    assert sorted(_records(api, "svc-tiny").values()) == sorted(ips)
    # a create that fails after its allocation (the name is taken) gives the address back
    name_of_ip = {ip: n for n, ip in _records(api, "svc-tiny").items()}
    v1.delete_namespaced_service(name_of_ip[ips[0]], "svc-tiny")
    api.kubectl("delete", "ipallocation", "svc-tiny." + ips[0].replace(".", "-"))  # the controller's part
    taken = kc.V1Service(
        metadata=kc.V1ObjectMeta(name=name_of_ip[ips[1]]),
        spec=kc.V1ServiceSpec(ports=[kc.V1ServicePort(port=80)]),
    )
    with pytest.raises(kc.ApiException) as err:
        v1.create_namespaced_service("svc-tiny", taken)
    assert err.value.status == 409
    assert len(_records(api, "svc-tiny")) == 13
    again = kc.V1Service(
        metadata=kc.V1ObjectMeta(name="again"), spec=kc.V1ServiceSpec(ports=[kc.V1ServicePort(port=80)])
    )
    assert v1.create_namespaced_service("svc-tiny", again).spec.cluster_ip == ips[0]


def test_service_asking_for_a_cluster_ip(api: ApiServerThread) -> None:
    _network_namespace(api, "svc-ask", "10.99.0.0/24")
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a"},
        "spec": {"clusterIP": "10.99.0.7", "ports": [{"port": 80}]},
    }
    made = json.loads(
        api.kubectl("create", "-n", "svc-ask", "-o", "json", "-f", "-", input=json.dumps(svc)).stdout
    )
    assert made["spec"]["clusterIPs"] == ["10.99.0.7"] and _records(api, "svc-ask") == {"a": "10.99.0.7"}
    svc["metadata"]["name"] = "b"
    p = api.kubectl("create", "-n", "svc-ask", "-f", "-", input=json.dumps(svc), check=False)
    assert p.returncode == 1 and (
        'spec.clusterIPs: Invalid value: ["10.99.0.7"]: '
        "failed to allocate IP 10.99.0.7: provided IP is already allocated" in p.stderr
    ), p.stderr
    svc["spec"]["clusterIP"] = "10.96.0.7"
    p = api.kubectl("create", "-n", "svc-ask", "-f", "-", input=json.dumps(svc), check=False)
    assert "provided IP is not in the valid range. The range of valid IPs is 10.99.0.0/24" in p.stderr, (
        p.stderr
    )
