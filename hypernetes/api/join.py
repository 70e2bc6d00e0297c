"""How a host becomes a node, beside the Kubernetes API (JSON in, JSON or Status out):

    GET  /cacerts                              the cluster CA (PEM), unauthenticated: the joining
                                               host checks it against the hash in its join token
    POST /hypernetes/v1/nodes/join             {nodeName, csr, addresses?}; Authorization: Bearer
                                               <bootstrap token id.secret> (`hypernetes token create`)
    POST /hypernetes/v1/nodes/{name}/credential {csr, addresses?}; the node's own credential: renew it

Both answer {token, expirationTimestamp, certificate, caCertificate}: a node token (held by
NodeRestriction to its own Node, pods and Lease) that lives `NODE_TOKEN_TTL` and is renewed by
the node before it expires, and the serving certificate of the node's server signed from the
node's key (auth/nodecerts.py). A bootstrap token cannot take the name of a node that is alive
(its Lease renewed within `LIVE_LEASE` seconds): it would get that node's identity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from typing import Any

from aiohttp import web

from hypernetes.api.authn import bearer_token
from hypernetes.api.identity import token_body
from hypernetes.api.routing import AUDIT_TARGET, CALLER, read_body, respond
from hypernetes.api.schema.formats import dns1123_subdomain
from hypernetes.api.status import ApiError, bad_request, forbidden, unauthorized
from hypernetes.auth import jointoken
from hypernetes.auth.builtin import BuiltinIdentity
from hypernetes.auth.ca import ClusterCA
from hypernetes.auth.nodecerts import BadCSR, sign_node_serving
from hypernetes.objects import Obj
from hypernetes.store.interface import Store
from hypernetes.store.keys import object_key

NODE_TOKEN_TTL = 24 * 3600.0
LIVE_LEASE = 40.0  # upstream's node-monitor-grace-period
PUBLIC = frozenset(("/cacerts", "/hypernetes/v1/nodes/join"))
MAX_ADDRESSES = 8


class NodeJoin:
    def __init__(self, store: Store, issuer: BuiltinIdentity, ca: ClusterCA) -> None:
        self.store, self.issuer, self.ca = store, issuer, ca

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/cacerts", self.cacerts)
        app.router.add_post("/hypernetes/v1/nodes/join", self.join)
        app.router.add_post("/hypernetes/v1/nodes/{name}/credential", self.renew)

    async def cacerts(self, request: web.Request) -> web.Response:
        return web.Response(body=self.ca.ca_cert.read_bytes(), content_type="application/x-pem-file")

    async def join(self, request: web.Request) -> web.Response:
        body = await read_body(request, protobuf_ok=False)
        name = _node_name(body.get("nodeName"))
        request[AUDIT_TARGET] = ("nodes", "join", "", name)
        parts = jointoken.split_bootstrap(bearer_token(request.headers) or "")
        if parts is None or not jointoken.valid_for(
            await self._get("", "secrets", *_secret_at(parts[0])), *parts
        ):
            raise unauthorized("a valid, unexpired bootstrap token is required to join")
        if await self._alive(name):
            raise ApiError(
                409,
                "AlreadyExists",
                f'a node named "{name}" is running (its lease is renewed): choose another --node-name, '
                "or stop that node first",
            )
        return respond(self._credential(name, body), 201)

    async def renew(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        caller = CALLER.get()
        if caller is None:
            raise unauthorized()
        if caller.node != name:
            raise forbidden(f'only node "{name}" may renew its own credential')
        body = await read_body(request, protobuf_ok=False)
        request[AUDIT_TARGET] = ("nodes", "credential", "", name)
        return respond(self._credential(name, body), 201)

    def _credential(self, name: str, body: Obj) -> Obj:
        csr = body.get("csr")
        if not isinstance(csr, str):
            raise bad_request("csr is required: the PEM certificate request of the node server's key")
        try:
            cert = sign_node_serving(self.ca, name, csr, _addresses(body.get("addresses")))
        except BadCSR as e:
            raise bad_request(f"csr: {e}") from None
        return {
            **token_body(self.issuer.issue_node(name, NODE_TOKEN_TTL)),
            "certificate": cert.decode(),
            "caCertificate": self.ca.ca_cert.read_text(),
        }

    async def _get(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        kv = await self.store.get(object_key(group, plural, namespace, name))
        return None if kv is None else json.loads(kv.value)

    async def _alive(self, name: str) -> bool:
        lease = await self._get("coordination.k8s.io", "leases", "kube-node-lease", name)
        renewed = ((lease or {}).get("spec") or {}).get("renewTime")
        if not isinstance(renewed, str):
            return False
        try:
            when = dt.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
        except ValueError:
            return False
        return (dt.datetime.now(dt.UTC) - when).total_seconds() < LIVE_LEASE


def _secret_at(token_id: str) -> tuple[str, str]:
    return jointoken.NAMESPACE, jointoken.secret_name(token_id)


def _node_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("nodeName is required")
    problems = dns1123_subdomain(value)
    if problems:
        raise bad_request(f"nodeName: Invalid value: {value!r}: {'; '.join(problems)}")
    return value


def _addresses(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ADDRESSES:
        raise bad_request(f"addresses must be a list of at most {MAX_ADDRESSES} IP addresses")
    out = []
    for a in value:
        try:
            out.append(str(ipaddress.ip_address(a)))
        except (ValueError, TypeError):
            raise bad_request(f"addresses: Invalid value: {a!r}: not an IP address") from None
    return out
