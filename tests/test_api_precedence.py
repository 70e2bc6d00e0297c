"""Requests of flows that send one at a time go before the work of flows that flood (issue 12,
api/loopslice.py `Precedence`): while such a request executes, a flood's list slices, watch
deliveries and next request wait for it, a bounded time. The effect on latency is measured by
bench/noisy_neighbour.py; these tests hold the order of the loop's steps and the bounds."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hypernetes.api.fairness import WORKLOAD, FairnessConfig, FlowControl
from hypernetes.api.loopslice import LoopBudget, Precedence, Turnstile, give_way, goes_first
from hypernetes.api.server import FAIRNESS
from hypernetes.auth.identity import tenant_user
from tests.support.apiserver import ApiServerThread
from tests.support.waiting import wait_for

CM = "/api/v1/namespaces/default/configmaps"


async def _flood(p: Precedence, log: list[str], stop: asyncio.Event) -> None:
    """A flood's list: a slice per item (a budget of 0 pauses at every tick)."""
    with p.request(first=False):
        budget = LoopBudget(0.0)
        while not stop.is_set():
            log.append("flood")
            await budget.tick()


async def _quiet(p: Precedence, log: list[str], steps: int = 5) -> None:
    with p.request(first=True):
        for _ in range(steps):
            log.append("quiet")
            await asyncio.sleep(0)
    log.append("quiet done")


async def test_a_floods_slices_wait_for_a_request_that_goes_first() -> None:
    p, stop, log = Precedence(hold=5.0, first_for=5.0), asyncio.Event(), list[str]()
    flood = asyncio.create_task(_flood(p, log, stop))
    await asyncio.sleep(0.01)
    await _quiet(p, log)
    await asyncio.sleep(0.01)
    stop.set()
    await flood
    during = log[log.index("quiet") : log.index("quiet done")]
    assert during.count("flood") <= 1, during  # the slice already running, no more
    assert log[log.index("quiet done") + 1 :].count("flood") > 1  # and the flood goes on after


async def test_without_precedence_the_slices_interleave() -> None:
    """The same two tasks when the quiet request does not go first: the control for the above."""
    p, stop, log = Precedence(hold=5.0, first_for=5.0), asyncio.Event(), list[str]()
    flood = asyncio.create_task(_flood(p, log, stop))
    await asyncio.sleep(0.01)
    with p.request(first=False):
        for _ in range(5):
            log.append("quiet")
            await asyncio.sleep(0)
    log.append("quiet done")
    stop.set()
    await flood
    assert log[log.index("quiet") : log.index("quiet done")].count("flood") >= 4


async def test_a_first_request_holds_others_back_a_bounded_time() -> None:
    """A request that goes first and takes long (waiting on a store, a webhook) holds a slice for
    `hold` at most, and goes first for `first_for` only: a tenant cannot stall a flood by sending
    slow requests one at a time."""
    p = Precedence(hold=0.05, first_for=0.2)
    entered = asyncio.Event()

    async def slow_first() -> None:
        with p.request(first=True):
            entered.set()
            await asyncio.sleep(0.6)

    task = asyncio.create_task(slow_first())
    await entered.wait()
    with p.request(first=False):
        t0 = time.monotonic()
        await give_way()
        waited = time.monotonic() - t0
        assert 0.04 <= waited < 0.15, waited  # the hold, not the slow request's 0.6 s
        await asyncio.sleep(0.25)  # past first_for: it no longer goes first
        assert p.running == 0
        t0 = time.monotonic()
        await give_way()
        assert time.monotonic() - t0 < 0.01
    await task
    assert p.running == 0  # ended after its expiry: counted down once


async def test_watch_deliveries_give_way_too() -> None:
    """A Turnstile turn (one watcher's delivery) outside a first request waits for it."""
    p, log, turnstile = Precedence(hold=5.0, first_for=5.0), list[str](), Turnstile()
    entered, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        with p.request(first=True):
            entered.set()
            await release.wait()
            log.append("first done")

    async def delivery() -> None:
        with p.request(first=False):
            await turnstile.turn()
            log.append("delivered")

    task = asyncio.create_task(first())
    await entered.wait()
    d = asyncio.create_task(delivery())
    await asyncio.sleep(0.05)
    assert log == []  # the delivery waits while the first request runs
    release.set()
    await asyncio.gather(task, d)
    assert log == ["first done", "delivered"]


