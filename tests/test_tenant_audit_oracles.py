"""A hostile tenant against the audit trail, the authorizer's answers and the login endpoint
(issue 12), on a real multi-tenant API server with the real kubectl:

- every exec, attach and port-forward is audited, allowed or refused, over WebSocket (a GET) as
  well as SPDY (a POST), with user, tenant, pod, container, command and outcome;
- answers about another tenant's cluster-scoped names (users, namespaces, networks, tenants,
  persistentvolumes) are the answers about free names, except the unavoidable 409 of a create;
- failed logins slow their source, not the user they aim at;
- one tenant's volume cannot push operators' or other tenants' records out of the audit trail.

Streams here are served by the in-test pod proxy of test_api_streams (the API server's side is the
subject); `test_exec_into_a_real_vm_is_audited` does the same against a real pod VM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.api.audit import AuditLog
from hypernetes.auth import throttle
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.listening import forwarded_port
from tests.support.podproxy import ScriptedProxy
from tests.support.tenants import (
    JSON,
    KIND,
    MERGE,
    TENANTS_PATH,
    USERS_PATH,
    TenantWorld,
    user_object,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

PODS, CMS = KIND["pods"], KIND["configmaps"]
NETS = "/apis/hypernetes.io/v1/networks"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
PASSWORD = "a good long password"
HN = [str(Path(sys.executable).parent / "hypernetes")]
WINDOW = 2.0  # the aggregation window of the world's audit log: short, so tests see summaries


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    tmp = Path(tmp_path_factory.mktemp("audit-oracles"))
    api = ApiServerThread(
        tmp, tenancy=True, pod_proxy=ScriptedProxy(), audit=AuditLog(tmp / "audit.log", window=WINDOW)
    ).start()
    w = TenantWorld.build(api)
    # acme's pod "web" runs (kubectl attaches and forwards only to running pods)
    w.op("PATCH", PODS.path("acme-a", "web") + "/status", {"status": {"phase": "Running"}}, headers=MERGE)
    w.op(
        "POST",
        NETS,
        {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "acme-net"},
            "spec": {"cidr": "10.9.0.0/24", "tenant": "acme"},
        },
    )
    try:
        yield w
    finally:
        w.close()
        api.stop()


def streams(world: TenantWorld, user: str, sub: str) -> list[JSON]:
    return [e for e in world.audit() if e["user"] == user and e["subresource"] == sub]


# == 1. streams into pods are audited ==============================================================


@pytest.mark.parametrize("version", ["1.32", "1.27"])  # WebSocket (a GET) and SPDY (a POST)
def test_exec_is_audited_allowed_or_not(world: TenantWorld, version: str) -> None:
    before = len(streams(world, "acme-member", "exec"))
    p = world.kubectl(
        "acme-member", "exec", "-n", "acme-a", "web", "--", "echo", "audited", version, version=version
    )
    assert p.returncode == 0 and p.stdout == f"audited {version}\n", p.stderr
    p = world.kubectl("acme-member", "exec", "-n", "acme-a", "web", "--", "fail", "7", version=version)
    assert p.returncode == 7, p.stderr
    # the server writes a stream's last record as its handler returns, after kubectl has its answer
    wait_for(
        lambda: len(streams(world, "acme-member", "exec")) >= before + 4,
        interval=0.02,
        what="both execs on record",
    )
    mine = streams(world, "acme-member", "exec")[before:]
    fields = ("stage", "tenant", "verb", "namespace", "name", "container", "command", "code")
    assert [tuple(e.get(k) for k in fields) for e in mine] == [
        ("ResponseStarted", "acme", "connect", "acme-a", "web", "c", ["echo", "audited", version], 101),
        ("ResponseComplete", "acme", "connect", "acme-a", "web", "c", ["echo", "audited", version], 101),
        ("ResponseStarted", "acme", "connect", "acme-a", "web", "c", ["fail", "7"], 101),
        ("ResponseComplete", "acme", "connect", "acme-a", "web", "c", ["fail", "7"], 101),
    ], mine
    assert [e.get("exitCode") for e in mine] == [None, 0, None, 7]
    assert {e["result"] for e in mine} == {"allowed"}


def test_refused_exec_is_audited_on_every_transport(world: TenantWorld) -> None:
    """kubectl gives up when it cannot read the pod; a raw client goes straight for the stream:
    a WebSocket GET, then SPDY's POST."""
    spy = world.http("globex-member")
    path, query = PODS.path("acme-a", "web") + "/exec", {"command": "id", "stdout": "true"}
    ws = spy.get(
        path,
        params=query,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "eA==",
            "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
        },
    )
    post = spy.post(
        path,
        params=query,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": "v4.channel.k8s.io",
        },
    )
    assert (ws.status_code, post.status_code) == (403, 403)
    refused = streams(world, "globex-member", "exec")
    assert [(e["verb"], e["code"], e["tenant"], e["namespace"], e["name"]) for e in refused] == [
        ("connect", 403, "globex", "acme-a", "web")
    ] * 2, refused


