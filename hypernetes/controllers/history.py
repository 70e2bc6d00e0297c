"""ControllerRevisions of StatefulSets and DaemonSets, as upstream's controller/history: each
revision holds the owner's pod template as the patch `kubectl rollout undo` applies
(`{"spec": {"template": {..., "$patch": "replace"}}}`), is named `<owner>-<hash>` and numbered
in order; a template that comes back reuses its old revision under the next number (that is a
rollback); the oldest unused revisions beyond revisionHistoryLimit are deleted."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.informer import Informer
from hypernetes.controllers.rollout import template_hash
from hypernetes.objects import Obj

API_VERSION, PLURAL = "apps/v1", "controllerrevisions"
REVISION_LABEL = "controller-revision-hash"
MAX_PREFIX = 223  # upstream's ControllerRevisionName: the name stays a valid subdomain


def patch_of(owner: Obj) -> Obj:
    """The revision data of an owner: its pod template, replacing the whole template when
    applied (upstream's getPatch)."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def template_of(revision: Obj) -> Obj:
    """The pod template a revision holds."""
    template = dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


@dataclass
class History:
    """The revisions an owner controls, oldest first."""

    revisions: list[Obj]

    @property
    def latest(self) -> Obj | None:
        return self.revisions[-1] if self.revisions else None

    def find(self, data: Obj) -> Obj | None:
        """The newest revision holding exactly this data."""
        return next((r for r in reversed(self.revisions) if r.get("data") == data), None)

    def named(self, name: str | None) -> Obj | None:
        return next((r for r in self.revisions if m.name(r) == name), None) if name else None


def owned(informer: Informer, owner: Obj) -> History:
    revs = [r for r in informer.list(m.namespace(owner)) if m.controlled_by(r, owner)]
    return History(sorted(revs, key=lambda r: (number(r), m.meta(r).get("creationTimestamp") or "")))


async def update_revision(
    client: ApiClient, informer: Informer, owner: Obj, history: History, collision_count: int
) -> Obj:
    """The revision of the owner's current template: the latest if it holds it; an older one that
    holds it, renumbered as the newest (a rollback); else a new one."""
    data = patch_of(owner)
    top = number(history.latest) if history.latest else 0
    same = history.find(data)
    if same is not None:
        if same is history.latest:
            return same
        out: Obj = await client.patch(
            API_VERSION, PLURAL, m.name(same), {"revision": top + 1}, m.namespace(same)
        )
        informer.written(out)
        history.revisions = [r for r in history.revisions if r is not same] + [out]
        return out
    labels = dict(
        (((owner.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    )
    hashed = template_hash(data, collision_count or None)
    labels[REVISION_LABEL] = hashed
    body: Obj = {
        "apiVersion": API_VERSION,
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{m.name(owner)[:MAX_PREFIX]}-{hashed}",
            "namespace": m.namespace(owner),
            "labels": labels,
            "ownerReferences": [m.owner_ref(owner)],
        },
        "data": data,
        "revision": top + 1,
    }
    try:
        created: Obj = await client.create(API_VERSION, PLURAL, body, m.namespace(owner))
    except ApiException as e:
        if e.status != 409:
            raise
        # made by our last sync (the cache is behind), or a hash collision: the caller's next
        # sync sees it; a collision bumps the owner's collisionCount as upstream
        existing = await client.get_or_none(API_VERSION, PLURAL, body["metadata"]["name"], m.namespace(owner))
        if existing is not None and m.controlled_by(existing, owner) and existing.get("data") == data:
            return existing
        raise Collision() from e
    history.revisions.append(created)
    return created


class Collision(Exception):
    """A revision of that name holds another template: the owner's collisionCount goes up."""


async def truncate(client: ApiClient, owner: Obj, history: History, keep: set[str], limit: int) -> None:
    """Delete the oldest revisions beyond `limit` that are not in `keep` (the current and update
    revisions, and those live pods still run)."""
    old = [r for r in history.revisions if m.name(r) not in keep]
    for r in old[: max(len(old) - limit, 0)]:
        try:
            await client.delete(API_VERSION, PLURAL, m.name(r), m.namespace(r))
        except ApiException as e:
            if e.status != 404:
                raise
