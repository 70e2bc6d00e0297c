"""Informers back off when the API server fails, as client-go's reflector does."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiohttp import web

from hypernetes.apiclient import ApiClient, ApiException, RetryBackoff, path


def test_backoff_doubles_to_its_cap_with_jitter_and_resets_after_a_healthy_stretch() -> None:
    backoff = RetryBackoff(initial=0.8, cap=30.0, reset_after=120.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for step, delay in enumerate(delays):
        base = min(0.8 * 2**step, 30.0)
        assert base <= delay <= 2 * base, (step, delay)
    backoff._last_failure -= 121  # the last failure is now two minutes old
    assert 0.8 <= backoff.next_delay() <= 1.6


@pytest.fixture
async def failing_server() -> object:
    """A real HTTP server that answers every list with 503, counting the attempts."""
    attempts: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        attempts.append(asyncio.get_running_loop().time())
        return web.json_response({"kind": "Status", "code": 503, "reason": "ServiceUnavailable"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", attempts
    finally:
        await runner.cleanup()


async def test_informer_backs_off_instead_of_retrying_every_second(
    failing_server: tuple[str, list[float]],
) -> None:
    server, attempts = failing_server
    client = ApiClient(server, token="t")

    async def consume() -> None:
        async for _ in client.informer("v1", "pods"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(6.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.close()
    # a fixed 1 s retry makes 6-7 attempts in 6 s; 0.8 s doubling with jitter at most 4
    assert 2 <= len(attempts) <= 4, attempts
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(gaps)), gaps


def test_paths_from_names_a_tenant_wrote_cannot_leave_their_segment() -> None:
    """Controllers build paths from references in tenants' objects (owner references, scale
    targets, claims): refused as client-go refuses them, before any request."""
    assert (
        path("apps/v1", "deployments", "ns", "web", "scale")
        == "/apis/apps/v1/namespaces/ns/deployments/web/scale"
    )
    assert path("v1", "pods", "ns", "a:b") == "/api/v1/namespaces/ns/pods/a%3Ab"
    for args in [
        ("apps/v1", "deployments", "ns", "../../../api/v1/namespaces/other/secrets/token"),
        ("v1", "secrets", "ns", ".."),
        ("v1", "secrets", "ns", "."),
        ("v1", "secrets", "ns", "a%2Fb"),
        ("v1", "secrets", "../other", "x"),
        ("v1/namespaces/other/secrets/x?", "pods", "ns", "x"),
        ("apps/v1", "deployments/../../secrets", "ns", "x"),
    ]:
        with pytest.raises(ApiException) as e:
            path(*args)
        assert e.value.status == 400
