"""Leader election through a coordination.k8s.io/v1 Lease, with client-go's semantics
(k8s.io/client-go/tools/leaderelection), so that of several schedulers or controller managers
exactly one acts at a time. A leaf beside `apiclient`: every room may elect through it.

The Lease's spec is the record: holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
leaseTransitions. Every write is a compare-and-swap on metadata.resourceVersion, so of two
candidates that read the same record only one wins.

- A candidate tries every `retry_period` (jittered by up to 1.2x, as client-go). It takes the
  lease when it is free (no holder) or expired: the record has not changed for the record's
  leaseDurationSeconds *as measured on this host's monotonic clock* since the candidate observed
  it (renewTime is written for people; comparing it across hosts would trust their clocks).
- The leader renews every `retry_period`. If it has not renewed for `renew_deadline`, or it sees
  another holder, it has lost: its work is cancelled and awaited before it campaigns again.
  Because renew_deadline < lease_duration, the old leader has stopped (lease_duration -
  renew_deadline = 5 s before) anyone else may take the lease, so nothing is done twice. The
  deadline counts from the last successful renewal, stricter than client-go's (which counts from
  the start of a renew round, up to retry_period later).
- On a clean stop the leader releases the lease (holderIdentity "", leaseDurationSeconds 1, as
  client-go's ReleaseOnCancel), after its work has stopped, so a standby takes over at once.

Unlike kube-controller-manager, which exits when it loses the lease, the loser here goes back to
campaigning: `hypernetes up` also serves the API in the same process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.asyncwait import cancel_and_wait
from hypernetes.eventrecorder import EventRecorder, object_reference
from hypernetes.metrics import attached
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

LEASES = ("coordination.k8s.io/v1", "leases")
LEASE_NAMESPACE = "kube-system"
SCHEDULER_LEASE = "kube-scheduler"  # upstream's names, so operators find them where they look
CONTROLLER_MANAGER_LEASE = "kube-controller-manager"
JITTER = 1.2  # client-go's JitterFactor for the acquire loop
RELEASE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ElectionTiming:
    """client-go's defaults (kube-scheduler and kube-controller-manager flags)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks, with its messages
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= JITTER * self.retry_period:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if self.retry_period < 0.001:
            raise ValueError("retryPeriod must be greater than zero")


