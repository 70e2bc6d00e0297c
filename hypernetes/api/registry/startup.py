"""Objects every API server makes when it starts: the built-in ClusterRoles (`cluster-admin`,
`admin`, `edit`, `view`; auth/rbac.py), one local APIService per group/version it serves and the
built-in RuntimeClasses (registry/node/runtimeclass.py; an operator's edits to them are kept). (The
default namespaces and StorageClass are api/server.py's.) Missing ones are created; a built-in
ClusterRole still marked `rbac.authorization.kubernetes.io/autoupdate: "true"` is brought up to
date, as kube-apiserver reconciles its bootstrap roles, so a kind added to the tenant roles reaches
clusters made before it. An operator who sets the annotation to "false" keeps their edits."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from hypernetes.api import objects
from hypernetes.api.crud import Resources
from hypernetes.api.registry import group_versions
from hypernetes.api.registry.apiregistration import apiservice
from hypernetes.api.registry.kind import Kind
from hypernetes.api.registry.node import runtimeclass
from hypernetes.api.registry.rbac import clusterrole
from hypernetes.api.registry.rbac.builtin import cluster_role_rules
from hypernetes.api.routing import Target
from hypernetes.auth.rbac import AUTOUPDATE, CLUSTER_ROLES, cluster_role_object
from hypernetes.objects import Obj as JSON
from hypernetes.store.interface import KeyExists, RevisionConflict, Store


def startup_objects(served: list[str]) -> list[tuple[Kind, JSON]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[tuple[Kind, JSON]] = [
        (clusterrole.KIND, cluster_role_object(name, cluster_role_rules(name))) for name in CLUSTER_ROLES
    ]
    out += [(apiservice.KIND, apiservice.local(gv, now)) for gv in served]
    out += [(runtimeclass.KIND, rc) for rc in runtimeclass.builtin_classes()]
    return out


async def ensure(store: Store, resources: Resources) -> None:
    for kind, body in startup_objects(group_versions()):
        t = Target(kind, None, body["metadata"]["name"], None)
        key = resources.key(t)
        kv = await store.get(key)
        if kv is None:
            obj = await resources.prepare_create(t, body, "hypernetes")
            with contextlib.suppress(KeyExists):  # another server process made it
                await store.create(key, objects.encode(obj))
            continue
        if kind is not clusterrole.KIND:
            continue
        cur = objects.decode(kv)
        notes = (cur.get("metadata") or {}).get("annotations") or {}
        if notes.get(AUTOUPDATE) == "true" and cur.get("rules") != body["rules"]:
            cur["rules"] = body["rules"]
            with contextlib.suppress(RevisionConflict):  # another server reconciled it first
                await store.update(key, objects.encode(cur), kv.mod_revision)