async def test_the_middleware_lets_a_flows_only_request_go_first() -> None:
    """Two workload seats, one per active flow: a tenant's request goes first when none of the
    tenant's requests wait behind it; the one of a burst that others wait behind gives way."""
    users = {"flood": tenant_user("f", "flood", "admin"), "quiet": tenant_user("q", "quiet", "admin")}
    requests = {
        name: make_mocked_request("GET", "/api/v1/namespaces/x/configmaps", headers={"X-Who": who})
        for name, who in (
            ("quiet", "quiet"),  # first: both flows are active when the flood's requests come
            ("flood-1", "flood"),
            ("flood-2", "flood"),
            ("flood-3", "flood"),
        )
    }
    fc = FlowControl(FairnessConfig(workload_seats=2), lambda r: users[r.headers["X-Who"]])
    first: dict[str, bool] = {}
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        name = next(n for n, r in requests.items() if r is request)
        first[name] = goes_first()
        await gate.wait()
        return web.Response()

    tasks = [asyncio.create_task(fc.middleware(r, handler)) for r in requests.values()]
    await asyncio.sleep(0.05)
    assert first == {"flood-1": True, "quiet": True}  # flood-2 and -3 wait for the flood's seat
    gate.set()
    await asyncio.gather(*tasks)
    # flood-2 started with flood-3 waiting behind it; flood-3 with none
    assert first == {"flood-1": True, "quiet": True, "flood-2": False, "flood-3": True}
    assert fc.precedence is not None and fc.precedence.running == 0
    assert fc.levels[WORKLOAD].executing == 0


async def test_without_the_option_nothing_goes_first() -> None:
    fc = FlowControl(FairnessConfig(precedence=False), lambda r: tenant_user("q", "quiet", "admin"))
    seen: list[bool] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(goes_first())
        return web.Response()

    await fc.middleware(make_mocked_request("GET", "/api/v1/namespaces/x/configmaps"), handler)
    assert fc.precedence is None and seen == [True]  # nobody gives way: as before the option


class _Connection:
    """One keep-alive TLS connection to the server, raw: a request's head can be sent in parts."""

    def __init__(self, api: ApiServerThread) -> None:
        ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
        raw = socket.create_connection(("127.0.0.1", api.port), timeout=30)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.head = f"GET {CM} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer quiet-token\r\n\r\n"

    def response(self) -> int:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(head.split()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    users = {"quiet-token": tenant_user("q", "quiet", "admin")}
    a = ApiServerThread(tmp_path_factory.mktemp("precedence"), extra_users=users).start()
    yield a
    a.stop()


def test_a_connections_next_request_goes_first_as_its_bytes_arrive(api: ApiServerThread) -> None:
    """Before a request is parsed nobody knows whose it is, and a flood's slices ran ahead of its
    parsing: on a connection whose last request went first, the next one goes first from its
    first bytes (api/connections.py)."""
    precedence = api.app[FAIRNESS].precedence
    assert precedence is not None
    conn = _Connection(api)
    try:
        conn.sock.sendall(conn.head.encode()[:20])  # a fresh connection: nothing known of it
        time.sleep(0.2)
        assert precedence.running == 0
        conn.sock.sendall(conn.head.encode()[20:])
        assert conn.response() == 200
        assert precedence.running == 0  # the request ended

        conn.sock.sendall(conn.head.encode()[:20])  # the same connection's next request
        wait_for(lambda: precedence.running == 1, 5, 0.01, what="the request to go first early")
        conn.sock.sendall(conn.head.encode()[20:])
        assert conn.response() == 200
        wait_for(lambda: precedence.running == 0, 5, 0.01, what="the request's end to end it")
    finally:
        conn.sock.close()
