"""From a Kubernetes Pod object to the runtime's PodSpec: env resolution, $(VAR) expansion, users,
volumes (persistent volume claims resolved to their bound PV's disk, per docs/volumes.md).

Lookups of ConfigMaps, Secrets, claims, PVs and the namespace go through a `Lookup` the caller
provides (the node agent reads them from the API), so this module stays pure and testable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypernetes.objects import Obj
from hypernetes.objects.names import KERNEL_ANNOTATION, TENANT_LABEL
from hypernetes.runtime.images import Credentials, ImageError, RegistryAuth
from hypernetes.runtime.interface import (
    BlockDevice,
    ContainerSpec,
    DeviceSpec,
    MountSpec,
    PodSpec,
    RbdImage,
    VolumeFile,
    VolumeSpec,
)
from hypernetes.runtime.podsize import container_limits, emptydir_sizes, pod_overhead
from hypernetes.runtime.sizing import positive_bytes, positive_millicpu
from hypernetes.volumes.local import FS_TYPES, VolumeError, check_handle
from hypernetes.volumes.objects import LOCAL_DRIVER, pv_node
from hypernetes.volumes.rbd_objects import IMAGE_NAME, POOL, RBD_DRIVER, credentials_from_secret

# (kind, namespace, name) -> the object, or None if it does not exist; kinds: "ConfigMap",
# "Secret", "PersistentVolumeClaim", and the cluster-scoped "PersistentVolume" and "Namespace"
# (namespace "")
Lookup = Callable[[str, str, str], Obj | None]
# (volume handle, format) -> the disk file on this node
BlockPath = Callable[[str, str], str]

PVC_KIND = "PersistentVolumeClaim"
PV_KIND = "PersistentVolume"
NS_KIND = "Namespace"
CLUSTER_KINDS = frozenset({PV_KIND, NS_KIND, "Node"})

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The pod refers to something missing (CreateContainerConfigError upstream)."""

    reason = "CreateContainerConfigError"
    event = "Failed"  # the reason of the Warning event the node reports

    @property
    def event_message(self) -> str:
        return f"Error: {self}"


