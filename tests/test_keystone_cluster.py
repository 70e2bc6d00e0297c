"""`hypernetes up --keystone-url` against a real Keystone, with the real kubectl: a Keystone
project is a tenant, its users' Keystone tokens (or a login through our endpoint) reach that
tenant's namespaces only, and Keystone going down is a 503, never an open door."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.keystone import Keystone, require_keystone

pytestmark = pytest.mark.keystone

REPO = Path(__file__).resolve().parent.parent
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl"
PW = "correct horse battery staple"


@dataclass
class Cluster:
    ks: Keystone
    data: Path
    url: str
    proc: subprocess.Popen[bytes]

    def kubectl(
        self, *args: str, token: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, f"--kubeconfig={self.data / 'admin.kubeconfig'}"]
        if token is not None:
            cmd.append(f"--token={token}")
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.data / "pki" / "ca.crt"), timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_keystone()
    work = tmp_path_factory.mktemp("ks-cluster")
    (work / "keystone").mkdir()
    ks = Keystone.start(work / "keystone")
    proc = None
    log = open(work / "up.log", "wb")  # noqa: SIM115 - the server writes to it until teardown
    try:
        member = ks.role_id("member")
        reader = ks.role_id("reader")
        ids = {p: ks.create_project(p) for p in ("team-k", "team-j")}
        for user, project, role in (
            ("kara", "team-k", member),
            ("jon", "team-j", member),
            ("vera", "team-k", reader),
        ):
            ks.grant(ks.create_user(user, PW), ids[project], role)
        data = work / "data"
        proc = subprocess.Popen(
            [
                str(REPO / ".venv/bin/hypernetes"),
                "up",
                "--no-node",
                "--data-dir",
                str(data),
                "--port",
                "0",
                "--keystone-url",
                ks.url,
                "--keystone-cache-ttl",
                "1",
            ],
            stdout=log,
            stderr=log,
        )
        c = Cluster(ks, data, "", proc)
        deadline = time.monotonic() + 60
        while not (data / "admin.kubeconfig").exists() or c.kubectl("get", "ns", check=False).returncode:
            assert proc.poll() is None and time.monotonic() < deadline, (work / "up.log").read_text()[-3000:]
            time.sleep(0.3)
        # up took any free port and wrote the one it got into the kubeconfig
        c.url = yaml.safe_load((data / "admin.kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
        # the operator makes the tenants the Keystone projects stand for
        for t in ("team-k", "team-j"):
            subprocess.run(
                [KUBECTL, f"--kubeconfig={data / 'admin.kubeconfig'}", "apply", "-f", "-"],
                check=True,
                input=json.dumps(
                    {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": t}}
                ),
                text=True,
                capture_output=True,
            )
        yield c
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
        ks.close()


def test_keystone_token_reaches_its_project_tenant_only(cluster: Cluster) -> None:
    kara = cluster.ks.issue_token("kara", PW, project="team-k")
    jon = cluster.ks.issue_token("jon", PW, project="team-j")
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", token=kara).stdout)["status"]["userInfo"]
    assert who["username"] == "keystone:kara"
    assert who["extra"]["hypernetes.io/tenant"] == ["team-k"]
    assert who["extra"]["hypernetes.io/role"] == ["member"]
    # a member may not create namespaces; the operator gives team-k one, owned through the label
    assert "forbidden" in cluster.kubectl("create", "ns", "k-one", token=kara, check=False).stderr
    cluster.kubectl("create", "ns", "k-one")
    cluster.kubectl("label", "ns", "k-one", "hypernetes.io/tenant=team-k")
    cluster.kubectl("create", "configmap", "cfg", "-n", "k-one", "--from-literal=a=b", token=kara)
    assert cluster.kubectl("get", "ns", "-o", "name", token=kara).stdout.split() == ["namespace/k-one"]
    assert cluster.kubectl("get", "ns", "-o", "name", token=jon, check=False).stdout.split() == []
    denied = cluster.kubectl("get", "configmap", "cfg", "-n", "k-one", token=jon, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_keystone_reader_role_maps_to_viewer(cluster: Cluster) -> None:
    cluster.kubectl("create", "ns", "k-two")
    cluster.kubectl("label", "ns", "k-two", "hypernetes.io/tenant=team-k")
    vera = cluster.ks.issue_token("vera", PW, project="team-k")
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", "k-two", token=vera).stdout.strip() == "yes"
    out = cluster.kubectl("auth", "can-i", "create", "configmaps", "-n", "k-two", token=vera, check=False)
    assert out.stdout.strip().startswith("no")
    denied = cluster.kubectl("create", "configmap", "x", "-n", "k-two", token=vera, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_login_endpoint_and_basic_auth_go_through_keystone(cluster: Cluster) -> None:
    with cluster.http() as http:
        bad = http.post("/hypernetes/v1/login", json={"tenant": "team-k", "user": "kara", "password": "nope"})
        assert bad.status_code == 401 and bad.json()["kind"] == "Status"
        good = http.post("/hypernetes/v1/login", json={"tenant": "team-k", "user": "kara", "password": PW})
        assert good.status_code == 201, good.text
        token = good.json()["token"]
        basic = http.get("/api/v1/namespaces", auth=("kara@team-k", PW))
        assert basic.status_code == 200
        assert {i["metadata"]["name"] for i in basic.json()["items"]} == {"k-one", "k-two"}
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", token=token).stdout)
    assert who["status"]["userInfo"]["username"] == "keystone:kara"


def test_keystone_outage_is_503_not_an_open_door(cluster: Cluster) -> None:
    token = cluster.ks.issue_token("kara", PW, project="team-k")
    cluster.kubectl("get", "ns", token=token)
    cluster.ks.primary.stop()
    time.sleep(1.5)  # past the 1 s cache: the next request must ask Keystone
    out = cluster.kubectl("get", "ns", token=token, check=False)
    assert out.returncode != 0
    assert "ServiceUnavailable" in out.stderr or "503" in out.stderr or "unavailable" in out.stderr.lower()
    with cluster.http() as http:
        r = http.get("/api/v1/namespaces", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"
        login = http.post("/hypernetes/v1/login", json={"tenant": "team-k", "user": "kara", "password": PW})
        assert login.status_code == 503
    # operators are not locked out by an identity-service outage
    assert cluster.kubectl("get", "ns", "k-one", check=False).returncode == 0
