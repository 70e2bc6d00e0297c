"""History across names that change hands: a namespace deleted by one tenant and created by another,
a tenant deleted and created again under the same name, users and networks whose names another
tenant takes. The store keeps every revision, so lists at old resourceVersions, continue tokens and
watches from old revisions must never hand the previous holder's objects to the new one.

A real multi-tenant API server on the real SQLite store, the real namespace and tenant controllers
(namespace deletion empties it for real), raw HTTP and the real kubectl. The rules are in
hypernetes/api/history.py; every refusal has a positive control (the operator, or the owner of
the time, still reads that history).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.api.history import Ownership
from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread
from tests.support.tenants import (
    JSON,
    KIND,
    TENANTS_PATH,
    USERS_PATH,
    LineReader,
    TenantWorld,
    user_object,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

SECRETS, CMS, EVENTS = KIND["secrets"], KIND["configmaps"], KIND["events"]
NETS = "/apis/hypernetes.io/v1/networks"
NS = "/api/v1/namespaces"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    tmp = Path(tmp_path_factory.mktemp("history"))

    async def sqlite() -> Store:
        return open_store(f"sqlite:///{tmp}/state.db")

    api = ApiServerThread(tmp, tenancy=True, store_factory=sqlite).start()
    ctl = ControllersThread(api, only=["namespace", "tenant"], kubelet=False).start()
    w = TenantWorld(api)
    try:
        for tenant in ("acme", "globex"):
            w.fresh_tenant(tenant)
        yield w
    finally:
        w.close()
        ctl.stop()
        api.stop()


# -- helpers ---------------------------------------------------------------------------------------


def secret(name: str, namespace: str, password: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"password": password},
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create(w: TenantWorld, who: str, path: str, body: JSON) -> JSON:
    r = w.http(who).post(path, json=body)
    assert r.status_code == 201, f"{who} POST {path}: {r.status_code} {r.text}"
    return dict(r.json())


def rv_of(obj: JSON) -> int:
    return int(obj["metadata"]["resourceVersion"])


def delete_namespace(w: TenantWorld, who: str, ns: str) -> None:
    """The real kubectl, which waits until the namespace controller has emptied and removed it."""
    out = w.kubectl(who, "delete", "namespace", ns, "--timeout=60s", timeout=90)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: w.http("operator").get(f"{NS}/{ns}").status_code == 404, 30, 0.02, what=f"{ns} gone")


def assert_expired(r: httpx.Response, leaked: str) -> None:
    """410 Expired as a Status, with nothing of the previous holder's object in it."""
    assert r.status_code == 410, f"{r.status_code}: {r.text}"
    body = r.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410), body
    assert leaked not in r.text


