"""Turning a request into what it addresses and how it wants its answer: the resource path
(`/api/v1/namespaces/NS/pods/NAME/SUB`), the verb, the body's media type and the Accept header.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass

import yaml
from aiohttp import web

from hypernetes.api import bodies, schema
from hypernetes.api.protobuf import PROTOBUF, decode_protobuf
from hypernetes.api.status import ApiError, bad_request, no_such_path, unsupported_media_type
from hypernetes.auth.identity import UserInfo
from hypernetes.objects import Obj

JSON_CT = "application/json"
TABLE_CT = "application/json;as=Table;v=v1;g=meta.k8s.io"
PARTIAL_CT = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
PARTIAL_LIST_CT = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
GZIP_ABOVE = 128 * 1024  # kube-apiserver compresses responses above 128 KiB


# The authenticated caller of the request being served (None: the server itself), for admission.
CALLER: ContextVar[UserInfo | None] = ContextVar("caller", default=None)

# (resource, subresource, namespace, name) a request addressed, for the audit log.
AUDIT_TARGET = web.RequestKey("audit_target", tuple[str, str, str, str])

# What the authorizer lets this request see of a list or watch (None: everything it addresses).
SCOPE = web.RequestKey("scope", object)

# Served for every kind that declares exec (pods) until the schema package declares them too.
STREAMS_WITH_EXEC = ("attach", "portforward")


@dataclass(frozen=True)
class Target:
    """What a resource request addresses."""

    kind: schema.Kind
    namespace: str | None  # from the path; None for cluster-scoped kinds or all namespaces
    name: str | None
    sub: str | None  # subresource: "status", "scale", "log", "exec", "binding", "finalize", ...

    @property
    def resource(self) -> str:
        return str(self.kind.plural)

    @property
    def group(self) -> str:
        return str(self.kind.group)


def parse_target(group: str, version: str, tail: str) -> Target:
    """`tail` is the path after `/api/v1/` or `/apis/G/V/`."""
    segs = [s for s in tail.split("/") if s] if tail else []
    if not segs:
        raise no_such_path()
    ns: str | None = None
    if segs[0] == "namespaces" and len(segs) >= 3:
        kind = schema.kind_for(group, version, segs[2])
        if kind is not None and kind.namespaced:
            ns, segs = segs[1], segs[2:]
    if len(segs) > 3:
        raise no_such_path()
    kind = schema.kind_for(group, version, segs[0])
    if kind is None:
        raise no_such_path()
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if kind.namespaced and name is not None and ns is None:
        raise no_such_path()  # a namespaced object is only addressed within its namespace
    if (
        sub is not None
        and sub not in kind.subresources
        and not (sub in STREAMS_WITH_EXEC and "exec" in kind.subresources)
    ):
        raise no_such_path()
    return Target(kind, ns, name, sub)


def verb_of(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        if watch:
            return "watch"
        return "get" if target.name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return method.lower()


def truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "")


def dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise bad_request(f'unsupported dry run value "{v}" (supported: All)')
    return bool(values)


def field_manager(request: web.Request) -> str:
    m = request.query.get("fieldManager")
    if m:
        if len(m) > 128:
            raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
        return m
    ua = request.headers.get("User-Agent", "unknown")
    return ua.split("/")[0] or "unknown"  # upstream's default: the user agent's program name


# -- media types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaType:
    type: str
    params: dict[str, str]


def parse_accept(header: str | None) -> list[MediaType]:
    out = []
    for part in (header or "").split(","):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params = {}
        for b in bits[1:]:
            k, _, v = b.partition("=")
            params[k.strip()] = v.strip()
        out.append(MediaType(bits[0].lower(), params))
    return out


def wants(header: str | None, as_: str) -> bool:
    """True if the Accept header asks for a meta.k8s.io `as=` rendering (Table, PartialObjectMetadata)
    in a version we serve, before any plain form."""
    for mt in parse_accept(header):
        if (
            mt.params.get("as") == as_
            and mt.params.get("g") == "meta.k8s.io"
            and mt.params.get("v") in ("v1", "v1beta1")
        ):
            return True
        if "as" not in mt.params:
            return False
    return False


YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def wants_yaml(header: str | None) -> bool:
    mts = parse_accept(header)
    return bool(mts) and mts[0].type in YAML_TYPES


def respond(
    body: Obj, status: int = 200, content_type: str = JSON_CT, accept: str | None = None
) -> web.Response:
    if content_type == JSON_CT and wants_yaml(accept):
        return web.Response(
            status=status,
            body=yaml.safe_dump(body, sort_keys=False).encode(),
            content_type="application/yaml",
        )
    data = json.dumps(body, separators=(",", ":")).encode()
    resp = web.Response(status=status, body=data)
    resp.headers["Content-Type"] = content_type
    if len(data) > GZIP_ABOVE:
        resp.enable_compression()  # gzip when the client accepts it (kubectl does), as upstream
    return resp


def error_response(err: ApiError) -> web.Response:
    resp = respond(err.status(), err.code)
    if err.retry_after:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp


async def read_body(request: web.Request, *, protobuf_ok: bool = True) -> Obj:
    """A create/update body as a dict: JSON (also without a Content-Type, as the Python client
    sends), YAML, or the Kubernetes protobuf envelope for the kinds kubectl's generators build.
    Decoding is bounded (hypernetes.api.bodies): depth, YAML alias expansion, off the loop when big."""
    raw = await request.read()
    ctype = (request.headers.get("Content-Type") or JSON_CT).split(";")[0].strip().lower()
    if ctype == PROTOBUF and protobuf_ok:
        return decode_protobuf(raw)
    if ctype in (JSON_CT, "*/*", ""):
        decode = bodies.json_value
    elif ctype in YAML_TYPES:
        decode = bodies.yaml_value
    else:
        raise unsupported_media_type(ctype)
    try:
        obj = await bodies.off_loop(decode, raw)
    except bodies.BodyError as e:
        raise bad_request(
            f"couldn't get version/kind; {e}" if decode is bodies.json_value else str(e)
        ) from None
    if not isinstance(obj, dict):
        raise bad_request("Object 'Kind' is missing in the request body: expected a JSON object")
    return obj
