"""The world many control-plane tests share, for subjects that are not the VM: a multi-tenant API
server (apiserver.py) and its TenantWorld (tenants.py), started once per test module and stopped
in reverse order; optionally the controllers (controllers.py), or fake nodes with the scheduler
and chosen controllers (nodes.py); and the ReplicaSet such tests spread over those nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import pytest

from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
from hypernetes.objects import Obj
from tests.support.apifixtures import running_api
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread
from tests.support.nodes import NodesCluster
from tests.support.tenants import TenantWorld


class Closable(Protocol):
    def close(self) -> None: ...


W = TypeVar("W", bound=Closable)


def module_world(
    tmp_path_factory: pytest.TempPathFactory, make: Callable[[ApiServerThread], W]
) -> Iterator[W]:
    """A module-scoped fixture's body, `yield from module_world(tmp_path_factory, World)`: a
    multi-tenant API server and the world `make` builds on it, closed before the server stops."""
    with contextmanager(running_api)(tmp_path_factory, tenancy=True) as api:
        world = make(api)
        try:
            yield world
        finally:
            world.close()


def running_controllers(world: TenantWorld) -> Iterator[ControllersThread]:
    """A fixture's body: the controller manager against the world's API server."""
    h = ControllersThread(world.api).start()
    try:
        yield h
    finally:
        h.stop()


class NodesWorld:
    """Tenants and fake nodes: a subclass makes its tenants after this __init__, then calls
    start_nodes (the controllers see the tenants' namespaces from their first list)."""

    def __init__(self, api: ApiServerThread) -> None:
        self.api = api
        self.world = TenantWorld(api)

    def start_nodes(self, controllers: Iterable[str], nodes: Iterable[str] = ()) -> NodesCluster:
        self.cluster = NodesCluster(self.api, NodeLifecycleConfig(monitor_period=0.3), controllers)
        for name in nodes:
            self.cluster.start_node(name)
        return self.cluster

    def close(self) -> None:
        self.cluster.stop()
        self.world.close()


def replicaset(name: str, replicas: int, cpu: str = "1", memory: str = "1Gi") -> Obj:
    """A busybox ReplicaSet whose pods ask for `cpu` and `memory` (fake nodes pack by them)."""
    labels = {"app": name}
    container = {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
