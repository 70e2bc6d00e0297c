"""Several API servers on one etcd (issue 14): `hypernetes up --no-node --store etcd://…` twice,
the second with a copy of the first's PKI (as an operator copies it to each control-plane host).
What one server used to keep in its own memory must hold across both: the tenant quota, token
revocations, the watch cache."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.etcd import etcd_cluster, have_etcd
from tests.support.hosts import HYPERNETES
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd is not installed (make setup)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data: Path, store: str) -> None:
        self.data, self.port = data, _port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = open(data.parent / f"{data.name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                *HYPERNETES,
                "up",
                "--no-node",
                "--store",
                store,
                "--port",
                str(self.port),
                "--data-dir",
                str(data),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=60, interval=0.3, what=f"API server on {data}")
        self.token = (data / "pki" / "admin.token").read_text().strip()

    def _ready(self) -> bool:
        assert self.proc.poll() is None, (self.data.parent / f"{self.data.name}.log").read_text()[-2000:]
        try:
            return httpx.get(f"{self.url}/readyz", verify=False, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def http(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=str(self.data / "pki" / "ca.crt"),
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=60,
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    root = tmp_path_factory.mktemp("apiservers")
    with etcd_cluster(root / "etcd") as etcd:
        store = f"{etcd.url}?prefix=/several"
        first = Server(root / "a", store)
        (root / "b").mkdir(mode=0o700)
        shutil.copytree(root / "a" / "pki", root / "b" / "pki")
        second = Server(root / "b", store)
        try:
            yield first, second
        finally:
            second.stop()
            first.stop()


def _pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"memory": "64Mi"}}}]
        },
    }


def test_a_tenant_quota_holds_across_api_servers(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    with a.http() as http:
        tenant = {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": "q"}}
        tenant["spec"] = {"quota": {"pods": "3"}}
        assert http.post("/apis/hypernetes.io/v1/tenants", json=tenant).status_code == 201
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "q1", "labels": {"hypernetes.io/tenant": "q"}},
        }
        assert http.post("/api/v1/namespaces", json=ns).status_code == 201
    # both servers know the namespace's owner (each mirrors the store through a watch)
    for server in (a, b):
        with server.http() as http:
            wait_for(lambda h=http: h.get("/api/v1/namespaces/q1").status_code == 200)
    time.sleep(1)

    def create_many(server: Server, names: range) -> list[int]:
        # one connection per caller, requests back to back: the two servers' checks overlap
        with server.http() as http:
            return [http.post("/api/v1/namespaces/q1/pods", json=_pod(f"p{i}")).status_code for i in names]

    with ThreadPoolExecutor(4) as pool:
        batches = [
            pool.submit(create_many, server, range(k * 10, k * 10 + 10))
            for k, server in enumerate((a, b, a, b))
        ]
        codes = [code for batch in batches for code in batch.result()]
    assert codes.count(201) == 3, codes
    assert set(codes) == {201, 403}, codes
    with a.http() as http:
        assert len(http.get("/api/v1/namespaces/q1/pods").json()["items"]) == 3


def test_a_token_revoked_on_one_server_stops_working_on_the_other(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    with a.http() as http:
        user = {
            "apiVersion": "hypernetes.io/v1",
            "kind": "User",
            "metadata": {"name": "rita"},
            "spec": {"tenant": "q", "role": "member"},
        }
        assert http.post("/apis/hypernetes.io/v1/users", json=user).status_code == 201
        issued = wait_for(
            lambda: (
                (r := http.post("/hypernetes/v1/tokens", json={"user": "rita"})).status_code == 201
                and r.json()
            )
        )
    token = issued["token"]
    with b.http(token) as on_b:
        wait_for(
            lambda: on_b.get("/api/v1/namespaces/q1/pods").status_code == 200, what="the token works on b"
        )
    with a.http(token) as on_a:
        assert on_a.post("/hypernetes/v1/logout").status_code == 200
    with b.http(token) as on_b:
        wait_for(
            lambda: on_b.get("/api/v1/namespaces/q1/pods").status_code == 401, timeout=5, what="revoked on b"
        )


def test_a_watch_on_one_server_sees_writes_through_the_other(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    with a.http() as http:
        rv = http.get("/api/v1/namespaces/q1/configmaps").json()["metadata"]["resourceVersion"]
    seen: list[str] = []

    def watch() -> None:
        with (
            b.http() as http,
            http.stream(
                "GET", f"/api/v1/namespaces/q1/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=20"
            ) as resp,
        ):
            for line in resp.iter_lines():
                if line:
                    seen.append(json.loads(line)["object"]["metadata"]["name"])
                if len(seen) == 3:
                    return

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(watch)
        with a.http() as http:
            for i in range(3):
                cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"}}
                assert http.post("/api/v1/namespaces/q1/configmaps", json=cm).status_code == 201
        done.result(timeout=30)
    assert seen == ["cm0", "cm1", "cm2"]


def test_services_created_through_both_servers_never_share_a_cluster_ip(
    two_servers: tuple[Server, Server],
) -> None:
    # each create takes its address in the store (issue 18): 14 addresses in a /28, 20 creates
    # through both servers at once
    a, b = two_servers
    with a.http() as http:
        net = {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "tiny"},
            "spec": {"cidr": "10.0.0.0/16", "serviceCIDR": "10.98.0.0/28"},
        }
        assert http.post("/apis/hypernetes.io/v1/networks", json=net).status_code == 201
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "svcs", "annotations": {"hypernetes.io/network": "tiny"}},
        }
        assert http.post("/api/v1/namespaces", json=ns).status_code == 201

    def create_many(server: Server, names: range) -> list[str]:
        with server.http() as http:
            out = []
            for i in names:
                svc = {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"s{i}"},
                    "spec": {"ports": [{"port": 80}]},
                }
                resp = http.post("/api/v1/namespaces/svcs/services", json=svc)
                assert resp.status_code in (201, 500), resp.text
                out.append(resp.json()["spec"]["clusterIP"] if resp.status_code == 201 else "")
            return out

    with ThreadPoolExecutor(4) as pool:
        batches = [pool.submit(create_many, s, range(k * 5, k * 5 + 5)) for k, s in enumerate((a, b, a, b))]
        ips = [ip for batch in batches for ip in batch.result() if ip]
    assert len(ips) == 14 and len(set(ips)) == 14, sorted(ips)
    with b.http() as http:
        time.sleep(1)  # the network controller (one of the two) has seen them: nothing to change
        items = http.get("/api/v1/namespaces/svcs/services").json()["items"]
        assert sorted(s["spec"]["clusterIP"] for s in items) == sorted(ips)
        events = http.get("/api/v1/namespaces/svcs/events").json()["items"]
        assert not [e for e in events if e.get("reason") == "ClusterIPInUse"], events