class VolumeConfigError(ConfigError):
    """A volume cannot be attached yet (unbound claim, missing PV, ...): as upstream, the pod
    stays ContainerCreating and the node reports FailedMount events until it can."""

    reason = "ContainerCreating"
    event = "FailedMount"

    @property
    def event_message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class ClaimDisk:
    """A pod volume's persistent volume claim, resolved to its bound PV's disk on this node."""

    volume: str  # the pod's volume name
    namespace: str
    claim: str
    pv: str
    pv_uid: str
    handle: str
    format: str  # "raw" | "qcow2"
    fs_type: str  # "" for volumeMode Block
    size: int  # bytes: the PV's capacity
    read_only: bool
    driver: str = LOCAL_DRIVER
    pool: str = ""  # RBD: the image's pool
    secret: tuple[str, str] = ("", "")  # RBD: (namespace, name) of the nodeStageSecretRef

    @property
    def key(self) -> str:
        """The claim, as `namespace/name`: what the node counts users of."""
        return f"{self.namespace}/{self.claim}"


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
    divisor = ref.get("divisor") or "1"
    # upstream's ExtractContainerResourceValue: ceil(value / divisor), CPU in millicores
    if what == "cpu":
        return str(-(-positive_millicpu(value) // positive_millicpu(divisor)))
    return str(-(-positive_bytes(value) // positive_bytes(divisor)))


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


def _cpu_request(container: Obj) -> int | None:
    value = ((container.get("resources") or {}).get("requests") or {}).get("cpu")
    return positive_millicpu(value) if value is not None else None


def container_spec(
    pod: Obj, container: Obj, lookup: Lookup, volumes: dict[str, VolumeSpec] | None = None
) -> ContainerSpec:
    """`volumes` (the pod's, by name) makes mounts of a read-only disk read-only and checks
    volumeDevices name a raw block volume."""
    env = container_env(pod, container, lookup)
    env_map = dict(env)
    command = container.get("command")
    args = container.get("args")
    cpu, mem = container_limits(container)  # as admission and the scheduler sized its VM
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
        cpu_limit_millis=cpu,
        cpu_request_millis=_cpu_request(container),
        memory_limit=mem,
        mounts=tuple(
            MountSpec(
                m["name"],
                m["mountPath"],
                bool(m.get("readOnly")) or _read_only_disk(volumes, m["name"]),
                m.get("subPath", ""),
            )
            for m in container.get("volumeMounts") or []
        ),
        devices=tuple(_device(volumes, container["name"], d) for d in container.get("volumeDevices") or []),
        pull_policy=str(container.get("imagePullPolicy") or "IfNotPresent"),
    )


def _read_only_disk(volumes: dict[str, VolumeSpec] | None, name: str) -> bool:
    v = (volumes or {}).get(name)
    return v is not None and v.block is not None and v.block.read_only


def _device(volumes: dict[str, VolumeSpec] | None, container: str, d: Obj) -> DeviceSpec:
    v = (volumes or {}).get(d.get("name", ""))
    if v is None or v.block is None or v.block.fs_type:
        raise VolumeConfigError(
            f'container {container}: volumeDevices "{d.get("name")}" must name a '
            "persistentVolumeClaim volume of volumeMode Block"
        )
    return DeviceSpec(v.name, d["devicePath"])


def sandbox_id(pod: Obj) -> str:
    """The pod's uid is unique forever: a re-created pod of the same name gets a new VM."""
    return str(pod["metadata"]["uid"]).lower()


def pod_spec(pod: Obj, lookup: Lookup, block_path: BlockPath | None = None) -> PodSpec:
    """`block_path` locates persistent volumes' disks; without it a pod with a claim is refused."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    volumes = tuple(volume_spec(pod, v, lookup, block_path) for v in spec.get("volumes") or [])
    by_name = {v.name: v for v in volumes}
    overhead = pod_overhead(pod)  # node admission refused a pod whose overhead is no quantity
    return PodSpec(
        id=sandbox_id(pod),
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        containers=tuple(container_spec(pod, c, lookup, by_name) for c in spec.get("containers") or []),
        hostname=spec.get("hostname") or meta["name"],
        kernel=(meta.get("annotations") or {}).get(KERNEL_ANNOTATION),
        termination_grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
        volumes=volumes,
        fs_group=((spec.get("securityContext") or {}).get("fsGroup")),
        overhead_millicpu=overhead[0],
        overhead_memory=overhead[1],
        pull_credentials=pull_credentials(pod, lookup),
    )


# imagePullSecrets types and the key of their docker JSON, as upstream's credentialprovider
_PULL_SECRET_KEYS = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}


def pull_credentials(pod: Obj, lookup: Lookup) -> tuple[tuple[str, Credentials], ...]:
    """(registry, credentials) from the pod's imagePullSecrets, earlier secrets first. As the
    kubelet does, a secret that is missing or of another type is skipped (the pull then runs
    without it); one whose docker JSON is malformed is an error the tenant can fix."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    found: dict[str, Credentials] = {}
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        name = str((ref or {}).get("name") or "")
        secret = lookup("Secret", ns, name) if name else None
        key = _PULL_SECRET_KEYS.get(str((secret or {}).get("type") or ""))
        if secret is None or key is None:
            continue
        text = _data(secret, "Secret").get(key, "")
        try:
            auth = RegistryAuth.from_docker_json(
                text, f'imagePullSecret "{name}"', legacy=key == ".dockercfg"
            )
        except ImageError as e:
            raise ConfigError(str(e)) from e
        for registry in auth.registries:
            creds = auth.lookup(registry)
            if creds is not None:
                found.setdefault(registry, creds)
    return tuple(found.items())


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


def volume_spec(pod: Obj, volume: Obj, lookup: Lookup, block_path: BlockPath | None = None) -> VolumeSpec:
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    name = volume["name"]
    if "emptyDir" in volume:
        limit = (volume["emptyDir"] or {}).get("sizeLimit")
        medium = (volume["emptyDir"] or {}).get("medium") or ""
        if medium not in ("", "Memory"):
            raise ConfigError(f'volume {name}: emptyDir medium "{medium}" is not supported ("" or "Memory")')
        # a disk emptyDir's partition is exactly what the pod was scheduled and counted by
        size = positive_bytes(limit) if medium == "Memory" and limit else emptydir_sizes(pod).get(name, 0)
        return VolumeSpec(name, "emptyDir", size_limit=size, medium=medium)
    if "persistentVolumeClaim" in volume:
        disk = claim_disk(pod, volume, lookup)
        if disk.driver == RBD_DRIVER:
            return VolumeSpec(name, "block", block=rbd_device(disk, lookup))
        if block_path is None:
            raise VolumeConfigError(f'volume "{name}": this node has no volume store for persistent volumes')
        try:
            path = block_path(disk.handle, disk.format)
        except VolumeError as e:
            raise VolumeConfigError(f'volume "{name}": {e}') from e
        return VolumeSpec(name, "block", block=BlockDevice(path, disk.format, disk.fs_type, disk.read_only))
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


def storage_size(obj: Obj, where: str) -> int | None:
    """`<where>.storage` (spec.capacity, status.capacity, ...) in bytes, None if absent."""
    node: Any = obj
    for part in where.split("."):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    value = (node or {}).get("storage") if isinstance(node, dict) else None
    if value is None:
        return None
    try:
        return positive_bytes(value)
    except ValueError:
        return None


def claim_disk(pod: Obj, volume: Obj, lookup: Lookup) -> ClaimDisk:
    """Resolve a `persistentVolumeClaim` pod volume through its claim and bound PV, checking what
    upstream's kubelet checks (bound, the PV names the claim) and what local disks need (the PV
    is a local.hypernetes.io volume of this node, of the namespace's tenant, in the right mode)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ns, name = meta.get("namespace", "default"), volume["name"]
    source = volume["persistentVolumeClaim"] or {}
    claim_name = source.get("claimName", "")

    def fail(message: str) -> VolumeConfigError:
        return VolumeConfigError(f'volume "{name}": {message}')

    pvc = lookup(PVC_KIND, ns, claim_name)
    if pvc is None:
        raise fail(f'persistentvolumeclaim "{claim_name}" not found')
    pv_name = (pvc.get("spec") or {}).get("volumeName") or ""
    if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
        raise fail(f'persistentvolumeclaim "{claim_name}" is not bound')
    if (pvc.get("metadata") or {}).get("deletionTimestamp"):
        raise fail(f'persistentvolumeclaim "{claim_name}" is being deleted')
    pv = lookup(PV_KIND, "", pv_name)
    if pv is None:
        raise fail(f'persistentvolume "{pv_name}" bound to claim "{claim_name}" not found')
    pv_meta, pv_spec = pv.get("metadata") or {}, pv.get("spec") or {}
    ref = pv_spec.get("claimRef") or {}
    pvc_uid = (pvc.get("metadata") or {}).get("uid")
    if (
        ref.get("namespace") != ns
        or ref.get("name") != claim_name
        or (ref.get("uid") and pvc_uid and ref["uid"] != pvc_uid)
    ):
        raise fail(
            f'persistentvolume "{pv_name}" is bound to another claim '
            f"({ref.get('namespace')}/{ref.get('name')})"
        )
    if pv_meta.get("deletionTimestamp"):
        raise fail(f'persistentvolume "{pv_name}" is being deleted')
    csi = pv_spec.get("csi") or {}
    driver = csi.get("driver")
    if driver not in (LOCAL_DRIVER, RBD_DRIVER):
        raise fail(
            f'persistentvolume "{pv_name}" is not a {LOCAL_DRIVER} volume nor a {RBD_DRIVER} one: '
            "only those can be attached to pod VMs"
        )
    node = pv_node(pv)
    if driver == LOCAL_DRIVER and (node is None or node != spec.get("nodeName")):
        where = f'on node "{node}"' if node else "on no node (no kubernetes.io/hostname node affinity)"
        raise fail(
            f'volume node affinity conflict: persistentvolume "{pv_name}" is {where}, '
            f'this pod is on node "{spec.get("nodeName")}"'
        )
    namespace = lookup(NS_KIND, "", ns)
    if namespace is None:
        raise fail(f'namespace "{ns}" not found')
    ns_tenant = ((namespace.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL) or None
    pv_tenant = (pv_meta.get("labels") or {}).get(TENANT_LABEL) or None
    if ns_tenant != pv_tenant:

        def who(t: str | None) -> str:
            return f'tenant "{t}"' if t else "no tenant"

        raise fail(
            f'persistentvolume "{pv_name}" belongs to {who(pv_tenant)}, namespace "{ns}" to {who(ns_tenant)}'
        )
    mode = pv_spec.get("volumeMode") or "Filesystem"
    claim_mode = (pvc.get("spec") or {}).get("volumeMode") or "Filesystem"
    if mode not in ("Filesystem", "Block") or mode != claim_mode:
        raise fail(f'persistentvolume "{pv_name}" has volumeMode {mode}, its claim {claim_mode}')
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        mounted = any(m.get("name") == name for m in c.get("volumeMounts") or [])
        device = any(d.get("name") == name for d in c.get("volumeDevices") or [])
        if mode == "Block" and mounted:
            raise fail(f"container {c.get('name')}: volumeMode Block: use volumeDevices, not volumeMounts")
        if mode == "Filesystem" and device:
            raise fail(
                f"container {c.get('name')}: volumeMode Filesystem: use volumeMounts, not volumeDevices"
            )
    handle = str(csi.get("volumeHandle") or "")
    fmt = str((csi.get("volumeAttributes") or {}).get("format") or "raw")
    fs_type = "" if mode == "Block" else str(csi.get("fsType") or "ext4")
    pool, secret = "", ("", "")
    if driver == RBD_DRIVER:
        fmt, pool = "raw", str((csi.get("volumeAttributes") or {}).get(POOL) or "")
        ref = csi.get("nodeStageSecretRef") or {}
        secret = (str(ref.get("namespace") or ""), str(ref.get("name") or ""))
        if not IMAGE_NAME.fullmatch(handle) or not pool or not all(secret):
            raise fail(f'persistentvolume "{pv_name}": not a complete {RBD_DRIVER} volume')
    else:
        try:
            check_handle(handle, fmt)
        except VolumeError as e:
            raise fail(f'persistentvolume "{pv_name}": {e}') from e
    if fs_type and fs_type not in FS_TYPES:
        raise fail(
            f'persistentvolume "{pv_name}": fsType {fs_type} is not supported '
            f"(supported: {', '.join(FS_TYPES)})"
        )
    size = storage_size(pv, "spec.capacity")
    if not size:
        raise fail(f'persistentvolume "{pv_name}" has no valid capacity.storage')
    modes = set((pvc.get("spec") or {}).get("accessModes") or [])
    read_only = bool(source.get("readOnly")) or modes == {"ReadOnlyMany"}
    return ClaimDisk(
        name,
        ns,
        claim_name,
        pv_name,
        str(pv_meta.get("uid") or ""),
        handle,
        fmt,
        fs_type,
        size,
        read_only,
        str(driver),
        pool,
        secret,
    )


def rbd_device(disk: ClaimDisk, lookup: Lookup) -> BlockDevice:
    """An RBD claim's disk: QEMU opens the image with the node-stage Secret's credentials."""
    ns, name = disk.secret
    secret = lookup("Secret", ns, name)
    where = f'secret "{ns}/{name}" (the nodeStageSecretRef of persistentvolume "{disk.pv}")'
    if secret is None:
        raise VolumeConfigError(f'volume "{disk.volume}": {where} not found')
    try:
        creds = credentials_from_secret(secret)
    except ValueError as e:
        raise VolumeConfigError(f'volume "{disk.volume}": {where}: {e}') from None
    image = RbdImage(disk.pool, disk.handle, creds.user, creds.monitors, creds.key)
    return BlockDevice("", "raw", disk.fs_type, disk.read_only, rbd=image)


def rbd_secrets(pvs: Iterable[Obj]) -> set[tuple[str, str]]:
    """(namespace, name) of the node-stage Secrets of the RBD PVs among `pvs`."""
    out = set()
    for pv in pvs:
        csi = (pv.get("spec") or {}).get("csi") or {}
        ref = csi.get("nodeStageSecretRef") or {}
        if csi.get("driver") == RBD_DRIVER and ref.get("name") and ref.get("namespace"):
            out.add((str(ref["namespace"]), str(ref["name"])))
    return out


def claim_disks(pod: Obj, lookup: Lookup) -> list[ClaimDisk]:
    return [
        claim_disk(pod, v, lookup)
        for v in (pod.get("spec") or {}).get("volumes") or []
        if "persistentVolumeClaim" in v
    ]


def pod_claims(pod: Obj) -> dict[str, bool]:
    """The claims (`namespace/name`) a pod uses, each with whether its volume source says
    readOnly: what can be known from the pod object alone."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    claims: dict[str, bool] = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        source = v.get("persistentVolumeClaim")
        if isinstance(source, dict):
            key = f"{ns}/{source.get('claimName', '')}"
            claims[key] = claims.get(key, True) and bool(source.get("readOnly"))
    return claims


TOKEN_KIND = "ServiceAccountToken"  # a pseudo-kind: tokens the node asks for, by token_key


def token_key(source: Obj) -> str:
    """What distinguishes one projected token from another: lifetime and audience."""
    return f"{int(source.get('expirationSeconds') or 3600)}|{source.get('audience') or ''}"


def referenced_objects(pod: Obj) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap, Secret and PersistentVolumeClaim the pod's env and volumes
    use (and its Namespace, when it has claims: a PV must be of the namespace's tenant), and
    (TOKEN_KIND, token_key) of every service-account token it projects. The claims' PVs are
    known once the claims are read: `claim_volume_names`."""
    wanted: set[tuple[str, str]] = set()
    spec = pod.get("spec") or {}
    for ref in spec.get("imagePullSecrets") or []:
        if (ref or {}).get("name"):
            wanted.add(("Secret", str(ref["name"])))
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
        if "persistentVolumeClaim" in v:
            wanted.add((PVC_KIND, (v["persistentVolumeClaim"] or {}).get("claimName", "")))
            wanted.add((NS_KIND, (pod.get("metadata") or {}).get("namespace", "default")))
    return wanted


def claim_volume_names(claims: list[Obj]) -> set[tuple[str, str]]:
    """(PV_KIND, name) of the PVs the given claims are bound to."""
    return {
        (PV_KIND, str((c.get("spec") or {}).get("volumeName")))
        for c in claims
        if (c.get("spec") or {}).get("volumeName")
    }
