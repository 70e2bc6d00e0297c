"""Deletion as upstream: preconditions, graceful deletion, finalizers and propagation policy.

A delete either removes the object now, or marks it (deletionTimestamp,
deletionGracePeriodSeconds) and leaves removal to whoever holds it back:
- pods with a grace period > 0 wait for the node agent, which deletes again with grace 0 once
  the VM is gone (unscheduled or finished pods go at once, as upstream);
- finalizers (`foregroundDeletion`/`orphan` from propagationPolicy are for the GC controller)
  wait for their controllers to remove them; the update that removes the last one deletes;
- namespaces turn Terminating until the namespace controller empties them and clears
  spec.finalizers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypernetes.api.status import ApiError, bad_request, conflict
from hypernetes.objects import Obj

FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
POLICIES = ("Orphan", "Background", "Foreground")


@dataclass(frozen=True)
class DeleteOptions:
    grace: int | None = None
    propagation: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


def parse_options(body: Obj | None, query: dict[str, str]) -> DeleteOptions:
    """DeleteOptions from the body (kubectl) or the query string (the Python client, curl)."""
    body = body or {}
    pre = body.get("preconditions") or {}
    grace: Any = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
    policy = body.get("propagationPolicy") or query.get("propagationPolicy")
    if policy is None and body.get("orphanDependents", query.get("orphanDependents")) in (True, "true"):
        policy = "Orphan"
    if policy is not None and policy not in POLICIES:
        raise ApiError(
            422,
            "Invalid",
            f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
            f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
            '"Orphan"',
        )
    try:
        grace_i = None if grace is None else int(grace)
    except (TypeError, ValueError):
        raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from None
    dry = body.get("dryRun") or ([query["dryRun"]] if "dryRun" in query else [])
    return DeleteOptions(
        grace=grace_i,
        propagation=policy,
        uid=pre.get("uid"),
        resource_version=pre.get("resourceVersion"),
        dry_run="All" in dry,
    )


@dataclass(frozen=True)
class Plan:
    remove: bool  # delete from the store now
    obj: Obj  # the object to store (remove=False) or the last state (remove=True)


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_preconditions(obj: Obj, opts: DeleteOptions, resource: str, group: str) -> None:
    meta = obj["metadata"]
    if opts.uid is not None and opts.uid != meta.get("uid"):
        raise conflict(
            resource,
            meta["name"],
            group,
            f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta: {meta.get('uid')}",
        )
    if opts.resource_version is not None and opts.resource_version != meta.get("resourceVersion"):
        raise conflict(
            resource,
            meta["name"],
            group,
            f"Precondition failed: ResourceVersion in "
            f"precondition: {opts.resource_version}, ResourceVersion in object meta: "
            f"{meta.get('resourceVersion')}",
        )


def _grace(kind: str, obj: Obj, opts: DeleteOptions) -> int:
    if kind != "Pod":
        return 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0  # no VM to stop: upstream deletes unscheduled and finished pods at once
    if opts.grace is not None:
        return max(opts.grace, 0)
    default = spec.get("terminationGracePeriodSeconds")
    return 30 if default is None else max(int(default), 0)


def _apply_policy(finalizers: list[str], policy: str | None) -> list[str]:
    if policy is None:
        return finalizers
    out = [f for f in finalizers if f not in (FOREGROUND, ORPHAN)]
    if policy == "Foreground":
        out.append(FOREGROUND)
    elif policy == "Orphan":
        out.append(ORPHAN)
    return out


def plan(kind: str, obj: Obj, opts: DeleteOptions, now: datetime | None = None) -> Plan:
    now = now or datetime.now(UTC)
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    finalizers = _apply_policy(list(meta.get("finalizers") or []), opts.propagation)
    if kind == "Namespace":
        return _plan_namespace(new, finalizers, now)
    grace = _grace(kind, obj, opts)
    if meta.get("deletionTimestamp"):
        # already being deleted: only a shorter grace period changes anything
        current = meta.get("deletionGracePeriodSeconds") or 0
        if grace == 0 and not finalizers:
            return Plan(True, obj)
        if grace < current:
            meta["deletionGracePeriodSeconds"] = grace
            meta["deletionTimestamp"] = _rfc3339(now + timedelta(seconds=grace))
        if finalizers:
            meta["finalizers"] = finalizers
        return Plan(False, new)
    if grace == 0 and not finalizers:
        return Plan(True, obj)
    meta["deletionTimestamp"] = _rfc3339(now + timedelta(seconds=grace))
    meta["deletionGracePeriodSeconds"] = grace
    meta["generation"] = int(meta.get("generation") or 0) + 1
    if finalizers:
        meta["finalizers"] = finalizers
    else:
        meta.pop("finalizers", None)
    return Plan(False, new)


def _plan_namespace(ns: Obj, finalizers: list[str], now: datetime) -> Plan:
    meta = ns["metadata"]
    spec_finalizers = (ns.get("spec") or {}).get("finalizers") or []
    if not finalizers and not spec_finalizers:
        return Plan(True, ns)
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = _rfc3339(now)
        meta["deletionGracePeriodSeconds"] = 0
    if finalizers:
        meta["finalizers"] = finalizers
    ns.setdefault("status", {})["phase"] = "Terminating"
    return Plan(False, ns)


def finished(kind: str, obj: Obj) -> bool:
    """After an update: a marked object whose last finalizer is gone (and whose grace period is
    over, for pods) is removed by that update, as upstream."""
    meta = obj.get("metadata") or {}
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if kind == "Namespace":
        return not (obj.get("spec") or {}).get("finalizers")
    return not meta.get("deletionGracePeriodSeconds")


def terminating(ns: Obj) -> bool:
    return (
        bool((ns.get("metadata") or {}).get("deletionTimestamp"))
        or (ns.get("status") or {}).get("phase") == "Terminating"
    )
