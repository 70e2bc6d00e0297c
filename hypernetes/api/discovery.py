"""Discovery and OpenAPI: /api, /apis (aggregated v2/v2beta1 when asked, legacy otherwise),
/api/v1 and /apis/G/V (APIResourceList), /apis/G (APIGroup), /version, /openapi/v2 and
/openapi/v3 (index + one document per group version). All derived from the registry's entries
(hypernetes/api/registry), subresources included, computed once per server.
"""

from __future__ import annotations

import platform

from aiohttp import web

from hypernetes import __version__ as hn_version
from hypernetes.api import openapiv2pb, registry, schema
from hypernetes.api.customresources.kinds import CustomKinds
from hypernetes.api.customresources.openapi import CustomOpenAPI
from hypernetes.api.routing import parse_accept, respond
from hypernetes.api.status import no_such_path, not_acceptable
from hypernetes.objects import Obj

K8S_VERSION = (1, 32)  # the Kubernetes API level we follow
AGG_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGG_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def _aggregated_version(wanted: str | None) -> str | None:
    """ "v2"/"v2beta1" if the Accept header prefers aggregated discovery, else None."""
    for mt in parse_accept(wanted):
        if mt.params.get("as") == "APIGroupDiscoveryList" and mt.params.get("g") == "apidiscovery.k8s.io":
            if mt.params.get("v") in ("v2", "v2beta1"):
                return mt.params["v"]
            continue
        return None
    return None


def _sub_kind(kind: registry.Kind, sub: str) -> Obj:
    return registry.SUBRESOURCES[sub].gvk(kind.group, kind.version, kind.kind)


def _sub_verbs(sub: str) -> list[str]:
    return list(registry.SUBRESOURCES[sub].verbs)


