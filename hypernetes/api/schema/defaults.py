"""apply_defaults(kind, obj): upstream's defaulting (pkg/apis/*/v1/defaults.go, plus what the
registries and the ServiceAccount admission set) for the fields Hypernetes serves: what every
object gets, then the kind's own (its registry entry's `defaults`). The pod spec's defaults are
here, shared by Pods and every pod template.

Every default only fills what is missing, so applying twice changes nothing: `kubectl apply`
and `kubectl diff` stay stable.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from hypernetes.api.schema import formats
from hypernetes.objects import Obj as JSON

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind


def child(parent: JSON, key: str) -> JSON:
    """parent[key] as a dict, created if missing (or null). A value of another type is left for
    validation to report: defaults then go to a scratch dict."""
    v = parent.get(key)
    if v is None:
        v = parent[key] = {}
    return v if isinstance(v, dict) else {}


def set_default(parent: JSON, key: str, value: str) -> str:
    """setdefault for strings: Go's zero value "" means unset too (protobuf bodies carry it)."""
    cur = parent.get(key)
    if cur is None or cur == "":
        parent[key] = cur = value
    return str(cur)


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dicts(v: Any) -> list[JSON]:
    return [x for x in _l(v) if isinstance(x, dict)]


def prune_nulls(v: Any) -> Any:
    """Drop null members of objects, as Go's decoder turns them into omitted zero values
    (`kubectl run` sends `"creationTimestamp": null`). Not inside free-form maps' values only:
    a null anywhere means absent."""
    if isinstance(v, dict):
        for k in [k for k, x in v.items() if x is None]:
            del v[k]
        for x in v.values():
            prune_nulls(x)
    elif isinstance(v, list):
        for x in v:
            prune_nulls(x)
    return v


def apply_defaults(kind: Kind, obj: JSON) -> None:
    prune_nulls(obj)
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    if kind.defaults is not None:
        kind.defaults(obj)


# -- pod specs (Pods and every pod template) ---------------------------------------------------


def pull_policy(image: str) -> str:
    """Always for ":latest" or no tag, else IfNotPresent (a digest counts as pinned)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(p: Any) -> None:
    if not isinstance(p, dict):
        return
    for k, v in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        p.setdefault(k, v)
    _handler(p)


def _handler(h: JSON) -> None:
    get = h.get("httpGet")
    if isinstance(get, dict):
        set_default(get, "path", "/")
        set_default(get, "scheme", "HTTP")


def _container(c: JSON, *, pod: bool, host_network: bool) -> None:
    image = c.get("image")
    if isinstance(image, str) and image:
        set_default(c, "imagePullPolicy", pull_policy(image))
    set_default(c, "terminationMessagePath", "/dev/termination-log")
    set_default(c, "terminationMessagePolicy", "File")
    res = child(c, "resources")
    for field in ("limits", "requests"):
        q = res.get(field)
        if isinstance(q, dict):
            for name, v in q.items():
                with contextlib.suppress(ValueError):  # validation reports it
                    q[name] = formats.canonical_quantity(v)
    if pod and isinstance(res.get("limits"), dict):
        # a Pod's (not a template's) missing requests default to its limits
        req = child(res, "requests")
        for name, v in res["limits"].items():
            req.setdefault(name, v)
    for port in _dicts(c.get("ports")):
        set_default(port, "protocol", "TCP")
        if host_network and "containerPort" in port:
            port.setdefault("hostPort", port["containerPort"])
    for env in _dicts(c.get("env")):
        ref = env.get("valueFrom", {}).get("fieldRef") if isinstance(env.get("valueFrom"), dict) else None
        if isinstance(ref, dict):
            set_default(ref, "apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(probe))
    life = c.get("lifecycle")
    if isinstance(life, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(life.get(hook), dict):
                _handler(life[hook])


def _volume(v: JSON) -> None:
    if not any(k != "name" for k in v):
        v["emptyDir"] = {}
    for src in ("configMap", "secret", "downwardAPI", "projected"):
        s = v.get(src)
        if isinstance(s, dict):
            s.setdefault("defaultMode", 420)
    for item in _dicts(
        v.get("downwardAPI", {}).get("items") if isinstance(v.get("downwardAPI"), dict) else []
    ):
        if isinstance(item.get("fieldRef"), dict):
            set_default(item["fieldRef"], "apiVersion", "v1")
    proj = v.get("projected")
    if isinstance(proj, dict):
        for source in _dicts(proj.get("sources")):
            tok = source.get("serviceAccountToken")
            if isinstance(tok, dict):
                tok.setdefault("expirationSeconds", 3600)
            dapi = source.get("downwardAPI")
            if isinstance(dapi, dict):
                for item in _dicts(dapi.get("items")):
                    if isinstance(item.get("fieldRef"), dict):
                        set_default(item["fieldRef"], "apiVersion", "v1")


def pod_spec_defaults(spec: JSON, *, pod: bool) -> None:
    """SetDefaults_PodSpec for every pod spec, plus SetDefaults_Pod and the ServiceAccount
    admission when `pod` (a Pod rather than a template)."""
    set_default(spec, "restartPolicy", "Always")
    set_default(spec, "dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    set_default(spec, "schedulerName", "default-scheduler")
    child(spec, "securityContext")
    host_network = spec.get("hostNetwork") is True
    for field in ("initContainers", "containers"):
        for c in _dicts(spec.get(field)):
            _container(c, pod=pod, host_network=host_network)
    for v in _dicts(spec.get("volumes")):
        _volume(v)
    if pod:
        spec.setdefault("enableServiceLinks", True)
        set_default(spec, "serviceAccountName", spec.get("serviceAccount") or "default")
    # v1 still carries the deprecated serviceAccount, mirrored from serviceAccountName
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]


def template_defaults(obj: JSON) -> JSON:
    spec = child(obj, "spec")
    tmpl = spec.get("template")
    if isinstance(tmpl, dict):
        pod_spec_defaults(child(tmpl, "spec"), pod=False)
    return spec
