"""Helpers for API test fixtures. Each test module declares its own module-scoped server:

    @pytest.fixture(scope="module")
    def api(tmp_path_factory): yield from running_api(tmp_path_factory)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import ApiServerThread, kubectl_path

KUBECTL_VERSIONS = ("1.27", "1.32", "1.33")


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
