"""Which resources the API serves, from its discovery documents (/api/v1, /apis/G/V), for the
controllers that must handle every kind: namespace deletion and garbage collection."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypernetes.apiclient import ApiClient


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]


class ResourceDiscovery:
    """Discovery, cached for `ttl` seconds (kinds rarely change; new groups show up after it)."""

    def __init__(self, client: ApiClient, ttl: float = 30.0) -> None:
        self.client, self.ttl = client, ttl
        self._cache: list[Resource] = []
        self._at = 0.0

    async def resources(self) -> list[Resource]:
        if self._cache and time.monotonic() - self._at < self.ttl:
            return self._cache
        core = (await self.client.request("GET", "/api")).get("versions", [])
        gvs = ["v1"] if "v1" in core else []
        for group in (await self.client.request("GET", "/apis")).get("groups", []):
            preferred = (group.get("preferredVersion") or {}).get("groupVersion")
            if preferred:
                gvs.append(preferred)
        out: list[Resource] = []
        for gv in gvs:
            url = "/api/v1" if gv == "v1" else f"/apis/{gv}"
            for r in (await self.client.request("GET", url)).get("resources", []):
                if "/" in r["name"]:
                    continue  # a subresource
                out.append(
                    Resource(
                        gv, r["name"], r["kind"], bool(r.get("namespaced")), frozenset(r.get("verbs") or [])
                    )
                )
        self._cache, self._at = out, time.monotonic()
        return out

    async def by_kind(self, api_version: str, kind: str) -> Resource | None:
        for r in await self.resources():
            if r.api_version == api_version and r.kind == kind:
                return r
        # an owner reference may name another version of the group than the preferred one
        group = api_version.rpartition("/")[0]
        for r in await self.resources():
            if r.kind == kind and r.api_version.rpartition("/")[0] == group:
                return r
        return None