def micro_time(ts: float) -> str:
    """metav1.MicroTime as the API serves it: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Unique per process, as upstream's hostname_uuid: two candidates on one host differ."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class LeaderElector:
    """`await LeaderElector(client, "kube-scheduler").run(work)` runs `work()` only while this
    process holds the Lease kube-system/NAME, and campaigns for it until cancelled."""

    def __init__(
        self,
        client: ApiClient,
        name: str,
        *,
        namespace: str = LEASE_NAMESPACE,
        identity: str = "",
        timing: ElectionTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.name, self.namespace = client, name, namespace
        self.identity = identity or default_identity()
        self.timing = timing or ElectionTiming()
        self._clock = clock
        self._lease: Obj | None = None  # as last read or written, with its resourceVersion
        self._observed: Obj | None = None  # the spec last seen...
        self._observed_at = 0.0  # ...and when it was first seen, on our monotonic clock
        self._renewed_at = 0.0  # our last successful acquire or renew
        self.leader = False
        self.terms = 0  # how often this candidate became leader
        self.events = EventRecorder(client, name, instance=self.identity)
        self._event: asyncio.Task[None] | None = None

    # --- one attempt (client-go's tryAcquireOrRenew) -----------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One compare-and-swap on the Lease; True if we hold it afterwards."""
        now_wall, now = time.time(), self._clock()
        # fast path, as client-go: the leader renews its own record without reading it first
        fast = self.leader and self._lease is not None and self._valid(now)
        if fast and await self._write(self._next_spec((self._lease or {})["spec"], now_wall), now):
            return True
        try:
            lease = await self.client.get_or_none(*LEASES, self.name, self.namespace)
        except ApiException as e:
            log.warning("leader election %s: reading the lease: %s", self.name, e)
            return False
        if lease is None:
            return await self._create(now_wall, now)
        self._lease = lease
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed, self._observed_at = spec, now
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and self._valid(now):
            return False  # another holds it and has renewed within its lease duration
        return await self._write(self._next_spec(spec, now_wall), now)

    def _valid(self, now: float) -> bool:
        duration = float((self._observed or {}).get("leaseDurationSeconds") or 0)
        return self._observed_at + duration > now

    def _next_spec(self, spec: Obj, now_wall: float) -> Obj:
        ours = spec.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
            "acquireTime": spec.get("acquireTime") if ours else micro_time(now_wall),
            "renewTime": micro_time(now_wall),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
        }

    async def _create(self, now_wall: float, now: float) -> bool:
        spec = {**self._next_spec({}, now_wall), "leaseTransitions": 0}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            created = await self.client.create(*LEASES, body, self.namespace)
        except ApiException as e:
            if e.status != 409:  # 409: another candidate created it first
                log.warning("leader election %s: creating the lease: %s", self.name, e)
            return False
        self._took(created, now)
        return True

    async def _write(self, spec: Obj, now: float) -> bool:
        assert self._lease is not None
        body = {**self._lease, "spec": spec}  # carries the resourceVersion we read: CAS
        try:
            updated = await self.client.replace(*LEASES, body)
        except ApiException as e:
            if e.status != 409:
                log.warning("leader election %s: updating the lease: %s", self.name, e)
            self._lease = None if e.status == 409 else self._lease
            return False
        self._took(updated, now)
        return True

    def _took(self, lease: Obj, now: float) -> None:
        self._lease, self._observed, self._observed_at = lease, lease["spec"], now
        self._renewed_at = now

    async def _attempt(self, limit: float) -> bool:
        """One attempt bounded by `limit` seconds; network errors count as a failed attempt."""
        try:
            async with asyncio.timeout(max(limit, 0.001)):
                return await self.try_acquire_or_renew()
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            log.warning("leader election %s: %s", self.name, e or type(e).__name__)
            return False

    # --- the loops -----------------------------------------------------------------------------

    async def _acquire(self) -> None:
        while not await self._attempt(self.timing.renew_deadline):
            await asyncio.sleep(self.timing.retry_period * (1 + random.random() * (JITTER - 1)))
        self.leader = True
        self.terms += 1
        log.info("leader election %s: %s became leader", self.name, self.identity)
        if self._lease is not None:
            ref = object_reference({**self._lease, "kind": "Lease", "apiVersion": LEASES[0]})
            # in the background: a slow API must not hold up the work, nor the first renewal
            event = self.events.record(ref, "Normal", "LeaderElection", f"{self.identity} became leader")
            self._event = asyncio.create_task(event, name=f"lease {self.name} event")

    async def _keep(self) -> None:
        """Renew until we cannot within the renew deadline or someone else holds the lease."""
        while True:
            await asyncio.sleep(self.timing.retry_period)
            while True:
                left = self._renewed_at + self.timing.renew_deadline - self._clock()
                if left <= 0:
                    log.warning(
                        "leader election %s: failed to renew within %.1f s: lost",
                        self.name,
                        self.timing.renew_deadline,
                    )
                    return
                if await self._attempt(left):
                    break
                holder = (self._observed or {}).get("holderIdentity")
                if holder and holder != self.identity:
                    log.warning("leader election %s: %s holds the lease now: lost", self.name, holder)
                    return
                await asyncio.sleep(min(self.timing.retry_period, max(left - 0.05, 0)))

    async def release(self) -> None:
        """Give the lease up (after our work has stopped) so a standby need not wait it out."""
        if self._lease is None or (self._lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        now_wall = time.time()
        spec = {
            "holderIdentity": "",  # client-go writes an empty holder; the field is then omitted
            "leaseDurationSeconds": 1,
            "acquireTime": micro_time(now_wall),
            "renewTime": micro_time(now_wall),
            "leaseTransitions": int((self._lease.get("spec") or {}).get("leaseTransitions") or 0),
        }
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await self.client.replace(*LEASES, {**self._lease, "spec": spec})
            log.info("leader election %s: %s released the lease", self.name, self.identity)
        except (ApiException, TimeoutError, OSError, aiohttp.ClientError) as e:
            log.warning("leader election %s: releasing the lease: %s", self.name, e)
        self._lease = None

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Campaign; while leader run `work()` (a fresh call each term: caches and expectations
        from an earlier term are stale). Returns when `work()` returns (after releasing the
        lease); raises what `work()` raised; on cancellation stops the work, then releases."""
        with attached(self):  # leader_election_master_status on the process's /metrics
            await self._run(work)

    async def _run(self, work: Callable[[], Awaitable[None]]) -> None:
        margin = self.timing.lease_duration - self.timing.renew_deadline
        while True:
            await self._acquire()
            worker = asyncio.ensure_future(work())
            keeper = asyncio.create_task(self._keep(), name=f"lease {self.name}")
            lost = False
            try:
                await asyncio.wait({worker, keeper}, return_when=asyncio.FIRST_COMPLETED)
                lost = not worker.done()
            finally:
                # stop acting before anything else, well inside the lease another must wait out
                await cancel_and_wait([worker], within=margin)
                await cancel_and_wait([keeper])
                self.leader = False
                if not lost:
                    await self.release()
            ended = worker if not lost else keeper  # the work's own end, or a bug in renewing
            error = None if ended.cancelled() else ended.exception()
            if error is not None:
                raise error
            if not lost:
                return
            log.warning("leader election %s: %s stopped leading; campaigning again", self.name, self.identity)

    def collect(self) -> Iterator[Metric]:
        """client-go's leader_election_master_status gauge."""
        gauge = GaugeMetricFamily(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
            "1 indicates master. 'name' is the string used to identify the lease.",
            labels=["name"],
        )
        gauge.add_metric([self.name], int(self.leader))
        yield gauge
