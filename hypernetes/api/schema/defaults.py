"""apply_defaults(kind, obj): upstream's defaulting (pkg/apis/*/v1/defaults.go, plus what the
registries and the ServiceAccount admission set) for the fields Hypernetes serves.

Every default only fills what is missing, so applying twice changes nothing: `kubectl apply`
and `kubectl diff` stay stable.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import Any

from hypernetes.api.schema import formats, volumes
from hypernetes.api.schema.kinds import Kind

JSON = dict[str, Any]


def _d(parent: JSON, key: str) -> JSON:
    """parent[key] as a dict, created if missing (or null). A value of another type is left for
    validation to report: defaults then go to a scratch dict."""
    v = parent.get(key)
    if v is None:
        v = parent[key] = {}
    return v if isinstance(v, dict) else {}


def _sd(parent: JSON, key: str, value: str) -> str:
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
    fn = _DEFAULTS.get(kind.kind)
    if fn is not None:
        fn(obj)


# -- pods --------------------------------------------------------------------------------------


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
        _sd(get, "path", "/")
        _sd(get, "scheme", "HTTP")


def _container(c: JSON, *, pod: bool, host_network: bool) -> None:
    image = c.get("image")
    if isinstance(image, str) and image:
        _sd(c, "imagePullPolicy", pull_policy(image))
    _sd(c, "terminationMessagePath", "/dev/termination-log")
    _sd(c, "terminationMessagePolicy", "File")
    res = _d(c, "resources")
    for field in ("limits", "requests"):
        q = res.get(field)
        if isinstance(q, dict):
            for name, v in q.items():
                with contextlib.suppress(ValueError):  # validation reports it
                    q[name] = formats.canonical_quantity(v)
    if pod and isinstance(res.get("limits"), dict):
        # a Pod's (not a template's) missing requests default to its limits
        req = _d(res, "requests")
        for name, v in res["limits"].items():
            req.setdefault(name, v)
    for port in _dicts(c.get("ports")):
        _sd(port, "protocol", "TCP")
        if host_network and "containerPort" in port:
            port.setdefault("hostPort", port["containerPort"])
    for env in _dicts(c.get("env")):
        ref = env.get("valueFrom", {}).get("fieldRef") if isinstance(env.get("valueFrom"), dict) else None
        if isinstance(ref, dict):
            _sd(ref, "apiVersion", "v1")
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
            _sd(item["fieldRef"], "apiVersion", "v1")
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
                        _sd(item["fieldRef"], "apiVersion", "v1")


def pod_spec_defaults(spec: JSON, *, pod: bool) -> None:
    """SetDefaults_PodSpec for every pod spec, plus SetDefaults_Pod and the ServiceAccount
    admission when `pod` (a Pod rather than a template)."""
    _sd(spec, "restartPolicy", "Always")
    _sd(spec, "dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    _sd(spec, "schedulerName", "default-scheduler")
    _d(spec, "securityContext")
    host_network = spec.get("hostNetwork") is True
    for field in ("initContainers", "containers"):
        for c in _dicts(spec.get(field)):
            _container(c, pod=pod, host_network=host_network)
    for v in _dicts(spec.get("volumes")):
        _volume(v)
    if pod:
        spec.setdefault("enableServiceLinks", True)
        _sd(spec, "serviceAccountName", spec.get("serviceAccount") or "default")
    # v1 still carries the deprecated serviceAccount, mirrored from serviceAccountName
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]


def _pod(obj: JSON) -> None:
    spec = _d(obj, "spec")
    pod_spec_defaults(spec, pod=True)
    # what the pod registry sets at creation: a pod starts Pending, with its QoS class
    status = _d(obj, "status")
    _sd(status, "phase", "Pending")
    _sd(status, "qosClass", qos_class(spec))


def qos_class(spec: JSON) -> str:
    """Guaranteed (every container's cpu and memory limits equal its requests), BestEffort (no
    requests or limits at all) or Burstable."""
    containers = _dicts(spec.get("containers")) + _dicts(spec.get("initContainers"))
    res = [c["resources"] if isinstance(c.get("resources"), dict) else {} for c in containers]
    reqs = [r["requests"] if isinstance(r.get("requests"), dict) else {} for r in res]
    lims = [r["limits"] if isinstance(r.get("limits"), dict) else {} for r in res]
    if not any(reqs) and not any(lims):
        return "BestEffort"
    for req, lim in zip(reqs, lims, strict=True):
        for name in ("cpu", "memory"):
            if name not in lim or _quantity(req.get(name, lim[name])) != _quantity(lim[name]):
                return "Burstable"
    return "Guaranteed"


def _quantity(v: Any) -> Any:
    try:
        return formats.parse_quantity(v)[0]
    except ValueError:
        return v


def _template(obj: JSON) -> JSON:
    spec = _d(obj, "spec")
    tmpl = spec.get("template")
    if isinstance(tmpl, dict):
        pod_spec_defaults(_d(tmpl, "spec"), pod=False)
    return spec


# -- other kinds -------------------------------------------------------------------------------


def _namespace(obj: JSON) -> None:
    meta = _d(obj, "metadata")
    name = meta.get("name")
    if isinstance(name, str) and name:
        # forced, on create and update, as upstream's namespace strategy: namespace selectors trust it
        _d(meta, "labels")["kubernetes.io/metadata.name"] = name
    spec = _d(obj, "spec")
    spec.setdefault("finalizers", ["kubernetes"])
    _sd(_d(obj, "status"), "phase", "Active")


def _deployment(obj: JSON) -> None:
    spec = _template(obj)
    spec.setdefault("replicas", 1)
    strategy = _d(spec, "strategy")
    _sd(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = _d(strategy, "rollingUpdate")
        _sd(ru, "maxUnavailable", "25%")
        _sd(ru, "maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _replicaset(obj: JSON) -> None:
    _template(obj).setdefault("replicas", 1)


JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _job(obj: JSON) -> None:
    meta = _d(obj, "metadata")
    spec = _template(obj)
    tmpl = spec.get("template")
    tlabels = _d(_d(tmpl, "metadata"), "labels") if isinstance(tmpl, dict) else {}
    if not meta.get("labels") and tlabels:
        meta["labels"] = dict(tlabels)  # batch/v1 defaults a job's labels to its template's
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    _sd(spec, "completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    # the registry generates the selector from the uid unless the user manages it
    uid = meta.get("uid")
    if spec.get("manualSelector") is not True and uid and isinstance(tmpl, dict) and "selector" not in spec:
        name = meta.get("name", "")
        for k in JOB_UID_LABELS:
            tlabels[k] = uid
        for k in JOB_NAME_LABELS:
            tlabels[k] = name
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: uid}}


def _service(obj: JSON) -> None:
    spec = _d(obj, "spec")
    stype = _sd(spec, "type", "ClusterIP")
    _sd(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        cfg = _d(_d(spec, "sessionAffinityConfig"), "clientIP")
        cfg.setdefault("timeoutSeconds", 10800)
    for p in _dicts(spec.get("ports")):
        _sd(p, "protocol", "TCP")
        if p.get("targetPort") in (None, 0, "") and "port" in p:
            p["targetPort"] = p["port"]
    if stype in ("NodePort", "LoadBalancer"):
        _sd(spec, "externalTrafficPolicy", "Cluster")
    if stype != "ExternalName":
        _sd(spec, "internalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _endpoints(obj: JSON) -> None:
    for ss in _dicts(obj.get("subsets")):
        for p in _dicts(ss.get("ports")):
            _sd(p, "protocol", "TCP")


def _secret(obj: JSON) -> None:
    _sd(obj, "type", "Opaque")
    # v1 conversion folds the write-only stringData into data
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict) and sd:
        data = _d(obj, "data")
        for k, v in sd.items():
            if isinstance(v, str):
                data[k] = base64.b64encode(v.encode()).decode()


def _node(obj: JSON) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("capacity"), dict):
        status.setdefault("allocatable", dict(status["capacity"]))


_DEFAULTS: dict[str, Callable[[JSON], None]] = {
    "Pod": _pod,
    "Namespace": _namespace,
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "Job": _job,
    "Service": _service,
    "Endpoints": _endpoints,
    "Secret": _secret,
    "Node": _node,
    "PersistentVolumeClaim": volumes.claim_defaults,
    "PersistentVolume": volumes.volume_defaults,
    "StorageClass": volumes.storage_class_defaults,
}