def watch_events(
    w: TenantWorld, who: str, path: str, params: dict[str, Any], until: str | None = None, timeout: float = 5
) -> list[JSON]:
    """The events of a raw watch: all of them until the server ends it (`timeoutSeconds`), or up
    to the first whose object is named `until`."""
    events: list[JSON] = []
    with w.http(who).stream(
        "GET", path, params={"watch": "1", "timeoutSeconds": str(int(timeout)), **params}
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.strip():
                continue
            ev = json.loads(line)
            events.append(ev)
            if until is not None and ev["object"].get("metadata", {}).get("name") == until:
                break
    return events


def assert_watch_expired(events: list[JSON], leaked: str) -> None:
    assert events and events[0]["type"] == "ERROR", events
    status = events[0]["object"]
    assert (status["reason"], status["code"]) == ("Expired", 410), status
    assert "too old resource version" in status["message"], status
    assert len(events) == 1 and leaked not in json.dumps(events), events


def continue_token(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class Reused:
    """Namespace `ns` filled by acme (Secret `acme-only` with a password, three ConfigMaps), then
    deleted, then created by globex (with its own Secret `mine`)."""

    def __init__(self, w: TenantWorld, ns: str) -> None:
        self.ns, self.password = ns, f"acme-password-of-{ns}"
        w.create_namespace("acme-admin", ns, "acme")
        self.secret = create(w, "acme-admin", SECRETS.path(ns), secret("acme-only", ns, self.password))
        self.old = rv_of(self.secret)
        for i in range(3):
            create(w, "acme-admin", CMS.path(ns), {"metadata": {"name": f"cm-{i}"}, "data": {"k": "v"}})
        # acme's own history, read back by acme while it holds the namespace: the positive control
        r = w.http("acme-admin").get(
            SECRETS.path(ns), params={"resourceVersion": str(self.old), "resourceVersionMatch": "Exact"}
        )
        assert r.status_code == 200 and [o["metadata"]["name"] for o in r.json()["items"]] == ["acme-only"]
        page = w.http("acme-admin").get(CMS.path(ns), params={"limit": "1"}).json()
        self.token = page["metadata"]["continue"]  # a continue token handed out to acme
        delete_namespace(w, "acme-admin", ns)
        w.create_namespace("globex-admin", ns, "globex")
        self.mine = create(w, "globex-admin", SECRETS.path(ns), secret("mine", ns, "globex-password"))


@pytest.fixture(scope="module")
def reused(world: TenantWorld) -> Reused:
    return Reused(world, "handed-on")


# -- a namespace that changed hands ----------------------------------------------------------------


def test_lists_at_an_old_revision_are_expired_for_the_new_holder(world: TenantWorld, reused: Reused) -> None:
    g, ns, leaked = world.http("globex-admin"), reused.ns, b64(reused.password)
    exact = {"resourceVersion": str(reused.old), "resourceVersionMatch": "Exact"}
    assert_expired(g.get(SECRETS.path(ns), params=exact), leaked)
    assert_expired(g.get(SECRETS.path(None), params=exact), leaked)  # across its namespaces
    assert_expired(
        g.get(SECRETS.path(ns), params={**exact, "fieldSelector": "metadata.name=acme-only"}), leaked
    )
    assert_expired(
        g.get(SECRETS.path(ns), params={"resourceVersion": "1", "resourceVersionMatch": "Exact"}), leaked
    )
    # NotOlderThan, 0 and no resourceVersion are served at the newest revision: globex's own only
    for params in (
        {"resourceVersion": "1", "resourceVersionMatch": "NotOlderThan"},
        {"resourceVersion": "1"},
        {"resourceVersion": "0"},
        {},
    ):
        assert world.names("globex-admin", SECRETS.path(ns), **params) == {f"{ns}/mine"}, params
    # the operator still reads history
    r = world.http("operator").get(SECRETS.path(ns), params=exact)
    assert r.status_code == 200 and r.json()["items"][0]["data"]["password"] == leaked


def test_continue_tokens_from_before_the_holding_are_expired(world: TenantWorld, reused: Reused) -> None:
    g, ns, leaked = world.http("globex-admin"), reused.ns, b64(reused.password)
    # acme's own token, and one forged at acme's revision (tokens are not secret: the client encodes them)
    r = g.get(CMS.path(ns), params={"continue": reused.token})
    assert_expired(r, "cm-")
    assert "continue parameter is too old" in r.json()["message"]
    forged = continue_token(reused.old, f"/registry/secrets/{ns}/")
    assert_expired(g.get(SECRETS.path(ns), params={"continue": forged}), leaked)
    everywhere = continue_token(reused.old, "/registry/secrets/")
    assert_expired(g.get(SECRETS.path(None), params={"continue": everywhere}), leaked)
    # a token of globex's own holding works
    page = g.get(SECRETS.path(ns), params={"limit": "1"}).json()
    assert [o["metadata"]["name"] for o in page["items"]] == ["mine"]


def test_a_get_never_reads_history(world: TenantWorld, reused: Reused) -> None:
    path = SECRETS.path(reused.ns, "acme-only")
    for params in ({"resourceVersion": str(reused.old)}, {"resourceVersion": "0"}, {}):
        r = world.http("globex-admin").get(path, params=params)
        assert r.status_code == 404 and b64(reused.password) not in r.text, (params, r.text)


def test_kubectl_raw_reads_nothing_of_the_previous_holder(world: TenantWorld, reused: Reused) -> None:
    ns, leaked = reused.ns, b64(reused.password)
    out = world.kubectl(
        "globex-admin",
        "get",
        "--raw",
        f"/api/v1/namespaces/{ns}/secrets?resourceVersion={reused.old}&resourceVersionMatch=Exact",
    )
    assert out.returncode != 0 and leaked not in out.stdout + out.stderr
    assert "Expired" in out.stderr or "too old" in out.stderr, out.stderr
    out = world.kubectl(
        "globex-admin",
        "get",
        "--raw",
        f"/api/v1/namespaces/{ns}/secrets?watch=1&resourceVersion=1&timeoutSeconds=3",
    )
    assert leaked not in out.stdout and "acme-only" not in out.stdout
    assert '"code":410' in out.stdout, out.stdout
    out = world.kubectl("globex-admin", "get", "secrets", "-n", ns, "-o", "name")
    assert out.stdout.split() == ["secret/mine"], out.stdout


def test_watches_from_before_the_holding_are_expired(world: TenantWorld, reused: Reused) -> None:
    ns, leaked = reused.ns, b64(reused.password)
    for path in (SECRETS.path(ns), SECRETS.path(None)):
        for rv in ("1", str(reused.old), str(reused.old - 1)):
            assert_watch_expired(watch_events(world, "globex-admin", path, {"resourceVersion": rv}), leaked)
        bookmarks = {"resourceVersion": "1", "allowWatchBookmarks": "true"}
        assert_watch_expired(watch_events(world, "globex-admin", path, bookmarks), leaked)
    # a streaming list (sendInitialEvents) at an old revision
    r = world.http("globex-admin").get(
        SECRETS.path(ns),
        params={
            "watch": "1",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "resourceVersion": str(reused.old),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "2",
        },
    )
    assert_expired(r, leaked)
    # from the holding's own revisions on, the watch works (positive control)
    events = watch_events(
        world,
        "globex-admin",
        SECRETS.path(ns),
        {"resourceVersion": str(rv_of(reused.mine) - 1)},
        until="mine",
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine")]
    # and the operator still watches history
    events = watch_events(
        world, "operator", SECRETS.path(ns), {"resourceVersion": str(reused.old - 1)}, until="acme-only"
    )
    assert events[-1]["object"]["data"]["password"] == leaked


def test_kubectl_get_watch_shows_only_the_new_holding(world: TenantWorld, reused: Reused) -> None:
    proc = world.kubectl_popen(
        "globex-admin", "get", "secrets", "-n", reused.ns, "--watch", "--output-watch-events", "-o", "name"
    )
    lines = LineReader(proc)
    try:
        lines.next_line(lambda line: "secret/mine" in line)
        create(world, "globex-admin", SECRETS.path(reused.ns), secret("later", reused.ns, "x"))
        lines.next_line(lambda line: "secret/later" in line)
    finally:
        lines.stop()
    assert not any("acme-only" in line for line in lines.lines), lines.lines


def test_a_lagging_watch_never_delivers_the_previous_holders_events(world: TenantWorld) -> None:
    """A watch opened before the hand-over, whose client reads slowly: the previous holder's
    events are still queued when the namespace changes hands, and must not be delivered then."""
    ns, password = "lagging", "acme-password-lagging"
    world.create_namespace("acme-admin", ns, "acme")
    create(world, "acme-admin", SECRETS.path(ns), secret("acme-lag", ns, password))
    g = world.http("globex-admin")
    start = g.get(SECRETS.path(None)).json()["metadata"]["resourceVersion"]
    filler = "x" * (700 * 1024)
    with g.stream(
        "GET", SECRETS.path(None), params={"watch": "1", "resourceVersion": start, "timeoutSeconds": "120"}
    ) as r:
        assert r.status_code == 200
        # ~22 MB of globex's own events: more than the sockets buffer, so the server's writer
        # blocks and what follows stays queued until the client reads
        for i in range(24):
            create(world, "globex-admin", SECRETS.path("globex-a"), secret(f"filler-{i}", "globex-a", filler))
        delete_namespace(world, "acme-admin", ns)
        world.create_namespace("globex-admin", ns, "globex")
        create(world, "globex-admin", SECRETS.path(ns), secret("globex-lag", ns, "mine"))
        seen: list[tuple[str, str]] = []
        for line in r.iter_lines():
            if not line.strip():
                continue
            ev = json.loads(line)
            name = ev["object"]["metadata"]["name"]
            seen.append((ev["type"], name))
            assert "acme-lag" not in line and b64(password) not in line, ev["type"]
            if name == "globex-lag":
                break
    assert seen[-1] == ("ADDED", "globex-lag") and len(seen) == 25, seen
    for i in range(24):
        world.http("globex-admin").delete(SECRETS.path("globex-a", f"filler-{i}"))


def test_leftovers_and_events_about_the_previous_holding_are_hidden(world: TenantWorld) -> None:
    """What a race can leave behind under a reused name: an object written into the namespace as
    it went (injected into the store: the race cannot be timed from outside), and an Event about
    the previous holder's object that a component posts late (as a stale controller would)."""
    ns = "leftovers"
    world.create_namespace("acme-admin", ns, "acme")
    old = create(world, "acme-admin", SECRETS.path(ns), secret("acme-only", ns, "acme-password-left"))
    delete_namespace(world, "acme-admin", ns)
    ghost = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "ghost",
            "namespace": ns,
            "uid": "0ghost",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "data": {"password": b64("ghost-password")},
    }
    store = world.api.store
    assert store is not None
    world.api.call(store.create(f"/registry/secrets/{ns}/ghost", json.dumps(ghost).encode()))
    ghost_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ghost",
            "namespace": ns,
            "uid": "0ghost-pod",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "node-a"},
    }
    world.api.call(store.create(f"/registry/pods/{ns}/ghost", json.dumps(ghost_pod).encode()))
    world.create_namespace("globex-admin", ns, "globex")
    late = {
        "metadata": {"name": "acme-only.late"},
        "involvedObject": {
            "kind": "Secret",
            "apiVersion": "v1",
            "namespace": ns,
            "name": "acme-only",
            "uid": old["metadata"]["uid"],
            "resourceVersion": old["metadata"]["resourceVersion"],
        },
        "reason": "Rotated",
        "message": "acme-only rotated",
        "type": "Normal",
    }
    create(world, "operator", EVENTS.path(ns), late)
    create(world, "globex-admin", EVENTS.path(ns), EVENTS.body("own", ns))
    # the operator sees both; globex neither, however it asks
    assert world.names("operator", SECRETS.path(ns)) == {f"{ns}/ghost"}
    assert f"{ns}/acme-only.late" in world.names("operator", EVENTS.path(ns))
    assert world.names("globex-admin", SECRETS.path(ns)) == set()
    assert world.names("globex-admin", SECRETS.path(None)) & {f"{ns}/ghost"} == set()
    assert world.names("globex-admin", EVENTS.path(ns)) == {f"{ns}/own"}
    pod = f"/api/v1/namespaces/{ns}/pods/ghost"
    for path in (SECRETS.path(ns, "ghost"), EVENTS.path(ns, "acme-only.late"), pod, f"{pod}/log"):
        assert world.http("globex-admin").get(path).status_code == 404, path  # log: as exec and attach
    events = watch_events(world, "globex-admin", EVENTS.path(ns), {"resourceVersion": "0"}, until="own")
    assert [e["object"]["metadata"]["name"] for e in events] == ["own"]
    out = world.kubectl("globex-admin", "get", "secrets,events", "-n", ns, "-o", "name")
    assert "ghost" not in out.stdout and "acme-only" not in out.stdout, out.stdout


