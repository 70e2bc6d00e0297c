"""The network controller against a real multi-tenant API server: default networks (the same CIDR
for every tenant), pod addresses (50 pods at once, never one address twice; released when a pod
is deleted or finishes), a namespace on another network of its tenant, ClusterIPs and node ports
(allocated, headless left alone, released), and a tenant's networks going with it."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hypernetes.controllers.networks import NetworkController, mac_for
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread
from tests.support.tenants import JSON, TenantWorld
from tests.support.waiting import wait_for

NET = ("hypernetes.io/v1", "networks")
Env = tuple[TenantWorld, ControllersThread]
ALLOC = ("hypernetes.io/v1", "ipallocations")
IP, MAC, NETWORK = "hypernetes.io/ip", "hypernetes.io/mac", "hypernetes.io/network"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = Path(tmp_path_factory.mktemp("netctl"))
    api = ApiServerThread(tmp, tenancy=True).start()
    w = TenantWorld(api)
    c = ControllersThread(api, only=["networks", "tenant", "namespace"]).start()
    try:
        for tenant in ("acme", "globex"):
            # the id tests make 35 networks of acme: more than a tenant's default quota
            w.create_tenant(tenant, {"quota": {"count/networks.hypernetes.io": "50"}})
            w.create_user(f"{tenant}-admin", tenant, "admin")
            w.create_namespace(f"{tenant}-admin", f"{tenant}-a", tenant)
        yield w, c
    finally:
        c.stop()
        w.close()
        api.stop()


def pod(name: str, **notes: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": notes},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
    }


def annotated(c: ControllersThread, ns: str, name: str) -> JSON:
    def got() -> JSON | None:
        p = c.get("v1", "pods", name, ns)
        return p if p and IP in (p["metadata"].get("annotations") or {}) else None

    return wait_for(got, what=f"address of {ns}/{name}")


def allocations(c: ControllersThread, kind: str, ns: str) -> list[JSON]:
    return [
        a
        for a in c.items(*ALLOC)
        if a["spec"]["owner"]["kind"] == kind and a["spec"]["owner"]["namespace"] == ns
    ]


def test_every_tenant_and_the_cluster_get_a_default_network(env: Env) -> None:
    _, c = env

    def defaults() -> dict[str, JSON] | None:
        found = {n["metadata"]["name"]: n for n in c.items(*NET)}
        return found if {"default", "acme", "globex"} <= set(found) else None

    nets = wait_for(defaults, what="three default networks")
    for name, tenant in (("acme", "acme"), ("globex", "globex"), ("default", None)):
        spec = nets[name]["spec"]
        assert spec.get("tenant") == tenant
        assert (spec["cidr"], spec["gateway"], spec["egressNAT"]) == ("10.0.0.0/16", "10.0.0.1", True)
        assert nets[name]["metadata"]["labels"]["hypernetes.io/default-network"] == "true"
    # a deleted default network comes back
    c.delete(*NET, "globex")
    wait_for(
        lambda: (n := c.get(*NET, "globex")) and not n["metadata"].get("deletionTimestamp"),
        what="globex's network again",
    )


def test_fifty_pods_at_once_never_share_an_address(env: Env) -> None:
    w, c = env
    ns = "acme-a"
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: w.op("POST", f"/api/v1/namespaces/{ns}/pods", pod(f"p{i}")), range(50)))
    pods = [annotated(c, ns, f"p{i}") for i in range(50)]
    ips = [p["metadata"]["annotations"][IP] for p in pods]
    assert len(set(ips)) == 50
    net = ipaddress.ip_network("10.0.0.0/16")
    assert all(ipaddress.ip_address(ip) in net and ip not in ("10.0.0.0", "10.0.0.1") for ip in ips)
    for p in pods:
        notes = p["metadata"]["annotations"]
        assert notes[NETWORK] == "acme" and notes[MAC] == mac_for(p["metadata"]["uid"])
    allocs = allocations(c, "Pod", ns)
    assert sorted(a["spec"]["ip"] for a in allocs) == sorted(ips)
    assert all(a["metadata"]["name"] == "acme." + a["spec"]["ip"].replace(".", "-") for a in allocs)
    # another tenant's pods use the same addresses: its own network
    w.op("POST", "/api/v1/namespaces/globex-a/pods", pod("g"))
    assert annotated(c, "globex-a", "g")["metadata"]["annotations"][NETWORK] == "globex"
    # released when deleted, and when finished
    for i in range(10):
        w.op("DELETE", f"/api/v1/namespaces/{ns}/pods/p{i}", params={"gracePeriodSeconds": "0"})
    c.patch("v1", "pods", "p10", {"status": {"phase": "Succeeded"}}, ns, subresource="status")
    wait_for(lambda: len(allocations(c, "Pod", ns)) == 39, what="11 addresses released")
    gone = set(ips[:11])
    assert gone.isdisjoint(a["spec"]["ip"] for a in allocations(c, "Pod", ns))
    # a released address is given again
    w.op("POST", f"/api/v1/namespaces/{ns}/pods", pod("again"))
    assert annotated(c, ns, "again")["metadata"]["annotations"][IP] in gone
    status = wait_for(
        lambda: (c.get(*NET, "acme") or {}).get("status", {}).get("allocatedIPs") == 40 or None,
        what="acme's status counts 40 addresses",
    )
    assert status


def test_a_namespace_on_another_network_of_its_tenant(env: Env) -> None:
    w, c = env
    r = w.http("acme-admin").post(
        "/apis/hypernetes.io/v1/networks",
        json={
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "acme-small"},
            "spec": {"cidr": "192.168.7.0/28"},
        },
    )
    assert r.status_code == 201, r.text
    r = w.http("acme-admin").post(
        "/api/v1/namespaces",
        json={"metadata": {"name": "acme-small-ns", "annotations": {NETWORK: "acme-small"}}},
    )
    assert r.status_code == 201, r.text
    wait_for(lambda: c.get("v1", "namespaces", "acme-small-ns"), what="namespace")
    # 192.168.7.0/28: hosts .1-.14, .1 is the gateway: 13 addresses for 14 pods
    for i in range(14):
        w.op("POST", "/api/v1/namespaces/acme-small-ns/pods", pod(f"s{i}"))

    def addressed() -> dict[str, str]:
        return {
            p["metadata"]["name"]: p["metadata"]["annotations"][IP]
            for p in c.pods("acme-small-ns")
            if IP in (p["metadata"].get("annotations") or {})
        }

    got = wait_for(lambda: a if len(a := addressed()) == 13 else None, what="13 pods with addresses")
    assert sorted(got.values(), key=ipaddress.ip_address) == [f"192.168.7.{n}" for n in range(2, 15)]
    (waiting,) = {f"s{i}" for i in range(14)} - set(got)  # the network is full: it waits
    victim = sorted(got)[0]
    w.op("DELETE", f"/api/v1/namespaces/acme-small-ns/pods/{victim}", params={"gracePeriodSeconds": "0"})
    assert annotated(c, "acme-small-ns", waiting)["metadata"]["annotations"][IP] == got[victim]


def test_cluster_ips_and_node_ports(env: Env) -> None:
    w, c = env
    ns = "globex-a"

    def svc(name: str, stype: str = "ClusterIP", **spec: object) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": stype, "selector": {"a": "b"}, "ports": [{"port": 80}], **spec},
        }

    for s in (svc("web"), svc("headless", clusterIP="None"), svc("mine", clusterIP="10.96.7.7")):
        w.op("POST", f"/api/v1/namespaces/{ns}/services", s)

    def field(name: str, get: str) -> object:
        s = c.get("v1", "services", name, ns) or {}
        return s.get("spec", {}).get(get)

    web_ip = str(wait_for(lambda: field("web", "clusterIP"), what="web's clusterIP"))
    assert ipaddress.ip_address(web_ip) in ipaddress.ip_network("10.96.0.0/16")
    assert field("web", "clusterIPs") == [web_ip]
    assert field("headless", "clusterIP") == "None"
    wait_for(
        lambda: {a["spec"].get("ip") for a in allocations(c, "Service", ns)} >= {web_ip, "10.96.7.7"},
        what="records of web and mine",
    )
    assert not any(a["spec"]["owner"]["name"] == "headless" for a in allocations(c, "Service", ns))
    # the same ClusterIP range in another network is another range
    w.op("POST", "/api/v1/namespaces/acme-a/services", svc("web"))
    wait_for(
        lambda: (c.get("v1", "services", "web", "acme-a") or {}).get("spec", {}).get("clusterIP"),
        what="acme's web",
    )
    # released with the service
    for name in ("web", "mine"):
        w.op("DELETE", f"/api/v1/namespaces/{ns}/services/{name}")
    wait_for(lambda: not allocations(c, "Service", ns), what="service records released")


def test_a_cluster_ip_record_waits_for_its_service(env: Env) -> None:
    """The API server writes a service's clusterIP record just before the service (issue 18): the
    controller must not take it for an orphan's and release it, or two creates share the address."""
    _, c = env
    rec = {
        "apiVersion": "hypernetes.io/v1",
        "kind": "IPAllocation",
        "metadata": {"name": "globex.10-96-200-1"},
        "spec": {
            "network": "globex",
            "ip": "10.96.200.1",
            "owner": {"kind": "Service", "namespace": "globex-a", "name": "later", "uid": "not-stored-yet"},
        },
    }
    c.create(*ALLOC, rec)
    time.sleep(2)  # the record's add event queues its owner at once: time to (wrongly) release it
    assert c.get(*ALLOC, "globex.10-96-200-1") is not None
    c.delete(*ALLOC, "globex.10-96-200-1")


