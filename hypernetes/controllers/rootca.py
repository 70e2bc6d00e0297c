"""The root CA publisher: a `kube-root-ca.crt` ConfigMap holding the cluster CA in every namespace,
kept as it should be (upstream pkg/controller/certificates/rootcacertpublisher). Pods mount it
beside their service-account token to verify the API server."""

from __future__ import annotations

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, namespace_terminating
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj

NAME = "kube-root-ca.crt"


class RootCAPublisher(Controller):
    name = "root-ca-cert-publisher"

    def __init__(self, client: ApiClient, informers: InformerFactory, ca_pem: str = "") -> None:
        super().__init__(client, informers)
        self.ca_pem = ca_pem
        self.namespaces = self.informer("v1", "namespaces")
        self.configmaps = self.informer("v1", "configmaps")
        self.namespaces.add_handler(Handler(add=self.enqueue))
        self.configmaps.add_handler(Handler(update=lambda old, new: self._changed(new), delete=self._changed))

    def _changed(self, cm: Obj) -> None:
        if m.name(cm) == NAME:
            self.queue.add(m.namespace(cm))

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if (
            not self.ca_pem
            or ns is None
            or m.deleting(ns)
            or (ns.get("status") or {}).get("phase") == "Terminating"
        ):
            return
        want = {"ca.crt": self.ca_pem}
        cm = self.configmaps.get(f"{key}/{NAME}")
        try:
            if cm is None:
                await self.client.create(
                    "v1",
                    "configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}, "data": want},
                    key,
                )
            elif cm.get("data") != want:
                await self.client.patch("v1", "configmaps", NAME, {"data": want}, key)
        except ApiException as e:
            if e.status not in (404, 409) and not namespace_terminating(e):
                raise
