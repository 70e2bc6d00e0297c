"""End to end on the SQLite store: kubectl apply/get/describe/watch/delete, state and
resourceVersions surviving a server restart, watch resume across it, and 410 after compaction."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hypernetes.api.client import ApiException
from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apiserver import ApiServerThread, async_client

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers: [{{name: web, image: "{image}"}}]
"""


def sqlite_server(workdir: Path) -> ApiServerThread:
    async def factory() -> Store:
        return open_store(f"sqlite:///{workdir}/state.db")

    return ApiServerThread(workdir, store_factory=factory).start()


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_on_sqlite(tmp_path: Path, version: str) -> None:
    api = sqlite_server(tmp_path)
    try:
        assert (
            "pod/web created"
            in api.kubectl("apply", "-f", "-", input=POD.format(image="nginx:1"), version=version).stdout
        )
        assert (
            "pod/web configured"
            in api.kubectl("apply", "-f", "-", input=POD.format(image="nginx:2"), version=version).stdout
        )
        out = api.kubectl("get", "pods", "-o", "wide", version=version).stdout
        assert out.splitlines()[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert "web" in out
        assert "Image:" in api.kubectl("describe", "pod", "web", version=version).stdout
        watcher = api.kubectl_popen("get", "pods", "-w", "--request-timeout=0", version=version)
        time.sleep(1.5)
        api.kubectl("label", "pod", "web", "x=y", version=version)
        time.sleep(1.0)
        watcher.terminate()
        lines, _ = watcher.communicate(timeout=10)
        assert [ln.split()[0] for ln in lines.splitlines() if ln.strip()] == ["NAME", "web", "web"]
        assert 'pod "web" deleted' in api.kubectl("delete", "pod", "web", version=version).stdout
    finally:
        api.stop()


async def test_restart_keeps_state_and_watch_resumes(tmp_path: Path) -> None:
    api = sqlite_server(tmp_path)
    try:
        async with async_client(api) as c:
            cm = await c.create(
                "v1", "configmaps", {"metadata": {"name": "kept"}, "data": {"a": "1"}}, "default"
            )
            rv = cm["metadata"]["resourceVersion"]
    finally:
        api.stop()
    api = sqlite_server(tmp_path)  # same data directory: same CA, token and database
    try:
        async with async_client(api) as c:
            again = await c.get("v1", "configmaps", "kept", "default")
            assert again["metadata"]["resourceVersion"] == rv
            assert again["metadata"]["uid"] == cm["metadata"]["uid"]
            await c.patch("v1", "configmaps", "kept", {"data": {"a": "2"}}, "default")
            events = [
                e
                async for e in c.watch(
                    "v1", "configmaps", "default", resource_version=rv, timeout_seconds=1, bookmarks=False
                )
            ]
            assert [(e.type, e.object["data"]) for e in events] == [("MODIFIED", {"a": "2"})]
            await c.patch("v1", "configmaps", "kept", {"data": {"a": "3"}}, "default")
            store = api.store
            assert store is not None
            api.call(store.compact(api.call(store.current_revision())))
            with pytest.raises(ApiException) as err:
                async for _ in c.watch("v1", "secrets", "default", resource_version=rv):
                    pass
            assert err.value.status == 410
            listed = await c.list("v1", "configmaps", "default")
            assert json.dumps(listed["items"][0]["data"]) == '{"a": "3"}'
    finally:
        api.stop()