# -- cluster-scoped names that change hands --------------------------------------------------------


def test_a_tenant_created_again_under_the_same_name_sees_nothing_of_the_first(world: TenantWorld) -> None:
    world.fresh_tenant("initech")
    bob = world.op(
        "POST",
        USERS_PATH,
        user_object("initech-bob", "initech", "member", displayName="the first initech's bob"),
    )
    create(
        world,
        "initech-admin",
        NETS,
        {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "initech-net"},
            "spec": {"cidr": "10.9.0.0/24"},
        },
    )
    old = rv_of(bob)
    out = world.kubectl("operator", "delete", "tenants.hypernetes.io", "initech", "--timeout=60s", timeout=90)
    assert out.returncode == 0, out.stderr
    # the tenant controller deleted its network with it: nothing of it is left to inherit
    assert world.http("operator").get(f"{NETS}/initech-net").status_code == 404
    world.fresh_tenant("initech", namespaces=())
    exact = {"resourceVersion": str(old), "resourceVersionMatch": "Exact"}
    for path in (USERS_PATH, TENANTS_PATH, NS, NETS, SECRETS.path(None)):
        assert_expired(world.http("initech-admin").get(path, params=exact), "the first initech")
        events = watch_events(world, "initech-admin", path, {"resourceVersion": "1"})
        assert_watch_expired(events, "the first initech")
    assert world.names("initech-admin", USERS_PATH) == {"initech-admin"}
    assert world.names("initech-admin", NETS) == set()
    # the operator still reads the first initech's history
    r = world.http("operator").get(USERS_PATH, params=exact)
    assert "initech-bob" in {o["metadata"]["name"] for o in r.json()["items"]}


