"""Per-kind Table columns and cells, as upstream's printers compute them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypernetes.api.schema.formats import canonical_quantity

JSON = dict[str, Any]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    format: str
    description: str
    priority: int = 0

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Context:
    now: datetime


Row = Callable[[JSON, Context], list[Any]]


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _time(ts: Any) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: "45s", "5m10s", "3h", "2d5h", "3y"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(ts: Any, ctx: Context) -> str:
    t = _time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((ctx.now - t).total_seconds())


def age_of(obj: JSON, ctx: Context) -> str:
    return since(_d(obj.get("metadata")).get("creationTimestamp"), ctx)


def _name(obj: JSON) -> str:
    return str(_d(obj.get("metadata")).get("name", ""))


_NAME = Column(
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating "
    "resources, although some resources may allow a client to request the generation of an "
    "appropriate name automatically.",
)
_AGE = Column(
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)


# -- pods --------------------------------------------------------------------------------------

POD_COLUMNS = (
    _NAME,
    Column("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", "string", "", "The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        "string",
        "",
        "The number of times the containers in this pod have been restarted "
        "and when the last container in this pod has restarted.",
    ),
    _AGE,
    Column("IP", "string", "", "podIP address allocated to the pod.", 1),
    Column("Node", "string", "", "NodeName indicates in which node this pod is scheduled.", 1),
    Column(
        "Nominated Node",
        "string",
        "",
        "nominatedNodeName is set when this pod preempts other pods on the node.",
        1,
    ),
    Column(
        "Readiness Gates",
        "string",
        "",
        "If specified, all readiness gates will be evaluated for pod readiness.",
        1,
    ),
)


def _terminated_at(cs: JSON) -> datetime | None:
    return _time(_d(_d(cs.get("lastState")).get("terminated")).get("finishedAt"))


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _condition_true(status: JSON, ctype: str) -> bool:
    return any(
        _d(c).get("type") == ctype and _d(c).get("status") == "True" for c in _l(status.get("conditions"))
    )


def pod_row(pod: JSON, ctx: Context) -> list[Any]:
    spec, status, meta = _d(pod.get("spec")), _d(pod.get("status")), _d(pod.get("metadata"))
    init_specs = {_d(c).get("name"): _d(c) for c in _l(spec.get("initContainers"))}
    total = len(_l(spec.get("containers")))
    total += sum(1 for c in init_specs.values() if c.get("restartPolicy") == "Always")
    ready = restarts = sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for c in _l(status.get("conditions")):
        if _d(c).get("type") == "PodScheduled" and _d(c).get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    initializing = False
    init_statuses = [_d(c) for c in _l(status.get("initContainerStatuses"))]
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        last_restart = _later(last_restart, _terminated_at(cs))
        sidecar = init_specs.get(cs.get("name"), {}).get("restartPolicy") == "Always"
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            last_sidecar_restart = _later(last_sidecar_restart, _terminated_at(cs))
        state = _d(cs.get("state"))
        term, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and term.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready"):
                ready += 1
            continue
        if isinstance(term, dict):
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif isinstance(waiting, dict) and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed([_d(c) for c in _l(status.get("containerStatuses"))]):
            restarts += int(cs.get("restartCount") or 0)
            last_restart = _later(last_restart, _terminated_at(cs))
            state = _d(cs.get("state"))
            waiting, term = _d(state.get("waiting")), state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif isinstance(term, dict) and term.get("reason"):
                reason = term["reason"]
            elif isinstance(term, dict):
                reason = (
                    f"Signal:{term['signal']}"
                    if term.get("signal")
                    else f"ExitCode:{term.get('exitCode', 0)}"
                )
            elif cs.get("ready") and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration((ctx.now - last_restart).total_seconds())} ago)"

    ips = _l(status.get("podIPs"))
    ip = _d(ips[0]).get("ip") if ips else status.get("podIP")
    gates = _l(spec.get("readinessGates"))
    gates_cell = "<none>"
    if gates:
        conds = {_d(c).get("type"): _d(c).get("status") for c in _l(status.get("conditions"))}
        true = sum(1 for g in gates if conds.get(_d(g).get("conditionType")) == "True")
        gates_cell = f"{true}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        age_of(pod, ctx),
        ip or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# -- workloads ---------------------------------------------------------------------------------


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def selector_string(sel: Any) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key."""
    if not isinstance(sel, dict):
        return "<none>"
    reqs: list[tuple[str, str]] = []
    for k, v in _d(sel.get("matchLabels")).items():
        reqs.append((k, f"{k}={v}"))
    for r in _l(sel.get("matchExpressions")):
        r = _d(r)
        key, op, values = (
            str(r.get("key", "")),
            r.get("operator"),
            sorted(str(x) for x in _l(r.get("values"))),
        )
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: "k=v,..." sorted, or <none>."""
    items = sorted(_d(labels).items())
    return ",".join(f"{k}={v}" for k, v in items) if items else "<none>"


def _containers_images(obj: JSON) -> list[str]:
    containers = [
        _d(c) for c in _l(_d(_d(_d(obj.get("spec")).get("template")).get("spec")).get("containers"))
    ]
    return [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
    ]


_CONTAINERS = Column("Containers", "string", "", "Names of each container in the template.", 1)
_IMAGES = Column("Images", "string", "", "Images referenced by each container in the template.", 1)
_SELECTOR = Column("Selector", "string", "", "Label selector for pods.", 1)

DEPLOYMENT_COLUMNS = (
    _NAME,
    Column("Ready", "string", "", "Number of the pod with ready state"),
    Column(
        "Up-to-date",
        "integer",
        "",
        "Total number of non-terminated pods targeted by this deployment "
        "that have the desired template spec.",
    ),
    Column(
        "Available",
        "integer",
        "",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _SELECTOR,
)


def deployment_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    desired = spec.get("replicas", 1)
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_int(desired)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        age_of(obj, ctx),
        *_containers_images(obj),
        selector_string(spec.get("selector")),
    ]


REPLICASET_COLUMNS = (
    _NAME,
    Column("Desired", "integer", "", "Replicas is the number of desired pods."),
    Column("Current", "integer", "", "Replicas is the most recently observed number of replicas."),
    Column("Ready", "integer", "", "The number of ready replicas for this replica set."),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _SELECTOR,
)


def replicaset_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        _int(spec.get("replicas", 1)),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        age_of(obj, ctx),
        *_containers_images(obj),
        selector_string(spec.get("selector")),
    ]


JOB_COLUMNS = (
    _NAME,
    Column("Status", "string", "", "Status of the job."),
    Column("Completions", "string", "", "The number of pods which reached phase Succeeded."),
    Column("Duration", "string", "", "Time required to complete the job."),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _SELECTOR,
)


def job_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec['completions'])}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    start, end = _time(status.get("startTime")), _time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or ctx.now) - start).total_seconds())
    meta = _d(obj.get("metadata"))
    if _condition_true(status, "Complete"):
        state = "Complete"
    elif _condition_true(status, "Failed"):
        state = "Failed"
    elif meta.get("deletionTimestamp"):
        state = "Terminating"
    elif _condition_true(status, "Suspended"):
        state = "Suspended"
    elif _condition_true(status, "FailureTarget"):
        state = "FailureTarget"
    elif _condition_true(status, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    return [
        _name(obj),
        state,
        completions,
        duration,
        age_of(obj, ctx),
        *_containers_images(obj),
        selector_string(spec.get("selector")),
    ]


# -- services and endpoints --------------------------------------------------------------------

SERVICE_COLUMNS = (
    _NAME,
    Column("Type", "string", "", "type determines how the Service is exposed."),
    Column("Cluster-IP", "string", "", "clusterIP is the IP address of the service."),
    Column(
        "External-IP",
        "string",
        "",
        "externalIPs is a list of IP addresses for which nodes in the "
        "cluster will also accept traffic for this service.",
    ),
    Column("Port(s)", "string", "", "The list of ports that are exposed by this service."),
    _AGE,
    Column(
        "Selector",
        "string",
        "",
        "Route service traffic to pods with label keys and values matching this selector.",
        1,
    ),
)


def _external_ip(spec: JSON, status: JSON) -> str:
    stype = spec.get("type") or "ClusterIP"
    external = [str(x) for x in _l(spec.get("externalIPs"))]
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if stype == "LoadBalancer":
        ingress = [_d(i) for i in _l(_d(status.get("loadBalancer")).get("ingress"))]
        lb = [str(i.get("ip") or i.get("hostname")) for i in ingress if i.get("ip") or i.get("hostname")]
        if lb or external:
            return ",".join(lb + external)
        return "<pending>"
    if stype == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def service_row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    ips = _l(spec.get("clusterIPs"))
    cluster_ip = str(ips[0]) if ips else spec.get("clusterIP") or "<none>"
    ports = []
    for p in _l(spec.get("ports")):
        p = _d(p)
        proto = p.get("protocol") or "TCP"
        ports.append(
            f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}"
        )
    selector = _d(spec.get("selector"))
    return [
        _name(obj),
        spec.get("type") or "ClusterIP",
        cluster_ip,
        _external_ip(spec, _d(obj.get("status"))),
        ",".join(ports) or "<none>",
        age_of(obj, ctx),
        format_labels(selector),
    ]


ENDPOINTS_COLUMNS = (
    _NAME,
    Column("Endpoints", "string", "", "Endpoints is the list of endpoints in the service."),
    _AGE,
)


def _host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_endpoints(obj: JSON) -> str:
    subsets = [_d(s) for s in _l(obj.get("subsets"))]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count, more = 0, False
    for ss in subsets:
        addrs = [str(_d(a).get("ip", "")) for a in _l(ss.get("addresses"))]
        ports: list[JSON | None] = [_d(p) for p in _l(ss.get("ports"))]
        for port in ports or [None]:  # headless services may have no ports
            count += len(addrs)
            for ip in addrs:
                if len(shown) == 3:
                    more = True
                    break
                shown.append(ip if port is None else _host_port(ip, port.get("port")))
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if more else text


def endpoints_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), format_endpoints(obj), age_of(obj, ctx)]


# -- cluster -----------------------------------------------------------------------------------

NODE_COLUMNS = (
    _NAME,
    Column("Status", "string", "", "The status of the node"),
    Column("Roles", "string", "", "The roles of the node"),
    _AGE,
    Column("Version", "string", "", "Kubelet Version reported by the node."),
    Column("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
    Column("External-IP", "string", "", "List of addresses reachable to the node.", 1),
    Column(
        "OS-Image",
        "string",
        "",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        1,
    ),
    Column(
        "Kernel-Version",
        "string",
        "",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        1,
    ),
    Column(
        "Container-Runtime",
        "string",
        "",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        1,
    ),
)


def node_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status, meta = _d(obj.get("spec")), _d(obj.get("status")), _d(obj.get("metadata"))
    states = []
    for c in _l(status.get("conditions")):
        c = _d(c)
        if c.get("type") == "Ready":
            states = ["Ready" if c.get("status") == "True" else "NotReady"]
    states = states or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for k, v in _d(meta.get("labels")).items():
        if k.startswith("node-role.kubernetes.io/") and k[len("node-role.kubernetes.io/") :]:
            roles.add(k[len("node-role.kubernetes.io/") :])
        elif k == "kubernetes.io/role" and v:
            roles.add(str(v))
    info = _d(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for a in _l(status.get("addresses")):
            if _d(a).get("type") == kind:
                return str(_d(a).get("address", ""))
        return "<none>"

    return [
        _name(obj),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        age_of(obj, ctx),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NAMESPACE_COLUMNS = (
    _NAME,
    Column("Status", "string", "", "The status of the namespace"),
    _AGE,
)


def namespace_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), _d(obj.get("status")).get("phase", ""), age_of(obj, ctx)]


EVENT_COLUMNS = (
    Column(
        "Last Seen", "string", "", "The time at which the most recent occurrence of this event was recorded."
    ),
    Column(
        "Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future"
    ),
    Column(
        "Reason",
        "string",
        "",
        "This should be a short, machine understandable string that gives the "
        "reason for the transition into the object's current status.",
    ),
    Column("Object", "string", "", "The object that this event is about."),
    Column(
        "Subobject",
        "string",
        "",
        "If referring to a piece of an object instead of an entire object, "
        "this string should contain a valid JSON/Go field access statement.",
        1,
    ),
    Column("Source", "string", "", "The component reporting this event.", 1),
    Column("Message", "string", "", "A human-readable description of the status of this operation."),
    Column("First Seen", "string", "", "The time at which the event was first recorded.", 1),
    Column("Count", "string", "", "The number of times this event has occurred.", 1),
    Column("Name", "string", "name", _NAME.description, 1),
)


def event_row(obj: JSON, ctx: Context) -> list[Any]:
    first = (
        since(obj.get("firstTimestamp"), ctx)
        if obj.get("firstTimestamp")
        else since(obj.get("eventTime"), ctx)
    )
    last = since(obj.get("lastTimestamp"), ctx) if obj.get("lastTimestamp") else first
    count = _int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), ctx)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    io = _d(obj.get("involvedObject"))
    kind = str(io.get("kind", "")).lower()
    target = f"{kind}/{io['name']}" if io.get("name") else kind
    src = _d(obj.get("source"))
    component = src.get("component") or obj.get("reportingComponent") or ""
    instance = src.get("host") or obj.get("reportingInstance") or ""
    source = f"{component}, {instance}" if instance else component
    return [
        last,
        obj.get("type", ""),
        obj.get("reason", ""),
        target,
        io.get("fieldPath", ""),
        source,
        str(obj.get("message", "")).strip(),
        first,
        count,
        _name(obj),
    ]


# -- config ------------------------------------------------------------------------------------

CONFIGMAP_COLUMNS = (_NAME, Column("Data", "string", "", "Data contains the configuration data."), _AGE)


def configmap_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), len(_d(obj.get("data"))) + len(_d(obj.get("binaryData"))), age_of(obj, ctx)]


SECRET_COLUMNS = (
    _NAME,
    Column("Type", "string", "", "Used to facilitate programmatic handling of secret data."),
    Column("Data", "string", "", "Data contains the secret data."),
    _AGE,
)


def secret_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), obj.get("type") or "Opaque", len(_d(obj.get("data"))), age_of(obj, ctx)]


SERVICEACCOUNT_COLUMNS = (
    _NAME,
    Column(
        "Secrets",
        "string",
        "",
        "Secrets is a list of the secrets in the same namespace that pods "
        "running using this ServiceAccount are allowed to use.",
    ),
    _AGE,
)


def serviceaccount_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), len(_l(obj.get("secrets"))), age_of(obj, ctx)]


LEASE_COLUMNS = (
    _NAME,
    Column("Holder", "string", "", "holderIdentity contains the identity of the holder of a current lease."),
    _AGE,
)


def lease_row(obj: JSON, ctx: Context) -> list[Any]:
    return [_name(obj), _d(obj.get("spec")).get("holderIdentity") or "", age_of(obj, ctx)]


TENANT_COLUMNS = (
    _NAME,
    Column("Phase", "string", "", "Active or Terminating."),
    Column("Namespaces", "integer", "", "Namespaces the tenant owns."),
    Column("Pods", "string", "", "Pods counted against the quota: used/limit."),
    Column("Memory", "string", "", "VM memory counted against the quota: used/limit."),
    Column("Display Name", "string", "", "A human-readable name.", 1),
    _AGE,
)


def _used_of(status: JSON, spec: JSON, key: str) -> str:
    used = _d(status.get("used")).get(key, "0")
    limit = _d(spec.get("quota")).get(key)
    return f"{used}/{limit}" if limit is not None else str(used)


def tenant_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    deleting = _d(obj.get("metadata")).get("deletionTimestamp")
    phase = "Terminating" if deleting else status.get("phase") or "Active"
    return [
        _name(obj),
        phase,
        len(_l(status.get("namespaces"))),
        _used_of(status, spec, "pods"),
        _used_of(status, spec, "memory"),
        spec.get("displayName") or "",
        age_of(obj, ctx),
    ]


USER_COLUMNS = (
    _NAME,
    Column("Tenant", "string", "", "The tenant the user belongs to."),
    Column("Role", "string", "", "admin, member or viewer."),
    Column("Disabled", "boolean", "", "A disabled user cannot log in."),
    _AGE,
)


def user_row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [
        _name(obj),
        spec.get("tenant") or "",
        spec.get("role") or "",
        bool(spec.get("disabled")),
        age_of(obj, ctx),
    ]


NETWORK_COLUMNS = (
    _NAME,
    Column("Tenant", "string", "", "The tenant that owns the network; empty: operators'."),
    Column("ID", "string", "", "The network's cluster-wide id (spec.id); <none> until it is given."),
    Column("CIDR", "string", "", "The pods' subnet."),
    Column("Gateway", "string", "", "The router's address on the network."),
    Column("Egress", "boolean", "", "Whether pods reach outside the cluster (NAT)."),
    Column("Service CIDR", "string", "", "The range of the network's ClusterIPs.", 1),
    Column("IPs", "integer", "", "Pod addresses allocated.", 1),
    _AGE,
)


def network_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        spec.get("tenant") or "",
        str(nid) if isinstance(nid := spec.get("id"), int) and not isinstance(nid, bool) else "<none>",
        spec.get("cidr") or "",
        spec.get("gateway") or "",
        spec.get("egressNAT") is not False,  # absent means the default, on
        spec.get("serviceCIDR") or "",
        _int(status.get("allocatedIPs")),
        age_of(obj, ctx),
    ]


IPALLOCATION_COLUMNS = (
    _NAME,
    Column("Network", "string", "", "The network the address belongs to."),
    Column("IP", "string", "", "The address, the node port, or the network id."),
    Column("Owner", "string", "", "The object holding it: kind/namespace/name."),
    _AGE,
)


def ipallocation_row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    o = _d(spec.get("owner"))
    where = "/".join(str(x) for x in (o.get("kind"), o.get("namespace"), o.get("name")) if x)
    taken = spec.get("ip") or str(spec.get("nodePort") or spec.get("networkID") or "")
    return [_name(obj), spec.get("network") or "", taken, where, age_of(obj, ctx)]


# -- storage -----------------------------------------------------------------------------------

_MORE = "More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes"
_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"


def access_modes(modes: Any) -> str:
    """upstream's GetAccessModesAsString: RWO,ROX,RWX,RWOP in that order, each once."""
    have = set(_l(modes))
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(abbr for mode, abbr in short if mode in have)