def test_attach_and_port_forward_are_audited(world: TenantWorld) -> None:
    out = world.kubectl("acme-member", "attach", "-n", "acme-a", "web", timeout=30)
    assert "attached" in out.stdout, out.stderr
    wait_for(
        lambda: len(streams(world, "acme-member", "attach")) == 2, interval=0.02, what="the attach on record"
    )
    attach = streams(world, "acme-member", "attach")
    assert [(e["stage"], e["container"], e.get("exitCode")) for e in attach] == [
        ("ResponseStarted", "c", None),
        ("ResponseComplete", "c", 0),
    ]

    proc = world.kubectl_popen("acme-member", "port-forward", "-n", "acme-a", "pod/web", ":80")
    try:
        local = forwarded_port(proc, 80)
        wait_for(lambda: _echo(local) == b"PING", 30, 0.3, what="port-forward answers")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    wait_for(
        lambda: any(e["stage"] == "ResponseComplete" for e in streams(world, "acme-member", "portforward")),
        interval=0.02,
        what="the forward's end is on record",
    )
    fwd = streams(world, "acme-member", "portforward")
    assert fwd[0]["stage"] == "ResponseStarted" and fwd[0]["code"] == 101 and fwd[0]["name"] == "web"
    assert fwd[-1]["ports"] == [80] and fwd[-1]["tenant"] == "acme"

    r = world.http("globex-admin").get(
        PODS.path("acme-a", "web") + "/portforward",
        params={"ports": "80"},
        headers={"Connection": "Upgrade", "Upgrade": "websocket"},
    )
    assert r.status_code == 403
    assert streams(world, "globex-admin", "portforward")[-1]["code"] == 403


def _echo(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"ping")
            return c.recv(16)
    except OSError:
        return b""


# == 2. no answer depends on another tenant's names ================================================

# (path of the kind, a name acme holds, a body for a create of `name`)
HELD: dict[str, tuple[str, str, Any]] = {
    "users": (USERS_PATH, "acme-viewer", lambda n: user_object(n, "globex", "viewer")),
    "namespaces": ("/api/v1/namespaces", "acme-a", lambda n: {"metadata": {"name": n}}),
    "networks": (
        NETS,
        "acme-net",
        lambda n: {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": n},
            "spec": {"cidr": "10.8.0.0/24", "tenant": "globex"},
        },
    ),
    "tenants": (
        TENANTS_PATH,
        "acme",
        lambda n: {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": n}},
    ),
    "persistentvolumes": (
        "/api/v1/persistentvolumes",
        "pv-of-acme",
        lambda n: {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": n},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "csi": {"driver": "local.hypernetes.io", "volumeHandle": n, "fsType": "ext4"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
                                ]
                            }
                        ]
                    }
                },
            },
        },
    ),
}
FREE = "nobody-holds-this"


def _same(answer: Any, name: str) -> str:
    return json.dumps(answer, sort_keys=True).replace(name, "NAME")


def _can_i(world: TenantWorld, who: str, verb: str, resource: str, name: str) -> JSON:
    group = "" if resource in ("namespaces", "persistentvolumes") else "hypernetes.io"
    r = world.http(who).post(
        SSAR,
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "name": name}
            },
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["status"])


@pytest.mark.parametrize("who", ["globex-admin", "globex-member"])
@pytest.mark.parametrize("resource", sorted(HELD))
def test_access_reviews_do_not_depend_on_foreign_names(world: TenantWorld, resource: str, who: str) -> None:
    _, held, _ = HELD[resource]
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert _same(_can_i(world, who, verb, resource, held), held) == _same(
            _can_i(world, who, verb, resource, FREE), FREE
        ), (verb, resource)


