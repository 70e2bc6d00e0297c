"""RuntimeClass (node.k8s.io/v1): which runtime a pod runs under (`handler`), what that runtime
costs beside the pod's containers (`overhead.podFixed`, Pod Overhead) and which nodes offer it
(`scheduling`). Admission copies a class's overhead and scheduling into each pod that names it
(auth/runtimeclass.py); the scheduler, the node and quotas then count `spec.overhead`.

Validation as upstream's pkg/apis/node/validation, field paths included: the handler is a DNS
label and immutable; the overhead is checked as a container's limits (so its errors read
`overhead.limits[cpu]`, as upstream's reuse of ValidateResourceRequirements words them); the
tolerations' own errors carry upstream's doubled `scheduling.tolerations.tolerations[i]` path (its
validateTolerations adds the child twice) while duplicates are `scheduling.tolerations[i]`.

Built-in classes (`builtin_classes`) are made when an API server starts, if missing."""

from __future__ import annotations

import shutil
from typing import Any

from hypernetes.api.registry.groups import NODE
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.podspec import _resources, _toleration, validate_labels
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects.names import RUNTIME_LABEL

# What a pod VM's QEMU costs beside the guest's RAM and the pod's own CPU (bench/pod_overhead.py,
# bench/RESULTS.md "Pod Overhead"): the memory QEMU itself holds (TCG's 16 MiB code cache, its
# heap, device state, its binary and libraries), and the CPU that lets the VMM restore a clone,
# emulate its devices and serve its disks without eating the containers' limit.
HYPERVM_OVERHEAD = {"cpu": "250m", "memory": "64Mi"}


def _validate(obj: JSON, errs: Errs) -> None:
    handler = obj.get("handler")
    if not isinstance(handler, str) or not handler:
        errs.append(E.required("handler"))
    else:
        errs.extend(E.invalid("handler", handler, msg) for msg in formats.dns1123_label(handler))
    overhead = obj.get("overhead")
    if isinstance(overhead, dict):
        _resources({"limits": _d(overhead.get("podFixed"))}, "overhead", errs)
    scheduling = obj.get("scheduling")
    if isinstance(scheduling, dict):
        validate_labels(_d(scheduling.get("nodeSelector")), "scheduling.nodeSelector", errs)
        seen: set[tuple[Any, ...]] = set()
        tolerations = scheduling.get("tolerations")
        for i, t in enumerate(tolerations if isinstance(tolerations, list) else []):
            if not isinstance(t, dict):
                continue
            _toleration(t, f"scheduling.tolerations.tolerations[{i}]", errs)
            key = (t.get("key"), t.get("operator"), t.get("value"), t.get("effect"))
            if key in seen:
                errs.append(E.duplicate(f"scheduling.tolerations[{i}]", t))
            seen.add(key)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if new.get("handler") != old.get("handler"):
        errs.append(E.immutable("handler"))


COLUMNS = (
    NAME,
    Column(
        "Handler",
        "string",
        "",
        "handler specifies the underlying runtime and configuration that the CRI implementation will "
        "use to handle pods of this class. The possible values are specific to the node & CRI "
        "configuration.  It is assumed that all handlers are available on every node, and handlers of "
        'the same name are equivalent on every node. For example, a handler called "runc" might specify '
        "that the runc OCI runtime (using native Linux containers) will be used to run the containers in "
        "a pod. The Handler must be lowercase, conform to the DNS Label (RFC 1123) requirements, and is "
        "immutable.",
    ),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), obj.get("handler") or "", age_of(obj, ctx)]


def runtime_class(name: str, overhead: dict[str, str] | None = None) -> JSON:
    """A class whose handler is `name`, for the nodes whose agent runs that runtime (their
    hypernetes.io/runtime label), with `overhead` as its podFixed."""
    obj: JSON = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name},
        "handler": name,
        "scheduling": {"nodeSelector": {RUNTIME_LABEL: name}},
    }
    if overhead:
        obj["overhead"] = {"podFixed": dict(overhead)}
    return obj


def builtin_classes() -> list[JSON]:
    """`hypervm` always; `gvisor` when this host offers runsc (the single-host `up`; on many hosts
    an operator makes it as any other class)."""
    out = [runtime_class("hypervm", HYPERVM_OVERHEAD)]
    if shutil.which("runsc"):
        out.append(runtime_class("gvisor"))
    return out


KIND = kind(
    NODE,
    "RuntimeClass",
    "runtimeclasses",
    namespaced=False,
    defaults=no_defaults,
    validate=_validate,
    validate_update=_validate_update,
    printer=Printer(COLUMNS, _row),
)
