"""`hypernetes up` as a user runs it, driven with the real kubectl: the process, its kubeconfig,
pod manifests, and tenant users who log in with a password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.guests import REPO, qemu_processes_under
from tests.support.waiting import wait_for

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.{}"
PASSWORD = "tenant-e2e-password"


class Cluster:
    def __init__(
        self,
        data: Path,
        network_args: list[str] | None = None,
        allow_registries: tuple[str, ...] = ("127.0.0.1",),
    ) -> None:
        """`network_args`: the `up --network-*` options of a test that made its own host network
        namespace; without them the cluster builds no tenant networks (tests touch nothing on the
        real host's network). `allow_registries`: `up --allow-registry` entries; by default every
        port of 127.0.0.1, where the test registries listen (loopback is refused otherwise).
        The API server takes any free port (`up --port 0`); `port` is the one it got."""
        self.data = data
        self.port = 0
        self.network_args = network_args or ["--no-network"]
        self.allow_args = [f"--allow-registry={a}" for a in allow_registries]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / "up.log"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.data / "admin.kubeconfig"
        kubeconfig.unlink(missing_ok=True)  # a restart gets another port: wait for the new one
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(REPO / ".venv/bin/hypernetes"),
                    "up",
                    "--data-dir",
                    str(self.data),
                    "--port",
                    "0",
                    "--node-name",
                    "node1",
                    *self.network_args,
                    *self.allow_args,
                ],
                stdout=log,
                stderr=log,
            )
        try:
            wait_for(self._node_listed, 60, 0.5, "the cluster to come up")
        except BaseException as e:
            self.proc.kill()  # a cluster that did not come up is not left running behind the suite
            self.proc.wait()
            if isinstance(e, AssertionError):
                raise AssertionError(f"{e}\n{self.log.read_text()[-3000:]}") from None
            raise
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        self.port = int(server.rsplit(":", 1)[1])

    def _node_listed(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "up exited"
        if not (self.data / "admin.kubeconfig").exists():
            return False
        return subprocess.run(self.kubectl_args("get", "nodes", "node1"), capture_output=True).returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never left running behind the suite
                self.proc.wait()
                raise AssertionError(f"up did not stop within 60 s of SIGINT; see {self.log}") from None

    def kubectl_args(self, *args: str, version: str = "32") -> list[str]:
        return [KUBECTL.format(version), "--kubeconfig", str(self.data / "admin.kubeconfig"), *args]

    def kubectl(
        self,
        *args: str,
        version: str = "32",
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.kubectl_args(*args, version=version),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}\n{self.log.read_text()[-2000:]}")
        return result

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_for(self, what: str, check: Any, timeout: float = 180) -> Any:
        """`tests.support.waiting.wait_for` at kubectl's pace, with the cluster's log on failure."""
        try:
            return wait_for(check, timeout, interval=1, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log.read_text()[-3000:]}") from None


@contextmanager
def running_cluster(data: Path, **options: Any) -> Iterator[Cluster]:
    """A started Cluster, stopped afterwards with every pod VM it left (pods that survive `up`
    are adopted on a restart, so a test's last cluster kills them itself)."""
    c = Cluster(data, **options)
    try:
        c.start()
        yield c
    finally:
        try:
            c.stop()
        finally:
            for pid in qemu_processes_under(c.data):
                os.kill(pid, signal.SIGKILL)


def pod_manifest(name: str, image: str, command: str, **extra: Any) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["sh", "-c", command],
                    # half a CPU: the node keeps some for itself, and tests run two such pods at once
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                }
            ],
            "terminationGracePeriodSeconds": 5,
            **extra,
        },
    }
    return json.dumps(pod)


def phase(cluster: Cluster, name: str) -> str:
    return str(cluster.get("pod", name)["status"].get("phase"))


def http(cluster: Cluster) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{cluster.port}", verify=str(cluster.data / "pki/ca.crt"), timeout=30
    )


def make_user(
    cluster: Cluster, tenant: str, name: str, role: str, quota: dict[str, str] | None = None
) -> str:
    """Tenant and user made by the operator; the user's token from a password login."""
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "hypernetes.io/v1",
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {"quota": quota} if quota else {},
            }
        ),
    )
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "hypernetes.io/v1",
                "kind": "User",
                "metadata": {"name": name},
                "spec": {"tenant": tenant, "role": role},
            }
        ),
    )
    admin = (cluster.data / "pki/admin.token").read_text().strip()
    with http(cluster) as h:
        r = h.put(
            f"/hypernetes/v1/users/{name}/password",
            json={"password": PASSWORD},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 200, r.text
        r = h.post("/hypernetes/v1/login", json={"tenant": tenant, "user": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def as_user(cluster: Cluster, token: str, *args: str, **kw: Any) -> Any:
    return cluster.kubectl(f"--token={token}", *args, **kw)
