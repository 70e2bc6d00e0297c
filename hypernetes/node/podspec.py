"""From a Kubernetes Pod object to the runtime's PodSpec: env resolution, $(VAR) expansion, users.

Lookups of ConfigMaps and Secrets go through a `Lookup` the caller provides (the node agent reads
them from the API), so this module stays pure and testable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from hypernetes.runtime.interface import ContainerSpec, MountSpec, PodSpec, VolumeFile, VolumeSpec
from hypernetes.runtime.sizing import parse_cpu, parse_memory

Obj = dict[str, Any]
# (kind "ConfigMap" | "Secret", namespace, name) -> the object, or None if it does not exist
Lookup = Callable[[str, str, str], Obj | None]

KERNEL_ANNOTATION = "hypernetes.io/kernel"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The pod refers to something missing (CreateContainerConfigError upstream)."""

    reason = "CreateContainerConfigError"


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: unknown references stay as written, $$ escapes a $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def _data(obj: Obj, kind: str) -> dict[str, str]:
    if kind == "Secret":
        raw = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return {**raw, **(obj.get("stringData") or {})}
    return {**(obj.get("data") or {})}


def _field_ref(pod: Obj, path: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def _resource_ref(container: Obj, ref: Obj) -> str:
    resource = ref.get("resource", "")
    limits = {
        **((container.get("resources") or {}).get("requests") or {}),
        **((container.get("resources") or {}).get("limits") or {}),
    }
    _, _, what = resource.partition(".")
    value = limits.get(what)
    if value is None:
        return "0"
    divisor = str(ref.get("divisor") or "1")
    if what == "cpu":
        return str(-(-parse_cpu(str(value)) // parse_cpu(divisor)))
    return str(-(-parse_memory(str(value)) // parse_memory(divisor)))


def container_env(pod: Obj, container: Obj, lookup: Lookup) -> list[tuple[str, str]]:
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            obj = lookup(kind, namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for k, v in _data(obj, kind).items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        src = item["valueFrom"]
        if "fieldRef" in src:
            env[name] = _field_ref(pod, src["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in src:
            env[name] = _resource_ref(container, src["resourceFieldRef"])
        else:
            kind, ref = (
                ("ConfigMap", src.get("configMapKeyRef"))
                if "configMapKeyRef" in src
                else ("Secret", src.get("secretKeyRef"))
            )
            ref = ref or {}
            obj = lookup(kind, namespace, ref.get("name", ""))
            data = _data(obj, kind) if obj is not None else None
            if data is None or ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind.lower()} "{ref.get("name")}"'
                missing_key = f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}"
                raise ConfigError(f"{what} not found" if data is None else missing_key)
            env[name] = data[ref["key"]]
    return list(env.items())


def _user(pod: Obj, container: Obj) -> str | None:
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if uid is None:
        return None if gid is None else f"0:{gid}"
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _limit(container: Obj, what: str) -> str | None:
    res = container.get("resources") or {}
    value = (res.get("limits") or {}).get(what) or (res.get("requests") or {}).get(what)
    return None if value is None else str(value)


def container_spec(pod: Obj, container: Obj, lookup: Lookup) -> ContainerSpec:
    env = container_env(pod, container, lookup)
    env_map = dict(env)
    command = container.get("command")
    args = container.get("args")
    cpu, mem = _limit(container, "cpu"), _limit(container, "memory")
    return ContainerSpec(
        name=container["name"],
        image=container["image"],
        command=tuple(expand(c, env_map) for c in command) if command else None,
        args=tuple(expand(a, env_map) for a in args) if args is not None else None,
        env=tuple(env),
        working_dir=container.get("workingDir") or None,
        user=_user(pod, container),
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
        cpu_limit_millis=parse_cpu(cpu) if cpu else None,
        memory_limit=parse_memory(mem) if mem else None,
        mounts=tuple(
            MountSpec(m["name"], m["mountPath"], bool(m.get("readOnly")), m.get("subPath", ""))
            for m in container.get("volumeMounts") or []
        ),
    )


def sandbox_id(pod: Obj) -> str:
    """The pod's uid is unique forever: a re-created pod of the same name gets a new VM."""
    return str(pod["metadata"]["uid"]).lower()


def pod_spec(pod: Obj, lookup: Lookup) -> PodSpec:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    return PodSpec(
        id=sandbox_id(pod),
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        containers=tuple(container_spec(pod, c, lookup) for c in spec.get("containers") or []),
        hostname=spec.get("hostname") or meta["name"],
        kernel=(meta.get("annotations") or {}).get(KERNEL_ANNOTATION),
        termination_grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
        volumes=tuple(volume_spec(pod, v, lookup) for v in spec.get("volumes") or []),
        fs_group=((spec.get("securityContext") or {}).get("fsGroup")),
    )


def _key_files(obj: Obj | None, kind: str, ref: Obj, default_mode: int, namespace: str) -> list[VolumeFile]:
    """The files a configMap or secret (volume or projected source) contributes."""
    name = ref.get("name") or ref.get("secretName") or ""
    if obj is None:
        if ref.get("optional"):
            return []
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data = {k: v.encode() for k, v in _data(obj, kind).items()}
    if kind == "ConfigMap":
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = ref.get("items")
    if not items:
        return [VolumeFile(k, v, default_mode) for k, v in sorted(data.items())]
    files = []
    for item in items:
        if item["key"] not in data:
            if ref.get("optional"):
                continue
            raise ConfigError(f"couldn't find key {item['key']} in {kind} {namespace}/{name}")
        files.append(VolumeFile(item["path"], data[item["key"]], int(item.get("mode", default_mode))))
    return files


def _downward_files(pod: Obj, items: list[Obj], default_mode: int) -> list[VolumeFile]:
    files = []
    for item in items:
        if "fieldRef" not in item:
            raise ConfigError(f"downwardAPI item {item.get('path')}: only fieldRef is supported")
        path = item["fieldRef"].get("fieldPath", "")
        meta = pod.get("metadata") or {}
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            text = "".join(f'{k}="{v}"\n' for k, v in sorted(values.items()))
        else:
            text = _field_ref(pod, path)
        files.append(VolumeFile(item["path"], text.encode(), int(item.get("mode", default_mode))))
    return files


def volume_spec(pod: Obj, volume: Obj, lookup: Lookup) -> VolumeSpec:
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    name = volume["name"]
    if "emptyDir" in volume:
        limit = (volume["emptyDir"] or {}).get("sizeLimit")
        return VolumeSpec(name, "emptyDir", size_limit=parse_memory(str(limit)) if limit else 0)
    files: list[VolumeFile] = []
    if "configMap" in volume:
        ref = volume["configMap"]
        mode = int(ref.get("defaultMode", 0o644))
        files = _key_files(lookup("ConfigMap", ns, ref.get("name", "")), "ConfigMap", ref, mode, ns)
    elif "secret" in volume:
        ref = volume["secret"]
        mode = int(ref.get("defaultMode", 0o644))
        files = _key_files(lookup("Secret", ns, ref.get("secretName", "")), "Secret", ref, mode, ns)
    elif "downwardAPI" in volume:
        ref = volume["downwardAPI"]
        files = _downward_files(pod, ref.get("items") or [], int(ref.get("defaultMode", 0o644)))
    elif "projected" in volume:
        ref = volume["projected"]
        mode = int(ref.get("defaultMode", 0o644))
        for source in ref.get("sources") or []:
            if "configMap" in source:
                cm = source["configMap"]
                files += _key_files(lookup("ConfigMap", ns, cm.get("name", "")), "ConfigMap", cm, mode, ns)
            elif "secret" in source:
                sec = source["secret"]
                files += _key_files(lookup("Secret", ns, sec.get("name", "")), "Secret", sec, mode, ns)
            elif "downwardAPI" in source:
                files += _downward_files(pod, source["downwardAPI"].get("items") or [], mode)
            elif "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                found = lookup(TOKEN_KIND, ns, token_key(sat))
                if found is None:
                    raise ConfigError("no service-account token could be obtained for this pod")
                files.append(VolumeFile(sat.get("path") or "token", str(found["token"]).encode(), mode))
    else:
        raise ConfigError(f"volume {name}: this volume type is not supported")
    return VolumeSpec(name, "files", files=tuple(files))


TOKEN_KIND = "ServiceAccountToken"  # a pseudo-kind: tokens the node asks for, by token_key


def token_key(source: Obj) -> str:
    """What distinguishes one projected token from another: lifetime and audience."""
    return f"{int(source.get('expirationSeconds') or 3600)}|{source.get('audience') or ''}"


def referenced_objects(pod: Obj) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's env and volumes use, and
    (TOKEN_KIND, token_key) of every service-account token it projects."""
    wanted: set[tuple[str, str]] = set()
    spec = pod.get("spec") or {}
    for c in spec.get("containers") or []:
        for src in c.get("envFrom") or []:
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in src:
                    wanted.add((kind, src[key].get("name", "")))
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in vf:
                    wanted.add((kind, vf[key].get("name", "")))
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            wanted.add(("ConfigMap", v["configMap"].get("name", "")))
        if "secret" in v:
            wanted.add(("Secret", v["secret"].get("secretName", "")))
        for source in (v.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                wanted.add(("ConfigMap", source["configMap"].get("name", "")))
            if "secret" in source:
                wanted.add(("Secret", source["secret"].get("name", "")))
            if "serviceAccountToken" in source:
                wanted.add((TOKEN_KIND, token_key(source["serviceAccountToken"])))
    return wanted
