"""Resource requests: get, list, watch, create, update, patch, delete and deletecollection on
every kind the schema package declares, with upstream's semantics for resourceVersion,
generation, selectors, limit/continue, dryRun, fieldManager and Status errors.

Kind-specific knowledge (validation, defaults, patch merge keys, Table columns) comes from
`hypernetes.api.schema`; this module is generic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import json
import random
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from hypernetes.api import apply, bodies, deletion, objects, schema
from hypernetes.api.customresources.convert import converter
from hypernetes.api.history import TenantView
from hypernetes.api.loopslice import LoopBudget, drain, dumps_list
from hypernetes.api.registry.apiextensions.served import SERVED
from hypernetes.api.routing import (
    AUDIT_TARGET,
    CALLER,
    GZIP_ABOVE,
    JSON_CT,
    PARTIAL_CT,
    PARTIAL_LIST_CT,
    SCOPE,
    TABLE_CT,
    Target,
    dry_run,
    field_manager,
    read_body,
    respond,
    truthy,
    wants,
    wants_yaml,
)
from hypernetes.api.selectors import Selectors, parse_field_selector, parse_label_selector
from hypernetes.api.status import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    method_not_allowed,
    not_found,
    qualified,
    too_old,
    unsupported_media_type,
)
from hypernetes.api.tables import render_table
from hypernetes.api.watch import WatchCaches, WatchRequest, error_line, initial_chunks
from hypernetes.api.watch import stream as stream_watch
from hypernetes.auth.admission import Denied, Invalid, TenantAdmission
from hypernetes.auth.rbac import GROUP as RBAC_GROUP
from hypernetes.auth.rbac import RoleNotFound
from hypernetes.objects import Obj
from hypernetes.store.interface import (
    Compacted,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    Store,
)

Mutate = Callable[[Obj], Awaitable[Obj]]

PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
APPLY_TYPE = "application/apply-patch+yaml"
MAX_LIMIT = 10000


def _continue_token(rev: int, key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rev, "start": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_continue(token: str) -> tuple[int, str]:
    try:
        d = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(d["rv"]), str(d["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ) from None


async def _respond_list(
    head: Obj, field: str, items: Iterable[Obj], content_type: str, budget: LoopBudget
) -> web.Response:
    """`head` with `field` = the items, as `respond` would send it, encoded a slice at a time."""
    data = await dumps_list(head, field, items, budget)
    resp = web.Response(status=200, body=data)
    resp.headers["Content-Type"] = content_type
    if len(data) > GZIP_ABOVE:
        resp.enable_compression()  # gzip when the client accepts it (in aiohttp's executor)
    return resp


class Resources:
    """The resource handlers; one per server, sharing the store and the watch caches."""

    def __init__(
        self,
        store: Store,
        caches: WatchCaches,
        *,
        bookmark_every: float = 60.0,
        admission: TenantAdmission | None = None,
    ) -> None:
        self.store, self.caches = store, caches
        self.bookmark_every = bookmark_every
        self.admission = admission

    async def admit(self, t: Target, obj: Obj, old: Obj | None) -> None:
        """Tenant admission for a write by the current caller (none for the server's own)."""
        user = CALLER.get()
        if self.admission is None or user is None:
            return
        kind = t.kind.kind
        custom = SERVED.get()
        if custom is not None and custom.info(t.kind) is not None:
            kind = f"{t.resource}.{t.group}"  # a custom kind: never taken for a built-in one of its name
        try:
            await self.admission.admit(user, kind, t.namespace, obj, old)
        except Denied as e:  # admission.NewForbidden: the group-qualified resource, as upstream
            name = (obj.get("metadata") or {}).get("name") or ""
            details = (
                {"name": name, "group": t.group, "kind": t.resource}
                if t.group
                else {"name": name, "kind": t.resource}
            )
            raise forbidden(f'{qualified(t.resource, t.group)} "{name}" is forbidden: {e}', details) from None
        except RoleNotFound as e:  # the storage read upstream's escalation check makes
            raise not_found(e.resource, e.name, RBAC_GROUP) from None
        except Invalid as e:
            raise invalid(
                t.kind.kind,
                (obj.get("metadata") or {}).get("name") or "",
                t.group,
                [{"reason": "FieldValueForbidden", "message": str(e), "field": e.field}],
            ) from None

    # -- keys and reads ------------------------------------------------------------------------

    @staticmethod
    def key(t: Target, name: str | None = None) -> str:
        name = name or t.name
        assert name is not None
        return objects.object_key(t.group, t.resource, t.namespace if t.kind.namespaced else None, name)

    async def _get_kv(self, t: Target) -> KeyValue:
        kv = await self.store.get(self.key(t))
        if kv is not None and (view := await self._view()) is not None:
            # a leftover of a namespace's or tenant's earlier holder is not there for this one
            await view.sync(kv.mod_revision)
            if not view.visible(objects.decode(kv), kv.create_revision, max(view.revision, kv.mod_revision)):
                kv = None
        if kv is None:
            raise not_found(t.resource, t.name or "", t.group)
        return kv

    async def _view(self) -> TenantView | None:
        """The current caller's part of history (None: it may see all of it)."""
        return await self.caches.ownership.view(CALLER.get())

    @staticmethod
    def _check_floor(view: TenantView | None, t: Target, revision: int, continuing: bool) -> None:
        """A list or watch from before the caller's holding of the tenant or namespace began is
        expired, as compacted history is: clients list again."""
        if view is None or not revision:
            return
        floor = view.floor(t.namespace, bool(t.kind.namespaced))
        if revision < floor:
            raise Resources._expired_continue() if continuing else too_old(revision, floor)

    async def _check_namespace(self, t: Target) -> None:
        """Objects can only be created in a namespace that exists and is not terminating."""
        if not t.kind.namespaced or t.namespace is None:
            return
        kv = await self.store.get(objects.object_key("", "namespaces", None, t.namespace))
        if kv is None:
            raise not_found("namespaces", t.namespace)
        if deletion.terminating(json.loads(kv.value)):
            raise forbidden(
                f'{t.resource} "{t.name or ""}" is forbidden: unable to create new content in namespace '
                f"{t.namespace} because it is being terminated",
                {
                    "name": t.name or "",
                    "kind": t.resource,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "field": "metadata.namespace",
                            "message": f"namespace {t.namespace} is being terminated",
                        }
                    ],
                },
            )

    # -- rendering -----------------------------------------------------------------------------

    def _render_one(self, request: web.Request, t: Target, obj: Obj, status: int = 200) -> web.Response:
        if (convert := converter(t.kind)) is not None:  # a custom kind's other version
            obj = convert(obj)
        accept = request.headers.get("Accept")
        if wants(accept, "Table"):
            table = render_table(t.kind, [obj], request.query.get("includeObject"))
            return respond(table, status, TABLE_CT)
        if wants(accept, "PartialObjectMetadata"):
            return respond(objects.partial_metadata(obj), status, PARTIAL_CT)
        return respond(obj, status, accept=accept)

    def _event_renderer(self, request: web.Request, t: Target) -> tuple[Callable[[Obj], Obj], bool]:
        render, plain = self._event_renderer_of(request, t)
        convert = converter(t.kind)  # a custom kind's other version
        return (render, plain) if convert is None else ((lambda o: render(convert(o))), False)

    def _event_renderer_of(self, request: web.Request, t: Target) -> tuple[Callable[[Obj], Obj], bool]:
        accept = request.headers.get("Accept")
        if wants(accept, "Table"):
            include = request.query.get("includeObject")
            return (lambda o: render_table(t.kind, [o], include)), False
        if wants(accept, "PartialObjectMetadata"):
            return objects.partial_metadata, False
        return (lambda o: o), True

    # -- verbs ---------------------------------------------------------------------------------

    async def get(self, request: web.Request, t: Target) -> web.StreamResponse:
        kv = await self._get_kv(t)
        return self._render_one(request, t, objects.decode(kv))

    def _selectors(self, request: web.Request, t: Target) -> Selectors:
        q = request.query
        scope = request.get(SCOPE)
        return Selectors(
            parse_label_selector(q.get("labelSelector")),
            parse_field_selector(q.get("fieldSelector"), t.group, t.kind.kind),
            scope if callable(scope) else None,
        )

    async def list_(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        sel = self._selectors(request, t)
        try:
            limit = max(0, min(int(q.get("limit") or 0), MAX_LIMIT))
        except ValueError:
            raise bad_request(f"invalid limit: {q.get('limit')!r}") from None
        prefix = objects.key_prefix(t.group, t.resource, t.namespace if t.kind.namespaced else None)
        revision, start = 0, ""
        if q.get("continue"):
            revision, start = _parse_continue(q["continue"])
            if not start.startswith(prefix):
                raise bad_request("continue key is not valid: it belongs to another list")
        elif q.get("resourceVersion") not in (None, "", "0") and q.get("resourceVersionMatch") == "Exact":
            revision = self._rv(q["resourceVersion"])
        view = await self._view()
        self._check_floor(view, t, revision, bool(q.get("continue")))
        # decoding, filtering and encoding yield to the loop every slice (api/loopslice.py)
        budget = LoopBudget()
        items, rev, more_key = await self._list_page(
            prefix, sel, start, limit, revision, t, view, budget=budget
        )
        if (convert := converter(t.kind)) is not None:  # a custom kind's other version
            items = [convert(o) for o in items]
        meta: Obj = {"resourceVersion": str(rev)}
        if more_key:
            meta["continue"] = _continue_token(rev, more_key)
        accept = request.headers.get("Accept")
        if wants(accept, "Table"):
            include = q.get("includeObject")
            table = render_table(t.kind, [], include)  # the columns (and includeObject checked)
            table["metadata"] = meta
            rows: list[Obj] = []
            source = drain(items)
            while chunk := list(itertools.islice(source, 10)):  # (a row costs up to ~80 us)
                rows += render_table(t.kind, chunk, include)["rows"]
                await budget.tick()
            return await _respond_list(table, "rows", drain(rows), TABLE_CT, budget)
        if wants(accept, "PartialObjectMetadataList"):
            head = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
            partial = (objects.partial_metadata(o) for o in drain(items))
            return await _respond_list(head, "items", partial, PARTIAL_LIST_CT, budget)
        head = {"kind": t.kind.kind + "List", "apiVersion": t.kind.api_version, "metadata": meta}
        if wants_yaml(accept):
            return respond({**head, "items": items}, 200, accept=accept)
        return await _respond_list(head, "items", drain(items), JSON_CT, budget)

    @staticmethod
    def _rv(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise bad_request(f'invalid resource version "{value}"') from None

    async def _list_page(
        self,
        prefix: str,
        sel: Selectors,
        start: str,
        limit: int,
        revision: int,
        t: Target,
        view: TenantView | None,
        *,
        budget: LoopBudget | None = None,
    ) -> tuple[list[Obj], int, str]:
        """Up to `limit` matching objects after key `start`, all read at one revision; the key to
        continue after ("" at the end). Filtering pages fill up by reading further, as upstream.
        `view`: a tenant caller's part of history, which filters too. Decoding yields to the loop
        every slice of `budget`."""
        budget = budget or LoopBudget()

        def keep(kv: KeyValue, obj: Obj, rev: int) -> bool:
            return sel.matches(obj) and (view is None or view.visible(obj, kv.create_revision, rev))

        name = sel.fields.exact_name()
        if name is not None and not start and (not t.kind.namespaced or t.namespace):
            # `fieldSelector=metadata.name=X` (kubectl delete/wait): one key, not a scan. A list (not
            # a get) so that the returned revision is the one the key was read at.
            try:
                res = await self.store.list(prefix + name, limit=1, revision=revision)
            except Compacted:
                raise self._expired_continue() from None
            rev = res.revision
            if view is not None:
                await view.sync(rev)
            found = [(kv, objects.decode(kv, None)) for kv in res.items if kv.key == prefix + name]
            return [o for kv, o in found if keep(kv, o, rev)], rev, ""
        items: list[Obj] = []
        rev = revision
        while True:
            want = (limit - len(items)) if limit else 0
            batch = max(want, 100) if (limit and not sel.empty) else want
            try:
                res = await self.store.list(prefix, start_after=start, limit=batch, revision=rev)
            except Compacted:
                raise self._expired_continue() from None
            rev = res.revision
            if view is not None:
                await view.sync(rev)
            for i, kv in enumerate(res.items):
                if budget.spent():
                    await budget.pause()
                obj = objects.decode(kv)
                if keep(kv, obj, rev):
                    items.append(obj)
                    if limit and len(items) >= limit:
                        last = kv.key
                        more = res.more or i < len(res.items) - 1
                        return items, rev, last if more else ""
            if not res.more or not res.items:
                return items, rev, ""
            start = res.items[-1].key

    @staticmethod
    def _expired_continue() -> ApiError:
        err = ApiError(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list "
            "result. You can start a new list without the continue parameter, or use "
            "the continue token in this response to retrieve the remainder of the "
            "results. Continuing with the provided token results in an inconsistent "
            "list - objects that were created, modified, or deleted between the time "
            "the first chunk was returned and now may show up in the list.",
        )
        err.details = None
        return err

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        sel = self._selectors(request, t)
        if t.name:  # the deprecated `GET .../pods/NAME?watch=true`
            sel = Selectors(
                sel.labels,
                parse_field_selector(
                    f"metadata.name={t.name}" + (f",{q['fieldSelector']}" if q.get("fieldSelector") else ""),
                    t.group,
                    t.kind.kind,
                ),
                sel.scope,
            )
        ns = t.namespace if t.kind.namespaced else None
        prefix = objects.key_prefix(t.group, t.resource, None)
        key_prefix = objects.key_prefix(t.group, t.resource, ns)
        rv = q.get("resourceVersion")
        send_initial = q.get("sendInitialEvents")
        initial: list[Obj] = []
        view = await self._view()
        if rv in (None, "", "0") or truthy(send_initial):
            if send_initial is not None and not truthy(send_initial) and rv in (None, ""):
                after = await self.store.current_revision()
            else:
                at = 0 if rv in (None, "", "0") else self._rv(rv)
                self._check_floor(view, t, at, False)
                items, after, _ = await self._list_page(key_prefix, sel, "", 0, at, t, view)
                initial = items
        else:
            after = self._rv(rv)
        try:
            timeout = float(q["timeoutSeconds"]) if "timeoutSeconds" in q else 1800 * (1 + random.random())
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds: {q['timeoutSeconds']!r}") from None
        render, plain = self._event_renderer(request, t)
        av, kind = t.kind.api_version, t.kind.kind
        bookmark = None
        if truthy(q.get("allowWatchBookmarks")):

            def bookmark(r: int) -> Obj:
                return {"kind": kind, "apiVersion": av, "metadata": {"resourceVersion": str(r)}}

        wr = WatchRequest(
            prefix,
            key_prefix,
            after,
            initial,  # (emptied as its events are sent: api/watch.py initial_chunks)
            None if sel.empty else sel.matches,
            render,
            bookmark,
            timeout,
            self.bookmark_every,
            initial_events_end=truthy(send_initial),
            plain=plain,
        )
        expired: ApiError | None = None
        if view is not None:
            wr.sync = view.sync
            wr.visible = lambda ev: view.visible_at(ev.namespace, ev.subject, ev.created, ev.revision)
            try:
                self._check_floor(view, t, after, False)
            except ApiError as e:
                expired = e  # as compacted history: an ERROR event in the stream, as upstream
        resp = web.StreamResponse(status=200)
        table = not plain and wants(request.headers.get("Accept"), "Table")
        resp.headers["Content-Type"] = TABLE_CT if table else JSON_CT
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if expired is not None:
            await resp.write(error_line(expired.status()))
            return resp
        async for chunk in initial_chunks(wr):
            await resp.write(chunk)
        try:
            await stream_watch(resp, self.caches, wr)
        except Compacted as e:
            await resp.write(error_line(too_old(e.requested, e.compacted).status()))
        except ApiError as e:  # the ownership timeline did not catch up: the client watches again
            await resp.write(error_line(e.status()))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    # -- writes --------------------------------------------------------------------------------

    def _check_type(self, t: Target, obj: Obj) -> None:
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if av and av != t.kind.api_version:
            raise bad_request(
                f"the API version in the data ({av}) does not match the expected API "
                f"version ({t.kind.api_version})"
            )
        if kind and kind != t.kind.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({t.kind.kind})"
            )
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = (meta or {}).get("namespace")
        if t.kind.namespaced and ns and t.namespace and ns != t.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )

    def _validate(self, t: Target, obj: Obj, old: Obj | None) -> None:
        errors = schema.validate(t.kind, obj, old)
        if errors:
            causes = [{"reason": e.type, "message": e.message, "field": e.field} for e in errors]
            raise invalid(t.kind.kind, (obj.get("metadata") or {}).get("name") or "", t.group, causes)

    async def create(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.kind.namespaced and t.namespace is None:
            raise method_not_allowed("POST")
        obj = await read_body(request)
        self._check_type(t, obj)
        target = request.get(AUDIT_TARGET)
        if target is not None:  # the audit log names what a create asked for, even when refused
            meta = obj.get("metadata") or {}
            request[AUDIT_TARGET] = (*target[:3], str(meta.get("name") or meta.get("generateName") or ""))
        obj = await self.prepare_create(t, obj, field_manager(request))
        return await self.commit_create(request, t, obj)

    async def prepare_create(self, t: Target, obj: Obj, manager: str) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(
                t.kind.kind,
                "",
                t.group,
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        objects.stamp_create(
            obj,
            api_version=t.kind.api_version,
            kind=t.kind.kind,
            namespace=t.namespace if t.kind.namespaced else None,
        )
        t = Target(t.kind, t.namespace, meta["name"], None)
        await self._check_namespace(t)
        if t.kind.prepare_create is not None:
            t.kind.prepare_create(obj)
        schema.apply_defaults(t.kind, obj)
        self._validate(t, obj, None)
        await self.admit(t, obj, None)
        apply.record_update(obj, None, manager, t.kind.api_version)
        return obj

    async def commit_create(self, request: web.Request, t: Target, obj: Obj) -> web.StreamResponse:
        name = obj["metadata"]["name"]
        if dry_run(request):
            if await self.store.get(self.key(t, name)) is not None:
                raise already_exists(t.resource, name, t.group)
            return self._render_one(request, t, obj, 201)
        finish = await t.kind.begin_create(self.store, obj) if t.kind.begin_create else None
        try:
            rev = await self.store.create(self.key(t, name), objects.encode(obj))
        except BaseException as e:
            if finish is not None:
                await finish(False)  # release what begin_create took
            if isinstance(e, KeyExists):
                raise already_exists(t.resource, name, t.group) from None
            raise
        obj["metadata"]["resourceVersion"] = str(rev)
        return self._render_one(request, t, obj, 201)

    async def update(self, request: web.Request, t: Target) -> web.StreamResponse:
        body = await read_body(request, protobuf_ok=True)
        self._check_type(t, body)
        name = (body.get("metadata") or {}).get("name")
        if name and name != t.name:
            raise bad_request(
                f"the name of the object ({name}) does not match the name on the URL ({t.name})"
            )
        body.setdefault("metadata", {})["name"] = t.name
        manager = field_manager(request)

        async def mutate(cur: Obj) -> Obj:
            new = copy.deepcopy(body)
            rv = new["metadata"].get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict(t.resource, t.name or "", t.group, STALE)
            return new

        return await self.update_with(
            request, t, mutate, manager, conditional=bool(body["metadata"].get("resourceVersion"))
        )

    async def patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        raw = await request.read()
        manager = field_manager(request)
        if ctype == APPLY_TYPE:
            if not request.query.get("fieldManager"):
                raise ApiError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                    "Required value: is required for apply patch",
                )
            return await apply.server_side_apply(
                self, request, t, raw, manager, force=truthy(request.query.get("force"))
            )
        if ctype not in PATCH_TYPES:
            raise unsupported_media_type(ctype)

        async def mutate(cur: Obj) -> Obj:
            try:
                new = schema.apply_patch(t.kind, copy.deepcopy(cur), raw, ctype)
            except schema.PatchError as e:
                raise ApiError(
                    422 if "invalid" in str(e).lower() else 400,
                    "BadRequest" if "invalid" not in str(e).lower() else "Invalid",
                    str(e),
                ) from None
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict(t.resource, t.name or "", t.group, STALE)
            return new

        return await self.update_with(request, t, mutate, manager, conditional=False)

    async def update_with(
        self,
        request: web.Request,
        t: Target,
        mutate: Mutate,
        manager: str,
        *,
        conditional: bool,
        operation: str = "Update",
    ) -> web.StreamResponse:
        obj = await self.update_object(
            t, mutate, manager, conditional=conditional, operation=operation, dry_run=dry_run(request)
        )
        return self._render_one(request, t, obj)

    async def update_object(
        self,
        t: Target,
        mutate: Mutate,
        manager: str,
        *,
        conditional: bool,
        operation: str = "Update",
        dry_run: bool = False,
    ) -> Obj:
        """Read, mutate, write with compare-and-swap; unconditional changes retry on a race.
        Returns the object as stored (or as it would be, for a dry run)."""
        for _ in range(20):
            kv = await self._get_kv(t)
            cur = objects.decode(kv)
            if (convert := converter(t.kind)) is not None:  # a custom kind's other version
                cur = convert(cur)
            new = await mutate(copy.deepcopy(cur))
            new = self.prepare_update(t, cur, new, manager, operation)
            if not t.sub:
                await self.admit(t, new, cur)
            if new == cur or dry_run:
                return new  # a no-op writes nothing (the resourceVersion stays), as upstream
            try:
                if deletion.finished(t.kind.kind, new):
                    gone = await self.store.delete(kv.key, kv.mod_revision)
                    new["metadata"]["resourceVersion"] = str(gone.mod_revision)
                else:
                    rev = await self.store.update(kv.key, objects.encode(new), kv.mod_revision)
                    new["metadata"]["resourceVersion"] = str(rev)
            except (RevisionConflict, KeyNotFound):
                if conditional:
                    raise conflict(t.resource, t.name or "", t.group, STALE) from None
                continue
            return new
        raise conflict(t.resource, t.name or "", t.group, "too many concurrent updates")

    def prepare_update(self, t: Target, cur: Obj, new: Obj, manager: str, operation: str) -> Obj:
        if t.sub == "status":
            # the status subresource changes status only
            merged = copy.deepcopy(cur)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif t.sub == "finalize":
            merged = copy.deepcopy(cur)
            merged.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers") or []
            new = merged
        elif "status" in t.kind.subresources:
            # the main resource cannot change status when a status subresource exists
            if "status" in cur:
                new["status"] = copy.deepcopy(cur["status"])
            else:
                new.pop("status", None)
        objects.stamp_update(new, cur)
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        schema.apply_defaults(t.kind, new)
        old = cur
        if t.sub == "binding":
            # binding is the one way to set spec.nodeName, which pod updates may not change
            old = copy.deepcopy(cur)
            old.setdefault("spec", {})["nodeName"] = (new.get("spec") or {}).get("nodeName")
        self._validate(Target(t.kind, t.namespace, t.name, None), new, old)
        if operation == "Update":
            apply.record_update(new, cur, manager, t.kind.api_version, t.sub or "")
        return new

    async def delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        body: Obj | None = None
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    body = bodies.json_value(raw)  # bounded depth, as every body
                except ValueError:
                    raise bad_request("DeleteOptions: invalid JSON body") from None
        opts = deletion.parse_options(body, dict(request.query))
        if dry_run(request):
            opts = deletion.DeleteOptions(opts.grace, opts.propagation, opts.uid, opts.resource_version, True)
        obj = await self.delete_one(t, opts)
        return self._render_one(request, t, obj)

    async def delete_one(self, t: Target, opts: deletion.DeleteOptions) -> Obj:
        for _ in range(20):
            kv = await self._get_kv(t)
            cur = objects.decode(kv)
            deletion.check_preconditions(cur, opts, t.resource, t.group)
            plan = deletion.plan(t.kind.kind, cur, opts)
            if opts.dry_run:
                return plan.obj
            try:
                if plan.remove:
                    gone = await self.store.delete(kv.key, kv.mod_revision)
                    out = copy.deepcopy(plan.obj)
                    out["metadata"]["resourceVersion"] = str(gone.mod_revision)
                    return out
                if plan.obj == cur:
                    return cur
                rev = await self.store.update(kv.key, objects.encode(plan.obj), kv.mod_revision)
            except (RevisionConflict, KeyNotFound):
                continue
            plan.obj["metadata"]["resourceVersion"] = str(rev)
            return plan.obj
        raise conflict(t.resource, t.name or "", t.group, "too many concurrent updates")

    async def delete_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        sel = self._selectors(request, t)
        opts = deletion.parse_options(None, dict(request.query))
        if dry_run(request):
            opts = deletion.DeleteOptions(opts.grace, opts.propagation, None, None, True)
        prefix = objects.key_prefix(t.group, t.resource, t.namespace if t.kind.namespaced else None)
        items, rev, _ = await self._list_page(prefix, sel, "", 0, 0, t, await self._view())
        out = []
        for obj in items:
            meta = obj["metadata"]
            one = Target(t.kind, meta.get("namespace"), meta["name"], None)
            try:
                out.append(await self.delete_one(one, opts))
            except ApiError as e:
                if e.code != 404:
                    raise
        body = {
            "kind": t.kind.kind + "List",
            "apiVersion": t.kind.api_version,
            "metadata": {"resourceVersion": str(rev)},
            "items": out,
        }
        return respond(body)