def test_kubectl_can_i_create_user(world: TenantWorld) -> None:
    """The breach as found: `auth can-i create users/NAME` told taken names from free ones."""
    answers = {
        name: world.kubectl("globex-admin", "auth", "can-i", "create", f"users.hypernetes.io/{name}")
        for name in ("acme-viewer", FREE)
    }
    assert {(p.returncode, p.stdout) for p in answers.values()} == {(0, "yes\n")}, answers
    # and the create itself: the name is taken (409, unavoidable for unique names), and that is all
    r = world.http("globex-admin").post(
        USERS_PATH + "?dryRun=All", json=user_object("acme-viewer", "globex", "viewer")
    )
    assert r.status_code == 409
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": "AlreadyExists",
        "code": 409,
        "message": 'users.hypernetes.io "acme-viewer" already exists',
        "details": {"name": "acme-viewer", "group": "hypernetes.io", "kind": "users"},
    }


@pytest.mark.parametrize("resource", sorted(HELD))
def test_requests_do_not_depend_on_foreign_names(world: TenantWorld, resource: str) -> None:
    """get/update/patch/delete of a name another tenant holds answer as for a free name; a create
    differs only by 409 AlreadyExists (when the caller may create that kind at all)."""
    path, held, body = HELD[resource]
    if resource == "persistentvolumes" and world.http("operator").get(f"{path}/{held}").status_code == 404:
        pv = body(held)
        pv["metadata"]["labels"] = {"hypernetes.io/tenant": "acme"}
        world.op("POST", path, pv)
    h = world.http("globex-admin")
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        answers = []
        for name in (held, FREE):
            kw: JSON = (
                {"json": body(name)}
                if method == "PUT"
                else {"json": {"metadata": {"labels": {"x": "y"}}}, "headers": MERGE}
                if method == "PATCH"
                else {}
            )
            dry = {"dryRun": "All"} if method != "GET" else None
            r = h.request(method, f"{path}/{name}", params=dry, **kw)
            answers.append((r.status_code, _same(r.json(), name)))
        assert answers[0] == answers[1], (method, answers)
        assert answers[0][0] == 403, answers
    held_create = h.post(path, params={"dryRun": "All"}, json=body(held))
    free_create = h.post(path, params={"dryRun": "All"}, json=body(FREE))
    if free_create.status_code == 201:
        assert held_create.status_code == 409 and held_create.json()["reason"] == "AlreadyExists"
        assert set(held_create.json()["details"]) <= {"name", "group", "kind"}
    else:
        assert (held_create.status_code, _same(held_create.json(), held)) == (
            free_create.status_code,
            _same(free_create.json(), FREE),
        )


def test_identity_endpoints_do_not_depend_on_foreign_names(world: TenantWorld) -> None:
    h = world.http("globex-admin")
    for method, path, body in (
        ("PUT", "/hypernetes/v1/users/{}/password", {"password": PASSWORD}),
        ("POST", "/hypernetes/v1/users/{}/revoke", None),
        ("POST", "/hypernetes/v1/tokens", "user"),
    ):
        answers = []
        for name in ("acme-viewer", FREE):
            r = h.request(method, path.format(name), json={"user": name} if body == "user" else body)
            answers.append((r.status_code, _same(r.json(), name)))
        assert answers[0] == answers[1] and answers[0][0] == 403, (path, answers)
    logins = [world.login("globex", name, "wrong password") for name in ("acme-viewer", FREE)]
    assert [(r.status_code, r.json()["message"]) for r in logins] == [
        (401, "invalid user name, password or tenant")
    ] * 2


# == 3. throttling slows the guesser, not the user ================================================


def _from(world: TenantWorld, source: str) -> httpx.Client:
    """Raw HTTP from another loopback address: another source, as the server sees it."""
    return httpx.Client(
        base_url=world.api.url,
        timeout=60,
        transport=httpx.HTTPTransport(local_address=source, verify=str(world.api.ca.ca_cert)),
    )


def _login(client: httpx.Client, user: str, password: str, tenant: str = "acme") -> httpx.Response:
    return client.post("/hypernetes/v1/login", json={"tenant": tenant, "user": user, "password": password})


