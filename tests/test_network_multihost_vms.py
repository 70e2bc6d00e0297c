"""Tenant networks across hosts with real pod VMs (TCG), real kubectl and the real agents: a
control plane and two nodes, each host a network namespace on one underlay
(tests/support/hosts.py). Two tenants get the same CIDR and a pod on each node: pods reach each
other across hosts by IP, by service name and ClusterIP (the endpoint on the other node), a
NodePort answers on the node that runs no endpoint, the other tenant reaches none of it, pods get
the underlay MTU less the VXLAN overhead, and a node agent that restarts with its VXLAN device
gone builds its side again. Forged VXLAN is tests/test_network_multihost.py's (no VM needed).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.hosts import ControlPlane, Host, Hosts, hosts, node_ready, start_node
from tests.support.netns import sh
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="tenant networks need root")]

NODE_PORT = 30081
SERVE = "mkdir -p /www && echo {} > /www/index.html && exec httpd -f -p 80 -h /www"


@dataclass
class World:
    underlay: Hosts
    cp: ControlPlane
    nodes: dict[str, Host]
    ips: dict[str, str]  # pod name -> IP
    allow: list[str]  # the nodes' registry flags


def web_pod(name: str, ns: str, node: str, image: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{
                "name": "web", "image": image,
                "command": ["sh", "-c", SERVE.format(name)],
                "ports": [{"name": "http", "containerPort": 80}],
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 2},
                "resources": {"limits": {"memory": "64Mi"}},
            }],
        },
    }  # fmt: skip


def apply(cp: ControlPlane, obj: dict[str, Any]) -> None:
    cp.kubectl("apply", "-f", "-", input=json.dumps(obj))


def ready_ips(cp: ControlPlane, names: dict[str, str]) -> dict[str, str] | None:
    out = {}
    for name, ns in names.items():
        got = cp.kubectl("get", "pod", "-n", ns, name, "-o", "json", check=False)
        if got.returncode:
            return None
        status = json.loads(got.stdout)["status"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if not ready or not status.get("podIP"):
            return None
        out[name] = status["podIP"]
    return out


PODS = {"a1": "acme-mh", "a2": "acme-mh", "g1": "globex-mh", "g2": "globex-mh"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, registry: object, busybox_ref: str) -> Iterator[World]:
    with hosts(tmp_path_factory.mktemp("mh")) as underlay:
        cp = ControlPlane(underlay)
        served = underlay.expose(int(busybox_ref.split("/")[0].rsplit(":", 1)[1]))
        image = served + "/" + busybox_ref.split("/", 1)[1]
        nodes = {n: underlay.add(n) for n in ("n1", "n2")}
        allow = ["--allow-registry", served, "--insecure-registry", served]
        for name, host in nodes.items():
            # n2 names its underlay address itself; n1 leaves it to its InternalIP
            underlay_flag = ["--network-underlay-ip", host.address] if name == "n2" else []
            start_node(host, cp, cp.token(), *allow, *underlay_flag, network=True)
        for name in nodes:

            def joined(n: str = name) -> bool:
                return node_ready(cp, n)

            wait_for(joined, timeout=90, interval=0.5, what=f"node {name}")
        for tenant in ("acme", "globex"):
            apply(cp, {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": tenant}})
            labels = {"hypernetes.io/tenant": tenant}
            apply(
                cp,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": f"{tenant}-mh", "labels": labels},
                },
            )
        for name, ns in PODS.items():
            app = "web" if name == "a2" else name
            apply(cp, web_pod(name, ns, "n1" if name.endswith("1") else "n2", image, app))
        port = {"name": "web", "port": 80, "targetPort": "http", "nodePort": NODE_PORT}
        apply(cp, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "acme-mh"},
                   "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [port]}})  # fmt: skip
        try:
            ips = wait_for(lambda: ready_ips(cp, PODS), timeout=400, interval=2, what="4 pods ready")
        except AssertionError as e:
            described = cp.kubectl("describe", "pods", "-A", check=False).stdout[-4000:]
            raise AssertionError(f"{e}\n{described}\n{nodes['n1'].log('node.log')}") from None
        yield World(underlay, cp, nodes, ips, allow)


def in_pod(w: World, name: str, script: str) -> tuple[int, str]:
    got = w.cp.kubectl("exec", "-n", PODS[name], name, "--", "sh", "-c", script, check=False)
    return got.returncode, got.stdout + got.stderr


def fetch(w: World, client: str, url: str) -> str:
    return in_pod(w, client, f"timeout 10 wget -q -O - {url}")[1].strip()


def test_pods_reach_each_other_across_hosts(world: World) -> None:
    w = world
    for name, ns in PODS.items():
        pod = json.loads(w.cp.kubectl("get", "pod", "-n", ns, name, "-o", "json").stdout)
        assert pod["spec"]["nodeName"] == ("n1" if name.endswith("1") else "n2")
    assert w.ips["a1"] == w.ips["g1"] or w.ips["a2"] == w.ips["g2"]  # the same CIDR, the same addresses
    n2 = json.loads(w.cp.kubectl("get", "node", "n2", "-o", "json").stdout)
    assert n2["metadata"]["annotations"]["hypernetes.io/underlay-address"] == w.nodes["n2"].address
    assert wait_for(lambda: fetch(w, "a1", f"http://{w.ips['a2']}/") == "a2", timeout=30, what="a1 → a2")
    assert fetch(w, "a2", f"http://{w.ips['a1']}/") == "a1"
    assert wait_for(lambda: fetch(w, "g2", f"http://{w.ips['g1']}/") == "g1", timeout=30, what="g2 → g1")
    # the guest's MTU leaves room for VXLAN on the 1500-byte underlay
    assert in_pod(w, "a1", "cat /sys/class/net/eth0/mtu")[1].strip() == "1450"


def test_service_name_and_cluster_ip_reach_the_endpoint_on_the_other_host(world: World) -> None:
    w = world
    assert wait_for(lambda: fetch(w, "a1", "http://web/") == "a2", timeout=30, what="a1 → web")
    svc = json.loads(w.cp.kubectl("get", "svc", "-n", "acme-mh", "web", "-o", "json").stdout)
    assert fetch(w, "a1", f"http://{svc['spec']['clusterIP']}/") == "a2"
    code, out = in_pod(w, "a1", "nslookup web.acme-mh.svc.cluster.local")
    assert code == 0 and svc["spec"]["clusterIP"] in out


def test_node_port_answers_on_the_node_without_the_endpoint(world: World) -> None:
    w = world
    n1 = w.nodes["n1"].address
    got = wait_for(
        lambda: (
            sh(
                "timeout", "10", "busybox", "wget", "-q", "-O", "-", f"http://{n1}:{NODE_PORT}/", check=False
            ).stdout
        ),
        timeout=30,
        what="the node port on n1",
    )
    assert got.strip() == "a2"


def test_the_other_tenant_reaches_nothing(world: World) -> None:
    w = world
    for target in ("a1", "a2"):
        out = fetch(w, "g1", f"http://{w.ips[target]}/")
        assert out not in ("a1", "a2"), out  # the same address in globex is globex's pod or nobody
    assert fetch(w, "g1", "http://web.acme-mh.svc.cluster.local/") not in ("a1", "a2")


def test_guests_never_reach_the_underlay(world: World) -> None:
    """The hosts' own network (the control plane's API, every node's server) is a management
    network to a guest, on its own host and across hosts; the control is a pod's port."""
    w = world
    control = in_pod(w, "a1", f"timeout 10 nc -w 5 {w.ips['a2']} 80 </dev/null")
    assert control[0] == 0, control
    for ip, port in (
        (w.cp.host.address, 6443),
        (w.nodes["n1"].address, 10250),
        (w.nodes["n2"].address, 10250),
        (w.underlay.gateway, 22),
    ):
        code, out = in_pod(w, "a1", f"timeout 10 nc -w 5 {ip} {port} </dev/null")
        assert code != 0, (ip, port, out)


