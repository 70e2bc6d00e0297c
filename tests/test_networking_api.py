"""networking.k8s.io/v1 through the real API server, as tenants use it with the real kubectl:
NetworkPolicy, Ingress and IngressClass validation (422 with upstream's field paths), defaults,
Table columns, and tenancy (another tenant's objects are out of reach; IngressClasses are the
operators' to write and everyone's to read)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apiserver import ApiServerThread
from tests.support.tenants import TenantWorld, kubectl_forbidden

NP = "/apis/networking.k8s.io/v1/namespaces/acme-a/networkpolicies"
ING = "/apis/networking.k8s.io/v1/namespaces/acme-a/ingresses"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("networking")), tenancy=True).start()
    w = TenantWorld.build(api)
    try:
        yield w
    finally:
        w.close()
        api.stop()


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: acme-a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}, {namespaceSelector: {matchLabels: {team: ops}}}]
    ports: [{port: http}, {port: 9000, endPort: 9100}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
"""


def test_a_tenant_applies_and_lists_network_policies(world: TenantWorld) -> None:
    out = world.kubectl("acme-member", "apply", "-f", "-", input=POLICY)
    assert out.returncode == 0, out.stderr
    got = world.op("GET", f"{NP}/web")
    assert got["spec"]["policyTypes"] == ["Ingress", "Egress"]  # defaulted: it has egress rules
    assert [p["protocol"] for p in got["spec"]["ingress"][0]["ports"]] == ["TCP", "TCP"]
    table = world.kubectl("acme-viewer", "get", "netpol", "-n", "acme-a").stdout.splitlines()
    assert table[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
    assert table[1].split()[:2] == ["web", "app=web"]
    # another tenant: not by name, not in a list
    kubectl_forbidden(world.kubectl("globex-member", "get", "netpol", "web", "-n", "acme-a"))
    assert "acme-a/web" not in world.names("globex-admin", "/apis/networking.k8s.io/v1/networkpolicies")
    assert world.kubectl("acme-member", "delete", "netpol", "web", "-n", "acme-a").returncode == 0


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}],
            },
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "must be a strict subset of `cidr`",
        ),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            "spec.ingress[0].from[0]",
            "may not specify more than 1 peer",
        ),
        ({"podSelector": {}, "egress": [{"to": [{}]}]}, "spec.egress[0].to[0]", "must specify a peer"),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "may not be specified when `port` is non-numeric",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 100, "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "must be greater than or equal to `port`",
        ),
        (
            {"podSelector": {}, "policyTypes": ["Sideways"]},
            "spec.policyTypes[0]",
            'Unsupported value: "Sideways"',
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
            "spec.podSelector.matchExpressions[0].values",
            "must be specified",
        ),
        (
            {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/64"}}]}]},
            "spec.egress[0].to[0].ipBlock.cidr",
            "not supported by hypernetes",
        ),
    ],
)
def test_bad_network_policies_are_422_with_the_field(
    world: TenantWorld, spec: dict, field: str, message: str
) -> None:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    r = world.http("acme-member").post(NP, json=body)
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: acme-a}
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: Exact, backend: {service: {name: api, port: {name: http}}}}
  - host: "*.shop.example"
    http:
      paths:
      - {path: /, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
"""


def test_ingresses_and_ingress_classes(world: TenantWorld) -> None:
    out = world.kubectl("acme-member", "apply", "-f", "-", input=INGRESS)
    assert out.returncode == 0, out.stderr
    got = world.op("GET", f"{ING}/shop")
    assert got["status"] == {"loadBalancer": {}}
    table = world.kubectl("acme-viewer", "get", "ingress", "-n", "acme-a").stdout.splitlines()
    assert table[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:4] == ["shop", "<none>", "shop.example,*.shop.example", "80"]
    kubectl_forbidden(world.kubectl("globex-member", "get", "ingress", "shop", "-n", "acme-a"))
    # a tenant may not write the status the nodes write
    status = {**got, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}
    assert world.http("acme-member").put(f"{ING}/shop/status", json=status).status_code == 403

    cls = {"metadata": {"name": "hypernetes"}, "spec": {"controller": "hypernetes.io/ingress"}}
    classes = "/apis/networking.k8s.io/v1/ingressclasses"
    assert world.http("acme-admin").post(classes, json=cls).status_code == 403
    world.op("POST", classes, cls)
    lines = world.kubectl("acme-member", "get", "ingressclass").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
    assert lines[1].split()[:3] == ["hypernetes", "hypernetes.io/ingress", "<none>"]
    changed = {**world.op("GET", f"{classes}/hypernetes"), "spec": {"controller": "example.com/other"}}
    r = world.http("operator").put(f"{classes}/hypernetes", json=changed)
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.controller"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({}, "spec", "either `defaultBackend` or `rules` must be specified"),
        (
            {
                "rules": [
                    {
                        "host": "a.example",
                        "http": {
                            "paths": [
                                {"path": "/", "backend": {"service": {"name": "w", "port": {"number": 80}}}}
                            ]
                        },
                    }
                ]
            },
            "spec.rules[0].http.paths[0].pathType",
            "pathType must be specified",
        ),
        (
            {
                "rules": [
                    {
                        "host": "10.0.0.1",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "w", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
            "spec.rules[0].host",
            "must be a DNS name, not an IP address",
        ),
        (
            {
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "x",
                                    "pathType": "Exact",
                                    "backend": {"service": {"name": "w", "port": {"number": 80}}},
                                }
                            ]
                        }
                    }
                ]
            },
            "spec.rules[0].http.paths[0].path",
            "must be an absolute path",
        ),
        (
            {"defaultBackend": {"service": {"name": "w", "port": {"name": "http", "number": 80}}}},
            "spec.defaultBackend.service.port",
            "cannot set both port name & port number",
        ),
        (
            {"defaultBackend": {"resource": {"apiGroup": "example.com", "kind": "Bucket", "name": "b"}}},
            "spec.defaultBackend.resource",
            "not supported by hypernetes",
        ),
    ],
)
def test_bad_ingresses_are_422_with_the_field(
    world: TenantWorld, spec: dict, field: str, message: str
) -> None:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    r = world.http("acme-member").post(ING, json=body)
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes


def test_nodes_read_what_they_build_and_write_only_ingress_status(world: TenantWorld) -> None:
    """The node agent lists NetworkPolicies, Ingresses and IngressClasses of every tenant (its
    routers enforce and serve them) and writes an Ingress's status, nothing else of them."""
    for plural in ("networkpolicies", "ingresses", "ingressclasses"):
        r = world.http("node-a").get(f"/apis/networking.k8s.io/v1/{plural}")
        assert r.status_code == 200, (plural, r.text)
    world.kubectl("acme-member", "apply", "-f", "-", input=INGRESS)
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "n"},
        "spec": {},
    }
    assert world.http("node-a").post(NP, json=body).status_code == 403
    got = world.op("GET", f"{ING}/shop")
    assert world.http("node-a").put(f"{ING}/shop", json=got).status_code == 403
    got["status"] = {
        "loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ports": [{"port": 20007, "protocol": "TCP"}]}]}
    }
    r = world.http("node-a").put(f"{ING}/shop/status", json=got)
    assert r.status_code == 200, r.text
    assert "192.0.2.10" in world.kubectl("acme-viewer", "get", "ingress", "shop", "-n", "acme-a").stdout


def test_kubectl_create_ingress(world: TenantWorld) -> None:
    """kubectl 1.32 sends `create ingress` as protobuf; the rule's inline http value is decoded."""
    out = world.kubectl(
        "acme-member",
        "create",
        "ingress",
        "quick",
        "-n",
        "acme-a",
        "--class=hypernetes",
        "--rule=shop.example/api*=api:http",
        "--rule=shop.example/=web:80,tls=shop-cert",
        "--default-backend=web:80",
    )
    assert out.returncode == 0, out.stderr
    spec = world.op("GET", f"{ING}/quick")["spec"]
    assert spec["ingressClassName"] == "hypernetes"
    assert spec["defaultBackend"] == {"service": {"name": "web", "port": {"number": 80}}}
    assert spec["tls"] == [{"hosts": ["shop.example"], "secretName": "shop-cert"}]
    paths = [p for r in spec["rules"] for p in r["http"]["paths"]]
    assert {(p["path"], p["pathType"]) for p in paths} == {("/api", "Prefix"), ("/", "Exact")}
    assert {"service": {"name": "api", "port": {"name": "http"}}} in [p["backend"] for p in paths]