def _victim(world: TenantWorld, name: str) -> None:
    world.create_user(name, "acme", "member")
    world.set_password(name, PASSWORD)


def _hn_login(world: TenantWorld, user: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`hypernetes login` as kubectl's exec plugin runs it (from 127.0.0.1)."""
    return subprocess.run(
        [
            *HN,
            "login",
            "--server",
            world.api.url,
            "--ca",
            str(world.api.ca.ca_cert),
            "--tenant",
            "acme",
            "--user",
            user,
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=90,
        env={"HOME": str(home)},
    )


def test_failed_logins_do_not_lock_the_user_out(world: TenantWorld, tmp_path: Path) -> None:
    _victim(world, "victim")
    with _from(world, "127.0.0.2") as attacker:
        codes = [_login(attacker, "victim", f"guess {i}").status_code for i in range(8)]
        assert codes[: throttle.PAIR_FREE] == [401] * throttle.PAIR_FREE
        refused = _login(attacker, "victim", PASSWORD)  # even the right password, from there, now
        assert refused.status_code == 429 and refused.json()["reason"] == "TooManyRequests"
        assert int(refused.headers["Retry-After"]) == refused.json()["details"]["retryAfterSeconds"] >= 1
    # the user, from their own address, with kubectl's exec plugin
    start = time.monotonic()
    login = _hn_login(world, "victim", tmp_path)
    assert login.returncode == 0, login.stderr
    assert time.monotonic() - start < 5
    token = json.loads(login.stdout)["status"]["token"]
    who = world.api.kubectl(f"--token={token}", "auth", "whoami", "-o", "json", check=False)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "victim", who.stderr


def test_spraying_one_source_is_slowed_others_are_not(world: TenantWorld) -> None:
    _victim(world, "sprayed")
    with _from(world, "127.0.0.3") as sprayer:
        codes = [
            _login(sprayer, f"user-{i}", "Summer2026!").status_code for i in range(throttle.SOURCE_FREE + 2)
        ]
    assert codes[: throttle.SOURCE_FREE] == [401] * throttle.SOURCE_FREE and codes[-1] == 429, codes
    with _from(world, "127.0.0.4") as elsewhere:
        assert _login(elsewhere, "sprayed", PASSWORD).status_code == 201


def test_guesses_from_many_sources_are_delayed_not_denied(world: TenantWorld, tmp_path: Path) -> None:
    """A botnet (one guess per address, all at once) drains the user's bucket: the guesses beyond
    it are given turns seconds ahead (429 + Retry-After; nothing held on the server); meanwhile the
    user at an address it logged in from before is not slowed at all, and at a new address waits
    for its turn and gets in."""
    _victim(world, "botnet-target")
    assert _patient_login(world, "127.0.1.1", "botnet-target", PASSWORD)[0] == [201]  # known from now
    extra = 4
    with ThreadPoolExecutor(throttle.USER_BURST + extra) as pool:
        bots = [
            pool.submit(_patient_login, world, f"127.0.2.{i + 1}", "botnet-target", f"guess {i}")
            for i in range(throttle.USER_BURST + extra)
        ]
        wait_for(
            lambda: sum(b.done() for b in bots) >= throttle.USER_BURST, 60, 0.02, what="the burst answered"
        )
        assert _patient_login(world, "127.0.1.1", "botnet-target", PASSWORD) < ([201], 1.5)  # not slowed
        assert not all(b.done() for b in bots)  # while guesses wait for their turns
        answers = [b.result() for b in bots]
    assert sorted(codes for codes, _ in answers) == [[401]] * throttle.USER_BURST + [[429, 401]] * extra, (
        answers
    )  # delayed, then answered
    assert max(t for _, t in answers) >= (extra - 1) * throttle.USER_REFILL, answers
    start = time.monotonic()
    login = _hn_login(world, "botnet-target", tmp_path)  # from an address new to this user
    assert login.returncode == 0, login.stderr
    assert time.monotonic() - start < throttle.MAX_DELAY + 5


def _patient_login(world: TenantWorld, source: str, user: str, password: str) -> tuple[list[int], float]:
    """A login from `source` that comes back when a 429 says to: (the codes, seconds taken)."""
    codes: list[int] = []
    with _from(world, source) as client:
        start = time.monotonic()
        while True:
            r = _login(client, user, password)
            codes.append(r.status_code)
            if r.status_code != 429 or len(codes) > 3:
                return codes, time.monotonic() - start
            time.sleep(int(r.headers["Retry-After"]))


# == 4. one tenant cannot flush the audit trail ====================================================


def test_refused_retries_are_aggregated(world: TenantWorld) -> None:
    spy = world.http("globex-member")
    started = time.monotonic()
    for _ in range(300):
        assert spy.delete(CMS.path("acme-a", "web")).status_code == 403
    took = time.monotonic() - started
    wait_for(
        lambda: any(e.get("stage") == "Aggregated" and e["user"] == "globex-member" for e in world.audit()),
        WINDOW * 5,
        0.02,
        what="the repeats are summed up",
    )
    mine = [
        e
        for e in world.audit()
        if e["user"] == "globex-member" and e["verb"] == "delete" and e["path"] == CMS.path("acme-a", "web")
    ]
    # instead of 300 lines: the first few, then a summary a window (more windows when the 300
    # take longer on a loaded machine)
    assert len(mine) <= 6 + took / WINDOW, (took, mine)
    assert sum(e.get("count", 1) for e in mine) == 300
    summary = next(e for e in mine if e["stage"] == "Aggregated")
    assert summary["firstTs"] <= summary["lastTs"] and summary["code"] == 403
    # an anonymous caller's refused write has a file of its own (made here, not left by other tests)
    assert world.http().delete(CMS.path("acme-a", "web")).status_code in (401, 403)
    expected = {"audit.log", "audit-tenant-acme.log", "audit-tenant-globex.log", "audit-anonymous.log"}
    wait_for(
        lambda: expected <= {p.name for p in AuditLog.files(world.api.workdir / "audit.log")},
        10,
        0.05,
        what="an audit file per tenant and one for anonymous callers",
    )


def test_one_tenant_cannot_evict_others_records(tmp_path: Path) -> None:
    """A tenant writing far more than its file holds (varied names, allowed and refused) rotates
    only its own file: the operator's and the other tenant's records stay."""
    from hypernetes.auth.identity import ADMIN, tenant_user

    log = AuditLog(
        tmp_path / "audit.log", max_bytes=64 * 1024, backups=2, tenant_max_bytes=16 * 1024, tenant_backups=1
    )
    common: JSON = {
        "path": "/x",
        "resource": "configmaps",
        "subresource": "",
        "namespace": "ns",
        "source": "1",
    }
    log.record(user=ADMIN, tenant="", verb="delete", name="operator-evidence", code=200, **common)
    log.record(
        user=tenant_user("quiet", "acme", "member"),
        tenant="acme",
        verb="create",
        name="acme-evidence",
        code=201,
        **common,
    )
    flooder = tenant_user("flood", "globex", "admin")
    for i in range(20000):
        log.record(
            user=flooder,
            tenant="globex",
            verb="create",
            name=f"n{i}",
            code=201 if i % 2 else 403,
            **{**common, "path": f"/x/{i}"},
        )
    log.close()
    names = {e.get("name") for e in AuditLog.read(tmp_path / "audit.log")}
    assert {"operator-evidence", "acme-evidence"} <= names
    assert (
        sum(p.stat().st_size for p in AuditLog.files(tmp_path / "audit.log") if "globex" in p.name)
        <= 2 * 17 * 1024
    )


# == 1, again with a real pod VM ===================================================================


@pytest.mark.slow
def test_exec_into_a_real_vm_is_audited(tmp_path_factory: pytest.TempPathFactory, busybox_ref: str) -> None:
    """`hypernetes up` with a tenant's pod VM: its user's kubectl exec (a WebSocket GET) is in the
    tenant's audit file with the command and the real process's exit code; another tenant's
    attempt at the same stream is on record too, in that tenant's file."""
    from tests.support.cluster import Cluster, as_user, make_user, pod_manifest
    from tests.support.guests import qemu_processes_under

    cluster = Cluster(tmp_path_factory.mktemp("audit-vm") / "data")
    cluster.start()
    try:
        alice = make_user(cluster, "acme", "alice", "admin")
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

        def running() -> bool:
            got = as_user(cluster, alice, "get", "pod", "web", "-n", "acme-web", "-o", "json")
            pod = json.loads(got.stdout)
            return "running" in ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {})

        cluster.wait_for("web running", running)
        p = as_user(
            cluster,
            alice,
            "exec",
            "-n",
            "acme-web",
            "web",
            "--",
            "sh",
            "-c",
            "echo in-vm; exit 3",
            check=False,
        )
        assert p.returncode == 3 and p.stdout == "in-vm\n", p.stderr

        url = f"https://127.0.0.1:{cluster.port}/api/v1/namespaces/acme-web/pods/web/exec"
        with httpx.Client(verify=str(cluster.data / "pki/ca.crt"), timeout=30) as h:
            r = h.get(
                url,
                params={"command": "id", "stdout": "true"},
                headers={
                    "Authorization": f"Bearer {bob}",
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "eA==",
                    "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
                },
            )
        assert r.status_code == 403

        def execs(tenant: str) -> list[JSON]:
            path = cluster.data / f"audit-tenant-{tenant}.log"
            return (
                [e for e in AuditLog.read(path) if e.get("subresource") == "exec" and e["tenant"] == tenant]
                if path.exists()
                else []
            )

        wait_for(lambda: len(execs("acme")) == 2, 10, 0.02, what="alice's exec on record")
        started, done = execs("acme")
        assert (started["stage"], started["user"], started["code"], started["method"]) == (
            "ResponseStarted",
            "alice",
            101,
            "GET",
        )
        assert (done["stage"], done["name"], done["container"], done["command"], done["exitCode"]) == (
            "ResponseComplete",
            "web",
            "main",
            ["sh", "-c", "echo in-vm; exit 3"],
            3,
        )
        [refused] = execs("globex")
        assert (refused["user"], refused["code"], refused["namespace"], refused["command"]) == (
            "bob",
            403,
            "acme-web",
            ["id"],
        )
    finally:
        cluster.stop()
        for pid in qemu_processes_under(cluster.data):
            os.kill(pid, signal.SIGKILL)


# == the mechanisms alone, on a clock the test turns ===============================================


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_forgets_and_refunds() -> None:
    clock = Clock()
    t = throttle.LoginThrottle(clock)
    for _ in range(throttle.PAIR_FREE):
        t.end(t.begin("a", "u"), False)
    with pytest.raises(throttle.Throttled) as e:
        t.begin("a", "u")
    assert e.value.retry_after == 1
    t.end(t.begin("b", "u"), None)  # another address is not held back
    clock.now += 1
    t.end(t.begin("a", "u"), True)  # a success forgets the address's failures...
    t.end(t.begin("a", "u"), False)  # ... so one more failure does not hold it back
    t.end(t.begin("a", "u"), True)
    # successes cost the user's bucket nothing; failures do, and a drained bucket gives turns
    for i in range(throttle.USER_BURST):
        t.end(t.begin(f"bot-{i}", "v"), False)
    with pytest.raises(throttle.Throttled) as e:
        t.begin("late", "v")
    assert e.value.retry_after == throttle.USER_REFILL
    with pytest.raises(throttle.Throttled):
        t.begin("late", "v")  # too early for its turn
    clock.now += throttle.USER_REFILL
    t.end(t.begin("late", "v"), True)  # its turn


def test_refusals_past_the_budget_aggregate_by_kind(tmp_path: Path) -> None:
    from hypernetes.api import audit
    from hypernetes.auth.identity import tenant_user

    clock = Clock()
    log = AuditLog(tmp_path / "audit.log", window=60, clock=clock)
    prober = tenant_user("prober", "globex", "admin")
    n = int(audit.REFUSAL_BURST) + 500
    for i in range(n):  # a name-spraying probe, all refused, in one second
        log.record(
            user=prober,
            tenant="globex",
            verb="get",
            path=f"/apis/x/users/n{i}",
            resource="users",
            subresource="",
            namespace="",
            name=f"n{i}",
            code=403,
            source="10.0.0.9",
        )
    clock.now += 61
    log.close()
    lines = AuditLog.read(tmp_path / "audit.log")
    assert len(lines) < int(audit.REFUSAL_BURST) + 10
    assert sum(e.get("count", 1) for e in lines) == n
    [summary] = [e for e in lines if e["stage"] == "Aggregated"]
    assert summary["name"] is None and len(summary["names"]) == 10 and summary["count"] >= 490
