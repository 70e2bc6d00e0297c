"""A user's session with each kubectl version (1.27, 1.32, 1.33) against the API server on
the SQLite store, with every controller running: deploy, roll out, roll back, scale, expose,
run a job, delete everything by deleting the namespace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apifixtures import KUBECTL_VERSIONS
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, quick_backoff
from tests.support.waiting import wait_for

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: shop}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: shop}}, annotations: {{"{fake}ready-delay": "0.2"}}}}
    spec:
      containers:
      - {{name: web, image: "shop:1", ports: [{{name: http, containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: shop}}
spec:
  selector: {{app: shop}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate}}
spec:
  completions: 2
  template:
    metadata: {{annotations: {{"{fake}exit-code": "0"}}}}
    spec:
      restartPolicy: Never
      containers: [{{name: m, image: "shop:1"}}]
"""


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    work = Path(tmp_path_factory.mktemp("api-sqlite"))

    async def sqlite() -> Store:
        return open_store(f"sqlite:///{work / 'state.db'}")

    server = ApiServerThread(work, store_factory=sqlite).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ctrl(sqlite_api: ApiServerThread) -> Iterator[ControllersThread]:
    h = ControllersThread(sqlite_api, tune=quick_backoff).start()
    try:
        yield h
    finally:
        h.stop()


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_session(sqlite_api: ApiServerThread, ctrl: ControllersThread, version: str) -> None:
    ns = f"shop-{version.replace('.', '')}"

    def k(*args: str, input: str | None = None) -> str:
        return sqlite_api.kubectl(*args, "-n", ns, version=version, timeout=90, input=input).stdout

    sqlite_api.kubectl("create", "namespace", ns, version=version)
    k("apply", "-f", "-", input=APP.format(fake=FAKE))
    assert "successfully rolled out" in k("rollout", "status", "deployment/shop", "--timeout=60s")
    assert "condition met" in k("wait", "--for=condition=complete", "job/migrate", "--timeout=60s")

    def addresses() -> list[str]:
        ep = ctrl.get("v1", "endpoints", ns=ns, name="shop") or {}
        return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]

    wait_for(lambda: len(addresses()) == 3, what="3 endpoints")
    assert wait_for(lambda: ctrl.get("v1", "serviceaccounts", "default", ns), what="default sa")

    k("set", "image", "deployment/shop", "web=shop:2")
    assert "successfully rolled out" in k("rollout", "status", "deployment/shop", "--timeout=60s")
    assert "rolled back" in k("rollout", "undo", "deployment/shop")
    assert "successfully rolled out" in k("rollout", "status", "deployment/shop", "--timeout=60s")
    d = json.loads(k("get", "deployment", "shop", "-o", "json"))
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "shop:1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

    assert "restarted" in k("rollout", "restart", "deployment/shop")
    assert "successfully rolled out" in k("rollout", "status", "deployment/shop", "--timeout=60s")
    assert len(ctrl.items("apps/v1", "replicasets", ns)) == 3

    k("scale", "deployment/shop", "--replicas=1")
    wait_for(
        lambda: (
            len([p for p in ctrl.pods(ns, "app=shop") if not p["metadata"].get("deletionTimestamp")]) == 1
        ),
        what="scaled to 1",
    )
    wait_for(lambda: len(addresses()) == 1, what="1 endpoint")

    assert (
        f'namespace "{ns}" deleted'
        in sqlite_api.kubectl("delete", "namespace", ns, version=version, timeout=90).stdout
    )
    assert ctrl.get("v1", "namespaces", ns) is None
