"""autoscaling/v1 HorizontalPodAutoscalers over the v2 objects the store holds, as
kube-apiserver serves a kind in several versions from one storage version: create, get and
list, update and patch convert (registry/autoscaling/horizontalpodautoscalerv1.py); the v2
entry's defaults, validation, tenant admission and quota apply to what a v1 write stores."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from aiohttp import web

from hypernetes.api import objects, schema
from hypernetes.api.crud import PATCH_TYPES
from hypernetes.api.registry.autoscaling import horizontalpodautoscaler as v2
from hypernetes.api.registry.autoscaling import horizontalpodautoscalerv1 as v1
from hypernetes.api.routing import (
    JSON_CT,
    SCOPE,
    TABLE_CT,
    Target,
    dry_run,
    field_manager,
    read_body,
    respond,
    wants,
)
from hypernetes.api.selectors import Selectors, parse_field_selector, parse_label_selector
from hypernetes.api.status import (
    STALE,
    already_exists,
    bad_request,
    conflict,
    method_not_allowed,
    not_found,
    unsupported_media_type,
)
from hypernetes.api.tables import render_table
from hypernetes.objects import Obj
from hypernetes.store.interface import KeyExists


def served(t: Target) -> bool:
    return t.kind is v1.KIND


def _render(request: web.Request, obj: Any, status: int = 200) -> web.Response:
    if wants(request.headers.get("Accept"), "Table"):
        return respond(render_table(v1.KIND, [obj], request.query.get("includeObject")), status, TABLE_CT)
    return respond(obj, status, accept=request.headers.get("Accept"))


async def handle(server: Any, request: web.Request, t: Target, verb: str, user: Any) -> web.StreamResponse:
    """`server`: the ApiServer (its resources, store and admission); `user`: the caller."""
    stored = Target(v2.KIND, t.namespace, t.name, None)
    resources = server.resources
    if t.sub or verb not in v1.KIND.verbs:
        raise method_not_allowed(request.method)
    if verb == "get":
        kv = await server.store.get(resources.key(stored))
        if kv is None:
            raise not_found(t.resource, t.name or "", t.group)
        return _render(request, v1.to_v1(objects.decode(kv)))
    if verb == "list":
        q = request.query
        scope = request.get(SCOPE)
        sel = Selectors(
            parse_label_selector(q.get("labelSelector")),
            parse_field_selector(q.get("fieldSelector"), t.group, t.kind.kind),
            scope if callable(scope) else None,
        )
        page = await server.store.list(objects.key_prefix(t.group, t.resource, t.namespace))
        items = [v1.to_v1(o) for kv in page.items if sel.matches(o := objects.decode(kv))]
        meta = {"resourceVersion": str(page.revision)}
        if wants(request.headers.get("Accept"), "Table"):
            table = render_table(v1.KIND, items, q.get("includeObject"))
            table["metadata"] = meta
            return respond(table, 200, TABLE_CT)
        return respond(
            {"kind": v1.KIND.list_kind, "apiVersion": v1.KIND.api_version, "metadata": meta, "items": items},
            200,
            JSON_CT,
        )
    if verb in ("update", "patch"):
        return await _update(server, request, t, stored, verb)
    if t.namespace is None:
        raise method_not_allowed("POST")
    body = await read_body(request)
    resources._check_type(t, body)
    obj = v1.to_v2(body)
    lock = None
    if server.admission is not None:  # quota: as any counted create of the tenant
        lock = await server.admission.lock_for(user, t.namespace)
    async with lock if lock is not None else contextlib.nullcontext():
        obj = await resources.prepare_create(stored, obj, field_manager(request))
        name = obj["metadata"]["name"]
        if not dry_run(request):
            try:
                rev = await server.store.create(resources.key(stored, name), objects.encode(obj))
            except KeyExists:
                raise already_exists(t.resource, name, t.group) from None
            obj["metadata"]["resourceVersion"] = str(rev)
    return _render(request, v1.to_v1(obj), 201)


async def _update(
    server: Any, request: web.Request, t: Target, stored: Target, verb: str
) -> web.StreamResponse:
    """PUT or PATCH (JSON, merge, strategic merge) of the v1 view, written onto the stored v2."""
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if verb == "patch":
        if ctype not in PATCH_TYPES:
            raise unsupported_media_type(ctype)
        raw = await request.read()
    else:
        body = await read_body(request)
        server.resources._check_type(t, body)

    async def mutate(cur: Obj) -> Obj:
        view = v1.to_v1(cur)
        if verb == "patch":
            try:
                new = schema.apply_patch(v1.KIND, copy.deepcopy(view), raw, ctype)
            except schema.PatchError as e:
                raise bad_request(str(e)) from None
        else:
            new = copy.deepcopy(body)
            new.setdefault("metadata", {})["name"] = t.name
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(t.resource, t.name or "", t.group, STALE)
        return v1.onto_v2(cur, new)

    conditional = verb == "update" and bool((body.get("metadata") or {}).get("resourceVersion"))
    obj = await server.resources.update_object(
        stored, mutate, field_manager(request), conditional=conditional, dry_run=dry_run(request)
    )
    return _render(request, v1.to_v1(obj))
