"""The Network and IPAllocation kinds on a real multi-tenant API server: defaults, validation with
field paths, the printer through the real kubectl, who may see and change which network, the
namespace's network annotation, and the pod address annotations only the controller may set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hypernetes.api.schema.validation import NODE_PORTS
from hypernetes.controllers.networks import NODE_PORTS as CONTROLLER_NODE_PORTS
from hypernetes.controllers.networks import mac_for, pod_hosts, validate_network
from hypernetes.network.objects import holds_network_id, network_id_record
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenants import JSON, TenantWorld

NETS = "/apis/hypernetes.io/v1/networks"
ALLOCS = "/apis/hypernetes.io/v1/ipallocations"


def network(name: str, cidr: str = "10.1.0.0/24", **spec: object) -> JSON:
    return {
        "apiVersion": "hypernetes.io/v1",
        "kind": "Network",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    tmp = Path(tmp_path_factory.mktemp("networks"))
    api = ApiServerThread(tmp, tenancy=True).start()
    w = TenantWorld(api)
    try:
        for tenant in ("acme", "globex"):
            w.create_tenant(tenant)
            for role in ("admin", "member"):
                w.create_user(f"{tenant}-{role}", tenant, role)
            w.create_namespace(f"{tenant}-admin", f"{tenant}-a", tenant)
        w.node_token("node-a")
        yield w
    finally:
        w.close()
        api.stop()


def post(w: TenantWorld, who: str, path: str, body: JSON) -> tuple[int, JSON]:
    r = w.http(who).post(path, json=body)
    return r.status_code, r.json()


def test_a_tenant_admin_creates_a_network_with_defaults(world: TenantWorld) -> None:
    code, net = post(world, "acme-admin", NETS, network("acme-db", "10.5.0.0/24"))
    assert code == 201, net
    assert net["spec"] == {
        "tenant": "acme",
        "cidr": "10.5.0.0/24",
        "gateway": "10.5.0.1",
        "egressNAT": True,
        "serviceCIDR": "10.96.0.0/16",
    }
    assert net["metadata"]["labels"]["hypernetes.io/tenant"] == "acme"
    # the same CIDR in another tenant: isolation does not depend on addresses differing
    code, other = post(
        world,
        "globex-admin",
        NETS,
        network("globex-db", "10.5.0.0/24", egressNAT=False, dnsServers=["9.9.9.9"]),
    )
    assert code == 201, other
    assert other["spec"]["egressNAT"] is False


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cidr": "10.0.0.0/8"}, "spec.cidr"),
        ({"cidr": "10.0.0.0/29"}, "spec.cidr"),
        ({"cidr": "10.0.0.1/24"}, "spec.cidr"),
        ({"cidr": "fd00::/64"}, "spec.cidr"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}, "spec.gateway"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.0.255"}, "spec.gateway"),
        ({"cidr": "10.0.0.0/24", "gateway": "nope"}, "spec.gateway"),
        ({"cidr": "10.0.0.0/24", "dnsServers": ["1.1.1.1", "x"]}, "spec.dnsServers[1]"),
        ({"cidr": "10.0.0.0/24", "dnsServers": ["1.1.1.1"] * 4}, "spec.dnsServers"),
        ({"cidr": "10.96.0.0/24"}, "spec.serviceCIDR"),  # overlaps the default service range
        ({"cidr": "10.0.0.0/24", "serviceCIDR": "10.200.0.0/8"}, "spec.serviceCIDR"),
    ],
)
def test_invalid_networks_are_refused_with_the_field(world: TenantWorld, spec: JSON, field: str) -> None:
    code, body = post(
        world,
        "acme-admin",
        NETS,
        {"apiVersion": "hypernetes.io/v1", "kind": "Network", "metadata": {"name": "bad"}, "spec": spec},
    )
    assert code == 422, body
    assert body["details"]["causes"][0]["field"] == field, body
    assert field in body["message"]


def test_schema_errors_and_immutable_fields(world: TenantWorld) -> None:
    code, body = post(world, "acme-admin", NETS, network("typed", egressNAT="yes"))
    assert code == 422 and "spec.egressNAT" in body["message"], body
    code, body = post(
        world,
        "acme-admin",
        NETS,
        {"apiVersion": "hypernetes.io/v1", "kind": "Network", "metadata": {"name": "nocidr"}, "spec": {}},
    )
    assert code == 422 and "spec.cidr" in body["message"], body
    code, body = post(world, "acme-admin", NETS, network("Bad.Name"))
    assert code == 422, body
    assert post(world, "acme-admin", NETS, network("mutable"))[0] == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    for field, value in (("cidr", "10.2.0.0/24"), ("gateway", "10.1.0.9"), ("tenant", "globex")):
        r = world.http("operator").patch(f"{NETS}/mutable", json={"spec": {field: value}}, headers=merge)
        assert r.status_code == 422 and f"spec.{field}" in r.text, (field, r.text)
    r = world.http("acme-admin").patch(f"{NETS}/mutable", json={"spec": {"egressNAT": False}}, headers=merge)
    assert r.status_code == 200 and r.json()["spec"]["egressNAT"] is False, r.text


def test_tenants_see_and_change_only_their_networks(world: TenantWorld) -> None:
    assert post(world, "acme-admin", NETS, network("acme-web"))[0] == 201
    assert post(world, "globex-admin", NETS, network("globex-web"))[0] == 201
    acme = world.names("acme-member", NETS)
    assert "acme-web" in acme and not any(n.startswith("globex") for n in acme)
    assert world.http("acme-member").get(f"{NETS}/acme-web").status_code == 200
    # another tenant's network and an absent one get the same refusal
    for name in ("globex-web", "no-such-network"):
        assert world.http("acme-admin").get(f"{NETS}/{name}").status_code == 403
        assert world.http("acme-admin").delete(f"{NETS}/{name}").status_code == 403
    # a member reads but does not write; an admin may not create for another tenant
    assert post(world, "acme-member", NETS, network("acme-x"))[0] == 403
    assert world.http("acme-member").delete(f"{NETS}/acme-web").status_code == 403
    code, body = post(world, "acme-admin", NETS, network("sneaky", tenant="globex"))
    assert code == 403, body
    # status is the nodes'; only operators set the default-network label
    r = world.http("acme-admin").patch(
        f"{NETS}/acme-web/status",
        json={"status": {"phase": "Ready"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 403
    labelled = network("acme-lbl")
    labelled["metadata"]["labels"] = {"hypernetes.io/default-network": "true"}
    assert post(world, "acme-admin", NETS, labelled)[0] == 403
    # allocations are operators' (nodes read them)
    assert world.http("acme-admin").get(ALLOCS).status_code == 403
    assert world.http("node-a").get(ALLOCS).status_code == 200
    assert "globex-web" in world.names("node-a", NETS)
    r = world.http("node-a").patch(
        f"{NETS}/acme-web/status",
        json={"status": {"hosts": [{"node": "node-a", "ready": True}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    world.node_token("node-b")
    r = world.http("node-b").patch(
        f"{NETS}/acme-web/status",
        json={"status": {"hosts": [{"node": "node-b", "ready": False, "message": "building"}]}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert {h["node"]: h["ready"] for h in r.json()["status"]["hosts"]} == {"node-a": True, "node-b": False}
    assert world.http("acme-admin").delete(f"{NETS}/acme-web").status_code == 200


def test_a_namespace_names_a_network_of_its_own_tenant(world: TenantWorld) -> None:
    assert post(world, "acme-admin", NETS, network("acme-ns-net"))[0] == 201
    assert post(world, "globex-admin", NETS, network("globex-ns-net"))[0] == 201
    ok = {"metadata": {"name": "acme-netted", "annotations": {"hypernetes.io/network": "acme-ns-net"}}}
    assert post(world, "acme-admin", "/api/v1/namespaces", ok)[0] == 201
    for target in ("globex-ns-net", "absent"):
        bad = {"metadata": {"name": f"acme-{target}", "annotations": {"hypernetes.io/network": target}}}
        code, body = post(world, "acme-admin", "/api/v1/namespaces", bad)
        assert code == 422, body
        assert body["details"]["causes"][0]["field"] == "metadata.annotations[hypernetes.io/network]"
    r = world.http("acme-admin").patch(
        "/api/v1/namespaces/acme-netted",
        json={"metadata": {"annotations": {"hypernetes.io/network": "globex-ns-net"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text


def test_pod_address_annotations_are_the_controllers(world: TenantWorld) -> None:
    pod: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"hypernetes.io/ip": "10.0.0.7"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    code, body = post(world, "acme-member", "/api/v1/namespaces/acme-a/pods", pod)
    assert code == 403 and "hypernetes.io/ip" in body["message"], body
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}, "annotations": {"hypernetes.io/mac": "02:00:00:00:00:01"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    code, body = post(world, "acme-member", "/apis/apps/v1/namespaces/acme-a/deployments", deploy)
    assert code == 403 and "spec.template.metadata.annotations" in body["message"], body
    del pod["metadata"]["annotations"]
    assert post(world, "acme-member", "/api/v1/namespaces/acme-a/pods", pod)[0] == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    world.http("operator").patch(
        "/api/v1/namespaces/acme-a/pods/p",
        json={"metadata": {"annotations": {"hypernetes.io/ip": "10.0.0.7"}}},
        headers=merge,
    ).raise_for_status()
    # the tenant may label its pod but not move its address
    r = world.http("acme-member").patch(
        "/api/v1/namespaces/acme-a/pods/p", json={"metadata": {"labels": {"x": "y"}}}, headers=merge
    )
    assert r.status_code == 200, r.text
    r = world.http("acme-member").patch(
        "/api/v1/namespaces/acme-a/pods/p",
        json={"metadata": {"annotations": {"hypernetes.io/ip": "10.0.0.8"}}},
        headers=merge,
    )
    assert r.status_code == 403, r.text


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_kubectl_prints_networks(world: TenantWorld) -> None:
    assert post(world, "acme-admin", NETS, network("acme-print", "10.9.0.0/16", egressNAT=False))[0] == 201
    out = world.kubectl("acme-member", "get", "networks")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "TENANT", "ID", "CIDR", "GATEWAY", "EGRESS", "AGE"]
    row = next(r.split() for r in rows if r.startswith("acme-print "))
    # no network controller runs here: the id is not given yet
    assert row[:6] == ["acme-print", "acme", "<none>", "10.9.0.0/16", "10.9.0.1", "false"]
    world.op("POST", NETS, network("op-print", "10.9.0.0/16", id=4321))
    out = world.kubectl("operator", "get", "networks", "op-print", "--no-headers")
    assert out.stdout.split()[:3] == ["op-print", "4321", "10.9.0.0/16"], out.stdout + out.stderr
    assert not any(r.startswith("globex") for r in rows)
    out = world.kubectl("operator", "get", "net", "acme-print", "-o", "wide")
    assert "SERVICE CIDR" in out.stdout and "10.96.0.0/16" in out.stdout, out.stdout + out.stderr
    out = world.kubectl("operator", "explain", "networks.spec.egressNAT")
    assert out.returncode == 0 and "masquerade" in out.stdout, out.stdout + out.stderr


def test_the_network_id_is_the_controllers_and_operators(world: TenantWorld) -> None:
    merge = {"Content-Type": "application/merge-patch+json"}
    # a tenant admin may not choose it, on create or later
    code, body = post(world, "acme-admin", NETS, network("acme-chosen", id=77))
    assert code == 403 and "spec.id" in body["message"], body
    assert post(world, "acme-admin", NETS, network("acme-noid"))[0] == 201
    r = world.http("acme-admin").patch(f"{NETS}/acme-noid", json={"spec": {"id": 77}}, headers=merge)
    assert r.status_code == 403 and "spec.id" in r.text, r.text
    # an operator may (as the controller does), within 1-8191
    for bad in (0, 8192, -1):
        code, body = post(world, "operator", NETS, network("op-bad", id=bad))
        assert code == 422 and body["details"]["causes"][0]["field"] == "spec.id", body
    code, body = post(world, "operator", NETS, network("op-bad", id="seven"))
    assert code == 422 and "spec.id" in body["message"], body
    r = world.http("operator").patch(f"{NETS}/acme-noid", json={"spec": {"id": 77}}, headers=merge)
    assert r.status_code == 200 and r.json()["spec"]["id"] == 77, r.text
    # then it is fixed: not changed, not removed (a PUT without it keeps it), even by operators
    r = world.http("operator").patch(f"{NETS}/acme-noid", json={"spec": {"id": 78}}, headers=merge)
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.id", r.text
    cur = world.http("acme-admin").get(f"{NETS}/acme-noid").json()
    del cur["spec"]["id"]
    cur["spec"]["egressNAT"] = False
    r = world.http("acme-admin").put(f"{NETS}/acme-noid", json=cur)
    assert r.status_code == 200 and r.json()["spec"]["id"] == 77, r.text
    # the tenant admin may still change what is theirs to change, id included as it is
    r = world.http("acme-admin").patch(
        f"{NETS}/acme-noid", json={"spec": {"egressNAT": True, "id": 77}}, headers=merge
    )
    assert r.status_code == 200, r.text


def svc(name: str, stype: str = "NodePort", **spec: object) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": stype, "selector": {"a": "b"}, "ports": [{"port": 80}], **spec},
    }


SVCS = "/api/v1/namespaces/acme-a/services"


def test_node_port_services_are_admitted_with_upstreams_rules(world: TenantWorld) -> None:
    assert NODE_PORTS == CONTROLLER_NODE_PORTS
    code, body = post(world, "acme-member", SVCS, svc("np"))
    assert code == 201, body
    assert body["spec"]["externalTrafficPolicy"] == "Cluster"
    assert body["spec"]["internalTrafficPolicy"] == "Cluster"
    code, body = post(world, "acme-member", SVCS, svc("cip", "ClusterIP"))
    assert code == 201 and "externalTrafficPolicy" not in body["spec"], body
    assert body["spec"]["internalTrafficPolicy"] == "Cluster"
    code, body = post(world, "acme-member", SVCS, svc("np-chosen", ports=[{"port": 80, "nodePort": 30080}]))
    assert code == 201 and body["spec"]["ports"][0]["nodePort"] == 30080, body
    for port in (80, 29999, 32768):
        code, body = post(world, "acme-member", SVCS, svc("np-bad", ports=[{"port": 80, "nodePort": port}]))
        assert code == 422, body
        assert body["details"]["causes"][0]["field"] == "spec.ports[0].nodePort", body
        assert "The range of valid ports is 30000-32767" in body["message"], body
    code, body = post(
        world,
        "acme-member",
        SVCS,
        svc(
            "np-dup",
            ports=[
                {"name": "a", "port": 80, "nodePort": 30100},
                {"name": "b", "port": 81, "nodePort": 30100},
            ],
        ),
    )
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.ports[1].nodePort", body
    code, body = post(
        world, "acme-member", SVCS, svc("cip-np", "ClusterIP", ports=[{"port": 80, "nodePort": 30081}])
    )
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.ports[0].nodePort", body
    assert "may not be used when `type` is 'ClusterIP'" in body["message"]
    code, body = post(
        world, "acme-member", SVCS, svc("cip-etp", "ClusterIP", externalTrafficPolicy="Cluster")
    )
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.externalTrafficPolicy", body
    code, body = post(world, "acme-member", SVCS, svc("lb", "LoadBalancer"))
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.type", body
    assert "NodePort" in body["message"] and "load balancer" in body["message"], body


def test_a_node_port_service_turned_cluster_ip_loses_its_node_ports(world: TenantWorld) -> None:
    """As upstream's dropTypeDependentFields: a type change the caller made without touching the
    node ports wipes them (and externalTrafficPolicy); changing them too is refused."""
    assert post(world, "acme-member", SVCS, svc("np-back", ports=[{"port": 80, "nodePort": 30090}]))[0] == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    r = world.http("acme-member").patch(
        f"{SVCS}/np-back", json={"spec": {"type": "ClusterIP"}}, headers=merge
    )
    assert r.status_code == 200, r.text
    spec = r.json()["spec"]
    assert spec["type"] == "ClusterIP" and "nodePort" not in spec["ports"][0], spec
    assert "externalTrafficPolicy" not in spec, spec
    assert post(world, "acme-member", SVCS, svc("np-keep", ports=[{"port": 80, "nodePort": 30091}]))[0] == 201
    r = world.http("acme-member").patch(
        f"{SVCS}/np-keep",
        json={"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30092}]}},
        headers=merge,
    )
    assert r.status_code == 422 and "spec.ports[0].nodePort" in r.text, r.text
    # and back: a NodePort service again (the controller gives it a port)
    r = world.http("acme-member").patch(f"{SVCS}/np-back", json={"spec": {"type": "NodePort"}}, headers=merge)
    assert r.status_code == 200 and r.json()["spec"]["externalTrafficPolicy"] == "Cluster", r.text


def test_model_helpers() -> None:
    ok = {"cidr": "10.0.0.0/16", "serviceCIDR": "10.96.0.0/16", "gateway": "10.0.0.1"}
    assert validate_network(ok) == []
    hosts = list(pod_hosts({"cidr": "10.0.0.0/28", "gateway": "10.0.0.1"}))
    assert hosts[0] == "10.0.0.2" and hosts[-1] == "10.0.0.14" and len(hosts) == 13
    net = {"metadata": {"name": "n", "uid": "u1"}, "spec": {"id": 9}}
    rec = {
        "metadata": {"name": "networkid.9"},
        "spec": {"networkID": 9, "owner": {"kind": "Network", "name": "n", "uid": "u1"}},
    }
    assert holds_network_id(net, rec) and network_id_record(9) == "networkid.9"
    assert not holds_network_id({**net, "metadata": {"name": "n", "uid": "u2"}}, rec)  # a new "n"
    assert not holds_network_id(net, None) and not holds_network_id({"metadata": net["metadata"]}, rec)
    mac = mac_for("some-uid")
    assert mac == mac_for("some-uid") and mac.startswith("02:") and mac != mac_for("other-uid")
