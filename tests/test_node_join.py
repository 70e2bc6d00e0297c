"""Hosts that join as nodes (issue 14): `hypernetes token create`, `hypernetes node join`, the
node credential and the node's server, each host a network namespace on an underlay the test
makes (tests/support/hosts.py), with the real CLI, the real kubectl and, at the end, real VMs."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from hypernetes.auth import jointoken
from tests.support.guests import qemu_processes_under
from tests.support.hosts import (
    HYPERNETES,
    ControlPlane,
    Host,
    Hosts,
    cli,
    hosts,
    node_ready,
    port_forwarded,
    start_node,
)
from tests.support.waiting import wait_for


def join(host: Host, cp: ControlPlane, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A join that is expected to fail before the node runs (it returns)."""
    return host.run(
        *HYPERNETES, "node", "join", cp.url, "--token", token, "--data-dir", str(host.data),
        "--node-name", host.name.rsplit("x", 1)[1], "--no-network", *extra, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def underlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with hosts(tmp_path_factory.mktemp("hosts")) as made:
        yield made


@pytest.fixture(scope="module")
def cp(underlay: Hosts) -> ControlPlane:
    return ControlPlane(underlay)


def test_the_ca_pin_is_kubeadms_hash_of_the_public_key(cp: ControlPlane) -> None:
    ca = cp.host.data / "pki" / "ca.crt"
    # kubeadm's documented recipe, for an EC key
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)], capture_output=True, check=True
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey.stdout, capture_output=True
    )
    digest = subprocess.run(["sha256sum"], input=der.stdout, capture_output=True, check=True).stdout.split()[
        0
    ]
    assert jointoken.ca_hash(ca.read_bytes()) == digest.decode()
    token = jointoken.parse(cp.token())
    assert token.ca_hash == digest.decode()


def test_token_create_stores_an_upstream_bootstrap_token(cp: ControlPlane) -> None:
    token = jointoken.parse(cp.token("--ttl", "2h", "--description", "rack 7"))
    secret = json.loads(
        cp.kubectl("-n", "kube-system", "get", "secret", f"bootstrap-token-{token.id}", "-o", "json").stdout
    )
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert jointoken.valid_for(secret, token.id, token.secret)
    assert not jointoken.valid_for(secret, token.id, "x" * 16)
    bad = cli("token", "create", "--data-dir", str(cp.host.data), "--ttl", "soon")
    assert bad.returncode != 0 and "not a duration" in bad.stderr


def test_a_server_whose_ca_is_not_the_pinned_one_gets_nothing(cp: ControlPlane, underlay: Hosts) -> None:
    host = underlay.add("wrongca")
    good = jointoken.parse(cp.token())
    forged = str(jointoken.JoinToken("0" * 64, good.id, good.secret))
    before = cp.audit().count('"join"')
    refused = join(host, cp, forged)
    assert refused.returncode == 1
    assert "is not the one the join token names" in refused.stderr
    assert cp.audit().count('"join"') == before  # the secret was never sent
    assert not (host.data / "pki" / "node.token").exists()


def test_wrong_or_expired_bootstrap_tokens_are_refused(cp: ControlPlane, underlay: Hosts) -> None:
    host = underlay.add("badtoken")
    good = jointoken.parse(cp.token())
    wrong = str(jointoken.JoinToken(good.ca_hash, good.id, "a" * 16))
    refused = join(host, cp, wrong)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    short = cp.token("--ttl", "1s")
    time.sleep(2)
    refused = join(host, cp, short)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    malformed = join(host, cp, "K10abc::def")
    assert malformed.returncode == 1 and "join token looks like" in malformed.stderr


@pytest.fixture(scope="module")
def gnode(cp: ControlPlane, underlay: Hosts) -> Host:
    """A joined node (gVisor runtime: nothing here needs a VM)."""
    host = underlay.add("g1")
    start_node(host, cp, cp.token(), "--runtime", "gvisor")
    wait_for(lambda: node_ready(cp, "g1"), timeout=60, interval=0.5, what=f"node g1: {host.log('node.log')}")
    return host


def test_a_joined_node_registers_with_its_address_and_server(cp: ControlPlane, gnode: Host) -> None:
    node = json.loads(cp.kubectl("get", "node", "g1", "-o", "json").stdout)
    assert {"type": "InternalIP", "address": gnode.address} in node["status"]["addresses"]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    pki = gnode.data / "pki"
    for secret in ("node.key", "node.token"):
        assert (pki / secret).stat().st_mode & 0o777 == 0o600
    assert gnode.data.stat().st_mode & 0o777 == 0o700


