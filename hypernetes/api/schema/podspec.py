"""Rules for a PodSpec, shared by Pods and the pod templates of Deployments, ReplicaSets and Jobs
(upstream pkg/apis/core/validation, for the fields Hypernetes serves)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.structural import join
from hypernetes.objects import Obj as JSON

_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_LIFECYCLE_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")
_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
_FIELD_REFS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_FIELD_REF_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['[^']+'\]")


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _fmt(path: str, value: Any, msgs: list[str], errs: list[FieldError]) -> None:
    errs.extend(E.invalid(path, value, m) for m in msgs)


def validate_pod_spec(spec: JSON, path: str, errs: list[FieldError]) -> None:
    volumes = _volumes(_l(spec.get("volumes")), join(path, "volumes"), errs)
    containers = _l(spec.get("containers"))
    if "containers" in spec and not containers and spec.get("containers") is not None:
        errs.append(E.required(join(path, "containers")))
    names: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(_l(spec.get(field))):
            if isinstance(c, dict):
                _container(
                    c, f"{join(path, field)}[{i}]", volumes, names, errs, init=field == "initContainers"
                )
    ads = spec.get("activeDeadlineSeconds")
    if isinstance(ads, int) and not isinstance(ads, bool) and ads <= 0:
        errs.append(
            E.invalid(join(path, "activeDeadlineSeconds"), ads, "must be between 1 and 2147483647, inclusive")
        )
    tgps = spec.get("terminationGracePeriodSeconds")
    if isinstance(tgps, int) and not isinstance(tgps, bool) and tgps < 0:
        errs.append(
            E.invalid(join(path, "terminationGracePeriodSeconds"), tgps, "must be greater than or equal to 0")
        )
    for key in ("hostname", "subdomain"):
        v = spec.get(key)
        if isinstance(v, str) and v:
            _fmt(join(path, key), v, formats.dns1123_label(v), errs)
    for key in ("serviceAccountName", "serviceAccount", "priorityClassName", "runtimeClassName"):
        v = spec.get(key)
        if isinstance(v, str) and v:
            _fmt(join(path, key), v, formats.dns1123_subdomain(v), errs)
    validate_labels(_d(spec.get("nodeSelector")), join(path, "nodeSelector"), errs)
    if spec.get("dnsPolicy") == "None" and not spec.get("dnsConfig"):
        errs.append(E.required(join(path, "dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None"))
    for i, t in enumerate(_l(spec.get("tolerations"))):
        if isinstance(t, dict):
            _toleration(t, f"{join(path, 'tolerations')}[{i}]", errs)
    for i, h in enumerate(_l(spec.get("hostAliases"))):
        ip = _d(h).get("ip")
        if isinstance(ip, str):
            _fmt(f"{join(path, 'hostAliases')}[{i}].ip", ip, formats.ip_address(ip), errs)
        for j, hn in enumerate(_l(_d(h).get("hostnames"))):
            if isinstance(hn, str):
                _fmt(
                    f"{join(path, 'hostAliases')}[{i}].hostnames[{j}]",
                    hn,
                    formats.dns1123_subdomain(hn),
                    errs,
                )
    for i, s in enumerate(_l(spec.get("imagePullSecrets"))):
        n = _d(s).get("name")
        if not n:
            errs.append(E.required(f"{join(path, 'imagePullSecrets')}[{i}].name"))


def _volumes(vols: list[Any], path: str, errs: list[FieldError]) -> set[str]:
    names: set[str] = set()
    for i, v in enumerate(vols):
        if not isinstance(v, dict):
            continue
        p = f"{path}[{i}]"
        name = v.get("name")
        if isinstance(name, str):
            if name in names:
                errs.append(E.duplicate(f"{p}.name", name))
            elif not name:
                errs.append(E.required(f"{p}.name"))
            else:
                _fmt(f"{p}.name", name, formats.dns1123_label(name), errs)
            names.add(name)
        sources = [k for k, x in v.items() if k != "name" and x is not None]
        if not sources:
            errs.append(E.required(p, "must specify a volume type"))
        elif len(sources) > 1:
            errs.append(E.forbidden(f"{p}.{sources[1]}", "may not specify more than 1 volume type"))
        pvc = _d(v.get("persistentVolumeClaim"))
        if "persistentVolumeClaim" in v and not pvc.get("claimName"):
            errs.append(E.required(f"{p}.persistentVolumeClaim.claimName"))
        for src in ("configMap", "secret"):
            for j, item in enumerate(_l(_d(v.get(src)).get("items"))):
                _key_to_path(_d(item), f"{p}.{src}.items[{j}]", errs)
    return names


def _key_to_path(item: JSON, path: str, errs: list[FieldError]) -> None:
    target = item.get("path")
    if isinstance(target, str):
        if not target:
            errs.append(E.required(f"{path}.path"))
        elif target.startswith("/"):
            errs.append(E.invalid(f"{path}.path", target, "must be a relative path"))
        elif ".." in target.split("/"):
            errs.append(E.invalid(f"{path}.path", target, "must not contain '..'"))


def _container(
    c: JSON, path: str, volumes: set[str], names: set[str], errs: list[FieldError], *, init: bool
) -> None:
    name = c.get("name")
    if isinstance(name, str):
        if not name:
            errs.append(E.required(f"{path}.name"))
        elif name in names:
            errs.append(E.duplicate(f"{path}.name", name))
        else:
            _fmt(f"{path}.name", name, formats.dns1123_label(name), errs)
        names.add(name)
    image = c.get("image")
    if image is None or (isinstance(image, str) and not image.strip()):
        errs.append(E.required(f"{path}.image"))
    elif isinstance(image, str) and image != image.strip():
        errs.append(E.invalid(f"{path}.image", image, "must not have leading or trailing whitespace"))
    if not init and c.get("restartPolicy") is not None:
        errs.append(E.forbidden(f"{path}.restartPolicy", "may not be set for non-init containers"))
    port_names: set[str] = set()
    for i, port in enumerate(_l(c.get("ports"))):
        if isinstance(port, dict):
            _container_port(port, f"{path}.ports[{i}]", port_names, errs)
    for i, env in enumerate(_l(c.get("env"))):
        if isinstance(env, dict):
            _env(env, f"{path}.env[{i}]", errs)
    for i, ef in enumerate(_l(c.get("envFrom"))):
        if isinstance(ef, dict):
            refs = [k for k in ("configMapRef", "secretRef") if ef.get(k) is not None]
            if len(refs) != 1:
                errs.append(
                    E.invalid_raw(
                        f"{path}.envFrom[{i}]",
                        "may not have more than one field specified at a time"
                        if refs
                        else "must specify one of: `configMapRef` or `secretRef`",
                    )
                )
    mounts: set[str] = set()
    for i, m in enumerate(_l(c.get("volumeMounts"))):
        if isinstance(m, dict):
            _mount(m, f"{path}.volumeMounts[{i}]", volumes, mounts, errs)
    _resources(_d(c.get("resources")), f"{path}.resources", errs)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        pr = c.get(probe)
        if isinstance(pr, dict):
            if init and c.get("restartPolicy") != "Always":
                errs.append(
                    E.forbidden(
                        f"{path}.{probe}", "may not be set for init containers without restartPolicy=Always"
                    )
                )
            _probe(pr, f"{path}.{probe}", errs, one_success=probe != "readinessProbe")
    life = _d(c.get("lifecycle"))
    for hook in ("postStart", "preStop"):
        h = life.get(hook)
        if isinstance(h, dict):
            _handler(h, f"{path}.lifecycle.{hook}", _LIFECYCLE_HANDLERS, errs)


def _container_port(port: JSON, path: str, names: set[str], errs: list[FieldError]) -> None:
    cp = port.get("containerPort")
    if isinstance(cp, int) and not isinstance(cp, bool):
        _fmt(f"{path}.containerPort", cp, formats.port_number(cp), errs)
    hp = port.get("hostPort")
    if isinstance(hp, int) and not isinstance(hp, bool) and hp != 0:
        _fmt(f"{path}.hostPort", hp, formats.port_number(hp), errs)
    name = port.get("name")
    if isinstance(name, str) and name:
        if name in names:
            errs.append(E.duplicate(f"{path}.name", name))
        _fmt(f"{path}.name", name, formats.iana_svc_name(name), errs)
        names.add(name)
    hip = port.get("hostIP")
    if isinstance(hip, str) and hip:
        _fmt(f"{path}.hostIP", hip, formats.ip_address(hip), errs)


def _env(env: JSON, path: str, errs: list[FieldError]) -> None:
    name = env.get("name")
    if isinstance(name, str):
        if not name:
            errs.append(E.required(f"{path}.name"))
        else:
            _fmt(f"{path}.name", name, formats.env_var_name(name), errs)
    vf = env.get("valueFrom")
    if not isinstance(vf, dict):
        return
    if env.get("value"):
        errs.append(E.invalid(f"{path}.valueFrom", "", "may not be specified when `value` is not empty"))
    sources = [k for k in _ENV_SOURCES if vf.get(k) is not None]
    if not sources:
        errs.append(
            E.invalid(
                f"{path}.valueFrom",
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )
        )
    elif len(sources) > 1:
        errs.append(
            E.invalid(f"{path}.valueFrom", "", "may not have more than one field specified at a time")
        )
    fp = _d(vf.get("fieldRef")).get("fieldPath")
    if isinstance(fp, str) and fp not in _FIELD_REFS and not _FIELD_REF_SUBSCRIPT.fullmatch(fp):
        errs.append(E.not_supported(f"{path}.valueFrom.fieldRef.fieldPath", fp, _FIELD_REFS))
    for ref in ("configMapKeyRef", "secretKeyRef"):
        r = _d(vf.get(ref))
        if r and not r.get("name") and not r.get("optional"):
            errs.append(E.required(f"{path}.valueFrom.{ref}.name"))
        key = r.get("key")
        if isinstance(key, str) and key:
            _fmt(f"{path}.valueFrom.{ref}.key", key, formats.config_key(key), errs)


def _mount(m: JSON, path: str, volumes: set[str], mounts: set[str], errs: list[FieldError]) -> None:
    name = m.get("name")
    if isinstance(name, str):
        if not name:
            errs.append(E.required(f"{path}.name"))
        elif name not in volumes:
            errs.append(E.not_found(f"{path}.name", name))
    mp = m.get("mountPath")
    if isinstance(mp, str):
        if not mp:
            errs.append(E.required(f"{path}.mountPath"))
        elif mp in mounts:
            errs.append(E.invalid(f"{path}.mountPath", mp, "must be unique"))
        mounts.add(mp)
    sp = m.get("subPath")
    if isinstance(sp, str) and sp:
        if posixpath.isabs(sp):
            errs.append(E.invalid(f"{path}.subPath", sp, "must be a relative path"))
        elif ".." in sp.split("/"):
            errs.append(E.invalid(f"{path}.subPath", sp, "must not contain '..'"))


def _resources(res: JSON, path: str, errs: list[FieldError]) -> None:
    parsed: dict[str, dict[str, Any]] = {}
    for field in ("limits", "requests"):
        values = _d(res.get(field))
        parsed[field] = {}
        for rname, q in values.items():
            p = f"{path}.{field}[{rname}]"
            if rname not in _STANDARD_RESOURCES and not rname.startswith("hugepages-") and "/" not in rname:
                errs.append(E.invalid(p, rname, "must be a standard resource type or fully qualified"))
                continue
            try:
                v, _ = formats.parse_quantity(q)
            except ValueError:
                continue  # reported by the schema walk
            if v < 0:
                errs.append(E.invalid(p, q, "must be greater than or equal to 0"))
            parsed[field][rname] = (v, q)
    for rname, (req, q) in parsed["requests"].items():
        lim = parsed["limits"].get(rname)
        if lim is not None and req > lim[0]:
            errs.append(
                E.invalid(
                    f"{path}.requests",
                    q,
                    f"must be less than or equal to {rname} limit of {formats.canonical_quantity(lim[1])}",
                )
            )


def _handler(h: JSON, path: str, kinds: tuple[str, ...], errs: list[FieldError]) -> None:
    present = [k for k in kinds if h.get(k) is not None]
    if not present:
        errs.append(E.required(path, "must specify a handler type"))
    elif len(present) > 1:
        errs.append(E.forbidden(f"{path}.{present[1]}", "may not specify more than 1 handler type"))
    for k in ("httpGet", "tcpSocket", "grpc"):
        port = _d(h.get(k)).get("port")
        if isinstance(port, bool) or port is None:
            continue
        p = f"{path}.{k}.port"
        if isinstance(port, int):
            _fmt(p, port, formats.port_number(port), errs)
        elif isinstance(port, str) and k != "grpc":
            _fmt(p, port, formats.iana_svc_name(port), errs)


def _probe(pr: JSON, path: str, errs: list[FieldError], *, one_success: bool) -> None:
    _handler(pr, path, _HANDLERS, errs)
    for k, least in (
        ("initialDelaySeconds", 0),
        ("timeoutSeconds", 0),
        ("periodSeconds", 0),
        ("successThreshold", 0),
        ("failureThreshold", 0),
        ("terminationGracePeriodSeconds", 1),
    ):
        v = pr.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v < least:
            errs.append(E.invalid(f"{path}.{k}", v, f"must be greater than or equal to {least}"))
    st = pr.get("successThreshold")
    if one_success and isinstance(st, int) and st not in (0, 1):
        errs.append(E.invalid(f"{path}.successThreshold", st, "must be 1"))


def _toleration(t: JSON, path: str, errs: list[FieldError]) -> None:
    key, op = t.get("key"), t.get("operator")
    if isinstance(key, str) and key:
        _fmt(f"{path}.key", key, formats.qualified_name(key), errs)
    elif op not in ("Exists",):
        errs.append(
            E.invalid(
                f"{path}.operator",
                op,
                'operator must be Exists when `key` is empty, which means "match all values and all keys"',
            )
        )
    if op == "Exists" and t.get("value"):
        errs.append(
            E.invalid(f"{path}.operator", t.get("value"), "value must be empty when `operator` is 'Exists'")
        )
    if t.get("tolerationSeconds") is not None and t.get("effect") not in ("NoExecute",):
        errs.append(
            E.invalid(
                f"{path}.effect",
                t.get("effect"),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        )


def validate_labels(labels: JSON, path: str, errs: list[FieldError]) -> None:
    for k, v in labels.items():
        _fmt(path, k, formats.qualified_name(k), errs)
        if isinstance(v, str):
            _fmt(path, v, formats.label_value(v), errs)


def pod_spec_update(new: JSON, old: JSON, path: str, errs: list[FieldError]) -> None:
    """Upstream: a pod's spec is immutable but for images, a shorter activeDeadlineSeconds and
    added tolerations."""
    before = len(errs)
    ads_new, ads_old = new.get("activeDeadlineSeconds"), old.get("activeDeadlineSeconds")
    if ads_old is not None and ads_new is None:
        errs.append(
            E.invalid(
                join(path, "activeDeadlineSeconds"),
                None,
                "must not update from a positive integer to nil value",
            )
        )
    elif isinstance(ads_new, int) and isinstance(ads_old, int) and ads_new > ads_old:
        errs.append(
            E.invalid(
                join(path, "activeDeadlineSeconds"), ads_new, "must be less than or equal to previous value"
            )
        )
    new_tol, old_tol = _l(new.get("tolerations")), _l(old.get("tolerations"))
    if any(t not in new_tol for t in old_tol):
        errs.append(
            E.forbidden(
                join(path, "tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            )
        )
    if len(errs) > before:
        return
    mutated = dict(new)
    for key in ("activeDeadlineSeconds", "tolerations"):
        mutated.pop(key, None)
        if key in old:
            mutated[key] = old[key]
    for field in ("containers", "initContainers"):
        nc, oc = _l(new.get(field)), _l(old.get(field))
        if field in new and len(nc) == len(oc):
            mutated[field] = [
                {**_d(n), "image": _d(o).get("image")} if isinstance(n, dict) else n
                for n, o in zip(nc, oc, strict=True)
            ]
    if mutated != old:
        errs.append(
            E.forbidden(
                path,
                "pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
                "be set to 1 if it was previously negative)",
            )
        )
