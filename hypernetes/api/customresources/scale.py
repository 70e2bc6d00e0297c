"""The scale subresource of a custom resource (autoscaling/v1 Scale), read from and written to the
paths its CRD names (subresources.scale: specReplicasPath, statusReplicasPath,
labelSelectorPath), as apiextensions-apiserver serves it: `kubectl scale` and autoscalers work on
custom workloads as on Deployments. A missing replicas field reads as 0."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hypernetes.api import bodies, objects
from hypernetes.api.customresources.columns import PathError, lookup, parse_path
from hypernetes.api.routing import Target, dry_run, field_manager, respond
from hypernetes.api.schema.errors import PatchError
from hypernetes.api.schema.patch import json_patch, merge_patch
from hypernetes.api.status import ApiError, bad_request, conflict, invalid, unsupported_media_type
from hypernetes.objects import Obj

if TYPE_CHECKING:
    from hypernetes.api.crud import Resources

_MERGE = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def _path(scale: Obj, field: str) -> list[str | int] | None:
    p = scale.get(field)
    if not isinstance(p, str) or not p:
        return None
    try:
        return parse_path(p)
    except PathError:
        return None


def scale_of(obj: Obj, scale: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    spec_path, status_path = _path(scale, "specReplicasPath"), _path(scale, "statusReplicasPath")
    selector_path = _path(scale, "labelSelectorPath")
    replicas = lookup(obj, spec_path)[1] if spec_path else None
    current = lookup(obj, status_path)[1] if status_path else None
    selector = lookup(obj, selector_path)[1] if selector_path else None
    status: Obj = {"replicas": current if isinstance(current, int) else 0}
    if isinstance(selector, str) and selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": status,
    }


def _set(obj: Obj, path: list[str | int], value: Any) -> None:
    cur: Any = obj
    for step in path[:-1]:
        if isinstance(step, int) or not isinstance(cur, dict):
            raise bad_request("the scale subresource's specReplicasPath does not lead to an object field")
        nxt = cur.get(step)
        if not isinstance(nxt, dict):
            nxt = cur[step] = {}
        cur = nxt
    last = path[-1]
    if isinstance(last, int) or not isinstance(cur, dict):
        raise bad_request("the scale subresource's specReplicasPath does not lead to an object field")
    cur[last] = value


async def handle(res: Resources, request: web.Request, t: Target, scale: Obj) -> web.StreamResponse:
    obj_t = Target(t.kind, t.namespace, t.name, None)
    if request.method == "GET":
        # read as a get is: a leftover of a namespace's earlier holder is not there for a tenant
        return respond(scale_of(objects.decode(await res._get_kv(obj_t)), scale))
    if request.method not in ("PUT", "PATCH"):
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on scale")
    spec_path = _path(scale, "specReplicasPath")
    if spec_path is None:
        raise bad_request("the CustomResourceDefinition names no valid specReplicasPath")
    raw = await request.read()
    ctype = (request.headers.get("Content-Type") or "application/json").split(";")[0].strip()
    try:  # bounded, as every body (hypernetes.api.bodies)
        body = bodies.json_value(raw or b"{}")
    except bodies.BodyError as e:
        raise bad_request(f"Scale: {e}") from None

    async def set_replicas(cur: Obj) -> Obj:
        current = scale_of(cur, scale)
        try:
            if request.method == "PUT":
                new = body
            elif ctype in _MERGE:
                new = merge_patch(copy.deepcopy(current), body)
            elif ctype == "application/json-patch+json":
                new = json_patch(copy.deepcopy(current), body)
            else:
                raise unsupported_media_type(ctype)
        except PatchError as e:
            raise bad_request(str(e)) from None
        if not isinstance(new, dict):
            raise bad_request("Scale: the body must be a JSON object")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(
                t.resource,
                t.name or "",
                t.group,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        replicas = (new.get("spec") or {}).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                "Scale",
                t.name or "",
                "autoscaling",
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                    }
                ],
            )
        _set(cur, spec_path, replicas)
        return cur

    obj = await res.update_object(
        obj_t, set_replicas, field_manager(request), conditional=False, dry_run=dry_run(request)
    )
    return respond(scale_of(obj, scale))