def _storage_string(quantities: Any) -> str:
    """resource.Quantity.String() of quantities["storage"]: canonical, "0" when absent."""
    value = _d(quantities).get("storage")
    if value is None:
        return "0"
    try:
        return canonical_quantity(value)
    except ValueError:
        return str(value)


def _class_of(obj: JSON) -> str:
    """GetPersistentVolume(Claim)Class: the beta annotation wins over spec.storageClassName."""
    beta = _d(_d(obj.get("metadata")).get("annotations")).get(_BETA_CLASS)
    return str(beta if beta is not None else _d(obj.get("spec")).get("storageClassName") or "")


def _phase(obj: JSON) -> str:
    if _d(obj.get("metadata")).get("deletionTimestamp"):
        return "Terminating"
    return str(_d(obj.get("status")).get("phase") or "")


PV_COLUMNS = (
    _NAME,
    Column("Capacity", "string", "", "capacity is the description of the persistent volume's resources and "
           f"capacity. {_MORE}#capacity"),
    Column("Access Modes", "string", "", f"accessModes contains all ways the volume can be mounted. {_MORE}"
           "#access-modes"),
    Column("Reclaim Policy", "string", "",
           "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from "
           "its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete "
           "(default for dynamically provisioned PersistentVolumes), and Recycle "
           "(deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. "
           f"{_MORE}#reclaiming"),
    Column("Status", "string", "", "phase indicates if a volume is available, bound to a claim, or released "
           f"by a claim. {_MORE}#phase"),
    Column("Claim", "string", "", "claimRef is part of a bi-directional binding between PersistentVolume and "
           "PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative "
           f"bind between PV and PVC. {_MORE}#binding"),
    Column("StorageClass", "string", "", "StorageClass of the pv"),
    Column("VolumeAttributesClass", "string", "", "VolumeAttributesClass of the pv"),
    Column("Reason", "string", "", "reason is a brief CamelCase string that describes any failure and is "
           "meant for machine parsing and tidy display in the CLI."),
    _AGE,
    Column("VolumeMode", "string", "", "volumeMode defines if a volume is intended to be used with a "
           "formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not "
           "included in spec.", 1),
)