def test_node_port_services(env: Env) -> None:
    """A NodePort service gets a port from 30000-32767 (its record `nodeport.<port>`); a chosen
    port someone holds gets a Warning event; turned ClusterIP, the port goes back."""
    w, c = env
    ns = "globex-a"

    def np(name: str, **port: int) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80, **port}]},
        }

    def node_port(name: str) -> int | None:
        s = c.get("v1", "services", name, ns) or {}
        return (s.get("spec", {}).get("ports") or [{}])[0].get("nodePort")

    w.op("POST", f"/api/v1/namespaces/{ns}/services", np("np"))
    port = int(wait_for(lambda: node_port("np"), what="np's node port"))
    assert 30000 <= port <= 32767
    rec = wait_for(lambda: c.get(*ALLOC, f"nodeport.{port}"), what="its record")
    assert rec["spec"]["nodePort"] == port and rec["spec"]["owner"]["name"] == "np"
    assert wait_for(lambda: (c.get("v1", "services", "np", ns) or {})["spec"].get("clusterIP"), what="its IP")
    # a port the user chose that another service holds: accepted by the API, warned about
    w.op("POST", f"/api/v1/namespaces/{ns}/services", np("np-clash", nodePort=port))

    def warned() -> JSON | None:
        return next(
            (
                e
                for e in c.items("v1", "events", ns)
                if e["reason"] == "NodePortInUse" and e["involvedObject"]["name"] == "np-clash"
            ),
            None,
        )

    assert str(port) in wait_for(warned, what="NodePortInUse event")["message"]
    assert c.get(*ALLOC, f"nodeport.{port}")["spec"]["owner"]["name"] == "np"
    # NodePort -> ClusterIP: the API wipes the node port, the controller releases its record
    c.patch("v1", "services", "np", {"spec": {"type": "ClusterIP"}}, ns)
    assert node_port("np") is None
    # ... and np-clash, waiting for that port, now holds it
    wait_for(
        lambda: (
            (c.get(*ALLOC, f"nodeport.{port}") or {}).get("spec", {}).get("owner", {}).get("name")
            == "np-clash"
        ),
        what="np-clash holds the port it chose",
    )
    for name in ("np", "np-clash"):
        w.op("DELETE", f"/api/v1/namespaces/{ns}/services/{name}")
    wait_for(lambda: not allocations(c, "Service", ns), what="records released")


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_kubectl_shows_the_node_port(env: Env) -> None:
    w, c = env
    w.api.kubectl(
        "-n",
        "acme-a",
        "apply",
        "-f",
        "-",
        input="""
apiVersion: v1
kind: Service
metadata: {name: published}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
""",
    )
    wait_for(lambda: c.get(*ALLOC, "nodeport.30080"), what="the node port's record")
    out = w.api.kubectl("-n", "acme-a", "get", "svc", "published")
    _, row = out.stdout.splitlines()
    assert row.split()[1] == "NodePort" and "80:30080/TCP" in row.split(), out.stdout
    w.api.kubectl("-n", "acme-a", "delete", "svc", "published")
    wait_for(lambda: c.get(*ALLOC, "nodeport.30080") is None, what="the node port released")


