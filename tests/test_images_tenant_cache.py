"""Issue 12 end to end on `hypernetes up` (real VMs, the real kubectl as tenant users, the real
registry with htpasswd auth): a tenant's private image in the node's cache is not another tenant's
to run, and pods never make the node pull from a registry on loopback the operator did not allow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster, as_user, make_user, pod_manifest
from tests.support.guests import qemu_processes_under
from tests.support.registry import Registry, private_registry

pytestmark = pytest.mark.slow
USER, PASSWORD = "acme-puller", "acme-registry-password"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with private_registry(tmp_path_factory.mktemp("private-registry"), USER, PASSWORD, "acme/app:1") as reg:
        yield reg


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, private: Registry) -> Iterator[Cluster]:
    # only the private registry is allowed: the session's open test registry is not
    c = Cluster(tmp_path_factory.mktemp("images-cluster") / "data", allow_registries=(private.host,))
    c.start()
    yield c
    c.stop()
    for pid in qemu_processes_under(c.data):
        os.kill(pid, signal.SIGKILL)


def pod(name: str, image: str, policy: str, secret: str | None = None) -> str:
    doc = json.loads(pod_manifest(name, image, "while true; do sleep 1; done"))
    container = doc["spec"]["containers"][0]
    container["imagePullPolicy"] = policy
    container["resources"]["limits"]["cpu"] = "100m"  # five pods on a 2-core host
    if secret:
        doc["spec"]["imagePullSecrets"] = [{"name": secret}]
    return json.dumps(doc)


def waiting(cluster: Cluster, token: str, ns: str, name: str) -> dict[str, Any]:
    got = json.loads(as_user(cluster, token, "get", "pod", name, "-n", ns, "-o", "json").stdout)
    statuses = got["status"].get("containerStatuses") or [{}]
    return dict(statuses[0].get("state", {}).get("waiting") or {})


def refused(cluster: Cluster, token: str, ns: str, name: str, text: str) -> str:
    """Waits for the pod's pull to be refused with `text`; returns its Failed event's message."""
    state = cluster.wait_for(
        f"{name} refused",
        lambda: (
            (w := waiting(cluster, token, ns, name)).get("reason") in ("ErrImagePull", "ImagePullBackOff")
            and text in w.get("message", "")
            and w
        ),
        timeout=120,
    )
    assert state
    events = cluster.wait_for(
        f"{name} Failed event",
        lambda: [
            e["message"]
            for e in json.loads(
                as_user(
                    cluster,
                    token,
                    "get",
                    "events",
                    "-n",
                    ns,
                    "--field-selector",
                    f"involvedObject.name={name}",
                    "-o",
                    "json",
                ).stdout
            )["items"]
            if e["reason"] == "Failed"
        ],
    )
    assert text in events[0]
    return str(events[0])


def test_private_image_from_the_cache_and_registries_on_loopback(
    cluster: Cluster, private: Registry, busybox_ref: str
) -> None:
    image = f"{private.host}/acme/app:1"
    alice = make_user(cluster, "acme", "alice", "admin")
    bob = make_user(cluster, "globex", "bob", "admin")
    as_user(cluster, alice, "create", "ns", "acme-app")
    as_user(cluster, bob, "create", "ns", "globex-app")
    as_user(
        cluster,
        alice,
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        "acme-app",
        f"--docker-server={private.host}",
        f"--docker-username={USER}",
        f"--docker-password={PASSWORD}",
    )
    # tenant A pulls its private image with its own secret: the node now has it cached
    as_user(
        cluster, alice, "apply", "-n", "acme-app", "-f", "-", input=pod("a", image, "IfNotPresent", "pull")
    )
    cluster.wait_for(
        "a running",
        lambda: (
            json.loads(as_user(cluster, alice, "get", "pod", "a", "-n", "acme-app", "-o", "json").stdout)[
                "status"
            ].get("phase")
            == "Running"
        ),
    )

    # tenant B names the same image: no secret, or a secret of other credentials: refused
    as_user(
        cluster,
        bob,
        "create",
        "secret",
        "docker-registry",
        "guess",
        "-n",
        "globex-app",
        f"--docker-server={private.host}",
        "--docker-username=bob",
        "--docker-password=guess",
    )
    for manifest in (
        pod("b1", image, "IfNotPresent"),
        pod("b2", image, "Never"),
        pod("b3", image, "IfNotPresent", "guess"),
    ):
        as_user(cluster, bob, "apply", "-n", "globex-app", "-f", "-", input=manifest)
    cached = f"image {image} is cached on this node, but its registry must confirm that this pod may pull it"
    refused(cluster, bob, "globex-app", "b1", cached)
    assert "no credentials are configured" in refused(cluster, bob, "globex-app", "b2", cached)
    assert "rejected the credentials of user 'bob'" in refused(cluster, bob, "globex-app", "b3", cached)
    # none of them got a VM: only tenant A's pod runs
    assert len(qemu_processes_under(cluster.data)) == 1

    # a registry on loopback the operator did not allow: refused, whatever the pod says
    port = busybox_ref.split("/")[0].split(":")[1]
    as_user(
        cluster, bob, "apply", "-n", "globex-app", "-f", "-", input=pod("b4", busybox_ref, "IfNotPresent")
    )
    refused(
        cluster,
        bob,
        "globex-app",
        "b4",
        f"registry 127.0.0.1:{port} is not allowed: loopback address 127.0.0.1",
    )
    log = cluster.log.read_text()  # refusals are statuses and events, not tracebacks
    assert "runtime/images/" not in log and "node/worker.py" not in log, log[-3000:]
    subprocess.run(
        cluster.kubectl_args("delete", "ns", "acme-app", "globex-app", "--wait=false"),
        capture_output=True,
        timeout=60,
    )
