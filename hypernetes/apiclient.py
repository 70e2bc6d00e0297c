"""A small async client of our API server, shared by the scheduler, controllers, node agents and tests.

HTTPS with the cluster CA pinned and a bearer token, JSON bodies; Status errors are raised as
`ApiException` with the server's code, reason and message. Watches yield `WatchEvent`s; a 410
Gone surfaces as `Expired` so the caller re-lists (`informer` does that by itself).

Resources are named as kubectl's REST mapping does: ("v1", "pods"), ("apps/v1", "deployments").
A `namespace` of None addresses cluster-scoped kinds or all namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import random
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yaml

from hypernetes.objects import Obj

MERGE_PATCH = "application/merge-patch+json"


class ApiException(Exception):
    def __init__(self, status: int, reason: str, message: str, body: Obj | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message, self.body = status, reason, message, body or {}


class Expired(ApiException):
    """410 Gone: the resourceVersion is too old; re-list."""


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Obj

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion", ""))


_GROUP_VERSION = re.compile(r"v1|[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z]([-a-z0-9]*[a-z0-9])?")
_RESOURCE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def segment(name: str) -> str:
    """A name as one segment of a request path, refused as client-go refuses it when it could be
    anything else: controllers and nodes build paths from names a tenant wrote into its objects
    (a scale target, a claim, a secret to mount), and "../../other-ns/secrets/x" must not
    become another object, read or written with their rights."""
    if name in (".", "..") or "/" in name or "%" in name:
        raise ApiException(
            400, "BadRequest", f"invalid resource name {name!r}: may not be '.', '..', or contain '/' or '%'"
        )
    return quote(name, safe="")


def path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    # the group/version and resource may come from a tenant's object too (an owner reference,
    # a scale target): only what can name one
    if not _GROUP_VERSION.fullmatch(api_version) or not _RESOURCE.fullmatch(plural):
        raise ApiException(400, "BadRequest", f"invalid resource {api_version!r} {plural!r}")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace and plural != "namespaces":
        base += f"/namespaces/{segment(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{segment(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


class ApiClient:
    def __init__(
        self,
        server: str,
        *,
        token: str,
        ca_file: Path | str | None = None,
        ca_data: bytes | None = None,
        user_agent: str = "hypernetes",
    ) -> None:
        self.server = server.rstrip("/")
        # only the cluster CA is trusted (pinned), never the system store
        self._ssl = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None, cadata=ca_data.decode() if ca_data else None
        )
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, *, context: str | None = None) -> ApiClient:
        """A client for a kubeconfig's current (or given) context: server, CA and token."""
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == (context or cfg["current-context"]))
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        ca_data = cluster.get("certificate-authority-data")
        return cls(
            cluster["server"],
            token=user["token"],
            ca_file=cluster.get("certificate-authority"),
            ca_data=base64.b64decode(ca_data) if ca_data else None,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                # no pool limit: each open watch holds a connection
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def set_token(self, token: str) -> None:
        """Use a renewed credential from the next request on (open watches keep their own)."""
        self._headers["Authorization"] = f"Bearer {token}"
        if self._session is not None and not self._session.closed:
            self._session.headers["Authorization"] = f"Bearer {token}"

    async def request(
        self,
        method: str,
        url_path: str,
        body: Obj | builtins.list[Any] | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        url = self.server + url_path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._http().request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
        ) as resp:
            payload = await resp.read()
            if resp.status >= 400:
                raise _error(resp.status, _json(payload))
            return _json(payload)

    # --- verbs -----------------------------------------------------------------------------------

    async def get(
        self,
        api_version: str,
        plural: str,
        name: str,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        return await self.request("GET", path(api_version, plural, namespace, name, subresource))

    async def get_or_none(
        self, api_version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        try:
            return await self.get(api_version, plural, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_: str = "",
    ) -> Obj:
        params = {
            k: v
            for k, v in (
                ("labelSelector", label_selector),
                ("fieldSelector", field_selector),
                ("limit", str(limit) if limit else ""),
                ("continue", continue_),
            )
            if v
        }
        return await self.request("GET", path(api_version, plural, namespace), params=params or None)

    async def create(
        self,
        api_version: str,
        plural: str,
        obj: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Obj:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return await self.request("POST", path(api_version, plural, ns, name, subresource), obj)

    async def replace(self, api_version: str, plural: str, obj: Obj, subresource: str | None = None) -> Obj:
        meta = obj["metadata"]
        url = path(api_version, plural, meta.get("namespace"), meta["name"], subresource)
        return await self.request("PUT", url, obj)

    async def patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Obj | builtins.list[Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Obj:
        url = path(api_version, plural, namespace, name, subresource)
        return await self.request("PATCH", url, patch, content_type=content_type)

    async def delete(
        self, api_version: str, plural: str, name: str, namespace: str | None = None, body: Obj | None = None
    ) -> Obj | None:
        """Delete; None if it was already gone."""
        try:
            return await self.request("DELETE", path(api_version, plural, namespace, name), body)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def delete_collection(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        body: Obj | None = None,
    ) -> Obj:
        params = {"labelSelector": label_selector} if label_selector else None
        return await self.request("DELETE", path(api_version, plural, namespace), body, params=params)

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int = 300,
        bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent]:
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        for key, value in (
            ("resourceVersion", resource_version),
            ("labelSelector", label_selector),
            ("fieldSelector", field_selector),
        ):
            if value:
                params[key] = value
        url = self.server + path(api_version, plural, namespace) + "?" + urlencode(params)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self._http().get(url, timeout=timeout) as resp:
            if resp.status >= 400:
                raise _error(resp.status, _json(await resp.read()))
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise _error(int(event["object"].get("code", 500)), event["object"])
                yield WatchEvent(event["type"], event["object"])

    async def informer(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> AsyncIterator[WatchEvent]:
        """List then watch forever, re-listing on 410 and reconnecting after errors.

        Yields WatchEvent("SYNC", list) after each (re-)list, then ADDED/MODIFIED/DELETED events.
        Failures back off as client-go's reflector does, so an API server in trouble (or one
        shedding load with 429s) is not hammered by every informer of every component at once.
        """
        backoff = RetryBackoff()
        while True:
            try:
                listed = await self.list(
                    api_version,
                    plural,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
                rv = listed["metadata"]["resourceVersion"]
                yield WatchEvent("SYNC", listed)
                while True:
                    async for ev in self.watch(
                        api_version,
                        plural,
                        namespace,
                        resource_version=rv,
                        label_selector=label_selector,
                        field_selector=field_selector,
                    ):
                        rv = ev.resource_version or rv
                        if ev.type != "BOOKMARK":
                            yield ev
            except Expired:
                continue
            except (aiohttp.ClientError, ApiException, TimeoutError, ConnectionError, ValueError):
                await asyncio.sleep(backoff.next_delay())


class RetryBackoff:
    """client-go's reflector back-off: 0.8 s doubling to 30 s, jittered up to 2x, and forgotten
    once the last failure is more than two minutes old (a healthy stretch)."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0, reset_after: float = 120.0) -> None:
        self.initial, self.cap, self.reset_after = initial, cap, reset_after
        self._delay = initial
        self._last_failure = float("-inf")

    def next_delay(self) -> float:
        now = time.monotonic()
        if now - self._last_failure > self.reset_after:
            self._delay = self.initial
        self._last_failure = now
        delay = self._delay
        self._delay = min(self._delay * 2, self.cap)
        return delay * (1 + random.random())


def _json(payload: bytes) -> Obj:
    try:
        obj = json.loads(payload) if payload else {}
    except ValueError:
        return {"message": payload[:200].decode(errors="replace")}
    return obj if isinstance(obj, dict) else {"items": obj}


def _error(status: int, body: Obj) -> ApiException:
    cls = Expired if status == 410 else ApiException
    return cls(status, str(body.get("reason", "")), str(body.get("message", "")), body)
