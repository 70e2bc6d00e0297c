"""The Endpoints controller (upstream pkg/controller/endpoint): for each Service with a
selector, an Endpoints object of the same name listing its pods' IPs, ready ones under
`addresses` and the others under `notReadyAddresses`, with the service ports resolved against
each pod's container ports (a named targetPort is looked up by name and protocol). Services
without a selector are left alone (their Endpoints are the user's); a deleted Service's
Endpoints go with it. Pods without an IP are not listed until they get one."""

from __future__ import annotations

import ipaddress
import logging

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, namespace_terminating
from hypernetes.controllers.informer import Handler, InformerFactory, split_key
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

HEADLESS_LABEL = "service.kubernetes.io/headless"


def pod_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints."""
    status = pod.get("status") or {}
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    if not include_terminating and m.deleting(pod):
        return False
    phase = m.pod_phase(pod)
    restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
    if restart == "Never":
        return phase not in ("Failed", "Succeeded")
    if restart == "OnFailure":
        return phase != "Succeeded"
    return True


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """The container port a service port targets on this pod; None if the pod has no port by
    that name (and protocol)."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = svc_port.get("protocol", "TCP")
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return int(p["containerPort"])
    return None


def address(pod: Obj, svc: Obj) -> Obj:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP") or ((status.get("podIPs") or [{}])[0]).get("ip", "")
    addr: Obj = {"ip": ip}
    if spec.get("hostname") and spec.get("subdomain") == m.name(svc):
        addr["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        addr["nodeName"] = spec["nodeName"]
    addr["targetRef"] = {"kind": "Pod", "namespace": m.namespace(pod), "name": m.name(pod), "uid": m.uid(pod)}
    return addr


def _port_key(p: Obj) -> tuple[str, int, str, str]:
    return (p.get("name", ""), int(p.get("port", -1)), p.get("protocol", ""), p.get("appProtocol", ""))


def subsets(svc: Obj, pods: list[Obj]) -> list[Obj]:
    """EndpointSubsets for the service, packed as upstream's RepackSubsets: addresses that
    offer the same set of ports share a subset."""
    spec = svc.get("spec") or {}
    tolerate = bool(spec.get("publishNotReadyAddresses"))
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    # port -> {address uid: (address, ready)}
    by_port: dict[tuple[str, int, str, str], dict[str, tuple[Obj, bool]]] = {}
    port_objs: dict[tuple[str, int, str, str], Obj] = {}
    for pod in pods:
        if not pod_in_endpoints(pod, tolerate):
            continue
        addr = address(pod, svc)
        ready = tolerate or m.pod_ready(pod)
        offered: list[Obj] = []
        if not ports and headless:
            offered = [{"port": -1}]  # a headless service may have no ports at all
        for sp in ports:
            num = find_port(pod, sp)
            if num is None:
                continue
            ep: Obj = {"port": num, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                ep["name"] = sp["name"]
            if sp.get("appProtocol"):
                ep["appProtocol"] = sp["appProtocol"]
            offered.append(ep)
        for ep in offered:
            k = _port_key(ep)
            port_objs[k] = ep
            by_port.setdefault(k, {})[m.uid(pod)] = (addr, ready)
    # group ports by the exact set of addresses offering them
    groups: dict[tuple[tuple[str, bool], ...], list[tuple[str, int, str, str]]] = {}
    members: dict[tuple[tuple[str, bool], ...], list[tuple[Obj, bool]]] = {}
    for k, addrs in by_port.items():
        sig = tuple(sorted((uid, ready) for uid, (_, ready) in addrs.items()))
        groups.setdefault(sig, []).append(k)
        members[sig] = list(addrs.values())
    out: list[Obj] = []
    for sig, keys in groups.items():
        subset: Obj = {}
        ready_addrs = sorted((a for a, ok in members[sig] if ok), key=_addr_order)
        not_ready = sorted((a for a, ok in members[sig] if not ok), key=_addr_order)
        if ready_addrs:
            subset["addresses"] = ready_addrs
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        real = sorted((port_objs[k] for k in keys if k[1] > 0), key=_port_key)
        if real:
            subset["ports"] = real
        out.append(subset)
    return sorted(out, key=lambda s: [_addr_order(a) for a in s.get("addresses") or s["notReadyAddresses"]])


def _addr_order(a: Obj) -> tuple[int, int, str]:
    uid = str((a.get("targetRef") or {}).get("uid", ""))
    try:
        ip = ipaddress.ip_address(str(a.get("ip", "")))
    except ValueError:
        return 0, 0, uid
    return ip.version, int(ip), uid


class EndpointsController(Controller):
    name = "endpoints"
    workers = 4

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.services = self.informer("v1", "services")
        self.pods = self.informer("v1", "pods")
        self.endpoints = self.informer("v1", "endpoints")
        self.services.add_handler(
            Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n), delete=self.enqueue)
        )
        self.pods.add_handler(
            Handler(add=self._pod_changed, update=self._pod_updated, delete=self._pod_changed)
        )
        self.endpoints.add_handler(Handler(update=lambda o, n: self.enqueue(n), delete=self.enqueue))

    def _pod_changed(self, pod: Obj) -> None:
        for svc in self.services.list(m.namespace(pod)):
            selector = (svc.get("spec") or {}).get("selector")
            if selector is not None and m.selector_matches({"matchLabels": selector}, m.labels(pod)):
                self.enqueue(svc)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if m.labels(old) != m.labels(new):
            self._pod_changed(old)
        self._pod_changed(new)

    async def reconcile(self, key: str) -> None:
        svc = self.services.get(key)
        ns, name = split_key(key)
        if svc is None:
            if self.endpoints.get(key) is not None:
                await self.client.delete("v1", "endpoints", name, ns)
            return
        selector = (svc.get("spec") or {}).get("selector")
        if selector is None:
            return  # endpoints of a service without selector are managed by its user
        pods = [p for p in self.pods.list(ns) if m.selector_matches({"matchLabels": selector}, m.labels(p))]
        want_subsets = subsets(svc, pods)
        labels = m.labels(svc)
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS_LABEL] = ""
        current = self.endpoints.get(key)
        if (
            current is not None
            and (current.get("subsets") or []) == want_subsets
            and m.labels(current) == labels
        ):
            return
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "labels": labels or None},
        }
        if want_subsets:
            body["subsets"] = want_subsets
        try:
            if current is None:
                out = await self.client.create("v1", "endpoints", body, ns)
            else:
                meta = {**current["metadata"], "labels": labels or None}
                out = await self.client.replace("v1", "endpoints", {**body, "metadata": meta})
        except ApiException as e:
            if namespace_terminating(e):
                return
            if e.status != 409:  # a conflict only means our cache was behind
                reason, what = (
                    ("FailedToCreateEndpoint", "create endpoint for service")
                    if current is None
                    else ("FailedToUpdateEndpoint", "update endpoint")
                )
                message = f"Failed to {what} {ns}/{name}: {e.message}"
                await self.events.warning(current or body, reason, message)
            raise
        self.endpoints.written(out)
