"""Shared fixtures. Each section belongs to one room; keep them small and session-scoped
when they start real services."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.kernels import KernelRegistry
from tests.support.ceph import CephCluster, have_ceph, running_ceph
from tests.support.guests import build, qemu_processes_under
from tests.support.registry import ImageFactory, Registry, have_registry, start_registry

# -- skips: on CI (CI=1, as `.ci/run` sets it: root, every tool installed) a skip is a failure --------
#
# A missing tool or privilege must not turn a red test into a skipped one. A test that may
# legitimately skip there says so with `@pytest.mark.allow_skip_on_ci(reason)`.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_skip_on_ci(reason): this test may skip on CI (say why)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("CI")
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("allow_skip_on_ci") is None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, which has every tool and privilege: {reason}"


# -- images: a real registry and images built from busybox ---------------------------------


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1:<free port>, plain HTTP, no auth."""
    if not have_registry():
        pytest.fail("docker-registry and skopeo are not installed: run `make setup`")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def image_factory(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    return ImageFactory(tmp_path_factory.mktemp("layouts"), registry)


@pytest.fixture(scope="session")
def busybox_ref(image_factory: ImageFactory) -> str:
    """`127.0.0.1:PORT/test/busybox:1`: busybox + applets, /etc/passwd, /etc/group, /tmp."""
    return image_factory.busybox


@pytest.fixture
def image_store(tmp_path: Path) -> ImageStore:
    """An empty ImageStore under tmp_path (loopback registries are reachable over HTTP)."""
    return ImageStore(tmp_path / "image-store")


# -- runtime: real pod VMs under the machine's accelerator (TCG here) -------------------------


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> KernelRegistry:
    """The registry with our built kernel and a freshly built agent."""
    return KernelRegistry(tmp_path_factory.mktemp("kernels"), build("hn-agent", "guest"))


@pytest.fixture
async def hypervm(tmp_path: Path, kernels: KernelRegistry) -> AsyncIterator[HyperVM]:
    """A HyperVM runtime on a fresh data dir; asserts that nothing is left after each test."""
    runtime = HyperVM(tmp_path / "rt", ImageStore(tmp_path / "images"), kernels, die_with_parent=True)
    yield runtime
    for sandbox in await runtime.list_sandboxes():
        await runtime.remove_sandbox(sandbox.id)
    assert not [p for p in (tmp_path / "rt" / "hypervm").glob("*") if p.name != "accel.json"]
    assert not qemu_processes_under(tmp_path)


# -- volumes: a real Ceph cluster (tests/support/ceph.py) ------------------------------------


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    """One monitor, one manager, three OSDs on 127.0.0.1; pool `rbd`, user `client.hypernetes`.
    Under /tmp: the daemons' admin sockets need short paths."""
    if not have_ceph():
        pytest.fail("ceph-mon, ceph-mgr, ceph-osd and ceph-common are not installed: run `make setup`")
    with running_ceph(Path(tempfile.mkdtemp(prefix="hn-ceph-"))) as cluster:
        yield cluster
