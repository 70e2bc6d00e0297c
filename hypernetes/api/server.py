"""The API server: an aiohttp application and its TLS listener.

    app = create_app(store, authenticator=..., authorizer=..., pod_proxy=None)
    runner = await serve(app, "127.0.0.1", 6443, tls)     # ... await runner.cleanup()

Every request goes through one middleware: authenticate (401 Status), then the route, which
authorizes (403 Status) once it knows what is addressed; errors become metav1.Status bodies and
every request is counted in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hypernetes.api import eventttl, hpaversions, metricsapi, objects, reviews, schema
from hypernetes.api.audit import AUDIT_DETAIL, AUDIT_STARTED, CONNECT, AuditLog, audited, connect_detail
from hypernetes.api.authn import Authenticator, AuthUnavailable, UserInfo
from hypernetes.api.authz import Attributes, Authorizer, Decision, forbidden_message
from hypernetes.api.connections import ConnectionGate, ConnectionLimits, GatedSite, quiet_accept_errors
from hypernetes.api.crud import Resources
from hypernetes.api.customresources import requests as custom_requests
from hypernetes.api.customresources.informer import CustomResources
from hypernetes.api.discovery import Discovery
from hypernetes.api.fairness import FairnessConfig, FlowControl
from hypernetes.api.join import PUBLIC as JOIN_PUBLIC
from hypernetes.api.join import NodeJoin
from hypernetes.api.metrics import ConnectionMetrics, FlowControlMetrics, Metrics
from hypernetes.api.registry import startup
from hypernetes.api.registry.apiextensions.served import SERVED
from hypernetes.api.routing import (
    AUDIT_TARGET,
    CALLER,
    SCOPE,
    Target,
    error_response,
    parse_target,
    read_body,
    respond,
    truthy,
    verb_of,
)
from hypernetes.api.status import (
    ApiError,
    forbidden,
    internal,
    method_not_allowed,
    no_such_path,
    unauthorized,
)
from hypernetes.api.subresources import PodProxy, Subresources
from hypernetes.api.tenancy import Tenancy
from hypernetes.api.watch import WatchCaches
from hypernetes.auth.admission import LOCKED_CREATES, LOCKED_UPDATES, TenantAdmission
from hypernetes.auth.ca import TLSFiles
from hypernetes.auth.customkinds import NAMESPACED_CUSTOM
from hypernetes.metrics import CONTENT_TYPE, REGISTRY, exposition
from hypernetes.objects.names import DEFAULT_CLASS_ANNOTATION
from hypernetes.store.interface import Event, KeyExists, KeyValue, ListResult, Store, StoreUnavailable
from hypernetes.volumes.objects import LOCAL_DRIVER

log = logging.getLogger(__name__)

# authorized by their handlers, which know whose user a password or token belongs to
IDENTITY_PATHS = "/hypernetes/v1/"
# (joining: the CA, checked by its hash, and the join itself, authorized by its bootstrap token)
PUBLIC_PATHS = frozenset(("/healthz", "/livez", "/readyz", "/version", "/hypernetes/v1/login")) | JOIN_PUBLIC
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# the default StorageClass (docs/volumes.md): one sparse disk file per volume on a node
DEFAULT_STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "local", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
    "provisioner": LOCAL_DRIVER,
    "reclaimPolicy": "Delete",
    "allowVolumeExpansion": True,
    "volumeBindingMode": "Immediate",
    "parameters": {"fsType": "ext4", "format": "raw"},
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RESOURCE_ROUTES = frozenset(("/api/{version}/{tail}", "/apis/{group}/{version}/{tail}"))
USER = web.RequestKey("user", UserInfo)
METRIC = web.RequestKey("metric", tuple[str, str, str])
MAX_BODY = 3 * 1024 * 1024  # upstream's limit on a request body


class CountingStore(Store):
    """Counts store operations for /metrics; otherwise the wrapped store."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self.inner, self._ops = inner, metrics.store_ops
        # awaited after each write: the tenancy directory's mirrors apply it first (auth/directory.py)
        self.settle: Callable[[str, int], Awaitable[None]] | None = None

    async def get(self, key: str) -> KeyValue | None:
        self._ops["get"] += 1
        return await self.inner.get(key)

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        self._ops["list"] += 1
        return await self.inner.list(prefix, start_after=start_after, limit=limit, revision=revision)

    async def count(self, prefix: str) -> int:
        self._ops["count"] += 1
        return await self.inner.count(prefix)

    async def create(self, key: str, value: bytes) -> int:
        self._ops["create"] += 1
        rev = await self.inner.create(key, value)
        if self.settle is not None:
            await self.settle(key, rev)
        return rev

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        self._ops["update"] += 1
        rev = await self.inner.update(key, value, expected_revision)
        if self.settle is not None:
            await self.settle(key, rev)
        return rev

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        self._ops["delete"] += 1
        gone = await self.inner.delete(key, expected_revision)
        if self.settle is not None:
            await self.settle(key, gone.mod_revision)
        return gone

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        self._ops["watch"] += 1
        return self.inner.watch(prefix, from_revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact(self, revision: int) -> None:
        self._ops["compact"] += 1
        await self.inner.compact(revision)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class ApiServer:
    store: Store
    authenticator: Authenticator
    authorizer: Authorizer
    caches: WatchCaches
    resources: Resources
    subresources: Subresources
    discovery: Discovery
    metrics: Metrics

    admission: TenantAdmission | None = None
    audit: AuditLog | None = None
    custom: CustomResources | None = None  # the kinds of its CustomResourceDefinitions
    resource_metrics: metricsapi.ResourceMetrics | None = None

    async def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        decision = await self.authorizer.authorize(attrs)
        if not decision.allowed:
            details = None
            if attrs.resource_request:
                details = {"name": attrs.name, "kind": attrs.resource}
                if attrs.api_group:
                    details["group"] = attrs.api_group
            raise forbidden(
                forbidden_message(attrs) + (f": {decision.reason}" if decision.reason else ""), details
            )
        return decision

    async def resource(self, request: web.Request) -> web.StreamResponse:
        mi = request.match_info
        t = parse_target(mi.get("group", ""), mi["version"], mi["tail"])
        watch = "watch" in request.query and truthy(request.query.get("watch"))
        verb = verb_of(request.method, t, watch)
        connect = t.sub in ("exec", "attach", "portforward", "log")
        if connect and t.sub != "log":
            verb = "create"  # upstream authorizes these connect requests as create (since 1.30)
        request[METRIC] = ("CONNECT" if connect else verb.upper(), t.resource, t.sub or "")
        user = request[USER]
        request[AUDIT_TARGET] = (t.resource, t.sub or "", t.namespace or "", t.name or "")
        decision = await self.authorize(
            user,
            Attributes(
                user,
                verb,
                True,
                request.path,
                t.group,
                t.kind.version,
                t.resource,
                t.sub or "",
                t.namespace or "",
                t.name or "",
            ),
        )
        if decision.scope is not None:
            request[SCOPE] = decision.scope
        if t.kind in schema.REVIEW_KINDS:
            if request.method != "POST":
                raise method_not_allowed(request.method)
            return respond(await reviews.answer(t.kind, await read_body(request), user, self.authorizer), 201)
        if metricsapi.served(t.kind):  # metrics.k8s.io: from memory, never stored
            return await metricsapi.handle(self.resource_metrics, request, t, verb)
        if hpaversions.served(t):  # autoscaling/v1: converted to and from the stored v2
            return await hpaversions.handle(self, request, t, verb, user)
        served = self.custom.kinds.info(t.kind) if self.custom is not None else None
        if served is not None:  # a custom resource: what differs from built-in kinds
            custom_requests.check(request, t)
            if t.sub == "scale" and served.scale is not None:
                return await custom_requests.scale(self.resources, request, t, served.scale)
        if t.sub:
            return await self.subresources.handle(request, t)
        lock = None
        # quota: creates of counted kinds, and updates that may take more, take the tenant's lock
        quota_kinds = (
            LOCKED_CREATES
            if verb == "create"
            else LOCKED_UPDATES
            if verb in ("update", "patch")
            else frozenset()
        )
        if self.admission is not None and (
            t.kind.kind in quota_kinds or (served is not None and verb == "create")
        ):
            lock = await self.admission.lock_for(user, t.namespace)
        if lock is None:
            resp = await self._dispatch(request, t, verb)
        else:
            async with lock:  # quota: no other create of this tenant between its check and its write
                resp = await self._dispatch(request, t, verb)
        if self.custom is not None:
            await custom_requests.finish(self.custom, self.store, t, verb, resp)
        return resp

    async def _dispatch(self, request: web.Request, t: Target, verb: str) -> web.StreamResponse:
        if verb not in t.kind.verbs:
            raise method_not_allowed(request.method)
        r = self.resources
        handlers: dict[str, Callable[[web.Request, Target], Awaitable[web.StreamResponse]]] = {
            "get": r.get,
            "list": r.list_,
            "watch": r.watch,
            "create": r.create,
            "update": r.update,
            "patch": r.patch,
            "delete": r.delete,
            "deletecollection": r.delete_collection,
        }
        handler = handlers.get(verb)
        if handler is None or (verb == "create" and t.name):
            raise method_not_allowed(request.method)
        return await handler(request, t)

    async def metrics_text(self, request: web.Request) -> web.Response:
        """This server's metrics and the process's (hypernetes.metrics: every other component)."""
        app = request.app
        gate = [ConnectionMetrics(app[CONNECTIONS])] if CONNECTIONS in app else []
        text = exposition(self.metrics.registry, FlowControlMetrics(app[FAIRNESS]), *gate, REGISTRY)
        return web.Response(
            body=text, headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"}
        )

    @staticmethod
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def not_found(self, request: web.Request) -> web.Response:
        raise no_such_path()

    # -- the middleware ------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.monotonic()
        resp: web.StreamResponse
        if self.custom is not None:
            SERVED.set(self.custom.kinds)  # this server's custom kinds, for this request
            NAMESPACED_CUSTOM.set(self.custom.kinds.namespaced)  # and for its authorizer
        try:
            if request.path not in PUBLIC_PATHS:
                try:
                    user = await self.authenticator.authenticate(request.headers)
                except AuthUnavailable as e:
                    raise ApiError(503, "ServiceUnavailable", f"cannot authenticate: {e}") from None
                if user is None:
                    raise unauthorized()
                request[USER] = user
                CALLER.set(user)
                route = request.match_info.route.resource
                if not request.path.startswith(IDENTITY_PATHS) and (
                    route is None or route.canonical not in RESOURCE_ROUTES
                ):
                    # discovery, OpenAPI, metrics: authorized by path; resources once parsed
                    await self.authorize(user, Attributes(user, request.method.lower(), False, request.path))
            if self.audit is not None:  # streams record their start (they may last for hours)
                request[AUDIT_STARTED] = lambda: self._audit(request, 101, "ResponseStarted")
            try:
                resp = await handler(request)
            except asyncio.CancelledError:
                if self._audited(request):  # the client left mid-stream: still on record
                    self._audit(request, 499)
                raise
        except ApiError as e:
            resp = error_response(e)
        except StoreUnavailable as e:  # no etcd quorum or member: the client retries later
            resp = error_response(ApiError(503, "ServiceUnavailable", str(e), retry_after=1))
        except web.HTTPNotFound:
            resp = error_response(no_such_path())
        except web.HTTPMethodNotAllowed:
            resp = error_response(method_not_allowed(request.method))
        except web.HTTPException as e:
            if e.status < 400:
                raise
            # aiohttp's own refusals (413 body too large, ...) as Status objects too
            reason = {413: "RequestEntityTooLarge"}.get(e.status, e.reason.replace(" ", ""))
            resp = error_response(ApiError(e.status, reason, e.text or e.reason))
        except Exception as e:
            log.exception("%s %s failed", request.method, request.path)
            resp = error_response(internal(str(e)))
        verb, resource, sub = request.get(METRIC, (request.method, "", ""))
        self.metrics.observe(verb, resource, sub, resp.status, time.monotonic() - start)
        if self._audited(request):
            self._audit(request, resp.status)
        return resp

    def _audited(self, request: web.Request) -> bool:
        """Writes, and every exec/attach/port-forward whatever its method (a WebSocket is a GET)."""
        sub = request.get(AUDIT_TARGET, ("", ""))[1] or request.path.rstrip("/").rsplit("/", 1)[-1]
        return self.audit is not None and audited(request.method, sub)  # (no target: refused unauthenticated)

    def _audit(self, request: web.Request, code: int, stage: str = "ResponseComplete") -> None:
        assert self.audit is not None
        user = request.get(USER)
        resource, sub, ns, name = request.get(AUDIT_TARGET, ("", "", "", ""))
        tenant = user.tenant if user is not None and user.tenant else ""
        if not tenant and ns and self.admission is not None:
            tenant = self.admission.d.namespace_owner(ns) or ""
        verb = request.get(METRIC, (request.method,))[0].lower()
        detail = request.get(AUDIT_DETAIL)
        if sub in CONNECT:
            detail = {**connect_detail(request), **(detail or {})}
        self.audit.record(
            user=user,
            tenant=tenant,
            verb=verb,
            path=request.path,
            resource=resource,
            subresource=sub,
            namespace=ns,
            name=name,
            code=code,
            source=request.remote or "",
            stage=stage,
            detail=detail,
            query=request.query_string,
        )


APP_KEY = web.AppKey("hypernetes.api", ApiServer)
EVENT_TTL = web.AppKey("hypernetes.api.event_ttl", float)
SWEEPER = web.AppKey("hypernetes.api.event_sweeper", asyncio.Task[None])
SCRAPER = web.AppKey("hypernetes.api.metrics_scraper", asyncio.Task[None])


TENANCY = web.AppKey("hypernetes.api.tenancy", Tenancy)
FAIRNESS = web.AppKey("hypernetes.api.fairness", FlowControl)
CONNECTIONS = web.AppKey("hypernetes.api.connections", ConnectionGate)


def create_app(
    store: Store,
    *,
    authenticator: Authenticator,
    authorizer: Authorizer,
    pod_proxy: PodProxy | None,
    bookmark_every: float = 60.0,
    watch_queue_limit: int = 1000,
    event_ttl: float = 3600.0,
    tenancy: Tenancy | None = None,
    audit: AuditLog | None = None,
    fairness: FairnessConfig | None = None,
    node_join: NodeJoin | None = None,
) -> web.Application:
    """The API server application over `store`. Default namespaces are created on startup;
    events older than `event_ttl` seconds are deleted (0: never); `fairness`: per-tenant flow
    control limits (hypernetes.api.fairness)."""
    metrics = Metrics()
    counted = CountingStore(store, metrics)
    caches = WatchCaches(counted, queue_limit=watch_queue_limit)
    admission = tenancy.admission if tenancy is not None else None
    resources = Resources(counted, caches, bookmark_every=bookmark_every, admission=admission)
    custom = CustomResources(counted)
    issuer = tenancy.issuer if tenancy is not None else None
    server = ApiServer(
        counted,
        authenticator,
        authorizer,
        caches,
        resources,
        Subresources(resources, pod_proxy, issuer),
        Discovery(custom.kinds),
        metrics,
        admission,
        audit,
        custom,
    )
    metrics.gauges["apiserver_registered_watchers"] = lambda: float(caches.watchers)
    # usage from the nodes (metrics.k8s.io) when the pod proxy can reach them
    server.resource_metrics = metricsapi.ResourceMetrics(counted, metricsapi.stats_source(pod_proxy))
    flow = FlowControl(fairness or FairnessConfig(), lambda r: r.get(USER))
    # the gate counts what authentication costs, the server's middleware authenticates, then a
    # request waits for its flow's turn (hypernetes.api.fairness)
    app = web.Application(
        middlewares=[flow.gate, server.middleware, flow.middleware], client_max_size=MAX_BODY
    )
    app.on_response_prepare.append(flow.on_response_prepare)
    app[FAIRNESS] = flow
    app[APP_KEY] = server
    app[EVENT_TTL] = event_ttl
    if tenancy is not None:
        app[TENANCY] = tenancy
        counted.settle = tenancy.directory.settled
        tenancy.identity.add_to(app)
    if node_join is not None:  # hosts join as nodes (`hypernetes node join`)
        node_join.add_to(app)
    d = server.discovery
    app.router.add_get("/healthz", server.ok)
    app.router.add_get("/livez", server.ok)
    app.router.add_get("/readyz", server.ok)
    app.router.add_get("/version", d.version)
    app.router.add_get("/metrics", server.metrics_text)
    app.router.add_get("/api", d.api)
    app.router.add_get("/apis", d.apis)
    app.router.add_get("/api/{version}", d.core_version)
    app.router.add_get("/apis/{group}", d.group)
    app.router.add_get("/apis/{group}/{version}", d.group_version)
    app.router.add_route("*", "/api/{version}/{tail:.+}", server.resource)
    app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", server.resource)
    app.router.add_get("/openapi/v2", d.openapi_v2)
    app.router.add_get("/openapi/v3", d.openapi_v3_index)
    app.router.add_get("/openapi/v3/{path:.+}", d.openapi_v3_doc)
    app.router.add_route("*", "/{tail:.*}", server.not_found)
    app.on_startup.append(_bootstrap)
    app.on_cleanup.append(_cleanup)
    return app


async def _bootstrap(app: web.Application) -> None:
    server = app[APP_KEY]
    if TENANCY in app:
        await app[TENANCY].directory.start()
    if server.custom is not None:
        await server.custom.start()
    from hypernetes.api import schema

    kind = schema.kind_for("", "v1", "namespaces")
    classes = schema.kind_for("storage.k8s.io", "v1", "storageclasses")
    assert kind is not None and classes is not None
    wanted: list[tuple[Target, dict[str, Any]]] = [
        (Target(kind, None, name, None), {"metadata": {"name": name}}) for name in DEFAULT_NAMESPACES
    ]
    wanted.append((Target(classes, None, "local", None), copy.deepcopy(DEFAULT_STORAGE_CLASS)))
    for t, body in wanted:
        if await server.store.get(server.resources.key(t)) is not None:
            continue
        obj = await server.resources.prepare_create(t, body, "hypernetes")
        with contextlib.suppress(KeyExists):  # another server process made it
            await server.store.create(server.resources.key(t), objects.encode(obj))
    await startup.ensure(server.store, server.resources)  # built-in ClusterRoles, local APIServices
    if app[EVENT_TTL] > 0:
        app[SWEEPER] = asyncio.create_task(eventttl.run(server.store, app[EVENT_TTL]), name="event-ttl")
    if server.resource_metrics is not None:
        app[SCRAPER] = asyncio.create_task(server.resource_metrics.run(), name="metrics-scraper")


async def _cleanup(app: web.Application) -> None:
    for task in (app.get(SWEEPER), app.get(SCRAPER)):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    custom = app[APP_KEY].custom
    if custom is not None:
        await custom.stop()
    await app[APP_KEY].caches.close()
    if TENANCY in app:
        await app[TENANCY].directory.stop()
    audit = app[APP_KEY].audit
    if audit is not None:
        audit.close()


def server_ssl_context(tls: TLSFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


async def serve(
    app: web.Application, host: str, port: int, tls: TLSFiles, limits: ConnectionLimits | None = None
) -> web.AppRunner:
    """Listen with TLS on host:port (0 = any free port; see `bound_port`), connections bounded by
    `limits` (hypernetes.api.connections). Stop with `await runner.cleanup()`."""
    limits = limits or ConnectionLimits()
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=limits.idle_timeout,
    )
    gate = ConnectionGate(limits, server_ssl_context(tls), lambda: runner.server())  # type: ignore[misc]
    app.middlewares.insert(0, gate.track)
    gate.precedence = app[FAIRNESS].precedence if FAIRNESS in app else None
    app[CONNECTIONS] = gate
    await runner.setup()
    _freeze_heap()
    quiet_accept_errors(asyncio.get_running_loop(), gate.shed)
    await GatedSite(runner, host, port, gate=gate, backlog=512).start()
    return runner


_frozen = False


FULL_COLLECTION_EVERY = 100  # young-generation collections between full ones (CPython: 10)


def _freeze_heap() -> None:
    """Full collections stop every tenant's request for as long as they walk the heap. What
    exists once the first server is set up (schemas, routes, the tenancy directory) lives as long
    as the process: keep it out of them (their pauses beside a flood went from 40-70 ms to 15-24
    ms). And run them a tenth as often: beside a flood of 64 callers and 100 watches they came
    every 3-4 s for 10-26 ms of CPU each (issue 12); the cyclic garbage they would have freed
    meanwhile is a few MB at most. Once per process (tests start many servers)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        young, middle, full = gc.get_threshold()
        gc.set_threshold(young, middle, max(full, FULL_COLLECTION_EVERY))


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])
