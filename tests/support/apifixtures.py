"""pytest fixtures for API tests: import them into a test module (`from tests.support.apifixtures
import api  # noqa: F401`); each module gets its own server on the memory store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apiserver import ApiServerThread, kubectl_path

KUBECTL_VERSIONS = ("1.27", "1.32", "1.33")


def have_kubectl(version: str = "1.32") -> bool:
    return kubectl_path(version).exists() or shutil.which("kubectl") is not None


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    server = ApiServerThread(Path(tmp_path_factory.mktemp("api"))).start()
    try:
        yield server
    finally:
        server.stop()