def test_users_and_networks_whose_names_another_tenant_takes(world: TenantWorld) -> None:
    """Cluster-scoped objects carry their tenant: another tenant's history under the same name is
    filtered out of lists and watches at revisions the new holder may read."""
    user = world.op("POST", USERS_PATH, user_object("carol", "acme", "member", displayName="acme's carol"))
    net = create(
        world,
        "acme-admin",
        NETS,
        {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "shared-net"},
            "spec": {"cidr": "10.8.0.0/24", "dnsServers": ["10.8.0.53"]},
        },
    )
    world.op("DELETE", f"{USERS_PATH}/carol")
    world.op("DELETE", f"{NETS}/shared-net")
    world.op("POST", USERS_PATH, user_object("carol", "globex", "member", displayName="globex's carol"))
    create(
        world,
        "globex-admin",
        NETS,
        {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Network",
            "metadata": {"name": "shared-net"},
            "spec": {"cidr": "10.7.0.0/24"},
        },
    )
    for path, rv, leaked in ((USERS_PATH, rv_of(user), "acme's carol"), (NETS, rv_of(net), "10.8.0.53")):
        r = world.http("globex-admin").get(
            path, params={"resourceVersion": str(rv), "resourceVersionMatch": "Exact"}
        )
        assert r.status_code == 200 and leaked not in r.text, r.text
        events = watch_events(world, "globex-admin", path, {"resourceVersion": str(rv - 1)})
        assert leaked not in json.dumps(events), events
        names = [e["object"]["metadata"].get("name") for e in events if e["type"] != "BOOKMARK"]
        assert names and set(names) <= {"carol", "shared-net", "globex-admin"}, names


