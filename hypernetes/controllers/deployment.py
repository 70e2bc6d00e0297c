"""The Deployment controller (upstream pkg/controller/deployment): one ReplicaSet per pod
template, named `<deployment>-<pod-template-hash>`; rolling updates within maxSurge and
maxUnavailable, or Recreate; proportional scaling while a rollout is under way; revisions
(rollback = an old template comes back, its ReplicaSet gets the next revision); paused
deployments; revisionHistoryLimit; status and the Available/Progressing conditions."""

from __future__ import annotations

import contextlib
import copy
import logging

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers import rollout as r
from hypernetes.controllers.base import Controller, update_status
from hypernetes.controllers.claim import claim, fresh_owner_check
from hypernetes.controllers.informer import Handler, InformerFactory, key_of
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

RS_CREATE_ERROR = "ReplicaSetCreateError"  # upstream's FailedRSCreateReason


class DeploymentController(Controller):
    name = "deployment"
    workers = 4

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.deployments = self.informer("apps/v1", "deployments")
        self.rs = self.informer("apps/v1", "replicasets")
        self.pods = self.informer("v1", "pods")
        self.deployments.add_handler(
            Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n), delete=self.enqueue)
        )
        self.rs.add_handler(Handler(add=self._rs_changed, update=self._rs_updated, delete=self._rs_changed))
        self.pods.add_handler(Handler(delete=self._pod_deleted))

    # -- events --------------------------------------------------------------------------------

    def _owner(self, obj: Obj, kind: str, informer_key_ns: str) -> str | None:
        ref = m.controller_ref(obj)
        if ref is None or ref.get("kind") != kind:
            return None
        return f"{informer_key_ns}/{ref.get('name')}"

    def _rs_changed(self, rs: Obj) -> None:
        key = self._owner(rs, "Deployment", m.namespace(rs))
        if key is not None:
            self.queue.add(key)
        elif m.controller_ref(rs) is None:
            for d in self.deployments.list(m.namespace(rs)):
                if m.selector_matches((d.get("spec") or {}).get("selector"), m.labels(rs)):
                    self.enqueue(d)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        old_key, key = (
            self._owner(old, "Deployment", m.namespace(old)),
            self._owner(new, "Deployment", m.namespace(new)),
        )
        if old_key and old_key != key:
            self.queue.add(old_key)
        self._rs_changed(new)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for the old pods to be gone."""
        rs_key = self._owner(pod, "ReplicaSet", m.namespace(pod))
        rs = self.rs.get(rs_key) if rs_key else None
        d_key = self._owner(rs, "Deployment", m.namespace(rs)) if rs else None
        d = self.deployments.get(d_key) if d_key else None
        if d is not None and not r.rolling(d):
            self.enqueue(d)

    # -- sync ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        spec = d.get("spec") or {}
        if not spec.get("selector"):
            return  # upstream refuses to act on an empty selector (it would select everything)
        rss = await self._claim(d)
        if m.deleting(d):
            await self._sync_status(d, rss)
            return
        d = await self._paused_conditions(d)
        if spec.get("paused") or await self._scaling_event(d, rss):
            await self._sync(d, rss)
        elif r.rolling(d):
            await self._rollout_rolling(d, rss)
        else:
            await self._rollout_recreate(d, rss)

    async def _claim(self, d: Obj) -> list[Obj]:
        candidates = self.rs.list(m.namespace(d))
        claimed = await claim(
            self.client,
            self.rs,
            d,
            (d.get("spec") or {}).get("selector"),
            candidates,
            fresh_owner_check(self.client, d, "deployments"),
        )
        return [copy.deepcopy(rs) for rs in claimed]

    # -- ReplicaSets ---------------------------------------------------------------------------

    async def _get_all(self, d: Obj, rss: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        """The new ReplicaSet (created if asked) with its revision synced, and the old ones."""
        existing = r.find_new_rs(d, rss)
        old = [rs for rs in rss if existing is None or m.uid(rs) != m.uid(existing)]
        new_revision = r.max_revision(old) + 1
        if existing is not None:
            return await self._sync_existing(d, existing, new_revision), old
        if not create:
            return None, old
        return await self._create_new(d, old, new_revision), old

    async def _sync_existing(self, d: Obj, rs: Obj, new_revision: int) -> Obj:
        want = copy.deepcopy(rs)
        changed = r.set_new_rs_annotations(d, want, new_revision, exists=True)
        min_ready = (d.get("spec") or {}).get("minReadySeconds", 0)
        if (want.get("spec") or {}).get("minReadySeconds", 0) != min_ready:
            want["spec"]["minReadySeconds"] = min_ready
            changed = True
        if changed:
            rs = await self._write_rs(want)
        await self._set_revision(d, r.annotation(rs, r.REVISION) or "")
        status = d.get("status") or {}
        if r.progress_deadline(d) is not None and m.get_condition(status, "Progressing") is None:
            status = copy.deepcopy(d.get("status") or {})
            r.set_deploy_condition(
                status,
                r.deploy_condition(
                    "Progressing", "True", r.FOUND_NEW_RS, f'Found new replica set "{m.name(rs)}"'
                ),
            )
            await self._write_status(d, status)
        return rs

    async def _create_new(self, d: Obj, old: list[Obj], new_revision: int) -> Obj | None:
        spec = d.get("spec") or {}
        collisions = (d.get("status") or {}).get("collisionCount")
        h = r.template_hash(spec.get("template") or {}, collisions)
        template = copy.deepcopy(spec.get("template") or {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), r.HASH_LABEL: h}
        selector = copy.deepcopy(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), r.HASH_LABEL: h}
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{m.name(d)}-{h}",
                "namespace": m.namespace(d),
                "labels": dict(tmeta["labels"]),
                "ownerReferences": [m.owner_ref(d)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        rs["spec"]["replicas"] = r.new_rs_replicas(d, [*old, rs], rs)
        r.set_new_rs_annotations(d, rs, new_revision, exists=False)
        try:
            created: Obj = await self.client.create("apps/v1", "replicasets", rs, m.namespace(d))
        except ApiException as e:
            if e.status != 409:
                await self._create_failed(d, rs, e)
                raise
            found = await self.client.get_or_none("apps/v1", "replicasets", m.name(rs), m.namespace(d))
            if (
                found is not None
                and m.controlled_by(found, d)
                and r.equal_ignore_hash(
                    (found.get("spec") or {}).get("template") or {}, spec.get("template") or {}
                )
            ):
                return found  # ours, from a sync whose create we did not observe yet
            # a hash collision: another template already has this name
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = int(collisions or 0) + 1
            await self._write_status(d, status)
            raise
        self.rs.written(created)
        if r.replicas(created):
            await self.events.normal(
                d,
                "ScalingReplicaSet",
                f"Scaled up replica set {m.name(created)} from 0 to {r.replicas(created)}",
            )
        await self._set_revision(d, str(new_revision))
        if r.progress_deadline(d) is not None:
            status = copy.deepcopy(d.get("status") or {})
            r.set_deploy_condition(
                status,
                r.deploy_condition(
                    "Progressing", "True", r.NEW_RS_CREATED, f'Created new replica set "{m.name(created)}"'
                ),
            )
            await self._write_status(d, status)
        return created

    async def _create_failed(self, d: Obj, rs: Obj, e: ApiException) -> None:
        """As upstream: Progressing False (ReplicaSetCreateError) and a warning; the sync then
        fails and the deployment backs off."""
        msg = f'Failed to create new replica set "{m.name(rs)}": {e.message}'
        if r.progress_deadline(d) is not None:
            status = copy.deepcopy(d.get("status") or {})
            r.set_deploy_condition(status, r.deploy_condition("Progressing", "False", RS_CREATE_ERROR, msg))
            if status != (d.get("status") or {}):
                with contextlib.suppress(ApiException):  # the create's error is the one to report
                    await self._write_status(d, status)
        await self.events.warning(d, RS_CREATE_ERROR, msg)

    async def _write_rs(self, rs: Obj) -> Obj:
        out: Obj = await self.client.replace("apps/v1", "replicasets", rs)
        self.rs.written(out)
        return out

    async def _scale(self, rs: Obj, count: int, d: Obj) -> tuple[bool, Obj]:
        want = copy.deepcopy(rs)
        annotations = r.set_replicas_annotations(want, r.replicas(d), r.replicas(d) + r.max_surge(d))
        if r.replicas(rs) == count and not annotations:
            return False, rs
        want["spec"]["replicas"] = count
        out = await self._write_rs(want)
        if r.replicas(rs) != count:
            verb = "up" if count > r.replicas(rs) else "down"
            await self.events.normal(
                d,
                "ScalingReplicaSet",
                f"Scaled {verb} replica set {m.name(rs)} from {r.replicas(rs)} to {count}",
            )
        return r.replicas(rs) != count, out

    async def _set_revision(self, d: Obj, rev: str) -> None:
        if not rev or r.annotation(d, r.REVISION) == rev:
            return
        out: Obj = await self.client.patch(
            "apps/v1",
            "deployments",
            m.name(d),
            {"metadata": {"annotations": {r.REVISION: rev}, "resourceVersion": m.meta(d)["resourceVersion"]}},
            m.namespace(d),
        )
        self.deployments.written(out)
        d["metadata"] = out["metadata"]

    async def _write_status(self, d: Obj, status: Obj) -> None:
        out = await update_status(self.client, "apps/v1", "deployments", d, status)
        if out is not None:
            self.deployments.written(out)
            d["metadata"], d["status"] = out["metadata"], out.get("status") or {}

    # -- strategies ----------------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> None:
        new, old = await self._get_all(d, rss, create=True)
        all_rss = [*old, *([new] if new else [])]
        if new is not None and r.replicas(new) != r.replicas(d):
            count = r.replicas(d) if r.replicas(new) > r.replicas(d) else r.new_rs_replicas(d, all_rss, new)
            scaled, new = await self._scale(new, count, d)
            if scaled:
                await self._sync_rollout_status([*old, new], new, d)
                return
        all_rss = [*old, *([new] if new else [])]
        if await self._reconcile_old(all_rss, old, new, d):
            await self._sync_rollout_status(old + ([new] if new else []), new, d)
            return
        if r.complete(d, d.get("status") or {}):
            await self._cleanup(d, old)
        await self._sync_rollout_status(all_rss, new, d)

    async def _reconcile_old(self, all_rss: list[Obj], old: list[Obj], new: Obj | None, d: Obj) -> bool:
        """Scale old ReplicaSets down as far as maxUnavailable allows, their unhealthy pods
        first (they cost no availability). Updates `old` in place."""
        if sum(r.replicas(rs) for rs in old) == 0:
            return False
        min_available = r.replicas(d) - r.max_unavailable(d)
        new_unavailable = (r.replicas(new) - r.available(new)) if new else 0
        budget = sum(r.replicas(rs) for rs in all_rss) - min_available - new_unavailable
        if budget <= 0:
            return False
        pos = {m.uid(rs): i for i, rs in enumerate(old)}
        cleaned = 0
        for rs in r.by_creation(old):
            unhealthy = r.replicas(rs) - r.available(rs)
            if cleaned >= budget:
                break
            if r.replicas(rs) == 0 or unhealthy <= 0:
                continue
            n = min(budget - cleaned, unhealthy)
            _, old[pos[m.uid(rs)]] = await self._scale(rs, r.replicas(rs) - n, d)
            cleaned += n
        # then healthy ones, as long as minAvailable pods stay available
        spare = sum(r.available(rs) for rs in [*old, *([new] if new else [])]) - min_available
        down = 0
        for rs in r.by_creation(old):
            if down >= spare:
                break
            if r.replicas(rs) == 0:
                continue
            n = min(r.replicas(rs), spare - down)
            _, old[pos[m.uid(rs)]] = await self._scale(rs, r.replicas(rs) - n, d)
            down += n
        return cleaned + down > 0

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> None:
        new, old = await self._get_all(d, rss, create=False)
        scaled = False
        for i, rs in enumerate(old):
            if r.replicas(rs) > 0:
                _, old[i] = await self._scale(rs, 0, d)
                scaled = True
        all_rss = [*old, *([new] if new else [])]
        if scaled or self._old_pods_running(old):
            await self._sync_rollout_status(all_rss, new, d)
            return
        if new is None:
            new, old = await self._get_all(d, rss, create=True)
        if new is not None:
            _, new = await self._scale(new, r.replicas(d), d)
        all_rss = [*old, *([new] if new else [])]
        if r.complete(d, d.get("status") or {}):
            await self._cleanup(d, old)
        await self._sync_rollout_status(all_rss, new, d)

    def _old_pods_running(self, old: list[Obj]) -> bool:
        """Recreate: do pods of old ReplicaSets still run (terminating ones included)?"""
        if not old:
            return False
        if any(r.status_int(rs, "replicas") > 0 for rs in old):
            return True
        uids = {m.uid(rs) for rs in old}
        return any(
            (m.controller_ref(p) or {}).get("uid") in uids and m.pod_phase(p) not in ("Succeeded", "Failed")
            for p in self.pods.list(m.namespace(old[0]))
        )

    async def _scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        new, old = await self._get_all(d, rss, create=False)
        for rs in r.active([*old, *([new] if new else [])]):
            desired = r.annotation(rs, r.DESIRED)
            if desired is not None and desired != str(r.replicas(d)):
                return True
        return False

    async def _sync(self, d: Obj, rss: list[Obj]) -> None:
        """A scaling event or a paused deployment: scale, no rollout."""
        new, old = await self._get_all(d, rss, create=False)
        await self._proportional_scale(d, new, old)
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(d, old)
        await self._sync_status(d, [*old, *([new] if new else [])], new)

    async def _proportional_scale(self, d: Obj, new: Obj | None, old: list[Obj]) -> None:
        all_rss = [*([new] if new else []), *old]
        live = r.active(all_rss)
        if len(live) <= 1:
            target = live[0] if live else (new or (r.by_creation(old)[-1] if old else None))
            if target is not None and r.replicas(target) != r.replicas(d):
                await self._scale(target, r.replicas(d), d)
            return
        if r.is_saturated(d, new):
            for rs in r.active(old):
                await self._scale(rs, 0, d)
            return
        if not r.rolling(d):
            return
        allowed = r.replicas(d) + r.max_surge(d)
        to_add = allowed - sum(r.replicas(rs) for rs in live)
        if to_add == 0:
            return

        # bigger ReplicaSets take the change first; among equals, the newer when growing and
        # the older when shrinking (upstream's ReplicaSetsBySizeNewer / BySizeOlder)
        def created(rs: Obj) -> float:
            t = m.parse_time(m.meta(rs).get("creationTimestamp"))
            return t.timestamp() if t else 0.0

        sign = -1 if to_add > 0 else 1
        order = sorted(live, key=lambda rs: (-r.replicas(rs), sign * created(rs)))
        added, sizes = 0, {}
        for rs in order:
            share = r.proportion(rs, d, to_add, added)
            sizes[m.uid(rs)] = r.replicas(rs) + share
            added += share
        if to_add - added:
            first = m.uid(order[0])
            sizes[first] = max(sizes[first] + to_add - added, 0)
        for rs in order:
            await self._scale(rs, max(sizes[m.uid(rs)], 0), d)

    async def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        """Keep revisionHistoryLimit old ReplicaSets (the ones scaled to zero go, oldest
        revision first)."""
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in old if not m.deleting(rs)]
        diff = len(alive) - int(limit)
        if diff <= 0:
            return
        alive.sort(key=lambda rs: (r.revision(rs), m.meta(rs).get("creationTimestamp") or ""))
        for rs in alive[:diff]:
            if (
                r.status_int(rs, "replicas")
                or r.replicas(rs)
                or int(m.meta(rs).get("generation") or 0) > r.status_int(rs, "observedGeneration")
            ):
                continue
            log.info("deployment %s: deleting old replica set %s", key_of(d), m.name(rs))
            await self.client.delete(
                "apps/v1", "replicasets", m.name(rs), m.namespace(rs), {"preconditions": {"uid": m.uid(rs)}}
            )

    # -- status --------------------------------------------------------------------------------

    async def _paused_conditions(self, d: Obj) -> Obj:
        if r.progress_deadline(d) is None:
            return d
        status = copy.deepcopy(d.get("status") or {})
        cond = m.get_condition(status, "Progressing")
        if cond is not None and cond.get("reason") == r.TIMED_OUT:
            return d
        paused = bool((d.get("spec") or {}).get("paused"))
        was_paused = cond is not None and cond.get("reason") == r.PAUSED
        if paused and not was_paused:
            r.set_deploy_condition(
                status, r.deploy_condition("Progressing", "Unknown", r.PAUSED, "Deployment is paused")
            )
        elif was_paused and not paused:
            r.set_deploy_condition(
                status, r.deploy_condition("Progressing", "Unknown", r.RESUMED, "Deployment is resumed")
            )
        else:
            return d
        await self._write_status(d, status)
        return d

    async def _sync_status(self, d: Obj, rss: list[Obj], new: Obj | None = None) -> None:
        if new is None:
            new = r.find_new_rs(d, rss)
        status = r.calculate_status(rss, new, d)
        if status != (d.get("status") or {}):
            await self._write_status(d, status)

    async def _sync_rollout_status(self, all_rss: list[Obj], new: Obj | None, d: Obj) -> None:
        status = r.calculate_status(all_rss, new, d)
        deadline = r.progress_deadline(d)
        if deadline is None:
            m.remove_condition(status, "Progressing")
        cond = m.get_condition(status, "Progressing")
        done = (
            int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
            and cond is not None
            and cond.get("reason") == r.NEW_RS_AVAILABLE
        )
        subject = f'ReplicaSet "{m.name(new)}"' if new else "Deployment"
        if deadline is not None and not done:
            if r.complete(d, status):
                r.set_deploy_condition(
                    status,
                    r.deploy_condition(
                        "Progressing", "True", r.NEW_RS_AVAILABLE, f"{subject} has successfully progressed."
                    ),
                )
            elif r.progressing(d, status):
                c = r.deploy_condition("Progressing", "True", r.RS_UPDATED, f"{subject} is progressing.")
                if cond is not None and cond.get("status") == "True":
                    c["lastTransitionTime"] = cond.get("lastTransitionTime", c["lastTransitionTime"])
                m.remove_condition(status, "Progressing")
                r.set_deploy_condition(status, c)
            elif r.timed_out(d, status):
                r.set_deploy_condition(
                    status,
                    r.deploy_condition(
                        "Progressing", "False", r.TIMED_OUT, f"{subject} has timed out progressing."
                    ),
                )
        failure = next(
            (
                c
                for rs in all_rss
                for c in (rs.get("status") or {}).get("conditions") or []
                if c.get("type") == "ReplicaFailure"
            ),
            None,
        )
        if failure is not None:
            r.set_deploy_condition(
                status,
                r.deploy_condition(
                    "ReplicaFailure",
                    failure.get("status", "True"),
                    failure.get("reason", ""),
                    failure.get("message", ""),
                ),
            )
        else:
            m.remove_condition(status, "ReplicaFailure")
        if status != (d.get("status") or {}):
            await self._write_status(d, status)
        left = r.seconds_to_deadline(d, d.get("status") or {})
        if left is not None and not r.complete(d, d.get("status") or {}):
            self.queue.add_after(key_of(d), max(left, 0) + 1)
