"""The Endpoints controller with the real kubectl: ready and not-ready addresses, named and
numbered target ports, pods without the named port, pods without an IP, headless services,
publishNotReadyAddresses, services without a selector, and clean-up with the service."""

from __future__ import annotations

from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for


def pod(
    name: str,
    *,
    ready: bool = True,
    ports: list[Obj] | None = None,
    ignore: bool = False,
    labels: dict[str, str] | None = None,
) -> Obj:
    notes = {FAKE + "ready": "true" if ready else "false"}
    if ignore:
        notes[FAKE + "ignore"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}, "annotations": notes},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "nginx",
                    "ports": ports
                    if ports is not None
                    else [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9000}],
                }
            ]
        },
    }


def running(c: ControllersThread, ns: str, n: int) -> None:
    wait_for(
        lambda: sum(1 for p in c.pods(ns) if (p.get("status") or {}).get("podIP")) == n,
        what=f"{n} pods with IPs",
    )


def endpoints(c: ControllersThread, ns: str, name: str) -> Obj:
    return c.get("v1", "endpoints", name, ns) or {}


def ips(addrs: list[Obj]) -> list[str]:
    return [a["ip"] for a in addrs]


def test_ready_not_ready_and_named_ports(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("ep-basic")
    for name in ("a", "b"):
        controllers.create("v1", "pods", pod(name), ns)
    controllers.create("v1", "pods", pod("slow", ready=False), ns)
    controllers.create("v1", "pods", pod("portless", ports=[]), ns)  # no port named "http"
    controllers.create("v1", "pods", pod("unplaced", ignore=True), ns)  # no IP yet
    controllers.create("v1", "pods", pod("other", labels={"app": "other"}), ns)
    running(controllers, ns, 5)
    api.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input="""
apiVersion: v1
kind: Service
metadata: {name: web, labels: {team: x}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090, targetPort: 9100}
""",
    )
    by_ip = {
        p["status"]["podIP"]: p["metadata"]["name"]
        for p in controllers.pods(ns)
        if (p.get("status") or {}).get("podIP")
    }

    def settled() -> Obj:  # every pod seen: both subsets with all their addresses
        ep = endpoints(controllers, ns, "web")
        sizes = sorted(
            len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or [])
            for s in ep.get("subsets") or []
        )
        return ep if sizes == [3, 4] else {}

    ep = wait_for(settled, what="two subsets")
    assert ep["metadata"]["labels"] == {"team": "x"}
    # ports are grouped by the addresses offering them (upstream's RepackSubsets): the pod
    # without a port named "http" only serves the numbered one
    http, metrics = sorted(ep["subsets"], key=lambda s: s["ports"][0]["port"])
    assert http["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert metrics["ports"] == [{"name": "metrics", "port": 9100, "protocol": "TCP"}]
    assert sorted(by_ip[i] for i in ips(http["addresses"])) == ["a", "b"]
    assert [by_ip[i] for i in ips(http["notReadyAddresses"])] == ["slow"]
    assert sorted(by_ip[i] for i in ips(metrics["addresses"])) == ["a", "b", "portless"]
    assert [by_ip[i] for i in ips(metrics["notReadyAddresses"])] == ["slow"]
    full = http
    addr = full["addresses"][0]
    assert addr["targetRef"]["kind"] == "Pod" and addr["nodeName"] == "fake-node"
    assert ips(full["addresses"]) == sorted(
        ips(full["addresses"]), key=lambda ip: [int(x) for x in ip.split(".")]
    )
    # the printer shows the first three addresses of the subsets in their order (by first
    # address), then "+ N more...", as upstream's: which ports show depends on the pods' IPs
    out = api.kubectl("get", "endpoints", "web", "-n", ns).stdout
    assert "+ 2 more..." in out and (":8080" in out or ":9100" in out)  # 5 ready in all

    # a pod that becomes ready moves over; a deleted one disappears
    slow = next(p for p in controllers.pods(ns) if p["metadata"]["name"] == "slow")
    conds = [
        {**c, "status": "True"} if c["type"] in ("Ready", "ContainersReady") else c
        for c in slow["status"]["conditions"]
    ]
    controllers.patch("v1", "pods", "slow", {"status": {"conditions": conds}}, ns, "status")
    api.kubectl("delete", "pod", "a", "-n", ns)
    wait_for(
        lambda: (
            sorted(
                by_ip[i]
                for s in endpoints(controllers, ns, "web").get("subsets") or []
                if s["ports"][0]["name"] == "http"
                for i in ips(s.get("addresses", []))
            )
            == ["b", "slow"]
        ),
        what="slow ready, a gone",
    )
    # the service goes: so do its endpoints
    api.kubectl("delete", "service", "web", "-n", ns)
    wait_for(lambda: controllers.get("v1", "endpoints", "web", ns) is None, what="endpoints deleted")


def test_headless_without_ports_and_publish_not_ready(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("ep-headless")
    controllers.create("v1", "pods", pod("up"), ns)
    controllers.create("v1", "pods", pod("down", ready=False), ns)
    running(controllers, ns, 2)
    controllers.create(
        "v1",
        "services",
        {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "web"}}},
        ns,
    )
    controllers.create(
        "v1",
        "services",
        {
            "metadata": {"name": "all"},
            "spec": {
                "publishNotReadyAddresses": True,
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
        ns,
    )
    ep = wait_for(lambda: endpoints(controllers, ns, "db").get("subsets"), what="headless endpoints")
    assert len(ep) == 1 and "ports" not in ep[0]
    assert len(ep[0]["addresses"]) == 1 and len(ep[0]["notReadyAddresses"]) == 1
    assert endpoints(controllers, ns, "db")["metadata"]["labels"] == {"service.kubernetes.io/headless": ""}
    ep = wait_for(lambda: endpoints(controllers, ns, "all").get("subsets"), what="publishNotReady endpoints")
    assert len(ep[0]["addresses"]) == 2 and "notReadyAddresses" not in ep[0]
    assert ep[0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_service_without_selector_is_left_alone(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("ep-manual")
    controllers.create(
        "v1", "services", {"metadata": {"name": "ext"}, "spec": {"ports": [{"port": 5432}]}}, ns
    )
    manual = {
        "metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432, "protocol": "TCP"}]}],
    }
    controllers.create("v1", "endpoints", manual, ns)
    controllers.create(
        "v1",
        "services",
        {"metadata": {"name": "empty"}, "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}},
        ns,
    )
    wait_for(lambda: controllers.get("v1", "endpoints", "empty", ns), what="empty endpoints")
    assert "subsets" not in endpoints(controllers, ns, "empty")
    assert endpoints(controllers, ns, "ext")["subsets"] == manual["subsets"]
