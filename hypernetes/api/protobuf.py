"""Decoding the Kubernetes protobuf envelope for the few kinds kubectl's generators send that way
(`kubectl create namespace|configmap|secret|serviceaccount|deployment|service|job|cronjob|quota|
pdb|token`, and kubectl 1.32+ sends every built-in kind it creates this way). kubectl does not
retry with JSON after a 415, so without this those commands cannot work.

Envelope: b"k8s\\x00" + runtime.Unknown{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw,
3: contentEncoding, 4: contentType}; `raw` is the typed message (field numbers from
k8s.io/api/core/v1/generated.proto and apimachinery's meta/v1/generated.proto).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from hypernetes.api.status import ApiError, bad_request
from hypernetes.objects import Obj

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A message spec: field number -> (json name, type, spec of sub-message or None).
# Types: "str", "bytes" (base64 in JSON), "int", "bool" ("int?"/"bool?": omitted when zero), "msg",
# "intstr" (IntOrString), "time", "[str]"/"[msg]" (repeated),
# "{str}"/"{bytes}"/"{qty}" (map<string, string|bytes|Quantity>).
# Only the fields kubectl's generators set are modelled ("skip": server-set, ignored); another
# field set to anything but its zero value is refused (415), never dropped.
Spec = dict[int, tuple[str, str, Any]]

OWNER_REF: Spec = {
    1: ("kind", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}
OBJECT_META: Spec = {
    4: ("selfLink", "skip", None),
    8: ("creationTimestamp", "skip", None),
    9: ("deletionTimestamp", "skip", None),
    10: ("deletionGracePeriodSeconds", "skip", None),
    17: ("managedFields", "skip", None),  # server-set: a create or update replaces them
    1: ("name", "str", None),
    2: ("generateName", "str", None),
    3: ("namespace", "str", None),
    5: ("uid", "str", None),
    6: ("resourceVersion", "str", None),
    7: ("generation", "int?", None),
    11: ("labels", "{str}", None),
    12: ("annotations", "{str}", None),
    13: ("ownerReferences", "[msg]", OWNER_REF),
    14: ("finalizers", "[str]", None),
}
OBJECT_REF: Spec = {
    1: ("kind", "str", None),
    2: ("namespace", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("resourceVersion", "str", None),
    7: ("fieldPath", "str", None),
}

LABEL_SELECTOR: Spec = {
    1: ("matchLabels", "{str}", None),
    2: (
        "matchExpressions",
        "[msg]",
        {1: ("key", "str", None), 2: ("operator", "str", None), 3: ("values", "[str]", None)},
    ),
}
QUANTITIES = "{qty}"
CONTAINER: Spec = {
    1: ("name", "str", None),
    2: ("image", "str", None),
    3: ("command", "[str]", None),
    4: ("args", "[str]", None),
    5: ("workingDir", "str", None),
    6: (
        "ports",
        "[msg]",
        {
            1: ("name", "str", None),
            2: ("hostPort", "int?", None),
            3: ("containerPort", "int", None),
            4: ("protocol", "str", None),
            5: ("hostIP", "str", None),
        },
    ),
    7: ("env", "[msg]", {1: ("name", "str", None), 2: ("value", "str", None)}),
    8: ("resources", "msg", {1: ("limits", QUANTITIES, None), 2: ("requests", QUANTITIES, None)}),
    13: ("terminationMessagePath", "str", None),  # defaulted: in a template read back (create job --from)
    20: ("terminationMessagePolicy", "str", None),
    14: ("imagePullPolicy", "str", None),
    16: ("stdin", "bool?", None),
    17: ("stdinOnce", "bool?", None),
    18: ("tty", "bool?", None),
}
POD_SPEC: Spec = {
    2: ("containers", "[msg]", CONTAINER),
    3: ("restartPolicy", "str", None),
    4: ("terminationGracePeriodSeconds", "int", None),  # the defaulted fields of a template read back
    19: ("schedulerName", "str", None),
    14: ("securityContext", "msg", {}),  # {} only: a set field is refused
    6: ("dnsPolicy", "str", None),
    7: ("nodeSelector", "{str}", None),
    8: ("serviceAccountName", "str", None),
}
POD_TEMPLATE: Spec = {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", POD_SPEC)}
DEPLOYMENT_SPEC: Spec = {
    1: ("replicas", "int", None),
    2: ("selector", "msg", LABEL_SELECTOR),
    3: ("template", "msg", POD_TEMPLATE),
    4: ("strategy", "msg", {1: ("type", "str", None)}),
    5: ("minReadySeconds", "int?", None),
    6: ("revisionHistoryLimit", "int", None),
    7: ("paused", "bool?", None),
    9: ("progressDeadlineSeconds", "int", None),
}

# k8s.io/api/core/v1 ServiceSpec and ServicePort: `kubectl create service clusterip|nodeport|
# loadbalancer|externalname` set ports, selector, type, clusterIP ("None" for headless) and
# externalName; the rest is there so a client's protobuf Service is not quietly cut down.
SERVICE_PORT: Spec = {
    1: ("name", "str", None),
    2: ("protocol", "str", None),
    3: ("port", "int", None),
    4: ("targetPort", "intstr", None),
    5: ("nodePort", "int?", None),
    6: ("appProtocol", "str", None),
}
SERVICE_SPEC: Spec = {
    1: ("ports", "[msg]", SERVICE_PORT),
    2: ("selector", "{str}", None),
    3: ("clusterIP", "str", None),
    18: ("clusterIPs", "[str]", None),
    4: ("type", "str", None),
    5: ("externalIPs", "[str]", None),
    7: ("sessionAffinity", "str", None),
    8: ("loadBalancerIP", "str", None),
    9: ("loadBalancerSourceRanges", "[str]", None),
    10: ("externalName", "str", None),
    11: ("externalTrafficPolicy", "str", None),
    12: ("healthCheckNodePort", "int?", None),
    13: ("publishNotReadyAddresses", "bool?", None),
    14: ("sessionAffinityConfig", "msg", {1: ("clientIP", "msg", {1: ("timeoutSeconds", "int", None)})}),
    19: ("ipFamilies", "[str]", None),
    17: ("ipFamilyPolicy", "str", None),
    20: ("allocateLoadBalancerNodePorts", "bool", None),
    21: ("loadBalancerClass", "str", None),
    22: ("internalTrafficPolicy", "str", None),
    23: ("trafficDistribution", "str", None),
}
# k8s.io/api/batch/v1 JobSpec (every field a pointer but the template: sent only when set)
JOB_SPEC: Spec = {
    1: ("parallelism", "int", None),
    2: ("completions", "int", None),
    3: ("activeDeadlineSeconds", "int", None),
    7: ("backoffLimit", "int", None),
    12: ("backoffLimitPerIndex", "int", None),
    13: ("maxFailedIndexes", "int", None),
    4: ("selector", "msg", LABEL_SELECTOR),
    5: ("manualSelector", "bool", None),
    6: ("template", "msg", POD_TEMPLATE),
    8: ("ttlSecondsAfterFinished", "int", None),
    9: ("completionMode", "str", None),
    10: ("suspend", "bool", None),
    14: ("podReplacementPolicy", "str", None),
    15: ("managedBy", "str", None),
}

# k8s.io/api/batch/v1 CronJobSpec (`kubectl create cronjob`)
CRON_JOB_SPEC: Spec = {
    1: ("schedule", "str", None),
    8: ("timeZone", "str", None),
    2: ("startingDeadlineSeconds", "int", None),
    3: ("concurrencyPolicy", "str", None),
    4: ("suspend", "bool", None),
    5: ("jobTemplate", "msg", {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", JOB_SPEC)}),
    6: ("successfulJobsHistoryLimit", "int", None),
    7: ("failedJobsHistoryLimit", "int", None),
}

# `kubectl create quota` and `kubectl create poddisruptionbudget`
RESOURCE_QUOTA_SPEC: Spec = {1: ("hard", QUANTITIES, None), 2: ("scopes", "[str]", None)}
PDB_SPEC: Spec = {
    1: ("minAvailable", "intstr", None),
    2: ("selector", "msg", LABEL_SELECTOR),
    3: ("maxUnavailable", "intstr", None),
    4: ("unhealthyPodEvictionPolicy", "str", None),
}

KINDS: dict[tuple[str, str], Spec] = {
    ("v1", "ResourceQuota"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", RESOURCE_QUOTA_SPEC),
        3: ("status", "skip", None),
    },
    ("policy/v1", "PodDisruptionBudget"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", PDB_SPEC),
        3: ("status", "skip", None),
    },
    ("batch/v1", "CronJob"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", CRON_JOB_SPEC),
        3: ("status", "skip", None),
    },
    ("v1", "Service"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", SERVICE_SPEC),
        3: ("status", "skip", None),
    },
    ("batch/v1", "Job"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", JOB_SPEC),
        3: ("status", "skip", None),
    },
    ("apps/v1", "Deployment"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", DEPLOYMENT_SPEC),
        3: ("status", "skip", None),
    },
    ("v1", "Namespace"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", {1: ("finalizers", "[str]", None)}),
        3: ("status", "msg", {1: ("phase", "str", None)}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "{str}", None),
        3: ("binaryData", "{bytes}", None),
        4: ("immutable", "bool", None),
    },
    ("v1", "Secret"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "{bytes}", None),
        3: ("type", "str", None),
        4: ("stringData", "{str}", None),
        5: ("immutable", "bool", None),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("secrets", "[msg]", OBJECT_REF),
        3: ("imagePullSecrets", "[msg]", {1: ("name", "str", None)}),
        4: ("automountServiceAccountToken", "bool", None),
    },
}
# reviews and token requests (k8s.io/api/authentication|authorization/v1/generated.proto)
_RESOURCE_ATTRS: Spec = {
    1: ("namespace", "str", None),
    2: ("verb", "str", None),
    3: ("group", "str", None),
    4: ("version", "str", None),
    5: ("resource", "str", None),
    6: ("subresource", "str", None),
    7: ("name", "str", None),
}
_ACCESS_SPEC: Spec = {
    1: ("resourceAttributes", "msg", _RESOURCE_ATTRS),
    2: ("nonResourceAttributes", "msg", {1: ("path", "str", None), 2: ("verb", "str", None)}),
}
_BOUND_REF: Spec = {
    1: ("kind", "str", None),
    2: ("apiVersion", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
}
KINDS.update(
    {
        ("authentication.k8s.io/v1", "SelfSubjectReview"): {1: ("metadata", "msg", OBJECT_META)},
        ("authentication.k8s.io/v1beta1", "SelfSubjectReview"): {1: ("metadata", "msg", OBJECT_META)},
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
            1: ("metadata", "msg", OBJECT_META),
            2: ("spec", "msg", _ACCESS_SPEC),
        },
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {
            1: ("metadata", "msg", OBJECT_META),
            2: ("spec", "msg", {1: ("namespace", "str", None)}),
        },
        ("authentication.k8s.io/v1", "TokenRequest"): {
            1: ("metadata", "msg", OBJECT_META),
            2: (
                "spec",
                "msg",
                {
                    1: ("audiences", "[str]", None),
                    3: ("boundObjectRef", "msg", _BOUND_REF),
                    4: ("expirationSeconds", "int", None),
                },
            ),
            3: ("status", "skip", None),  # its zero expirationTimestamp is a non-zero Timestamp
        },
    }
)
# `kubectl create role|rolebinding|clusterrole|clusterrolebinding` (k8s.io/api/rbac/v1/generated.proto)
_POLICY_RULE: Spec = {
    1: ("verbs", "[str]", None),
    2: ("apiGroups", "[str]", None),
    3: ("resources", "[str]", None),
    4: ("resourceNames", "[str]", None),
    5: ("nonResourceURLs", "[str]", None),
}
_BINDING: Spec = {
    1: ("metadata", "msg", OBJECT_META),
    2: (
        "subjects",
        "[msg]",
        {
            1: ("kind", "str", None),
            2: ("apiGroup", "str", None),
            3: ("name", "str", None),
            4: ("namespace", "str", None),
        },
    ),
    3: ("roleRef", "msg", {1: ("apiGroup", "str", None), 2: ("kind", "str", None), 3: ("name", "str", None)}),
}
KINDS.update(
    {
        ("rbac.authorization.k8s.io/v1", "Role"): {
            1: ("metadata", "msg", OBJECT_META),
            2: ("rules", "[msg]", _POLICY_RULE),
        },
        ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
            1: ("metadata", "msg", OBJECT_META),
            2: ("rules", "[msg]", _POLICY_RULE),
            3: ("aggregationRule", "msg", {1: ("clusterRoleSelectors", "[msg]", LABEL_SELECTOR)}),
        },
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    }
)
# `kubectl autoscale` (k8s.io/api/autoscaling/v1/generated.proto)
KINDS[("autoscaling/v1", "HorizontalPodAutoscaler")] = {
    1: ("metadata", "msg", OBJECT_META),
    2: (
        "spec",
        "msg",
        {
            1: (
                "scaleTargetRef",
                "msg",
                {1: ("kind", "str", None), 2: ("name", "str", None), 3: ("apiVersion", "str", None)},
            ),
            2: ("minReplicas", "int", None),
            3: ("maxReplicas", "int", None),
            4: ("targetCPUUtilizationPercentage", "int", None),
        },
    ),
    3: ("status", "skip", None),
}
# `kubectl create ingress` (k8s.io/api/networking/v1/generated.proto)
_INGRESS_BACKEND: Spec = {
    1: (
        "resource",
        "msg",
        {1: ("apiGroup", "str", None), 2: ("kind", "str", None), 3: ("name", "str", None)},
    ),
    4: (
        "service",
        "msg",
        {
            1: ("name", "str", None),
            2: ("port", "msg", {1: ("name", "str", None), 2: ("number", "int?", None)}),
        },
    ),
}
_HTTP_PATH: Spec = {
    1: ("path", "str", None),
    2: ("backend", "msg", _INGRESS_BACKEND),
    3: ("pathType", "str", None),
}
KINDS[("networking.k8s.io/v1", "Ingress")] = {
    1: ("metadata", "msg", OBJECT_META),
    2: (
        "spec",
        "msg",
        {
            1: ("defaultBackend", "msg", _INGRESS_BACKEND),
            2: ("tls", "[msg]", {1: ("hosts", "[str]", None), 2: ("secretName", "str", None)}),
            3: (
                "rules",
                "[msg]",
                {
                    1: ("host", "str", None),
                    # IngressRuleValue is inline in JSON: its `http` sits in the rule itself
                    2: ("", "inline", {1: ("http", "msg", {1: ("paths", "[msg]", _HTTP_PATH)})}),
                },
            ),
            4: ("ingressClassName", "str", None),
        },
    ),
    3: ("status", "skip", None),
}
# `kubectl autoscale` of kubectl 1.33 (k8s.io/api/autoscaling/v2/generated.proto): a Resource
# metric's Utilization target; any other metric source or target field is refused (415)
_HPA_SCALING_RULES: Spec = {
    1: ("selectPolicy", "str", None),
    2: (
        "policies",
        "[msg]",
        {1: ("type", "str", None), 2: ("value", "int", None), 3: ("periodSeconds", "int", None)},
    ),
    3: ("stabilizationWindowSeconds", "int", None),
}
KINDS[("autoscaling/v2", "HorizontalPodAutoscaler")] = {
    1: ("metadata", "msg", OBJECT_META),
    2: (
        "spec",
        "msg",
        {
            1: (
                "scaleTargetRef",
                "msg",
                {1: ("kind", "str", None), 2: ("name", "str", None), 3: ("apiVersion", "str", None)},
            ),
            2: ("minReplicas", "int", None),
            3: ("maxReplicas", "int", None),
            4: (
                "metrics",
                "[msg]",
                {
                    1: ("type", "str", None),
                    4: (
                        "resource",
                        "msg",
                        {
                            1: ("name", "str", None),
                            2: (
                                "target",
                                "msg",
                                {1: ("type", "str", None), 4: ("averageUtilization", "int", None)},
                            ),
                        },
                    ),
                },
            ),
            5: (
                "behavior",
                "msg",
                {1: ("scaleUp", "msg", _HPA_SCALING_RULES), 2: ("scaleDown", "msg", _HPA_SCALING_RULES)},
            ),
        },
    ),
    3: ("status", "skip", None),
}
UNKNOWN: Spec = {
    1: ("typeMeta", "msg", {1: ("apiVersion", "str", None), 2: ("kind", "str", None)}),
    2: ("raw", "raw", None),
    3: ("contentEncoding", "str", None),
    4: ("contentType", "str", None),
}


class _Malformed(Exception):
    pass


class _Unsupported(Exception):
    """A field of a decoded kind that this server does not model."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The raw (field number, value) pairs of one message; varints as int, the rest as bytes."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(buf, i)
            out.append((num, v))
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise _Malformed("truncated field")
            out.append((num, buf[i : i + n]))
            i += n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            out.append((num, buf[i : i + n]))
            i += n
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    return out