class Discovery:
    """`custom`: the server's CustomResourceDefinitions' kinds, served after the built-in ones
    (discovery and OpenAPI are rebuilt when they change)."""

    def __init__(self, custom: CustomKinds | None = None) -> None:
        self.custom = custom or CustomKinds()
        self.custom_openapi = CustomOpenAPI(self.custom)
        self._generation = -1
        self._openapi_v2_pb: bytes | None = None
        self._refresh()

    def _refresh(self) -> None:
        if self._generation == self.custom.generation:
            return
        self._generation = self.custom.generation
        self.kinds = [*registry.KINDS, *self.custom.kinds()]
        self.group_versions: dict[str, list[registry.Kind]] = {}
        for k in self.kinds:
            self.group_versions.setdefault(k.api_version, []).append(k)
        self._openapi_v2_pb = None

    # -- aggregated ----------------------------------------------------------------------------

    def _agg_resource(self, k: registry.Kind) -> Obj:
        r: Obj = {
            "resource": k.plural,
            "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
            "scope": "Namespaced" if k.namespaced else "Cluster",
            "singularResource": k.singular,
            "verbs": sorted(k.verbs),
        }
        if k.short_names:
            r["shortNames"] = list(k.short_names)
        if k.categories:
            r["categories"] = list(k.categories)
        subs = [
            {"subresource": s, "responseKind": _sub_kind(k, s), "verbs": _sub_verbs(s)}
            for s in k.subresources
        ]
        if subs:
            r["subresources"] = subs
        return r

    def aggregated(self, legacy: bool, version: str) -> Obj:
        self._refresh()
        groups: dict[str, list[str]] = {}
        for gv in self.group_versions:
            group = gv.split("/")[0] if "/" in gv else ""
            if (group == "") == legacy:
                groups.setdefault(group, []).append(gv)
        items = []
        for group, gvs in groups.items():
            versions = [
                {
                    "version": gv.split("/")[-1],
                    "freshness": "Current",
                    "resources": [self._agg_resource(k) for k in self.group_versions[gv]],
                }
                for gv in gvs
            ]
            meta: Obj = {"creationTimestamp": None}
            if group:
                meta["name"] = group
            items.append({"metadata": meta, "versions": versions})
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {},
            "items": items,
        }

    # -- legacy --------------------------------------------------------------------------------

    def resource_list(self, gv: str) -> Obj:
        self._refresh()
        kinds = self.group_versions.get(gv)
        if kinds is None:
            raise no_such_path()
        resources = []
        for k in kinds:
            r: Obj = {
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": sorted(k.verbs),
            }
            if k.short_names:
                r["shortNames"] = list(k.short_names)
            if k.categories:
                r["categories"] = list(k.categories)
            resources.append(r)
            for s in k.subresources:
                sk = _sub_kind(k, s)
                sub: Obj = {
                    "name": f"{k.plural}/{s}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": sk["kind"],
                    "verbs": _sub_verbs(s),
                }
                if sk["group"] != k.group:
                    sub["group"], sub["version"] = sk["group"], sk["version"]
                resources.append(sub)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def api_group(self, group: str) -> Obj:
        self._refresh()
        gvs = [gv for gv in self.group_versions if gv.split("/")[0] == group and "/" in gv]
        if not gvs:
            raise no_such_path()
        versions = [{"groupVersion": gv, "version": gv.split("/")[1]} for gv in gvs]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": versions,
            "preferredVersion": versions[0],
        }

    def group_list(self) -> Obj:
        groups = []
        seen: set[str] = set()
        for gv in self.group_versions:
            if "/" in gv and (g := gv.split("/")[0]) not in seen:
                seen.add(g)
                groups.append({k: v for k, v in self.api_group(g).items() if k not in ("kind", "apiVersion")})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    # -- handlers ------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
        v = _aggregated_version(request.headers.get("Accept"))
        if v:
            return respond(self.aggregated(True, v), content_type=AGG_V2 if v == "v2" else AGG_V2BETA1)
        host = request.host or "127.0.0.1"
        return respond(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    async def apis(self, request: web.Request) -> web.Response:
        v = _aggregated_version(request.headers.get("Accept"))
        if v:
            return respond(self.aggregated(False, v), content_type=AGG_V2 if v == "v2" else AGG_V2BETA1)
        return respond(self.group_list())

    async def core_version(self, request: web.Request) -> web.Response:
        return respond(self.resource_list(request.match_info["version"]))

    async def group(self, request: web.Request) -> web.Response:
        return respond(self.api_group(request.match_info["group"]))

    async def group_version(self, request: web.Request) -> web.Response:
        return respond(self.resource_list(f"{request.match_info['group']}/{request.match_info['version']}"))

    async def version(self, request: web.Request) -> web.Response:
        major, minor = K8S_VERSION
        return respond(
            {
                "major": str(major),
                "minor": str(minor),
                "gitVersion": f"v{major}.{minor}.0-hypernetes",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "1970-01-01T00:00:00Z",
                "goVersion": f"python{platform.python_version()}",
                "compiler": "cpython",
                "platform": f"linux/{platform.machine()}",
                "hypernetesVersion": hn_version,
            }
        )

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        index = schema.openapi_v3_index()
        index["paths"].update(self.custom_openapi.index_paths())
        return respond(index)

    async def openapi_v3_doc(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        custom = self.custom_openapi.v3(path)
        try:
            body, digest = custom if custom is not None else (schema.openapi_v3_bytes(path), "")
        except KeyError:
            raise no_such_path() from None
        resp = web.Response(body=body, content_type="application/json")
        if request.query.get("hash") == (digest or schema.openapi_v3_hash(path)):
            resp.headers["Cache-Control"] = "public, immutable"  # the hash names this exact document
        return resp

    async def openapi_v2(self, request: web.Request) -> web.Response:
        types = [mt.type for mt in parse_accept(request.headers.get("Accept"))]
        self._refresh()
        if any("protobuf" in t for t in types):
            # kubectl 1.27/1.28 validate and compute patches from this (newer ones use v3)
            if self._openapi_v2_pb is None:
                self._openapi_v2_pb = openapiv2pb.document(self.custom_openapi.v2(schema.openapi_v2()))
            resp = web.Response(body=self._openapi_v2_pb)
            resp.headers["Content-Type"] = openapiv2pb.MEDIA_TYPE
            return resp
        if types and not any(t in ("application/json", "*/*") for t in types):
            raise not_acceptable(request.headers.get("Accept", ""))
        return respond(self.custom_openapi.v2(schema.openapi_v2()))
