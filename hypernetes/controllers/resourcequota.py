"""The ResourceQuota controller (upstream pkg/controller/resourcequota): every ResourceQuota's
status.hard (its spec.hard) and status.used (what its namespace holds now, counted by the
evaluators admission uses, controllers/quotaeval.py), recomputed when anything it can count
changes in the namespace, and every five minutes (upstream's full resync)."""

from __future__ import annotations

from hypernetes.apiclient import ApiClient
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, update_status
from hypernetes.controllers.informer import Handler, Informer, InformerFactory
from hypernetes.controllers.quotaeval import Usage, add, matches_scopes, show, usage, zero
from hypernetes.controllers.tenant import COUNTED
from hypernetes.objects import Obj

RESYNC = 300.0

# (kind, group, plural) of everything a quota counts
COUNTABLE = (
    ("Pod", "", "pods"),
    ("PersistentVolumeClaim", "", "persistentvolumeclaims"),
    *((c.kind, c.group, c.plural) for c in COUNTED if c.namespaced),
)


class ResourceQuotaController(Controller):
    name = "resourcequota"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.quotas = self.informer("v1", "resourcequotas")
        self.quotas.add_handler(Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n)))
        self.sources: list[tuple[str, str, str, Informer]] = []
        for kind, group, plural in COUNTABLE:
            api_version = f"{group}/v1" if group else "v1"
            inf = self.informer(api_version, plural)
            self.sources.append((kind, group, plural, inf))
            inf.add_handler(
                Handler(add=self._changed, update=lambda o, n: self._changed(n), delete=self._changed)
            )

    def _changed(self, obj: Obj) -> None:
        for q in self.quotas.list(m.namespace(obj)):
            self.enqueue(q)

    async def reconcile(self, key: str) -> None:
        quota = self.quotas.get(key)
        if quota is None:
            return
        ns = m.namespace(quota)
        spec = quota.get("spec") or {}
        hard = dict(spec.get("hard") or {})
        scopes = [str(s) for s in spec.get("scopes") or []]
        used: Usage = {}
        for kind, group, plural, inf in self.sources:
            for obj in inf.list(ns):
                if not matches_scopes(scopes, kind, obj):
                    continue
                for k, q in usage(kind, group, plural, obj).items():
                    if k in hard:
                        used[k] = add(used.get(k), q)
        status = {"hard": hard, "used": {k: show(used.get(k) or zero()) for k in hard}}
        if status != (quota.get("status") or {}):
            out = await update_status(self.client, "v1", "resourcequotas", quota, status)
            if out is not None:
                self.quotas.written(out)
        self.queue.add_after(key, RESYNC)
