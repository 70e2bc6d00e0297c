"""Tenants end to end on `hypernetes up` with real VMs and the real kubectl: a tenant admin logs in,
makes a namespace and runs a pod VM that carries its service-account token; quota and policy hold
against real pods; another tenant cannot reach the pod; deleting the tenant takes its VMs."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from hypernetes.api.audit import AuditLog
from tests.support.cluster import Cluster, as_user, make_user, pod_manifest
from tests.support.guests import qemu_processes_under

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tenant-cluster") / "data")
    c.start()
    yield c
    c.stop()
    for pid in qemu_processes_under(c.data):
        os.kill(pid, signal.SIGKILL)


def test_tenant_pod_vm_quota_policy_and_isolation(cluster: Cluster, busybox_ref: str) -> None:
    alice = make_user(cluster, "acme", "alice", "admin", {"pods": "2", "memory": "200Mi"})
    bob = make_user(cluster, "globex", "bob", "admin")
    as_user(cluster, alice, "create", "ns", "acme-web")
    as_user(
        cluster,
        alice,
        "apply",
        "-n",
        "acme-web",
        "-f",
        "-",
        input=pod_manifest("web", busybox_ref, "echo up; while true; do sleep 1; done"),
    )
    cluster.wait_for(
        "web running",
        lambda: (
            json.loads(as_user(cluster, alice, "get", "pod", "web", "-n", "acme-web", "-o", "json").stdout)[
                "status"
            ].get("phase")
            == "Running"
        ),
    )

    # the pod VM carries a token of its service account, bound to it, and the cluster CA
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    out = as_user(
        cluster,
        alice,
        "exec",
        "-n",
        "acme-web",
        "web",
        "--",
        "sh",
        "-c",
        f"cat {sa_dir}/namespace; echo; head -c 27 {sa_dir}/ca.crt; echo; cat {sa_dir}/token",
    ).stdout
    namespace, ca_head, token = out.split("\n", 2)
    assert namespace == "acme-web" and ca_head == "-----BEGIN CERTIFICATE-----"
    who = json.loads(cluster.kubectl(f"--token={token.strip()}", "auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == "system:serviceaccount:acme-web:default"
    # an account without a hypernetes.io/role annotation may do nothing but ask who it is
    denied = cluster.kubectl(f"--token={token.strip()}", "get", "pods", "-n", "acme-web", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    # the tenant's status counts the VM's real size: 64Mi asked + 32Mi guest overhead
    used = cluster.wait_for(
        "tenant usage",
        lambda: (
            (cluster.get("tenant", "acme").get("status") or {}).get("used", {}).get("pods") == "1"
            and cluster.get("tenant", "acme")["status"]["used"]
        ),
    )
    assert used["memory"] == "96Mi" and used["vcpus"] == "1"
    # quota: a second 96Mi VM fits 200Mi, a third pod does not (pods=2 and memory)
    as_user(
        cluster,
        alice,
        "apply",
        "-n",
        "acme-web",
        "-f",
        "-",
        input=pod_manifest("two", busybox_ref, "sleep 600"),
    )
    over = as_user(
        cluster,
        alice,
        "apply",
        "-n",
        "acme-web",
        "-f",
        "-",
        input=pod_manifest("three", busybox_ref, "sleep 600"),
        check=False,
    )
    assert (
        over.returncode != 0
        and 'exceeded quota of tenant "acme": pods: requested 1, used 2, limited 2' in over.stderr
    ), over.stderr
    # policy: no host namespaces for a tenant's pod VM
    hostnet = as_user(
        cluster,
        alice,
        "apply",
        "-n",
        "acme-web",
        "-f",
        "-",
        check=False,
        input=pod_manifest("hostnet", busybox_ref, "true", hostNetwork=True),
    )
    assert hostnet.returncode != 0 and "hostNetwork" in hostnet.stderr

    # another tenant: no logs, no exec, not even the namespace
    for args in (
        ("logs", "web", "-n", "acme-web"),
        ("exec", "web", "-n", "acme-web", "--", "true"),
        ("get", "ns", "acme-web"),
    ):
        r = as_user(cluster, bob, *args, check=False)
        assert r.returncode != 0 and "forbidden" in r.stderr.lower(), (args, r.stdout, r.stderr)
    assert "acme-web" not in as_user(cluster, bob, "get", "pods", "-A").stdout
    refused = as_user(cluster, bob, "create", "configmap", "x", "-n", "acme-web", check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()

    # the audit log names who did what, including the refusals
    audit = AuditLog.read(cluster.data / "audit.log")  # with the per-tenant files
    assert any(
        e["user"] == "alice" and e["tenant"] == "acme" and e["resource"] == "pods" and e["name"] == "web"
        for e in audit
    )
    assert any(
        e["user"] == "bob"
        and e["resource"] == "configmaps"
        and e["namespace"] == "acme-web"
        and e["code"] == 403
        and e["result"] == "denied"
        for e in audit
    )
    assert not any(e["verb"] in ("get", "list", "watch") for e in audit)  # reads are not audited

    # deleting the tenant takes its namespaces, pods and VMs with it
    assert qemu_processes_under(cluster.data)
    cluster.kubectl("delete", "tenant", "acme", "--timeout=180s")
    assert cluster.kubectl("get", "ns", "acme-web", check=False).returncode != 0
    deadline = time.monotonic() + 60
    while qemu_processes_under(cluster.data) and time.monotonic() < deadline:
        time.sleep(1)
    assert not qemu_processes_under(cluster.data)
    assert as_user(cluster, alice, "get", "ns", check=False).returncode != 0  # its users went too
