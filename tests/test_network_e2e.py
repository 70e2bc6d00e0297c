"""Tenant networks end to end: `hypernetes up` with pod VMs (TCG), the real kubectl as tenant users,
real netlink and nftables. The cluster builds its networks against a "host" network namespace this
test makes (`up --network-netns`), wired to an "outside" namespace that plays the rest of the
world; nothing outside namespaces the test made is touched.

Two tenants on the same CIDR: pods of one tenant reach each other (ping, HTTP), never the other
tenant's, nor the host, nor the management network; a pod cannot spoof; a ClusterIP spreads over
ready endpoints and skips an unready one; DNS names resolve inside their tenant only; a NodePort
answers from outside; everything is gone after deletion.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.cluster import Cluster, as_user, make_user
from tests.support.guests import qemu_processes_under
from tests.support.host import is_root
from tests.support.netns import Namespaces, Responder, leftovers, ns_socket, sh, tcp_ask, unique_prefix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="tenant networks need root (netns, nftables, taps)"),
]

HOST_IP, OUTSIDE_IP = "192.168.77.1", "192.168.77.2"
NODE_PORT = 30080


@dataclass
class World:
    cluster: Cluster
    prefix: str
    host_ns: str
    outside_ns: str
    alice: str
    bob: str
    acme_ns: str = "acme-net"
    globex_ns: str = "globex-net"


def web_pod(
    name: str,
    image: str,
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """busybox httpd on port 80 (named http) serving its own name; an unready one's readiness
    probe asks a port nothing listens on."""
    probe_port = 80 if ready else 81
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": image,
                    "command": [
                        "sh",
                        "-c",
                        f"mkdir -p /www && echo {text or name} > /www/index.html && "
                        "exec httpd -f -p 80 -h /www",
                    ],
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 2},
                    "resources": {"limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def service(name: str, *, node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "web", "port": 80, "targetPort": "http"}
    spec: dict[str, Any] = {"selector": {"app": "web"}, "ports": [port]}
    if node_port:
        spec["type"], port["nodePort"] = "NodePort", node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def get(w: World, token: str, ns: str, *args: str) -> Any:
    return json.loads(as_user(w.cluster, token, "get", "-n", ns, *args, "-o", "json").stdout)


def sh_in(w: World, token: str, ns: str, pod: str, script: str, *, check: bool = True) -> tuple[int, str]:
    """Run a shell script in the pod's container (kubectl exec); (exit code, stdout+stderr)."""
    r = as_user(w.cluster, token, "exec", "-n", ns, pod, "--", "sh", "-c", script, check=False, timeout=120)
    out = r.stdout + r.stderr
    if check and r.returncode != 0:
        raise AssertionError(f"{pod}: {script!r} exited {r.returncode}: {out}")
    return r.returncode, out


def http_get(netns: str, ip: str, port: int) -> str:
    """The body of GET / from inside `netns`."""
    with ns_socket(netns) as s:
        s.settimeout(10)
        s.connect((ip, port))
        s.sendall(f"GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode().strip()


def ip_of(w: World, token: str, ns: str, pod: str) -> str:
    return str(get(w, token, ns, "pod", pod)["status"]["podIP"])


def wait_ready(w: World, token: str, ns: str, names: list[str], ready: set[str]) -> None:
    def check() -> bool:
        pods = {p["metadata"]["name"]: p for p in get(w, token, ns, "pods")["items"]}
        for n in names:
            st = (pods.get(n) or {}).get("status") or {}
            if st.get("phase") != "Running" or not st.get("podIP"):
                return False
            is_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
            )
            if is_ready != (n in ready):
                return False
        return True

    try:
        w.cluster.wait_for(f"pods {names} running in {ns}", check, timeout=400)
    except AssertionError as e:
        described = w.cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout
        raise AssertionError(f"{e}\n{described[-4000:]}") from None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, busybox_ref: str) -> Iterator[World]:
    prefix = unique_prefix()
    spaces = Namespaces(prefix)
    cluster: Cluster | None = None
    try:
        host_ns, outside_ns = spaces.add("host"), spaces.add("out")
        spaces.wire(host_ns, "eth0", f"{HOST_IP}/24", outside_ns, "eth0", f"{OUTSIDE_IP}/24")
        cluster = Cluster(
            tmp_path_factory.mktemp("network-cluster") / "data",
            ["--network-netns", host_ns, "--network-prefix", prefix],
        )
        cluster.start()
        alice = make_user(cluster, "acme", "alice", "admin")
        bob = make_user(cluster, "globex", "bob", "admin")
        w = World(cluster, prefix, host_ns, outside_ns, alice, bob)
        as_user(cluster, alice, "create", "ns", w.acme_ns)
        as_user(cluster, bob, "create", "ns", w.globex_ns)
        acme = [
            web_pod("web-1", busybox_ref),
            web_pod("web-2", busybox_ref),
            web_pod("web-3", busybox_ref, ready=False),
            web_pod("client", busybox_ref, labels={"app": "client"}),
        ]
        for manifest in [*acme, service("web"), service("web-np", node_port=NODE_PORT)]:
            as_user(cluster, alice, "apply", "-n", w.acme_ns, "-f", "-", input=json.dumps(manifest))
        for manifest in (web_pod("g-web", busybox_ref, text="globex-secret"), service("web")):
            as_user(cluster, bob, "apply", "-n", w.globex_ns, "-f", "-", input=json.dumps(manifest))
        wait_ready(w, alice, w.acme_ns, ["web-1", "web-2", "web-3", "client"], {"web-1", "web-2", "client"})
        wait_ready(w, bob, w.globex_ns, ["g-web"], {"g-web"})
        yield w
    finally:
        if cluster is not None:
            cluster.stop()
            for pid in qemu_processes_under(cluster.data):
                os.kill(pid, signal.SIGKILL)
        spaces.close()
        for ns in leftovers(prefix):  # routers of a failed run; the last test checks none is left
            sh("ip", "netns", "delete", ns, check=False)