def test_node_ports_are_unique_records(env: Env) -> None:
    """The allocation itself, as the service path calls it: many at once, no port twice; records
    of services that do not exist go."""
    _, c = env
    ctl = c.manager["networks"]
    assert isinstance(ctl, NetworkController)

    async def many() -> list[int]:
        svcs = [{"metadata": {"name": f"s{i}", "namespace": "globex-a", "uid": "one-uid"}} for i in range(20)]
        return list(await asyncio.gather(*(ctl._node_port(s) for s in svcs)))

    ports = c.call(many())
    assert len(set(ports)) == 20 and all(30000 <= p <= 32767 for p in ports)
    # the owners do not exist: the records are released as orphans
    wait_for(lambda: not any(c.get(*ALLOC, f"nodeport.{p}") for p in ports), what="orphan ports released")


def ids(c: ControllersThread) -> dict[str, int]:
    return {n["metadata"]["name"]: n["spec"]["id"] for n in c.items(*NET) if "id" in n["spec"]}


def id_records(c: ControllersThread) -> dict[int, JSON]:
    return {a["spec"]["networkID"]: a for a in c.items(*ALLOC) if "networkID" in a["spec"]}


def net(name: str, **spec: object) -> JSON:
    return {
        "apiVersion": "hypernetes.io/v1",
        "kind": "Network",
        "metadata": {"name": name},
        "spec": {"cidr": "10.0.0.0/16", **spec},
    }


