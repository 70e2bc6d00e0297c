"""The service account controller: a `default` ServiceAccount in every namespace, re-created if
deleted (upstream pkg/controller/serviceaccount)."""

from __future__ import annotations

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, namespace_terminating
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj

DEFAULT = "default"


class ServiceAccountController(Controller):
    name = "serviceaccount"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.namespaces = self.informer("v1", "namespaces")
        self.accounts = self.informer("v1", "serviceaccounts")
        self.namespaces.add_handler(Handler(add=self.enqueue, update=lambda old, new: self.enqueue(new)))
        self.accounts.add_handler(Handler(delete=self._account_deleted))

    def _account_deleted(self, sa: Obj) -> None:
        if m.name(sa) == DEFAULT:
            self.queue.add(m.namespace(sa))

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or m.deleting(ns) or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        if self.accounts.get(f"{key}/{DEFAULT}") is not None:
            return
        try:
            await self.client.create(
                "v1",
                "serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT}},
                key,
            )
        except ApiException as e:
            if e.status != 409 and not namespace_terminating(e) and e.status != 404:
                raise