def test_pods_get_addresses_in_their_tenant_network(world: World) -> None:
    acme = [ip_of(world, world.alice, world.acme_ns, p) for p in ("web-1", "web-2", "web-3", "client")]
    globex = ip_of(world, world.bob, world.globex_ns, "g-web")
    assert len(set(acme)) == 4 and all(ip.startswith("10.0.") for ip in acme)
    assert globex.startswith("10.0.")  # the same CIDR: isolation does not depend on addresses
    _, out = sh_in(
        world, world.alice, world.acme_ns, "client", "ip -4 addr show eth0; ip route; cat /etc/resolv.conf"
    )
    client_ip = ip_of(world, world.alice, world.acme_ns, "client")
    assert f"inet {client_ip}/16" in out and "default via 10.0.0.1" in out
    assert f"search {world.acme_ns}.svc.cluster.local svc.cluster.local cluster.local" in out
    assert "nameserver 10.0.0.1" in out and "ndots:5" in out


def test_same_tenant_ping_and_http(world: World) -> None:
    w, ns = world, world.acme_ns
    web1 = ip_of(w, w.alice, ns, "web-1")
    _, out = sh_in(
        w, w.alice, ns, "client", f"ping -c 2 -W 5 {web1} && timeout 10 wget -q -O - http://{web1}/"
    )
    assert "web-1" in out


def test_cross_tenant_fails_both_ways(world: World) -> None:
    w = world
    acme_ips = {p: ip_of(w, w.alice, w.acme_ns, p) for p in ("web-1", "web-2", "web-3", "client")}
    g_ip = ip_of(w, w.bob, w.globex_ns, "g-web")
    # globex -> acme: addresses that only acme has are not there at all from globex's network
    for name, ip in acme_ips.items():
        if ip == g_ip:
            continue
        code, out = sh_in(w, w.bob, w.globex_ns, "g-web", f"timeout 3 wget -q -O - http://{ip}/", check=False)
        assert code != 0 and name not in out, (name, out)
    # acme -> globex's address: whatever answers (an acme pod with the same address, or nobody),
    # it is never globex's pod
    code, out = sh_in(w, w.alice, w.acme_ns, "client", f"timeout 3 wget -q -O - http://{g_ip}/", check=False)
    assert "globex-secret" not in out


def test_pod_cannot_reach_host_or_management(world: World) -> None:
    w = world
    host = Responder(w.host_ns, "host-answered", 8080)
    outside = Responder(w.outside_ns, "outside-answered", 8080)
    try:
        assert tcp_ask(w.outside_ns, HOST_IP, 8080, timeout=5) == "host-answered"  # they do listen
        for target in (HOST_IP, OUTSIDE_IP):
            _, out = sh_in(
                w,
                w.alice,
                w.acme_ns,
                "client",
                f"nc -w 3 {target} 8080 </dev/null; ping -c 1 -W 2 {target} && echo REACHED",
                check=False,
            )
            assert "answered" not in out and "REACHED" not in out, (target, out)
        for target in ("169.254.0.1", "169.254.169.254"):  # the host's link to routers, metadata
            _, out = sh_in(
                w, w.alice, w.acme_ns, "client", f"ping -c 1 -W 2 {target} && echo REACHED", check=False
            )
            assert "REACHED" not in out, (target, out)
    finally:
        host.close()
        outside.close()


