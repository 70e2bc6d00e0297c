"""What the eviction subresource asks of PodDisruptionBudgets before it deletes a pod (upstream
pkg/registry/core/pod/storage/eviction.go): a pod that is finished, pending or already being
deleted goes without asking; one covered by a budget goes only if the budget's status (written
by the disruption controller, for the budget's current generation) allows a disruption, which
the eviction takes (disruptionsAllowed - 1, the pod noted in disruptedPods) with a
compare-and-swap write before the delete. Otherwise 429 TooManyRequests with upstream's
message and a DisruptionBudget cause (and Retry-After: 10 while the budget's generation is not
yet observed): `kubectl drain` retries those until the budget allows. A pod under two budgets
gets upstream's odd answer: a Failure Status (code 500) as the create's 201 response body."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hypernetes.api import objects
from hypernetes.api.routing import Target
from hypernetes.api.status import ApiError
from hypernetes.objects import Obj
from hypernetes.objects.disruption import budget_selects
from hypernetes.objects.meta import condition_true
from hypernetes.store.keys import key_prefix

if TYPE_CHECKING:
    from hypernetes.api.crud import Resources

MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
CAUSE = "DisruptionBudget"
MORE_THAN_ONE = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
)
MAX_DISRUPTED_PODS = 2000  # upstream's MaxDisruptedPodSize
# createTooManyRequestsError's suggestion while the controller has not seen the budget's spec
PROCESSING_RETRY_AFTER = 10


def too_many_requests(cause: str, retry_after: int = 0) -> ApiError:
    """errors.NewTooManyRequests(MESSAGE, retry_after) with a DisruptionBudget cause."""
    details: Obj = {"causes": [{"reason": CAUSE, "message": cause}]}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
    return ApiError(429, "TooManyRequests", MESSAGE, details, retry_after)


class MoreThanOneBudget(ApiError):
    """upstream's EvictionREST.Create returns, not raises, a Status{Failure, Code: 500} here, so
    the create handler writes it with its own 201: clients (client-go, kubectl drain) read the
    Failure body and report MORE_THAN_ONE as a 500 error, with no reason and no details."""

    def __init__(self) -> None:
        super().__init__(201, "", MORE_THAN_ONE)

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": MORE_THAN_ONE,
            "code": 500,
        }


def can_ignore_budgets(pod: Obj) -> bool:
    """upstream's canIgnorePDB: the pod already is no disruption to count."""
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return phase in ("Succeeded", "Failed", "Pending") or bool(
        (pod.get("metadata") or {}).get("deletionTimestamp")
    )


async def budgets_of(res: Resources, pod: Obj) -> list[Obj]:
    ns = str((pod.get("metadata") or {}).get("namespace") or "")
    listed = await res.store.list(key_prefix("policy", "poddisruptionbudgets", ns))
    return [pdb for pdb in (json.loads(kv.value) for kv in listed.items) if budget_selects(pdb, pod)]


async def admit_eviction(res: Resources, pod_target: Target, *, dry_run: bool) -> None:
    """Raise unless the pod at `pod_target` may be evicted now; take a disruption if it does."""
    from hypernetes.api.registry import kind_for  # (the registry imports the server's pieces)

    pod = objects.decode(await res._get_kv(pod_target))
    if can_ignore_budgets(pod):
        return
    budgets = await budgets_of(res, pod)
    if len(budgets) > 1:
        raise MoreThanOneBudget()
    kind = kind_for("policy", "v1", "poddisruptionbudgets")
    if budgets and kind is not None:
        target = Target(kind, pod_target.namespace, budgets[0]["metadata"]["name"], "status")
        await take_disruption(res, target, pod, dry_run=dry_run)


async def take_disruption(res: Resources, pdb_target: Target, pod: Obj, *, dry_run: bool) -> None:
    """Admit the eviction of `pod` under the budget at `pdb_target`, or raise (429, 403, 500)."""
    pod_name = str(pod["metadata"]["name"])
    ready = condition_true(pod.get("status") or {}, "Ready")

    async def decrement(pdb: Obj) -> Obj:
        spec, status = pdb.get("spec") or {}, pdb.setdefault("status", {})
        name = pdb["metadata"]["name"]
        if not ready:
            # an unready pod is no healthy pod to lose: evicted when the policy says so, or while
            # the budget is met anyway (nothing taken from the budget)
            policy = spec.get("unhealthyPodEvictionPolicy")
            desired, healthy = int(status.get("desiredHealthy") or 0), int(status.get("currentHealthy") or 0)
            if policy == "AlwaysAllow" or (healthy >= desired > 0):
                return pdb
        if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
            raise too_many_requests(
                f"The disruption budget {name} is still being processed by the server.",
                PROCESSING_RETRY_AFTER,
            )
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise ApiError(
                403,
                "Forbidden",
                f'poddisruptionbudget.policy "{name}" is forbidden: pdb disruptions allowed is negative',
            )
        disrupted = dict(status.get("disruptedPods") or {})
        if len(disrupted) > MAX_DISRUPTED_PODS:
            raise ApiError(
                403,
                "Forbidden",
                f'poddisruptionbudget.policy "{name}" is forbidden: DisruptedPods map too big - too many '
                "evictions not confirmed by PDB controller",
            )
        if allowed == 0:
            raise too_many_requests(
                f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)} healthy pods "
                f"and has {int(status.get('currentHealthy') or 0)} currently"
            )
        status["disruptionsAllowed"] = allowed - 1
        if allowed - 1 == 0:
            _insufficient(status)
        disrupted[pod_name] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status["disruptedPods"] = disrupted
        return pdb

    await res.update_object(pdb_target, decrement, "eviction", conditional=False, dry_run=dry_run)


def _insufficient(status: Obj) -> None:
    """upstream's UpdateDisruptionAllowedCondition once nothing more may go."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conds = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == "False" else now
    conds.append(
        {
            "type": "DisruptionAllowed",
            "status": "False",
            "observedGeneration": status.get("observedGeneration", 0),
            "lastTransitionTime": since,
            "reason": "InsufficientPods",
            "message": "",
        }
    )
    status["conditions"] = conds
