"""validate(kind, obj, old): the schema walk (structural.py), object metadata, and each kind's
rules and update rules, as upstream validates the fields Hypernetes serves."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats, structural, volumes
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.kinds import Kind
from hypernetes.api.schema.podspec import pod_spec_update, validate_labels, validate_pod_spec
from hypernetes.network.objects import NODE_PORTS

JSON = dict[str, Any]
Errs = list[FieldError]

_STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_MAX_ANNOTATIONS = 256 * 1024
_MAX_DATA = 1024 * 1024  # ConfigMap and Secret payloads


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _fmt(path: str, value: Any, msgs: list[str], errs: Errs) -> None:
    errs.extend(E.invalid(path, value, m) for m in msgs)


def validate(kind: Kind, obj: JSON, old: JSON | None = None, *, subresource: str | None = None) -> Errs:
    """Every problem with `obj` as a `kind` (an update of `old` if given, through `subresource`
    if given: "status" or "binding" skip the spec's update rules). Empty when valid.

    An update first drops, in place, what upstream's PrepareForUpdate drops because the change
    made it meaningless (a Service's node ports when its type no longer needs them)."""
    errs: Errs = []
    av, k = obj.get("apiVersion"), obj.get("kind")
    if av is not None and av != kind.api_version:
        errs.append(E.invalid("apiVersion", av, f"must be {kind.api_version}"))
    if k is not None and k != kind.kind:
        errs.append(E.invalid("kind", k, f"must be {kind.kind}"))
    structural.check({"$ref": kind.definition}, obj, "", errs)
    if any(e.type == E.TYPE_INVALID for e in errs):
        return errs  # the rules below assume the types are right
    meta = _d(obj.get("metadata"))
    _metadata(kind, meta, errs)
    prepare = _PREPARE_UPDATES.get(kind.kind)
    if old is not None and prepare is not None and subresource != "status":
        prepare(obj, old)
    rule = _RULES.get(kind.kind)
    if rule is not None:
        rule(obj, errs)
    if old is not None:
        _metadata_update(meta, _d(old.get("metadata")), errs)
        update = _UPDATES.get(kind.kind)
        if update is not None:
            update(obj, old, subresource, errs)
    return errs


def validate_body(definition: str, obj: JSON) -> Errs:
    """Schema check of a subresource body by definition name: "io.k8s.api.core.v1.Binding",
    "io.k8s.api.policy.v1.Eviction", "io.k8s.api.autoscaling.v1.Scale", DeleteOptions, ..."""
    errs: Errs = []
    structural.check({"$ref": definition}, obj, "", errs)
    return errs


def drop_unknown_fields(kind: Kind, obj: JSON) -> None:
    """Remove fields the schema does not know, in place: for fieldValidation=Ignore (and Warn,
    after reporting them)."""
    structural.drop_unknown({"$ref": kind.definition}, obj)


# -- metadata ----------------------------------------------------------------------------------


def _name_format(kind: Kind) -> Callable[[str], list[str]]:
    if kind.kind == "Namespace":
        return formats.dns1123_label
    if kind.kind == "Service":
        return formats.dns1035_label
    return formats.dns1123_subdomain


def _metadata(kind: Kind, meta: JSON, errs: Errs) -> None:
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            errs.append(E.required("metadata.name", "name or generateName is required"))
    else:
        _fmt("metadata.name", name, _name_format(kind)(name), errs)
    gen = meta.get("generateName")
    if gen and not name:
        # the suffix makes a trailing '-' valid: check the prefix with a letter in its place
        _fmt(
            "metadata.generateName",
            gen,
            _name_format(kind)(gen.rstrip("-") + "a" if gen.endswith("-") else gen),
            errs,
        )
    ns = meta.get("namespace")
    if kind.namespaced:
        if not ns:
            errs.append(E.required("metadata.namespace"))
        else:
            _fmt("metadata.namespace", ns, formats.dns1123_label(ns), errs)
    elif ns:
        errs.append(E.forbidden("metadata.namespace", "not allowed on this type"))
    validate_labels(_d(meta.get("labels")), "metadata.labels", errs)
    annotations = _d(meta.get("annotations"))
    size = 0
    for k, v in annotations.items():
        _fmt("metadata.annotations", k, formats.qualified_name(k.lower()), errs)
        size += len(k) + len(v if isinstance(v, str) else "")
    if size > _MAX_ANNOTATIONS:
        errs.append(E.too_long("metadata.annotations", _MAX_ANNOTATIONS))
    for i, f in enumerate(_l(meta.get("finalizers"))):
        if not isinstance(f, str):
            continue
        p = f"metadata.finalizers[{i}]"
        if "/" not in f:
            if f not in _STANDARD_FINALIZERS:
                errs.append(
                    E.invalid(p, f, "name is neither a standard finalizer name nor is it fully qualified")
                )
        else:
            _fmt(p, f, formats.qualified_name(f), errs)


def _metadata_update(meta: JSON, old: JSON, errs: Errs) -> None:
    for field in ("name", "namespace", "uid", "creationTimestamp"):
        if old.get(field) and meta.get(field) and meta[field] != old[field]:
            errs.append(E.immutable(f"metadata.{field}"))


# -- per-kind rules ----------------------------------------------------------------------------


def _pod(obj: JSON, errs: Errs) -> None:
    validate_pod_spec(_d(obj.get("spec")), "spec", errs)
    if obj.get("spec") is None:
        errs.append(E.required("spec.containers"))


def _pod_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    if sub == "binding":
        if ospec.get("nodeName"):
            errs.append(E.invalid("spec.nodeName", ospec["nodeName"], "pod is already assigned to a node"))
        ospec = {**ospec, "nodeName": nspec.get("nodeName")}
    pod_spec_update(nspec, ospec, "spec", errs)


def _namespace(obj: JSON, errs: Errs) -> None:
    for i, f in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        if isinstance(f, str) and "/" not in f and f not in _STANDARD_FINALIZERS:
            errs.append(
                E.invalid(
                    f"spec.finalizers[{i}]",
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
        elif isinstance(f, str) and "/" in f:
            _fmt(f"spec.finalizers[{i}]", f, formats.qualified_name(f), errs)


def _selector(sel: Any, path: str, errs: Errs, *, required: bool = True) -> None:
    if sel is None:
        if required:
            errs.append(E.required(path))
        return
    s = _d(sel)
    if required and not s.get("matchLabels") and not s.get("matchExpressions"):
        errs.append(E.invalid(path, s, "empty selector is not valid: it would select every pod"))
    validate_labels(_d(s.get("matchLabels")), f"{path}.matchLabels", errs)
    for i, r in enumerate(_l(s.get("matchExpressions"))):
        r = _d(r)
        p = f"{path}.matchExpressions[{i}]"
        op, values = r.get("operator"), _l(r.get("values"))
        if op in ("In", "NotIn") and not values:
            errs.append(E.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        if op in ("Exists", "DoesNotExist") and values:
            errs.append(
                E.forbidden(
                    f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                )
            )
        key = r.get("key")
        if isinstance(key, str):
            _fmt(f"{p}.key", key, formats.qualified_name(key), errs)


def selector_matches(sel: JSON, labels: JSON) -> bool:
    """Whether a LabelSelector selects `labels` (used to check pod templates against selectors)."""
    for k, v in _d(sel.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for r in _l(sel.get("matchExpressions")):
        r = _d(r)
        key, op, values = str(r.get("key")), r.get("operator"), _l(r.get("values"))
        present = key in labels
        if (
            (op == "In" and (not present or labels[key] not in values))
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _template(spec: JSON, errs: Errs, *, restart: tuple[str, ...], selector_required: bool = True) -> None:
    sel = spec.get("selector")
    _selector(sel, "spec.selector", errs, required=selector_required)
    tmpl = spec.get("template")
    if tmpl is None:
        return
    tmeta = _d(_d(tmpl).get("metadata"))
    validate_labels(_d(tmeta.get("labels")), "spec.template.metadata.labels", errs)
    if (
        isinstance(sel, dict)
        and (sel.get("matchLabels") or sel.get("matchExpressions"))
        and not selector_matches(sel, _d(tmeta.get("labels")))
    ):
        errs.append(
            E.invalid(
                "spec.template.metadata.labels",
                _d(tmeta.get("labels")),
                "`selector` does not match template `labels`",
            )
        )
    tspec = _d(_d(tmpl).get("spec"))
    if _d(tmpl).get("spec") is None:
        errs.append(E.required("spec.template.spec.containers"))
    validate_pod_spec(tspec, "spec.template.spec", errs)
    rp = tspec.get("restartPolicy")
    if rp is not None and rp not in restart:
        errs.append(E.not_supported("spec.template.spec.restartPolicy", rp, restart))
    elif rp is None and "Always" not in restart:
        errs.append(
            E.required(
                "spec.template.spec.restartPolicy",
                "valid values: " + ", ".join(json.dumps(r) for r in restart),
            )
        )
    if tspec.get("activeDeadlineSeconds") is not None and restart == ("Always",):
        errs.append(
            E.forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        )


def _non_negative(spec: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    for f in fields:
        v = spec.get(f)
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            errs.append(E.invalid(f"spec.{f}", v, "must be greater than or equal to 0"))


def _int_or_percent(v: Any, path: str, errs: Errs) -> bool:
    """True if `v` is a zero value (0 or "0%")."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            errs.append(E.invalid(path, v, "must be greater than or equal to 0"))
        return v == 0
    if isinstance(v, str):
        if not v.endswith("%") or not v[:-1].isdigit():
            errs.append(
                E.invalid(
                    path,
                    v,
                    "a valid percent string must be a numeric string followed by an "
                    "ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                    "'[0-9]+%')",
                )
            )
            return False
        if int(v[:-1]) > 100:
            errs.append(E.invalid(path, v, "must not be greater than 100%"))
        return int(v[:-1]) == 0
    return v is None


def _deployment(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _non_negative(spec, ("replicas", "minReadySeconds", "revisionHistoryLimit"), errs)
    _template(spec, errs, restart=("Always",))
    strategy = _d(spec.get("strategy"))
    ru = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and ru is not None:
        errs.append(
            E.forbidden(
                "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
            )
        )
    elif isinstance(ru, dict):
        zero_u = _int_or_percent(ru.get("maxUnavailable"), "spec.strategy.rollingUpdate.maxUnavailable", errs)
        zero_s = _int_or_percent(ru.get("maxSurge"), "spec.strategy.rollingUpdate.maxSurge", errs)
        if zero_u and zero_s and "maxUnavailable" in ru and "maxSurge" in ru:
            errs.append(
                E.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    ru.get("maxUnavailable"),
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    pds, mrs = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds") or 0
    if isinstance(pds, int) and isinstance(mrs, int) and pds <= mrs:
        errs.append(E.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))


def _replicaset(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _non_negative(spec, ("replicas", "minReadySeconds"), errs)
    _template(spec, errs, restart=("Always",))


def _job(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _non_negative(spec, ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"), errs)
    ads = spec.get("activeDeadlineSeconds")
    if isinstance(ads, int) and ads <= 0:
        errs.append(E.invalid("spec.activeDeadlineSeconds", ads, "must be greater than 0"))
    manual = spec.get("manualSelector") is True
    if manual and spec.get("selector") is None:
        errs.append(E.required("spec.selector"))
    _template(spec, errs, restart=("OnFailure", "Never"), selector_required=False)
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        errs.append(E.required("spec.completions", "when completion mode is Indexed"))


def _service(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    stype = spec.get("type") or "ClusterIP"
    ports = _l(spec.get("ports"))
    headless = spec.get("clusterIP") == "None"
    if stype == "ExternalName":
        en = spec.get("externalName")
        if not en:
            errs.append(E.required("spec.externalName"))
        else:
            _fmt("spec.externalName", en, formats.dns1123_subdomain(en.rstrip(".")), errs)
    elif not ports and not headless:
        errs.append(E.required("spec.ports"))
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    node_ports: set[tuple[Any, Any]] = set()
    for i, p in enumerate(ports):
        p = _d(p)
        path = f"spec.ports[{i}]"
        name = p.get("name")
        if len(ports) > 1 and not name:
            errs.append(E.required(f"{path}.name"))
        elif isinstance(name, str) and name:
            if name in names:
                errs.append(E.duplicate(f"{path}.name", name))
            names.add(name)
            _fmt(f"{path}.name", name, formats.dns1123_label(name), errs)
        port = p.get("port")
        if isinstance(port, int):
            _fmt(f"{path}.port", port, formats.port_number(port), errs)
            key = (port, p.get("protocol") or "TCP")
            if key in seen:
                errs.append(E.duplicate(path, {"port": port, "protocol": key[1]}))
            seen.add(key)
        tp = p.get("targetPort")
        if isinstance(tp, int) and tp != 0:
            _fmt(f"{path}.targetPort", tp, formats.port_number(tp), errs)
        elif isinstance(tp, str):
            _fmt(f"{path}.targetPort", tp, formats.iana_svc_name(tp), errs)
        node_port = p.get("nodePort")
        if node_port and stype not in _NODE_PORT_TYPES:
            errs.append(E.forbidden(f"{path}.nodePort", f"may not be used when `type` is '{stype}'"))
        elif isinstance(node_port, int) and node_port:
            # upstream's node port allocator refuses a port outside the range with this message
            if node_port not in NODE_PORTS:
                errs.append(E.invalid(f"{path}.nodePort", node_port, "provided port is not in the valid "
                                      f"range. The range of valid ports is {NODE_PORTS[0]}-{NODE_PORTS[-1]}"))
            key = (node_port, p.get("protocol") or "TCP")
            if key in node_ports:
                errs.append(E.duplicate(f"{path}.nodePort", node_port))
            node_ports.add(key)
    if spec.get("externalTrafficPolicy") and stype not in _NODE_PORT_TYPES:
        errs.append(E.invalid("spec.externalTrafficPolicy", spec["externalTrafficPolicy"],
                              "may only be set for externally-accessible services"))
    validate_labels(_d(spec.get("selector")), "spec.selector", errs)
    for i, ip in enumerate(_l(spec.get("clusterIPs"))):
        if isinstance(ip, str) and ip and ip != "None":
            _fmt(f"spec.clusterIPs[{i}]", ip, formats.ip_address(ip), errs)
    cip = spec.get("clusterIP")
    if isinstance(cip, str) and cip and cip != "None":
        _fmt("spec.clusterIP", cip, formats.ip_address(cip), errs)


def _service_drop_type_dependent(new: JSON, old: JSON) -> None:
    """Upstream's dropTypeDependentFields: a type change wipes what the old type allocated or
    defaulted and the new type does not use, if the caller left it unchanged (so `kubectl patch
    -p '{"spec":{"type":"ClusterIP"}}'` on a NodePort service works, and its ports go back)."""
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    otype, ntype = ospec.get("type") or "ClusterIP", nspec.get("type") or "ClusterIP"
    if otype == ntype:
        return

    def node_ports(spec: JSON) -> set[Any]:
        return {_d(p).get("nodePort") for p in _l(spec.get("ports")) if _d(p).get("nodePort")}
    if otype != "ExternalName" and ntype == "ExternalName":
        if all(nspec.get(f) == ospec.get(f) for f in ("clusterIP", "clusterIPs")):
            nspec.pop("clusterIP", None)
            nspec.pop("clusterIPs", None)
        for f in ("ipFamilies", "ipFamilyPolicy"):
            if nspec.get(f) == ospec.get(f):
                nspec.pop(f, None)
    if otype in _NODE_PORT_TYPES and ntype not in _NODE_PORT_TYPES:
        if node_ports(nspec) == node_ports(ospec):
            for p in _l(nspec.get("ports")):
                if isinstance(p, dict):
                    p.pop("nodePort", None)
        if nspec.get("externalTrafficPolicy") == ospec.get("externalTrafficPolicy"):
            nspec.pop("externalTrafficPolicy", None)
    if otype == "LoadBalancer" and ntype != "LoadBalancer" \
            and nspec.get("allocateLoadBalancerNodePorts") == ospec.get("allocateLoadBalancerNodePorts"):
        nspec.pop("allocateLoadBalancerNodePorts", None)


def _service_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    ocip, ncip = _d(old.get("spec")).get("clusterIP"), _d(new.get("spec")).get("clusterIP")
    if ocip and ncip is not None and ncip != ocip and _d(new.get("spec")).get("type") != "ExternalName":
        errs.append(E.immutable("spec.clusterIP"))


def _endpoints(obj: JSON, errs: Errs) -> None:
    for i, ss in enumerate(_l(obj.get("subsets"))):
        ss = _d(ss)
        for field in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(_l(ss.get(field))):
                ip = _d(a).get("ip")
                if isinstance(ip, str):
                    _fmt(f"subsets[{i}].{field}[{j}].ip", ip, formats.ip_address(ip), errs)
        for j, p in enumerate(_l(ss.get("ports"))):
            port = _d(p).get("port")
            if isinstance(port, int):
                _fmt(f"subsets[{i}].ports[{j}].port", port, formats.port_number(port), errs)
            name = _d(p).get("name")
            if isinstance(name, str) and name:
                _fmt(f"subsets[{i}].ports[{j}].name", name, formats.dns1123_label(name), errs)


def _data_keys(obj: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    seen: set[str] = set()
    size = 0
    for field in fields:
        for k, v in _d(obj.get(field)).items():
            _fmt(f"{field}[{k}]", k, formats.config_key(k), errs)
            if k in seen:
                errs.append(E.invalid(f"{field}[{k}]", k, "duplicate of key present in data"))
            seen.add(k)
            size += len(v) if isinstance(v, str) else 0
    if size > _MAX_DATA:
        errs.append(E.too_long(fields[0], _MAX_DATA))


def _immutable_data(new: JSON, old: JSON, fields: tuple[str, ...], errs: Errs) -> None:
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.append(E.forbidden("immutable", "field is immutable when `immutable` is set"))
        for f in fields:
            if _d(new.get(f)) != _d(old.get(f)):
                errs.append(E.forbidden(f, "field is immutable when `immutable` is set"))


_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _secret(obj: JSON, errs: Errs) -> None:
    _data_keys(obj, ("data", "stringData"), errs)
    stype = obj.get("type") or "Opaque"
    keys = set(_d(obj.get("data"))) | set(_d(obj.get("stringData")))
    for k in _SECRET_KEYS.get(stype, ()):
        if k not in keys:
            errs.append(E.required(f"data[{k}]"))
    if stype == "kubernetes.io/service-account-token" and not _d(
        _d(obj.get("metadata")).get("annotations")
    ).get("kubernetes.io/service-account.name"):
        errs.append(E.required("metadata.annotations[kubernetes.io/service-account.name]"))


def _secret_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if (new.get("type") or "Opaque") != (old.get("type") or "Opaque"):
        errs.append(E.immutable("type"))
    _immutable_data(new, old, ("data",), errs)


def _configmap(obj: JSON, errs: Errs) -> None:
    _data_keys(obj, ("data", "binaryData"), errs)


def _configmap_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    _immutable_data(new, old, ("data", "binaryData"), errs)


def _node(obj: JSON, errs: Errs) -> None:
    for i, t in enumerate(_l(_d(obj.get("spec")).get("taints"))):
        key = _d(t).get("key")
        if isinstance(key, str):
            _fmt(f"spec.taints[{i}].key", key, formats.qualified_name(key), errs)


def _event(obj: JSON, errs: Errs) -> None:
    ns = _d(obj.get("metadata")).get("namespace")
    io = _d(obj.get("involvedObject"))
    ions = io.get("namespace")
    if ions and ns and ions != ns:
        errs.append(E.invalid("involvedObject.namespace", ions, "does not match event.namespace"))


def _lease(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    d = spec.get("leaseDurationSeconds")
    if isinstance(d, int) and d <= 0:
        errs.append(E.invalid("spec.leaseDurationSeconds", d, "must be greater than 0"))
    _non_negative(spec, ("leaseTransitions",), errs)


def _selector_immutable(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub in ("status", "scale"):
        return
    if _d(new.get("spec")).get("selector") != _d(old.get("spec")).get("selector"):
        errs.append(E.immutable("spec.selector"))


def _job_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    _selector_immutable(new, old, sub, errs)
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    for f in ("completions", "completionMode", "template"):
        if f == "template" and ospec.get("suspend") is True:
            continue  # upstream lets a suspended job's template change (scheduling directives)
        if nspec.get(f) != ospec.get(f):
            errs.append(E.immutable(f"spec.{f}"))


_RULES: dict[str, Callable[[JSON, Errs], None]] = {
    "Pod": _pod,
    "Namespace": _namespace,
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "Job": _job,
    "Service": _service,
    "Endpoints": _endpoints,
    "Secret": _secret,
    "ConfigMap": _configmap,
    "Node": _node,
    "Event": _event,
    "Lease": _lease,
    "PersistentVolumeClaim": volumes.claim,
    "PersistentVolume": volumes.volume,
    "StorageClass": volumes.storage_class,
}
_PREPARE_UPDATES: dict[str, Callable[[JSON, JSON], None]] = {
    "Service": _service_drop_type_dependent,
}
_UPDATES: dict[str, Callable[[JSON, JSON, str | None, Errs], None]] = {
    "Pod": _pod_update,
    "Service": _service_update,
    "Secret": _secret_update,
    "ConfigMap": _configmap_update,
    "Deployment": _selector_immutable,
    "ReplicaSet": _selector_immutable,
    "Job": _job_update,
    "PersistentVolumeClaim": volumes.claim_update,
    "PersistentVolume": volumes.volume_update,
    "StorageClass": volumes.storage_class_update,
}