def test_pod_cannot_spoof_address_or_mac(world: World) -> None:
    w, ns = world, world.acme_ns
    web1 = ip_of(w, w.alice, ns, "web-1")
    # control: its own address works
    sh_in(w, w.alice, ns, "client", f"ping -c 1 -W 5 {web1}")
    code, out = sh_in(
        w,
        w.alice,
        ns,
        "client",
        f"ip addr add 10.0.200.200/16 dev eth0 && ping -c 2 -W 3 -I 10.0.200.200 {web1}",
        check=False,
    )
    sh_in(w, w.alice, ns, "client", "ip addr del 10.0.200.200/16 dev eth0", check=False)
    assert code != 0, out
    code, out = sh_in(
        w,
        w.alice,
        ns,
        "client",
        "old=$(cat /sys/class/net/eth0/address); ip link set eth0 address 02:66:66:66:66:66 && "
        f"ping -c 2 -W 3 {web1}; rc=$?; ip link set eth0 address $old; exit $rc",
        check=False,
    )
    assert code != 0, out
    sh_in(w, w.alice, ns, "client", f"ping -c 1 -W 5 {web1}")  # and back to normal


def test_cluster_ip_spreads_over_ready_endpoints_only(world: World) -> None:
    w, ns = world, world.acme_ns
    cip = get(w, w.alice, ns, "svc", "web")["spec"]["clusterIP"]
    _, out = sh_in(
        w, w.alice, ns, "client", f"for i in $(seq 30); do timeout 5 wget -q -O - http://{cip}/; done"
    )
    seen = set(out.split())
    assert {"web-1", "web-2"} <= seen, out
    assert "web-3" not in seen  # unready: not an endpoint
    # a port the service does not have is refused at once, not timed out
    code, _ = sh_in(w, w.alice, ns, "client", f"timeout 5 wget -q -O - http://{cip}:81/", check=False)
    assert code != 0


def test_dns_names_resolve_only_inside_their_tenant(world: World) -> None:
    w = world
    cip = get(w, w.alice, w.acme_ns, "svc", "web")["spec"]["clusterIP"]
    g_cip = get(w, w.bob, w.globex_ns, "svc", "web")["spec"]["clusterIP"]
    _, out = sh_in(
        w,
        w.alice,
        w.acme_ns,
        "client",
        f"nslookup web.{w.acme_ns}.svc.cluster.local; timeout 5 wget -q -O - http://web/",
    )
    assert cip in out and ("web-1" in out or "web-2" in out)
    # the other tenant's names are not served here, even the service of the same name
    code, out = sh_in(
        w, w.alice, w.acme_ns, "client", f"nslookup web.{w.globex_ns}.svc.cluster.local", check=False
    )
    assert g_cip not in out or g_cip == cip
    assert code != 0 or "NXDOMAIN" in out or "can't find" in out, out
    code, out = sh_in(
        w, w.bob, w.globex_ns, "g-web", f"nslookup web-np.{w.acme_ns}.svc.cluster.local", check=False
    )
    assert code != 0 or "can't find" in out or "NXDOMAIN" in out, out


def test_stateful_set_pods_reach_each_other_by_stable_names(world: World) -> None:
    """A 2-replica StatefulSet (issue 18): each pod's hostname is its name, and each reaches the
    other at `<pod>.<headless service>`, the record the tenant network's DNS serves from the
    endpoints' hostnames."""
    w, ns = world, world.acme_ns
    image = get(w, w.alice, ns, "pod", "client")["spec"]["containers"][0]["image"]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "http", "port": 80}]},
    }
    server = web_pod("db", image, labels={"app": "db"})["spec"]
    server["containers"][0]["command"] = [
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
    ]
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": server},
        },
    }
    for manifest in (headless, sts):
        as_user(w.cluster, w.alice, "apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    as_user(w.cluster, w.alice, "rollout", "status", "sts/db", "-n", ns, "--timeout=400s", timeout=420)
    for me, peer in (("db-0", "db-1"), ("db-1", "db-0")):
        _, out = sh_in(w, w.alice, ns, me, f"hostname; timeout 10 wget -q -O - http://{peer}.db/")
        assert out.split() == [me, peer], out
        _, out = sh_in(w, w.alice, ns, me, f"nslookup {peer}.db.{ns}.svc.cluster.local")
        assert ip_of(w, w.alice, ns, peer) in out, out
    as_user(w.cluster, w.alice, "delete", "-n", ns, "sts/db", "svc/db")


def test_node_port_answers_from_outside(world: World) -> None:
    w = world
    seen = {http_get(w.outside_ns, HOST_IP, NODE_PORT) for _ in range(10)}
    assert seen <= {"web-1", "web-2"} and seen, seen


POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-clients"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}
        ],
    },
}
INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {"name": "shop"},
    "spec": {
        "rules": [
            {
                "host": "shop.example",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ]
    },
}