def pv_row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    ref = spec.get("claimRef")
    claim = f"{_d(ref).get('namespace') or ''}/{_d(ref).get('name') or ''}" if isinstance(ref, dict) else ""
    return [
        _name(obj),
        _storage_string(spec.get("capacity")),
        access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy") or "",
        _phase(obj),
        claim,
        _class_of(obj),
        spec.get("volumeAttributesClassName") or "<unset>",
        _d(obj.get("status")).get("reason") or "",
        age_of(obj, ctx),
        spec.get("volumeMode") or "<unset>",
    ]


PVC_COLUMNS = (
    _NAME,
    Column("Status", "string", "", "phase represents the current phase of PersistentVolumeClaim."),
    Column("Volume", "string", "", "volumeName is the binding reference to the PersistentVolume backing this "
           "claim."),
    Column("Capacity", "string", "", "capacity represents the actual resources of the underlying volume."),
    Column("Access Modes", "string", "",
           "accessModes contains the actual access modes the volume backing the PVC has. "
           f"{_MORE}#access-modes-1"),
    Column("StorageClass", "string", "", "StorageClass of the pvc"),
    Column("VolumeAttributesClass", "string", "", "VolumeAttributesClass of the pvc"),
    _AGE,
    Column("VolumeMode", "string", "",
           "volumeMode defines what type of volume is required by the claim. Value of Filesystem is "
           "implied when not included in claim spec.", 1),
)