def test_network_ids(env: Env) -> None:
    """Every network gets spec.id, unique in the cluster (record networkid.<id>): 30 created at
    once; the same ids for a second controller with fresh caches; released with the network and
    given again; fixed once set; an operator's taken choice gets an event and waits."""
    w, c = env
    for name in ("default", "acme", "globex"):
        wait_for(lambda n=name: n in ids(c), what=f"{name}'s id")
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: w.op("POST", "/apis/hypernetes.io/v1/networks", net(f"many-{i}", tenant="acme")),
                range(30),
            )
        )
    names = {f"many-{i}" for i in range(30)}
    got = wait_for(lambda: x if names <= set(x := ids(c)) else None, what="30 ids")
    assert len(set(got.values())) == len(got), got  # unique across every network
    assert all(1 <= v <= 8191 for v in got.values())
    records = wait_for(lambda: r if set(got.values()) <= set(r := id_records(c)) else None, what="records")
    for name, value in got.items():
        rec = records[value]
        assert rec["metadata"]["name"] == f"networkid.{value}"
        owner = rec["spec"]["owner"]
        uid = c.get(*NET, name)["metadata"]["uid"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Network", name, uid)
    assert set(records) == set(got.values())  # no leftovers from lost races

    # a second controller, caches fresh, keeps them all (as a restarted one would)
    other = ControllersThread(w.api, only=["networks"]).start()
    try:
        time.sleep(1.5)
        assert ids(c) == got and set(id_records(c)) == set(got.values())
    finally:
        other.stop()

    # fixed once set, even for operators
    r = w.http("operator").patch(
        "/apis/hypernetes.io/v1/networks/many-0",
        json={"spec": {"id": 8000}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422 and "spec.id" in r.text, r.text

    # released with the network, then given again: lowest free first
    gone = {f"many-{i}": got[f"many-{i}"] for i in range(5)}
    for name in gone:
        w.op("DELETE", f"/apis/hypernetes.io/v1/networks/{name}")
    wait_for(lambda: not set(gone.values()) & set(id_records(c)), what="5 ids released")
    held = set(ids(c).values())
    expect = [v for v in range(1, 8192) if v not in held][:5]
    assert set(gone.values()) <= set(range(1, max(expect) + 1))
    for i in range(5):
        w.op("POST", "/apis/hypernetes.io/v1/networks", net(f"again-{i}", tenant="acme"))
    again = wait_for(
        lambda: x if all(f"again-{i}" in (x := ids(c)) for i in range(5)) else None, what="ids again"
    )
    assert sorted(again[f"again-{i}"] for i in range(5)) == expect
    assert set(gone.values()) <= set(expect)

    # an operator's choice another network holds: accepted, warned about, and it waits
    taken = got["many-10"]
    w.op("POST", "/apis/hypernetes.io/v1/networks", net("clash", id=taken))

    def warned() -> JSON | None:
        return next(
            (
                e
                for e in c.items("v1", "events", "default")
                if e["reason"] == "NetworkIDInUse" and e["involvedObject"]["name"] == "clash"
            ),
            None,
        )

    event = wait_for(warned, what="NetworkIDInUse event")
    assert event["type"] == "Warning" and "many-10" in event["message"]
    assert c.get(*NET, "clash")["spec"]["id"] == taken
    assert id_records(c)[taken]["spec"]["owner"]["name"] == "many-10"
    # the holder goes: the waiting network gets its record
    w.op("DELETE", "/apis/hypernetes.io/v1/networks/many-10")
    wait_for(
        lambda: (id_records(c).get(taken) or {}).get("spec", {}).get("owner", {}).get("name") == "clash",
        what="clash holds its id",
    )
    # an operator's free choice is recorded as it is
    w.op("POST", "/apis/hypernetes.io/v1/networks", net("chosen", id=8100))
    rec = wait_for(lambda: id_records(c).get(8100), what="the chosen id's record")
    assert rec["spec"]["owner"]["name"] == "chosen"
    for name in [*names - set(gone) - {"many-10"}, *(f"again-{i}" for i in range(5)), "clash", "chosen"]:
        w.op("DELETE", f"/apis/hypernetes.io/v1/networks/{name}")


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_kubectl_shows_the_service_ip_and_the_allocations(env: Env) -> None:
    w, c = env
    w.api.kubectl(
        "-n",
        "acme-a",
        "apply",
        "-f",
        "-",
        input="""
apiVersion: v1
kind: Service
metadata: {name: shown}
spec:
  ports: [{port: 80, targetPort: 8080}]
""",
    )
    ip = wait_for(
        lambda: (c.get("v1", "services", "shown", "acme-a") or {}).get("spec", {}).get("clusterIP"),
        what="shown's clusterIP",
    )
    out = w.api.kubectl("-n", "acme-a", "get", "svc", "shown")
    assert ip in out.stdout
    out = w.api.kubectl("get", "ipallocations")
    assert f"acme.{ip.replace('.', '-')}" in out.stdout and "Service/acme-a/shown" in out.stdout


def test_a_tenants_networks_go_with_it(env: Env) -> None:
    w, c = env
    w.create_tenant("initech")
    w.create_user("initech-admin", "initech", "admin")
    w.create_namespace("initech-admin", "initech-a", "initech")
    wait_for(lambda: c.get(*NET, "initech"), what="initech's network")
    r = w.http("initech-admin").post(
        "/apis/hypernetes.io/v1/networks",
        json={
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "initech-2"},
            "spec": {"cidr": "10.0.0.0/16"},
        },
    )
    assert r.status_code == 201, r.text
    w.op("POST", "/api/v1/namespaces/initech-a/pods", pod("x"))
    annotated(c, "initech-a", "x")
    w.op("DELETE", "/apis/hypernetes.io/v1/tenants/initech")
    wait_for(
        lambda: c.get(*NET, "initech") is None and c.get(*NET, "initech-2") is None,
        timeout=40,
        what="initech's networks gone",
    )
    assert not [a for a in c.items(*ALLOC) if a["spec"].get("network", "").startswith("initech")]


def test_a_bound_pods_address_record_says_where_it_lives(env: Env) -> None:
    """l2population: nodes see only their own pods, so the record every node reads carries the
    pod's node and MAC once the pod is bound (issue 16), and its labels, which follow the pod's
    (NetworkPolicy peers on other nodes)."""
    w, c = env
    ns = "acme-a"
    body = pod("located")
    body["metadata"]["labels"] = {"app": "web", "tier": "a"}
    w.op("POST", f"/api/v1/namespaces/{ns}/pods", body)
    got = annotated(c, ns, "located")
    node = wait_for(lambda: (c.get("v1", "pods", "located", ns) or {}).get("spec", {}).get("nodeName"))
    located = wait_for(
        lambda: next(
            (
                a
                for a in allocations(c, "Pod", ns)
                if a["spec"]["owner"]["name"] == "located" and a["spec"].get("node")
            ),
            None,
        ),
        what="the record located",
    )
    assert located["spec"]["node"] == node
    assert located["spec"]["mac"] == got["metadata"]["annotations"][MAC]
    assert located["spec"]["ip"] == got["metadata"]["annotations"][IP]
    assert located["spec"]["labels"] == {"app": "web", "tier": "a"}
    w.op(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/located",
        {"metadata": {"labels": {"app": "api", "tier": None}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    wait_for(
        lambda: any(
            a["spec"].get("labels") == {"app": "api"}
            for a in allocations(c, "Pod", ns)
            if a["spec"]["owner"]["name"] == "located"
        ),
        what="the record's labels follow the pod's",
    )
