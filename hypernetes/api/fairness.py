"""Per-tenant fairness in the API server, after upstream's API Priority and Fairness (APF).

Every authenticated request is classified into a priority level and a flow:

| level             | who                                                      | flow       |
|-------------------|----------------------------------------------------------|------------|
| `system`          | operators (system:masters, also `up`'s scheduler and     | the user   |
|                   | controllers) and node agents                             |            |
| `workload`        | tenant users and their service accounts                  | the tenant |
| `global-default`  | anyone else authenticated                                | the user   |
| `unauthenticated` | public paths (login, healthz, version)                   | the source |

Each level has its own seats (requests executing at once), so tenants can never take the
capacity of the system components. Within a level, a request that finds no free seat waits in
its flow's queue (bounded length, bounded wait: then 429 with Retry-After, as APF); a freed seat
goes to the waiting flow with the fewest requests executing, so a flow that floods only ever
competes with itself. Two choices differ from upstream because this server executes on one
event loop, one core, where a request cannot be preempted and every executing request shares
the loop with the others:
- seats are divided among the flows active now (executing, queued, or started a request in the
  last second): a flood keeps a seat free for a tenant that sends one request at a time;
- while several flows are active, a flow that held a seat for t and has more requests waiting
  waits t*(active-1)/share before its next start (writes count their watch fan-out, as APF's
  work estimate does), so it takes at most its share of the loop's time; a flow sending one
  request at a time is never held back. This is not work-conserving: with a quiet tenant active,
  a flood gets half the loop even if the quiet tenant uses little of the rest; alone, it gets
  all of it. `time_share=False` turns it off.
- a request of a flow with no request waiting behind it (and every system request) goes first:
  while it executes, the others' slices, watch deliveries and next starts wait for it, a bounded
  time (api/loopslice.py `Precedence`). `precedence=False` turns it off.

Long-running requests (watches, exec/attach/port-forward, followed logs) pass the queue like the
others but hold their seat only until their response starts (APF does the same for a watch's
initialization); beyond that they count against per-flow limits of their own, `max_watches` and
`max_long_running`. Other requests are bounded by `request_timeout` (504, as upstream).

Authentication costs too: requests whose credential has not authenticated recently are limited
per source address (concurrently, and by a refilling budget of failures), so an unauthenticated
flood is answered cheaply and never holds an authenticator (or Keystone) for a tenant's request.
The gate middleware runs before the server's own (which authenticates), the fairness middleware
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from hypernetes.api.loopslice import Precedence, give_way
from hypernetes.api.routing import error_response, parse_target, truthy
from hypernetes.api.status import ApiError, too_many_requests
from hypernetes.auth.identity import UserInfo

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SYSTEM, WORKLOAD, GLOBAL, UNAUTHENTICATED = "system", "workload", "global-default", "unauthenticated"
STREAMS = frozenset(("exec", "attach", "portforward"))
WENT_FIRST = web.RequestKey("fairness_went_first", bool)  # it went first (api/loopslice.py)


@dataclass(frozen=True)
class FairnessConfig:
    """Limits; `hypernetes up` sets the main ones from flags (docs/api.md)."""

    system_seats: int = 16
    workload_seats: int = 2
    global_seats: int = 4
    unauthenticated_seats: int = 2
    queue_length: int = 200  # waiting requests per flow; a queued request costs a future, no CPU
    queue_timeout: float = 15.0  # longest wait for a seat before 429 (APF's default)
    max_watches: int = 100  # per tenant (or user) outside the system level
    max_long_running: int = 50  # exec, attach, port-forward, followed logs per tenant (or user)
    request_timeout: float = 60.0  # upstream's --request-timeout
    unknown_credential_inflight: int = 16  # new credentials being tried at once, per source address
    auth_failure_rate: float = 10.0  # failed authentications a source may make per second ...
    auth_failure_burst: float = 50.0  # ... after a burst of this many
    reject_delay: float = 1.0  # a refused request is answered after this long: floods slow down
    time_share: bool = True  # while several flows are active, each gets at most its share of time
    watch_event_cost: float = 0.0001  # seconds a write costs per watch of its flow (fan-out)
    # a request of a flow with none waiting goes before the work of flows with requests waiting
    # (api/loopslice.py `Precedence`)
    precedence: bool = True


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PriorityLevel:
    """Seats of one priority level and the per-flow queues in front of them."""

    def __init__(
        self,
        name: str,
        seats: int,
        queue_length: int,
        queue_timeout: float,
        active_window: float = 1.0,
        time_share: bool = True,
    ) -> None:
        self.name, self.seats = name, seats
        self.queue_length, self.queue_timeout = queue_length, queue_timeout
        self.active_window, self.time_share = active_window, time_share
        self._not_before: dict[str, float] = {}  # flow -> when its time share lets it start again
        self._timer: asyncio.TimerHandle | None = None
        self._active = 1
        self.executing = 0
        self.executing_by_flow: dict[str, int] = defaultdict(int)
        self.queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._seen: dict[str, float] = {}  # flow -> when it last started a request
        self._cap = seats  # the most seats one flow may hold now

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    async def acquire(self, flow: str) -> float:
        """Returns holding a seat, with the time it started (give both back to `release`);
        Rejected when the flow's queue is full or its wait is over."""
        now = time.monotonic()
        self._seen.setdefault(flow, now)  # a newcomer counts as active at once
        self._update_cap()
        if self.executing < self.seats and not self.queues and self._eligible(flow, now):
            self._start(flow)
            return now
        q = self.queues.setdefault(flow, deque())
        if len(q) >= self.queue_length:
            raise Rejected("queue-full")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.append(fut)
        self._dispatch()
        try:
            async with asyncio.timeout(self.queue_timeout):
                await asyncio.shield(fut)
            return time.monotonic()
        except BaseException as e:
            if fut.done() and not fut.cancelled():
                if isinstance(e, TimeoutError):
                    return time.monotonic()  # the seat came just as the wait ended: use it
                self.release(flow, time.monotonic())
            else:
                fut.cancel()
                self._forget(flow, fut)
            if isinstance(e, TimeoutError):
                raise Rejected("time-out") from None
            raise

    def release(self, flow: str, started: float, extra: float = 0.0) -> None:
        """`extra`: work the request caused after it ended (its watch events), in seconds."""
        now = time.monotonic()
        self.executing -= 1
        self.executing_by_flow[flow] -= 1
        if self.executing_by_flow[flow] <= 0:
            del self.executing_by_flow[flow]
        if self.time_share and self._active > 1 and flow in self.queues:
            # the loop is one core: while others are active, a flow with more requests waiting
            # that held a seat for t waits t*(active-1)/share before its next start, so it takes
            # at most its share of the time and a quiet flow's request mostly finds the loop free
            # (not work-conserving). A flow sending one request at a time is not held back: its
            # hold time is mostly waiting for the loop (beside a flood, it was held 12-40 ms
            # before one request in ten)
            hold = min(1.0, (now - started + extra) * (self._active - 1) / self._cap)
            self._not_before[flow] = max(self._not_before.get(flow, 0.0), now) + hold
        self._dispatch()

    def _eligible(self, flow: str, now: float) -> bool:
        return self.executing_by_flow.get(flow, 0) < self._cap and self._not_before.get(flow, 0.0) <= now

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()

    def _start(self, flow: str) -> None:
        self.executing += 1
        self.executing_by_flow[flow] += 1
        self._seen[flow] = time.monotonic()

    def _update_cap(self) -> None:
        """Seats are shared equally among the flows active now (executing, waiting, or started a
        request within `active_window`): a flood keeps a seat free for a tenant that sends one
        request at a time, instead of making it wait for one and then share the loop with all."""
        horizon = time.monotonic() - self.active_window
        if len(self._seen) > 64:
            self._seen = {
                f: t
                for f, t in self._seen.items()
                if t >= horizon or f in self.executing_by_flow or f in self.queues
            }
        self._active = max(
            1,
            sum(
                1
                for f, t in self._seen.items()
                if t >= horizon or f in self.executing_by_flow or f in self.queues
            ),
        )
        self._cap = max(1, self.seats // self._active)
        if self._active == 1:
            self._not_before.clear()
        elif len(self._not_before) > 64:
            self._not_before = {f: t for f, t in self._not_before.items() if t > horizon}

    def _forget(self, flow: str, fut: asyncio.Future[None]) -> None:
        q = self.queues.get(flow)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(fut)
            if not q:
                del self.queues[flow]

    def _dispatch(self) -> None:
        self._update_cap()
        now = time.monotonic()
        while self.executing < self.seats and self.queues:
            # the flow with the fewest executing requests, within its share; among equals the one
            # that started a request longest ago
            eligible = [f for f in self.queues if self._eligible(f, now)]
            if not eligible:  # the free seats are kept for the other active flows
                waits = [
                    self._not_before[f]
                    for f in self.queues
                    if f in self._not_before
                    and self._not_before[f] > now
                    and self.executing_by_flow.get(f, 0) < self._cap
                ]
                if waits and self._timer is None:
                    self._timer = asyncio.get_running_loop().call_at(min(waits), self._wake)
                return
            flow = min(eligible, key=lambda f: (self.executing_by_flow.get(f, 0), self._seen.get(f, 0.0)))
            q = self.queues[flow]
            fut = q.popleft()
            if not q:
                del self.queues[flow]
            if fut.done():
                continue
            fut.set_result(None)
            self._start(flow)


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def empty(self) -> bool:
        self._refill()
        return self.tokens < 1

    def take(self) -> None:
        self._refill()
        self.tokens = max(0.0, self.tokens - 1)


@dataclass(frozen=True)
class Classified:
    level: str
    flow: str
    long_running: str  # "", "watch" or "stream"


class FlowControl:
    """The two middlewares (`gate` before authentication, `middleware` after) and their state."""

    def __init__(self, config: FairnessConfig, user_of: Callable[[web.Request], UserInfo | None]) -> None:
        self.config, self.user_of = config, user_of
        c = config
        self.levels = {
            name: PriorityLevel(name, seats, c.queue_length, c.queue_timeout, time_share=c.time_share)
            for name, seats in (
                (SYSTEM, c.system_seats),
                (WORKLOAD, c.workload_seats),
                (GLOBAL, c.global_seats),
                (UNAUTHENTICATED, c.unauthenticated_seats),
            )
        }
        self.precedence = Precedence() if c.precedence else None
        self.long_running: dict[tuple[str, str], int] = defaultdict(int)  # (kind, flow) -> open
        self.rejected: dict[tuple[str, str], int] = defaultdict(int)  # (level, reason) -> count
        self._known: OrderedDict[bytes, float] = OrderedDict()  # credential digest -> last success
        self._failures: OrderedDict[str, TokenBucket] = OrderedDict()  # source -> failure budget
        # source -> credentials not known yet being authenticated from it (-> requests)
        self._unknown_inflight: dict[str, Counter[bytes]] = defaultdict(Counter)

    # -- classification ------------------------------------------------------------------------

    def classify(self, request: web.Request) -> Classified:
        user = self.user_of(request)
        if user is None:
            level, flow = UNAUTHENTICATED, "source:" + (request.remote or "")
        elif user.operator or user.node is not None:
            level, flow = SYSTEM, "user:" + user.name
        elif user.tenant:
            level, flow = WORKLOAD, "tenant:" + user.tenant
        else:
            level, flow = GLOBAL, "user:" + user.name
        return Classified(level, flow, long_running_kind(request))

    # -- after authentication: seats, queues, long-running limits ------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        c = self.classify(request)
        level = self.levels[c.level]
        if c.long_running:
            return await self._long_running(request, handler, c, level)
        started = await self._acquire(level, c)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                if self.precedence is None:
                    return await handler(request)
                # the system's requests, and a flow's only one, go first (api/loopslice.py)
                first = c.level == SYSTEM or c.flow not in level.queues
                request[WENT_FIRST] = first  # the connection's next request goes first early
                with self.precedence.request(first):
                    if first:
                        return await handler(request)
                    await give_way()
                    response = await handler(request)
                    await give_way()  # before its response is encoded and written
                    return response
        except TimeoutError:
            raise ApiError(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout "
                f"- context deadline exceeded ({self.config.request_timeout:g}s)",
            ) from None
        finally:
            level.release(c.flow, started, self._fan_out(request, c))

    async def _long_running(
        self, request: web.Request, handler: Handler, c: Classified, level: PriorityLevel
    ) -> web.StreamResponse:
        limit = self._long_running_limit(c)
        key = (c.long_running, c.flow)
        if limit and self.long_running[key] >= limit:
            what = "watches" if c.long_running == "watch" else "long-running requests"
            await self._refuse(level.name, f"too-many-{c.long_running}")
            raise too_many_requests(
                f"Too many requests: {c.flow} has {limit} {what} open, the most "
                "allowed; close some and try again",
                1,
            )
        self.long_running[key] += 1
        try:
            started = await self._acquire(level, c)
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    level.release(c.flow, started)

            request[SEAT_RELEASE] = _Release(release)  # called once the response starts (server.py signal)
            try:
                if self.precedence is None or c.level == SYSTEM:
                    return await handler(request)
                with self.precedence.request(False):  # its events give way (api/loopslice.py)
                    return await handler(request)
            finally:
                release()
        finally:
            self.long_running[key] -= 1
            if self.long_running[key] <= 0:
                del self.long_running[key]

    def _fan_out(self, request: web.Request, c: Classified) -> float:
        """What a write's watch events will cost, as APF's work estimate counts them: a tenant's
        writes are seen by the tenant's own watches (and the system's few)."""
        if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return 0.0
        return self.long_running.get(("watch", c.flow), 0) * self.config.watch_event_cost

    def _long_running_limit(self, c: Classified) -> int:
        if c.level == SYSTEM:
            return 0  # node agents and controllers hold as many watches as they need
        return self.config.max_watches if c.long_running == "watch" else self.config.max_long_running

    async def _acquire(self, level: PriorityLevel, c: Classified) -> float:
        try:
            return await level.acquire(c.flow)
        except Rejected as e:
            await self._refuse(level.name, e.reason, delay=e.reason == "queue-full")
            raise too_many_requests("Too many requests, please try again later.", 1) from None

    async def _refuse(self, level: str, reason: str, *, delay: bool = True) -> None:
        self.rejected[(level, reason)] += 1
        if delay and self.config.reject_delay > 0:
            # a client that ignores Retry-After and resends at once is held here, on a connection it
            # already has: a closed-loop flood slows to its connections per second
            await asyncio.sleep(self.config.reject_delay)

    # -- before authentication: what unauthenticated callers may cost -------------------------

    @web.middleware
    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cred = request.headers.get("Authorization")
        digest = (
            hashlib.blake2b(cred.encode("utf-8", "surrogateescape"), digest_size=16).digest() if cred else b""
        )
        if not cred or digest in self._known:
            resp = await handler(request)
            if cred and self.user_of(request) is None:
                self._known.pop(digest, None)  # revoked or expired since
                self._failure(request.remote or "")
            elif not cred and resp.status == 401:
                self._failure(request.remote or "")
            return resp
        source = request.remote or ""
        bucket = self._failures.get(source)
        trying = self._unknown_inflight[source]
        if (bucket is not None and bucket.empty()) or (
            digest not in trying and len(trying) >= self.config.unknown_credential_inflight
        ):
            await self._refuse(UNAUTHENTICATED, "authentication")
            return error_response(
                too_many_requests(
                    "Too many requests with credentials that do not authenticate from this address, "
                    "please try again later.",
                    1,
                )
            )
        trying[digest] += 1  # a client's first burst with one new token is one credential to try
        try:
            resp = await handler(request)
        finally:
            trying[digest] -= 1
            if trying[digest] <= 0:
                del trying[digest]
            if not trying:
                self._unknown_inflight.pop(source, None)
        if self.user_of(request) is not None:
            self._known[digest] = time.monotonic()
            self._known.move_to_end(digest)
            while len(self._known) > 10_000:
                self._known.popitem(last=False)
        elif resp.status == 401:
            self._failure(source)
        return resp

    def _failure(self, source: str) -> None:
        bucket = self._failures.get(source)
        if bucket is None:
            bucket = self._failures[source] = TokenBucket(
                self.config.auth_failure_rate, self.config.auth_failure_burst
            )
            if len(self._failures) > 10_000:
                self._failures.popitem(last=False)  # the source that failed least recently
        self._failures.move_to_end(source)
        bucket.take()

    # -- the response started: a long-running request gives its seat back ---------------------

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        release = request.get(SEAT_RELEASE)
        if release is not None:
            release.fn()


class _Release:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn


SEAT_RELEASE = web.RequestKey("fairness_seat_release", _Release)


def long_running_kind(request: web.Request) -> str:
    """ "watch", "stream" (exec, attach, port-forward, a followed log) or "" for the rest."""
    mi = request.match_info
    if "tail" not in mi or "version" not in mi:
        return ""
    try:
        t = parse_target(mi.get("group", ""), mi["version"], mi["tail"])
    except ApiError:
        return ""
    if (
        request.method == "GET"
        and not t.sub
        and "watch" in request.query
        and truthy(request.query.get("watch"))
    ):
        return "watch"
    if t.sub in STREAMS or (t.sub == "log" and truthy(request.query.get("follow"))):
        return "stream"
    return ""