def test_a_node_credential_is_held_to_its_own_node(cp: ControlPlane, gnode: Host) -> None:
    token = (gnode.data / "pki" / "node.token").read_text().strip()
    ca = str(cp.host.data / "pki" / "ca.crt")
    with httpx.Client(verify=ca, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        other = http.post(f"{cp.url}/hypernetes/v1/nodes/other/credential", json={"csr": "x"})
        assert other.status_code == 403, other.text
        # NodeRestriction: another node's object
        assert http.patch(
            f"{cp.url}/api/v1/nodes/cp", json={"metadata": {"labels": {"x": "y"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).status_code in (403, 404)  # fmt: skip
        assert http.get(f"{cp.url}/api/v1/namespaces/kube-system/secrets").status_code == 403


def test_renewal_gives_a_new_credential_and_certificate(cp: ControlPlane, gnode: Host) -> None:
    from hypernetes.cli.node import NodeIdentity

    pki = gnode.data / "pki"
    before = (pki / "node.token").read_text(), (pki / "node.crt").read_text()
    identity = NodeIdentity(cp.url, pki, "g1", gnode.address)
    renewed = asyncio.run(identity.obtain(None))  # the saved credential, no join token
    assert renewed.token != before[0].strip()
    assert (pki / "node.crt").read_text() != before[1]
    assert renewed.expires - time.time() > 23 * 3600


def test_a_live_nodes_name_cannot_be_taken_with_a_join_token(
    cp: ControlPlane, gnode: Host, underlay: Hosts
) -> None:
    thief = underlay.add("thief")
    refused = thief.run(
        *HYPERNETES, "node", "join", cp.url, "--token", cp.token(), "--data-dir", str(thief.data),
        "--node-name", "g1", "--no-network", check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "is running" in refused.stderr, refused.stderr


def test_the_node_server_serves_only_the_api_servers(cp: ControlPlane, gnode: Host) -> None:
    pki = gnode.data / "pki"
    url = f"https://{gnode.address}:10250/v1/logs"
    # no client certificate: no handshake
    with pytest.raises(httpx.HTTPError):
        httpx.post(url, json={}, verify=str(pki / "ca.crt"), timeout=10)
    # a certificate of the cluster CA that is not the API servers' (the node's own)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "node.crt"), str(pki / "node.key"))
    ctx.check_hostname = False
    try:
        answer = httpx.post(url, json={}, verify=ctx, timeout=10)
        assert answer.status_code == 403
    except httpx.HTTPError:
        pass  # refused at the handshake (a server-auth-only certificate as a client): also right
    # the API servers' certificate is served
    api = cp.host.data / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(api / "apiserver-node-client.crt"), str(api / "apiserver-node-client.key"))
    ctx.check_hostname = False
    answer = httpx.post(url, json={"pod": {"spec": {"nodeName": "elsewhere"}}}, verify=ctx, timeout=10)
    assert answer.status_code == 400 and "not bound to node g1" in answer.text


# -- end to end with VMs -------------------------------------------------------------------------


def _pods(cp: ControlPlane, selector: str) -> list[dict[str, object]]:
    listed = json.loads(cp.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return [p for p in listed if p["status"].get("phase") == "Running"]


@pytest.mark.slow
def test_pods_on_two_joined_hosts_serve_logs_and_exec(
    tmp_path: Path, registry: object, busybox_ref: str
) -> None:
    with hosts(tmp_path) as underlay:
        cp = ControlPlane(underlay, "--scheduling", "spread")
        served = underlay.expose(int(busybox_ref.split("/")[0].split(":")[1]))
        image = served + "/" + busybox_ref.split("/", 1)[1]
        nodes = [underlay.add(n) for n in ("n1", "n2")]
        for host in nodes:
            start_node(
                host, cp, cp.token(), "--allow-registry", served, "--insecure-registry", served, network=True
            )
        for host in nodes:
            name = host.name.rsplit("x", 1)[1]
            wait_for(lambda n=name: node_ready(cp, n), timeout=90, interval=0.5, what=host.log("node.log"))
        cp.kubectl("create", "deployment", "web", f"--image={image}", "--replicas=2", "--", "sh", "-c",
                   "echo started on $(hostname); exec httpd -f -p 8080 -h /etc")  # fmt: skip
        pods = wait_for(
            lambda: len(running := _pods(cp, "app=web")) == 2 and running,
            timeout=300,
            interval=1,
            what="two running web pods",
        )
        assert {p["spec"]["nodeName"] for p in pods} == {"n1", "n2"}  # type: ignore[index]
        for pod in pods:
            name = pod["metadata"]["name"]  # type: ignore[index]
            logs = wait_for(lambda n=name: cp.kubectl("logs", n, check=False).stdout, timeout=60)
            assert f"started on {name}" in logs
            ran = cp.kubectl(
                "exec", "-i", name, "--", "sh", "-c", "cat; exit 3", check=False, input="via node\n"
            )
            assert ran.stdout == "via node\n" and ran.returncode == 3, ran.stderr
            assert port_forwarded(cp, name, "/etc/hostname") == f"{name}\n"
            # attach goes the same way (the node's server): refused stdin says why
            refused = cp.kubectl("attach", "-i", name, check=False, input="x\n")
            assert "does not keep stdin open" in refused.stderr, refused.stderr
        # a host dies (agent and VMs): its VMs are gone with it, the other host keeps serving
        n2 = nodes[1]
        n2.kill()
        wait_for(lambda: not qemu_processes_under(n2.data), timeout=10, what="the dead host's VMs gone")
        alive = next(p for p in pods if p["spec"]["nodeName"] == "n1")  # type: ignore[index]
        assert cp.kubectl("exec", alive["metadata"]["name"], "--", "true").returncode == 0  # type: ignore[index]
        gone = next(p for p in pods if p["spec"]["nodeName"] == "n2")  # type: ignore[index]
        failed = cp.kubectl("logs", gone["metadata"]["name"], check=False)  # type: ignore[index]
        assert failed.returncode != 0 and "cannot reach node n2" in failed.stderr, failed.stderr
        config = yaml.safe_load(cp.kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == cp.url
