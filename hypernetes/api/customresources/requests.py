"""What a request for a custom resource does differently from one for a built-in kind, called by
the API server (server.py) once it knows the target: strategic merge patches are refused (upstream:
custom resources have no patch strategies), the scale subresource follows the CRD's paths, and a
CRD written through this server is served by it before the response goes out; fieldValidation=Strict
(kubectl's default) refuses unknown fields, which Warn and Ignore prune."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from hypernetes.api.customresources import scale as scale_sub
from hypernetes.api.customresources.kinds import FIELD_VALIDATION, FIELD_WARNINGS, Served
from hypernetes.api.registry.apiextensions.served import SERVED
from hypernetes.api.routing import Target
from hypernetes.api.status import ApiError, bad_request
from hypernetes.objects import Obj
from hypernetes.store.interface import Store

if TYPE_CHECKING:
    from hypernetes.api.crud import Resources
    from hypernetes.api.customresources.informer import CustomResources

STRATEGIC = "application/strategic-merge-patch+json"
CRD_GROUP = "apiextensions.k8s.io"
WRITES = frozenset(("create", "update", "patch", "delete", "deletecollection"))


def check(request: web.Request, t: Target) -> None:
    validation = request.query.get("fieldValidation") or "Warn"
    if validation not in ("Ignore", "Warn", "Strict"):
        raise bad_request(
            f'fieldValidation: invalid value "{validation}": valid values are "Ignore", "Warn", "Strict"'
        )
    FIELD_VALIDATION.set(validation)
    warnings: list[str] = []
    FIELD_WARNINGS.set(warnings)
    custom = SERVED.get()
    served = custom.info(t.kind) if custom is not None else None
    if isinstance(served, Served) and served.deprecated is not None:
        warnings.append(served.deprecated)
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if request.method == "PATCH" and ctype == STRATEGIC and t.sub != "scale":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )


async def scale(res: Resources, request: web.Request, t: Target, config: Obj) -> web.StreamResponse:
    return await scale_sub.handle(res, request, t, config)


async def finish(
    custom: CustomResources, store: Store, t: Target, verb: str, resp: web.StreamResponse
) -> None:
    """After a request: the unknown fields fieldValidation=Warn pruned and a deprecated version's
    warning become Warning headers (as kube-apiserver sends them; kubectl prints them). After a
    CRD write, wait (briefly) until this server's table has it, so a client that creates a CRD
    and then its objects through the same server finds them served."""
    warnings = FIELD_WARNINGS.get()
    if warnings and not resp.prepared:
        for w in dict.fromkeys(warnings):
            resp.headers.add("Warning", '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
    if t.group == CRD_GROUP and t.resource == "customresourcedefinitions" and verb in WRITES:
        await custom.caught_up(await store.current_revision())