def test_a_guest_cannot_spoof_across_hosts(world: World) -> None:
    """a1 (n1) poses as another address, or another MAC, towards a2 (n2): the frames die at a1's
    port on n1, whatever their destination; its own address works before and after."""
    w, target = world, world.ips["a2"]
    assert in_pod(w, "a1", f"ping -c 1 -W 5 {target}")[0] == 0
    code, out = in_pod(
        w, "a1", f"ip addr add 10.0.200.200/16 dev eth0 && ping -c 2 -W 3 -I 10.0.200.200 {target}"
    )
    in_pod(w, "a1", "ip addr del 10.0.200.200/16 dev eth0")
    assert code != 0, out
    code, out = in_pod(
        w, "a1",
        "old=$(cat /sys/class/net/eth0/address); ip link set eth0 address 02:66:66:66:66:66 && "
        f"ping -c 2 -W 3 {target}; rc=$?; ip link set eth0 address $old; exit $rc",
    )  # fmt: skip
    assert code != 0, out
    assert in_pod(w, "a1", f"ping -c 1 -W 5 {target}")[0] == 0


def test_a_node_agent_restarted_with_its_vxlan_gone_rebuilds_its_side(world: World) -> None:
    w = world
    n1 = w.nodes["n1"]
    for proc in n1.procs:  # the agent only: its VMs live on, as over an agent upgrade
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    n1.procs.clear()
    routers = [ns for ns in sh("ip", "netns", "list").stdout.split() if ns.startswith(f"{n1.name}n-")]
    assert routers
    for router in routers:  # what the agent built is there, for the restarted one to rebuild
        sh("ip", "link", "delete", "vxlan0", netns=router)
    assert fetch(w, "a2", f"http://{w.ips['a1']}/") != "a1"  # through n2's agent: n1's side is down
    start_node(n1, w.cp, w.cp.token(), *w.allow, network=True)
    assert wait_for(lambda: fetch(w, "a1", f"http://{w.ips['a2']}/") == "a2", timeout=120, what="rebuilt")
    assert fetch(w, "a2", "http://web/") == "a2"