def pvc_row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    volume = spec.get("volumeName") or ""
    # capacity and modes are the bound volume's: blank until the claim names one
    capacity = _storage_string(status.get("capacity")) if volume else ""
    modes = access_modes(status.get("accessModes")) if volume else ""
    return [
        _name(obj),
        _phase(obj),
        volume,
        capacity,
        modes,
        _class_of(obj),
        spec.get("volumeAttributesClassName") or "<unset>",
        age_of(obj, ctx),
        spec.get("volumeMode") or "<unset>",
    ]


STORAGECLASS_COLUMNS = (
    _NAME,
    Column("Provisioner", "string", "", "provisioner indicates the type of the provisioner."),
    Column("ReclaimPolicy", "string", "", "reclaimPolicy controls the reclaimPolicy for dynamically "
           "provisioned PersistentVolumes of this storage class. Defaults to Delete."),
    Column("VolumeBindingMode", "string", "",
           "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  "
           "When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable "
           "the VolumeScheduling feature."),
    Column("AllowVolumeExpansion", "string", "", "allowVolumeExpansion shows whether the storage class allow "
           "volume expand."),
    _AGE,
)


def storageclass_row(obj: JSON, ctx: Context) -> list[Any]:
    notes = _d(_d(obj.get("metadata")).get("annotations"))
    name = _name(obj)
    if "true" in (notes.get("storageclass.kubernetes.io/is-default-class"),
                  notes.get("storageclass.beta.kubernetes.io/is-default-class")):
        name += " (default)"
    return [
        name,
        obj.get("provisioner") or "",
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        obj.get("allowVolumeExpansion") is True,  # a bool cell, as upstream: kubectl prints true/false
        age_of(obj, ctx),
    ]


