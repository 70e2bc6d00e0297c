"""TokenRequest (`POST .../serviceaccounts/NAME/token`, `kubectl create token`): a signed token for
a service account, optionally bound to a pod so it dies with the pod, as upstream's. A node agent
may ask only for accounts of pods bound to it, and only bound to such a pod."""

from __future__ import annotations

import datetime as dt
import json

from hypernetes.api.routing import CALLER, Target
from hypernetes.api.status import ApiError, bad_request, forbidden, not_found
from hypernetes.auth.builtin import BuiltinIdentity
from hypernetes.objects import Obj
from hypernetes.store.interface import Store
from hypernetes.store.keys import object_key

# A token lives as long as asked, within these bounds; never longer (no equivalent of
# kube-apiserver's --service-account-extend-token-expiration): a pod's projected token is
# refreshed in its VM by the node agent at 80% of its lifetime, as the kubelet does, so an hour
# is enough for it, and a token taken from a pod is worth an hour at most. A pod-bound token also
# dies with its pod (checked on every use).
MIN_TTL, DEFAULT_TTL, MAX_TTL = 600, 3600, 48 * 3600


async def _get(store: Store, resource: str, namespace: str, name: str) -> Obj | None:
    kv = await store.get(object_key("", resource, namespace, name))
    return None if kv is None else dict(json.loads(kv.value))


async def token_request(store: Store, issuer: BuiltinIdentity | None, t: Target, body: Obj) -> Obj:
    if issuer is None:
        raise ApiError(501, "NotImplemented", "this server issues no service-account tokens")
    ns, name = t.namespace or "", t.name or ""
    sa = await _get(store, "serviceaccounts", ns, name)
    if sa is None:
        raise not_found("serviceaccounts", name)
    spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
    ttl = spec.get("expirationSeconds", DEFAULT_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < MIN_TTL:
        raise ApiError(
            422, "Invalid", f"spec.expirationSeconds: may not specify a duration less than {MIN_TTL} seconds"
        )
    audiences = spec.get("audiences") or None
    if audiences is not None and not (
        isinstance(audiences, list) and all(isinstance(a, str) for a in audiences)
    ):
        raise bad_request("spec.audiences must be a list of strings")
    pod = None
    ref = spec.get("boundObjectRef")
    if isinstance(ref, dict):
        if ref.get("kind") != "Pod":
            raise ApiError(422, "Invalid", "spec.boundObjectRef.kind: only Pod is supported")
        pod = await _get(store, "pods", ns, str(ref.get("name")))
        meta = (pod or {}).get("metadata") or {}
        if pod is None or (ref.get("uid") and ref.get("uid") != meta.get("uid")):
            raise not_found("pods", str(ref.get("name")))
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        if account != name:
            raise ApiError(
                422,
                "Invalid",
                f'spec.boundObjectRef: pod "{meta.get("name")}" runs as service '
                f'account "{account}", not "{name}"',
            )
    caller = CALLER.get()
    node = caller.node if caller is not None else None
    if node is not None and (pod is None or (pod.get("spec") or {}).get("nodeName") != node):
        raise forbidden(f"a node may ask for tokens bound to its own pods only (node {node})")
    lifetime = min(ttl, MAX_TTL)
    issued, aud = issuer.issue_service_account(ns, sa, float(lifetime), pod=pod, audiences=audiences)
    expires = dt.datetime.fromtimestamp(issued.expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
        "spec": {**spec, "audiences": aud, "expirationSeconds": min(ttl, MAX_TTL)},
        "status": {"token": issued.token, "expirationTimestamp": expires},
    }