def _signed(v: int) -> int:
    """int32/int64 fields are two's complement varints."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _bytes(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise _Malformed("expected a length-delimited field")
    return v


def _int(v: int | bytes) -> int:
    if not isinstance(v, int):
        raise _Malformed("expected a varint")
    return v


def _time(buf: bytes) -> str:
    seconds = 0
    for num, v in _fields(buf):
        if num == 1 and isinstance(v, int):
            seconds = v
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zero(v: int | bytes) -> bool:
    """Go's protobuf writes every non-pointer field, set or not: a zero varint, an empty string,
    or a message of zeros says nothing."""
    if isinstance(v, int) or not v:
        return not v
    try:
        return all(_zero(sub) for _, sub in _fields(v))
    except _Malformed:
        return False  # not a message: a non-empty string or bytes


def _message(buf: bytes, spec: Spec, path: str = "") -> Obj:
    obj: Obj = {}
    for num, v in _fields(buf):
        if num not in spec:
            if _zero(v):
                continue
            # a field this server does not decode: refuse rather than drop what the client set
            raise _Unsupported(f"{path.rstrip('.') or 'the object'}: field number {num}")
        name, typ, sub = spec[num]
        if typ == "skip":
            continue
        if typ == "str":
            if v:  # Go's JSON omits empty strings (omitempty); protobuf always sends them
                obj[name] = _bytes(v).decode()
        elif typ == "raw":
            obj[name] = _bytes(v)
        elif typ == "bytes":
            obj[name] = base64.b64encode(_bytes(v)).decode()
        elif typ in ("int", "bool", "int?", "bool?"):
            if not isinstance(v, int):
                raise _Malformed(f"{name}: expected a varint")
            if v or not typ.endswith("?"):  # "?": Go omits the zero value (omitempty, not a pointer)
                obj[name] = bool(v) if typ.startswith("bool") else _signed(v)
        elif typ == "intstr":  # util/intstr.IntOrString{1: type (0 int, 1 string), 2: intVal, 3: strVal}
            f = dict(_fields(_bytes(v)))
            is_str = f.get(1) == 1
            obj[name] = _bytes(f.get(3, b"")).decode() if is_str else _signed(_int(f.get(2, 0)))
        elif typ == "time":
            obj[name] = _time(_bytes(v))
        elif typ == "msg":
            obj[name] = _message(_bytes(v), sub, f"{path}{name}.")
        elif typ == "inline":  # a Go struct embedded with `json:",inline"`
            obj.update(_message(_bytes(v), sub, path))
        elif typ == "[str]":
            obj.setdefault(name, []).append(_bytes(v).decode())
        elif typ == "[msg]":
            obj.setdefault(name, []).append(_message(_bytes(v), sub, f"{path}{name}[]."))
        elif typ == QUANTITIES:  # map<string, Quantity{1: string}>
            entry = dict(_fields(_bytes(v)))
            qty = dict(_fields(_bytes(entry.get(2, b""))))
            obj.setdefault(name, {})[_bytes(entry.get(1, b"")).decode()] = _bytes(qty.get(1, b"")).decode()
        elif typ in ("{str}", "{bytes}"):
            entry = dict(_fields(_bytes(v)))
            key, val = _bytes(entry.get(1, b"")).decode(), _bytes(entry.get(2, b""))
            obj.setdefault(name, {})[key] = val.decode() if typ == "{str}" else base64.b64encode(val).decode()
    return obj


def decode_protobuf(body: bytes) -> Obj:
    """The JSON form of a protobuf-encoded object; 415 for kinds this server cannot decode."""
    if not body.startswith(MAGIC):
        raise bad_request("protobuf body without the k8s envelope")
    try:
        unknown = _message(body[len(MAGIC) :], UNKNOWN)
        tm = unknown.get("typeMeta") or {}
        api_version, kind = tm.get("apiVersion", ""), tm.get("kind", "")
        spec = KINDS.get((api_version, kind))
        if spec is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"protobuf is supported for {', '.join(sorted({k for _, k in KINDS}))} only "
                f"(got {api_version} {kind}); send JSON (kubectl create -f / apply -f)",
            )
        obj = _message(unknown.get("raw", b""), spec)
    except _Unsupported as e:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"protobuf {api_version} {kind}: {e} is not decoded by this server; send JSON "
            "(kubectl create -f / apply -f)",
        ) from None
    except _Malformed as e:
        raise bad_request(f"malformed protobuf body: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