PRINTERS: dict[str, tuple[tuple[Column, ...], Row]] = {
    "Tenant": (TENANT_COLUMNS, tenant_row),
    "User": (USER_COLUMNS, user_row),
    "Network": (NETWORK_COLUMNS, network_row),
    "IPAllocation": (IPALLOCATION_COLUMNS, ipallocation_row),
    "Pod": (POD_COLUMNS, pod_row),
    "Deployment": (DEPLOYMENT_COLUMNS, deployment_row),
    "ReplicaSet": (REPLICASET_COLUMNS, replicaset_row),
    "Job": (JOB_COLUMNS, job_row),
    "Service": (SERVICE_COLUMNS, service_row),
    "Endpoints": (ENDPOINTS_COLUMNS, endpoints_row),
    "Node": (NODE_COLUMNS, node_row),
    "Namespace": (NAMESPACE_COLUMNS, namespace_row),
    "Event": (EVENT_COLUMNS, event_row),
    "ConfigMap": (CONFIGMAP_COLUMNS, configmap_row),
    "Secret": (SECRET_COLUMNS, secret_row),
    "ServiceAccount": (SERVICEACCOUNT_COLUMNS, serviceaccount_row),
    "Lease": (LEASE_COLUMNS, lease_row),
    "PersistentVolume": (PV_COLUMNS, pv_row),
    "PersistentVolumeClaim": (PVC_COLUMNS, pvc_row),
    "StorageClass": (STORAGECLASS_COLUMNS, storageclass_row),
}