def test_a_namespace_handed_over_by_its_label(world: TenantWorld) -> None:
    """An operator hands a namespace to a tenant (`kubectl label ns`): the tenant gets what is in
    it now, not what it held before; a timeline loaded afresh from the store (a restarted server)
    finds the same start of the holding."""
    ns = "handed-over"
    world.op("POST", NS, {"metadata": {"name": ns}})
    first = world.op("POST", SECRETS.path(ns), secret("pre", ns, "before-the-hand-over"))
    world.op(
        "PATCH",
        SECRETS.path(ns, "pre"),
        {"stringData": {"password": "handed-over-value"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    out = world.kubectl("operator", "label", "namespace", ns, "hypernetes.io/tenant=globex")
    assert out.returncode == 0, out.stderr
    wait_for(
        lambda: world.api.tenancy is not None and world.api.tenancy.directory.namespace_owner(ns) == "globex",
        interval=0.02,
        what="handed over",
    )
    handed = rv_of(world.op("GET", f"{NS}/{ns}"))
    g = world.http("globex-admin")
    items = g.get(SECRETS.path(ns)).json()["items"]
    assert [o["data"]["password"] for o in items] == [b64("handed-over-value")]
    before = {"resourceVersion": str(rv_of(first)), "resourceVersionMatch": "Exact"}
    assert_expired(g.get(SECRETS.path(ns), params=before), b64("before-the-hand-over"))
    events = watch_events(world, "globex-admin", SECRETS.path(ns), {"resourceVersion": str(rv_of(first))})
    assert_watch_expired(events, b64("before-the-hand-over"))
    at = g.get(SECRETS.path(ns), params={"resourceVersion": str(handed), "resourceVersionMatch": "Exact"})
    assert [o["metadata"]["name"] for o in at.json()["items"]] == ["pre"]
    store = world.api.store
    assert store is not None
    fresh = Ownership(store)
    try:
        world.api.call(fresh.start())
        span = fresh.namespaces.current(ns)
        assert span is not None and (span.owner, span.start) == ("globex", handed)
    finally:
        world.api.call(fresh.stop())