def test_an_endpoint_that_moves_host_keeps_its_service_reachable(world: World) -> None:
    """a2 is deleted on n2 and comes back on n1 (as a Deployment's pod would, elsewhere): the
    service follows it, from a1 and from the node port on n2, which now runs no endpoint."""
    w = world
    image = w.cp.kubectl(
        "get", "pod", "-n", "acme-mh", "a2", "-o", "jsonpath={.spec.containers[0].image}"
    ).stdout
    w.cp.kubectl("delete", "pod", "-n", "acme-mh", "a2", "--wait=true")
    apply(w.cp, web_pod("a2", "acme-mh", "n1", image, "web"))
    try:
        moved = wait_for(lambda: ready_ips(w.cp, {"a2": "acme-mh"}), timeout=180, interval=2, what="a2 on n1")
    except AssertionError as e:
        described = w.cp.kubectl("describe", "pod", "-n", "acme-mh", "a2", check=False).stdout[-3000:]
        raise AssertionError(f"{e}\n{described}\n{w.nodes['n1'].log('node.log')}") from None
    w.ips["a2"] = moved["a2"]
    assert wait_for(lambda: fetch(w, "a1", "http://web/") == "a2", timeout=60, what="web after the move")
    n2 = w.nodes["n2"].address
    got = sh("timeout", "10", "busybox", "wget", "-q", "-O", "-", f"http://{n2}:{NODE_PORT}/", check=False)
    assert got.stdout.strip() == "a2"