def test_network_policy_and_ingress_on_vm_pods(world: World) -> None:
    """A tenant's NetworkPolicy holds between its VMs (the client may reach the web pods, another
    web pod may not, by address or by service), and its Ingress answers from outside on its
    network's ingress port, routed by host to the same pods."""
    w, ns = world, world.acme_ns
    web1 = ip_of(w, w.alice, ns, "web-1")
    reach = f"timeout 5 wget -q -O - http://{web1}/"
    assert sh_in(w, w.alice, ns, "web-3", reach, check=False)[0] == 0  # open before the policy
    as_user(w.cluster, w.alice, "apply", "-n", ns, "-f", "-", input=json.dumps(POLICY))
    as_user(w.cluster, w.alice, "apply", "-n", ns, "-f", "-", input=json.dumps(INGRESS))
    try:
        w.cluster.wait_for(
            "web-3 cut off from web-1",
            lambda: sh_in(w, w.alice, ns, "web-3", reach, check=False)[0] != 0,
            timeout=60,
        )
        assert sh_in(w, w.alice, ns, "web-3", "timeout 5 wget -q -O - http://web/", check=False)[0] != 0
        assert sh_in(w, w.alice, ns, "client", reach)[1].strip() == "web-1"
        lb = w.cluster.wait_for(
            "the Ingress's address",
            lambda: (
                (get(w, w.alice, ns, "ingress", "shop").get("status") or {})
                .get("loadBalancer", {})
                .get("ingress")
            ),
            timeout=60,
        )
        port = lb[0]["ports"][0]["port"]
        with ns_socket(w.outside_ns) as s:
            s.settimeout(10)
            s.connect((HOST_IP, port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.") and data.partition(b"\r\n\r\n")[2].decode().strip() in (
            "web-1",
            "web-2",
        )
    finally:
        as_user(w.cluster, w.alice, "delete", "-n", ns, "networkpolicy/web-from-clients", "ingress/shop")
    w.cluster.wait_for(
        "web-3 reaches web-1 again",
        lambda: sh_in(w, w.alice, ns, "web-3", reach, check=False)[0] == 0,
        timeout=60,
    )


def test_pod_networks_survive_a_node_agent_restart(world: World) -> None:
    """`up` stops and starts again (the VMs keep running and are adopted): the first apply of the
    new agent keeps their taps, so pods, services and DNS work as before."""
    w, ns = world, world.acme_ns
    w.cluster.stop()
    w.cluster.start()
    web1 = ip_of(w, w.alice, ns, "web-1")
    w.cluster.wait_for(
        "the client reaches web-1 again",
        lambda: (
            sh_in(w, w.alice, ns, "client", f"timeout 5 wget -q -O - http://{web1}/", check=False)[0] == 0
        ),
        timeout=120,
    )
    _, out = sh_in(w, w.alice, ns, "client", "timeout 5 wget -q -O - http://web/")
    assert out.strip() in ("web-1", "web-2")
    assert {http_get(w.outside_ns, HOST_IP, NODE_PORT) for _ in range(4)} <= {"web-1", "web-2"}


def test_everything_is_gone_after_deletion(world: World) -> None:
    w = world
    as_user(w.cluster, w.alice, "delete", "ns", w.acme_ns, "--wait=true", timeout=300)
    as_user(w.cluster, w.bob, "delete", "ns", w.globex_ns, "--wait=true", timeout=300)
    routers = f"{w.prefix}-"
    w.cluster.wait_for(
        "router namespaces removed",
        lambda: not [n for n in leftovers(w.prefix) if n.startswith(routers)],
        timeout=60,
    )
    links = sh("ip", "-o", "link", netns=w.host_ns).stdout
    assert f"{w.prefix}-" not in links, links
    tables = sh("nft", "list", "tables", netns=w.host_ns).stdout
    assert f"{w.prefix}_host" not in tables, tables
