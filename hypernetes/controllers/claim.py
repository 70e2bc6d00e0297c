"""Adoption and release, as upstream's ControllerRefManager: an owner controls the objects
whose controller reference names it and that its selector still matches; it adopts matching
orphans (if it is not being deleted) and releases objects its selector no longer matches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.informer import Informer
from hypernetes.objects import Obj


async def claim(
    client: ApiClient,
    informer: Informer,
    owner: Obj,
    selector: Obj | None,
    candidates: list[Obj],
    can_adopt: Callable[[], Awaitable[bool]],
) -> list[Obj]:
    """The candidates `owner` controls, after adopting and releasing."""
    claimed: list[Obj] = []
    adopt_ok: bool | None = None
    owner_uid = m.uid(owner)
    for obj in candidates:
        ref = m.controller_ref(obj)
        matches = m.selector_matches(selector, m.labels(obj))
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if matches or m.deleting(owner):
                claimed.append(obj)
            else:
                await _set_refs(
                    client,
                    informer,
                    obj,
                    [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != owner_uid],
                )
            continue
        if not matches or m.deleting(owner) or m.deleting(obj):
            continue
        if adopt_ok is None:
            adopt_ok = await can_adopt()
        if not adopt_ok:
            continue
        refs = [*(obj["metadata"].get("ownerReferences") or []), m.owner_ref(owner)]
        adopted = await _set_refs(client, informer, obj, refs)
        if adopted is not None:
            claimed.append(adopted)
    return claimed


def fresh_owner_check(client: ApiClient, owner: Obj, plural: str) -> Callable[[], Awaitable[bool]]:
    """Before adopting: the owner read from the API (not the cache) is the same object and is
    not being deleted, so that a stale cache never adopts for a deleted owner."""

    async def check() -> bool:
        fresh = await client.get_or_none(owner["apiVersion"], plural, m.name(owner), m.namespace(owner))
        return fresh is not None and m.uid(fresh) == m.uid(owner) and not m.deleting(fresh)

    return check


async def _set_refs(client: ApiClient, informer: Informer, obj: Obj, refs: list[Obj]) -> Obj | None:
    patch = {
        "metadata": {"ownerReferences": refs or None, "resourceVersion": obj["metadata"]["resourceVersion"]}
    }
    try:
        out: Obj = await client.patch(
            informer.api_version, informer.plural, m.name(obj), patch, m.namespace(obj)
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise  # a conflict: retry the whole sync on a fresher cache
    informer.written(out)
    return out
