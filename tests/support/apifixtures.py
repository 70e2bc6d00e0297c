"""Helpers for API test fixtures. Each test module declares its own module-scoped server:

    @pytest.fixture(scope="module")
    def api(tmp_path_factory): yield from running_api(tmp_path_factory)

Suites that hold for every store run once per store (SQLite, the embedded default, and etcd):

    @pytest.fixture(scope="module", params=API_STORES)
    def api(request, tmp_path_factory): yield from running_api(tmp_path_factory, **on_store(request))
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apiserver import ApiServerThread, kubectl_path
from tests.support.etcd import shared_etcd

KUBECTL_VERSIONS = ("1.27", "1.32", "1.33")
API_STORES = ("sqlite", "etcd")
_prefixes = itertools.count()


def on_store(request: pytest.FixtureRequest) -> dict[str, Callable[[], Awaitable[Store]]]:
    """`running_api` arguments for the store named by the fixture's parameter. On etcd each server
    gets a key prefix of its own in the run's one etcd (revisions and compaction are shared);
    background compaction is off, so only a test's own compaction takes history away."""
    name = request.param
    if name == "sqlite":
        path = request.getfixturevalue("tmp_path_factory").mktemp("store") / "state.db"
        url = f"sqlite:///{path}"
    elif name == "etcd":
        prefix = f"/t{os.getpid()}-{next(_prefixes)}"
        url = f"{shared_etcd(request).url}?prefix={prefix}&compaction-interval=0"
    else:
        raise ValueError(f"unknown store {name!r}")

    async def factory() -> Store:
        return open_store(url)

    return {"store_factory": factory}


def running_api(tmp_path_factory: pytest.TempPathFactory, **kw: Any) -> Iterator[ApiServerThread]:
    server = ApiServerThread(Path(tmp_path_factory.mktemp("api")), **kw).start()
    try:
        yield server
    finally:
        server.stop()


def have_kubectl(version: str = "1.32") -> bool:
    return kubectl_path(version).exists()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    """A server on the memory store, for modules that import this fixture."""
    yield from running_api(tmp_path_factory)
