"""The etcd store on real etcd (Debian's etcd-server): URLs, the key layout, transactions, lists
at a revision, watches, compaction as kube-apiserver drives it, TLS with client certificates, and
member faults on a three-member cluster. The store contract tests (CAS, lists, watches, closing,
compaction) run on SQLite too, with the same assertions (the `store`/`new_store` fixtures).

The single-member etcd is shared by the run (tests/support/etcd.py): each test works under a key
prefix of its own, and asserts revisions relative to its own writes."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.cli.storeflags import resolve_store
from hypernetes.store import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    StoreError,
    StoreUnavailable,
    open_store,
)
from hypernetes.store.etcd import EtcdStore
from hypernetes.store.etcdconfig import EtcdConfig, parse_etcd_url
from hypernetes.store.interface import Store
from hypernetes.store.sqlite import CompactionPolicy, SqliteStore
from tests.support.apiserver import ApiServerThread, async_client, kubectl_path
from tests.support.etcd import (
    ETCDCTL,
    EtcdCluster,
    etcd_cluster,
    etcd_fixture,
    have_etcd,
    make_tls,
    shared_etcd,
)

_n = itertools.count()
REPO = Path(__file__).resolve().parent.parent
__all__ = ["etcd_fixture"]  # the shared etcd, as the `etcd` fixture


def store_on(cluster: EtcdCluster, **params: str) -> EtcdStore:
    params.setdefault("prefix", f"/test{os.getpid()}-{next(_n)}")
    params.setdefault("compaction-interval", "0")
    sep = "&" if "?" in cluster.url else "?"
    s = open_store(cluster.url + sep + "&".join(f"{k}={v}" for k, v in params.items()))
    assert isinstance(s, EtcdStore)
    return s


AnyStore = SqliteStore | EtcdStore


@pytest.fixture(params=["sqlite", "etcd"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AnyStore]:
    """Opens stores of one kind on the same data: one SQLite file, or one prefix in the run's
    etcd. The contract tests below run on both, with revisions relative to their own writes."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        return lambda: SqliteStore(path, compaction=CompactionPolicy(interval=0), poll_interval=0.05)
    cluster, prefix = shared_etcd(request), f"/test{os.getpid()}-{next(_n)}"
    return lambda: store_on(cluster, prefix=prefix)


@pytest.fixture
async def store(new_store: Callable[[], AnyStore]) -> AsyncIterator[AnyStore]:
    s = new_store()
    yield s
    await s.close()


async def take(it: AsyncIterator[Event], n: int, timeout: float = 10.0) -> list[Event]:
    async def run() -> list[Event]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(run(), timeout)


def summary(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type.value, e.kv.key, e.revision) for e in events]


def etcdctl(cluster: EtcdCluster, *args: str) -> str:
    return subprocess.run(
        [ETCDCTL, f"--endpoints={cluster.members[0].client_url}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout


# -- URLs ------------------------------------------------------------------------------------


def test_urls() -> None:
    c = parse_etcd_url("etcd://10.0.0.1:2379,10.0.0.2:2379")
    assert c == EtcdConfig(("10.0.0.1:2379", "10.0.0.2:2379"))
    c = parse_etcd_url(
        "etcds://[::1]:2379?cacert=/ca.crt&cert=/c.crt&key=/c.key&prefix=/a/&compaction-interval=60"
    )
    assert (c.tls, c.endpoints, c.cacert, c.cert, c.key, c.prefix, c.compaction_interval) == (
        True,
        ("[::1]:2379",),
        Path("/ca.crt"),
        Path("/c.crt"),
        Path("/c.key"),
        "/a",
        60.0,
    )
    assert parse_etcd_url(c.url()) == c
    for url, msg in [
        ("etcd://", "names no etcd member"),
        ("etcd://host", "not HOST:PORT"),
        ("etcd://host:99999", "not HOST:PORT"),
        ("etcd://::1:2379", "IPv6"),
        ("etcd://h:1?cacert=/x", "need etcds://"),
        ("etcds://h:1?cert=/x", "both cert and key"),
        ("etcd://h:1?prefix=x", "must start with '/'"),
        ("etcd://h:1?compaction-interval=-1", "compaction-interval must be a number"),
        ("etcd://h:1?request-timeout=0", "request-timeout must be a number"),
        ("etcd://h:1?pefix=/a", "unknown parameter 'pefix'"),
        ("etcd://h:1?prefix=/a&prefix=/b", "given twice"),
    ]:
        with pytest.raises(StoreError, match=msg):
            parse_etcd_url(url)
    with pytest.raises(StoreError, match="cannot read /nonexistent/ca"):
        open_store("etcds://127.0.0.1:2379?cacert=/nonexistent/ca")
    with pytest.raises(StoreError, match="one DNS name"):
        open_store("etcd://a.example:2379,b.example:2379")


# -- CRUD, transactions, layout --------------------------------------------------------------


async def test_crud_and_cas(store: AnyStore) -> None:
    assert await store.get("/a") is None
    r1 = await store.create("/a", b"1")
    assert await store.get("/a") == KeyValue("/a", b"1", r1, r1)
    with pytest.raises(KeyExists):
        await store.create("/a", b"again")

    r2 = await store.update("/a", b"2", r1)
    with pytest.raises(RevisionConflict) as conflict:
        await store.update("/a", b"stale", r1)
    assert (conflict.value.key, conflict.value.expected, conflict.value.actual) == ("/a", r1, r2)
    r3 = await store.update("/a", b"3", 0)  # unconditional
    assert await store.get("/a") == KeyValue("/a", b"3", r1, r3)

    with pytest.raises(RevisionConflict):
        await store.delete("/a", r2)
    gone = await store.delete("/a", r3)
    assert gone == KeyValue("/a", b"3", r1, gone.mod_revision) and gone.mod_revision > r3
    assert await store.get("/a") is None
    for op in (store.update("/a", b"x", 0), store.delete("/a"), store.update("/nope", b"x", 5)):
        with pytest.raises(KeyNotFound):
            await op
    r5 = await store.create("/a", b"new")  # a re-created key: a new create_revision
    assert await store.get("/a") == KeyValue("/a", b"new", r5, r5) and r5 > gone.mod_revision
    if isinstance(store, EtcdStore):  # its keys are etcd keys after the prefix: '/' keeps them apart
        with pytest.raises(StoreError, match="start with '/'"):
            await store.get("a")


async def test_keys_are_laid_out_as_kubernetes_does(etcd: EtcdCluster) -> None:
    """Default prefix: the API's keys are etcd's keys, /registry/<resource>/<ns>/<name>; a prefix
    moves everything under it (several clusters on one etcd)."""
    plain = store_on(etcd, prefix="")
    name = f"layout-{os.getpid()}-{next(_n)}"
    rev = await plain.create(f"/registry/pods/default/{name}", b'{"kind":"Pod"}')
    out = etcdctl(etcd, "get", f"/registry/pods/default/{name}", "-w", "json")
    assert f'"mod_revision":{rev}' in out
    moved = store_on(etcd, prefix="/cluster-b")
    await moved.create(f"/registry/pods/default/{name}", b"{}")
    assert etcdctl(
        etcd, "get", "--prefix", "--keys-only", f"/cluster-b/registry/pods/default/{name}"
    ).split() == [f"/cluster-b/registry/pods/default/{name}"]
    assert [kv.key for kv in (await moved.list("/registry/pods/default/")).items] == [
        f"/registry/pods/default/{name}"
    ]
    await plain.delete(f"/registry/pods/default/{name}")
    await plain.close()
    await moved.close()


async def test_concurrent_cas_one_winner(new_store: Callable[[], AnyStore]) -> None:
    """20 updates from one revision through two stores (two API servers): exactly one wins."""
    a, b = new_store(), new_store()
    rev = await a.create("/k", b"0")

    async def attempt(i: int) -> int | None:
        try:
            return await (a if i % 2 else b).update("/k", str(i).encode(), rev)
        except RevisionConflict:
            return None

    winners = [r for r in await asyncio.gather(*(attempt(i) for i in range(20))) if r is not None]
    assert len(winners) == 1
    kv = await b.get("/k")
    assert kv is not None and kv.mod_revision == winners[0]
    await a.close()
    await b.close()


# -- lists -----------------------------------------------------------------------------------


async def test_list_prefix_limit_continue_at_revision(store: AnyStore) -> None:
    for key in ["/a/1", "/a/2", "/a/3", "/ab", "/b/1", "/a"]:
        await store.create(key, key.encode())
    before = await store.current_revision()
    await store.update("/a/2", b"changed", 0)
    await store.delete("/a/3")

    now = await store.list("/a/")
    assert [kv.key for kv in now.items] == ["/a/1", "/a/2"] and not now.more
    assert now.revision == await store.current_revision() and now.items[1].value == b"changed"
    old = await store.list("/a/", revision=before)
    assert [(kv.key, kv.value) for kv in old.items] == [
        ("/a/1", b"/a/1"),
        ("/a/2", b"/a/2"),
        ("/a/3", b"/a/3"),
    ]
    assert old.revision == before

    page = await store.list("/a/", limit=2, revision=before)
    assert [kv.key for kv in page.items] == ["/a/1", "/a/2"] and page.more
    page = await store.list("/a/", limit=2, start_after="/a/2", revision=before)
    assert [kv.key for kv in page.items] == ["/a/3"] and not page.more
    assert [kv.key for kv in (await store.list("")).items] == ["/a", "/a/1", "/a/2", "/ab", "/b/1"]
    assert [kv.key for kv in (await store.list("/a")).items] == ["/a", "/a/1", "/a/2", "/ab"]
    assert (await store.list("/zzz")).items == []
    # counted without reading values: deleted keys and older revisions are not counted
    assert [await store.count(p) for p in ("/a/", "/a", "", "/zzz")] == [2, 4, 5, 0]
    with pytest.raises(StoreError, match="future"):
        await store.list("/a/", revision=now.revision + 1000)


async def test_list_odd_keys(store: AnyStore) -> None:
    keys = ["/ns/é", "/ns/\U0010ffff", "/ns/\U0010ffffx", "/ns/z", "/nt"]
    for key in keys:
        await store.create(key, b"v")
    assert [kv.key for kv in (await store.list("/ns/\U0010ffff")).items] == keys[1:3]
    assert [kv.key for kv in (await store.list("/ns/")).items] == sorted(keys[:4])
    assert (await store.count("/ns/\U0010ffff"), await store.count("/ns/")) == (2, 4)


# -- watches ---------------------------------------------------------------------------------


async def test_watch_from_a_revision_with_previous_values(store: AnyStore) -> None:
    start = await store.current_revision()
    r1 = await store.create("/w/a", b"1")
    await store.create("/other", b"x")
    r2 = await store.update("/w/a", b"2", r1)
    r3 = (await store.delete("/w/a")).mod_revision

    events = await take(store.watch("/w/", start), 3)
    assert summary(events) == [("put", "/w/a", r1), ("put", "/w/a", r2), ("delete", "/w/a", r3)]
    assert events[0].prev is None
    assert events[1].prev == KeyValue("/w/a", b"1", r1, r1)
    assert events[1].kv == KeyValue("/w/a", b"2", r1, r2)
    assert events[2].kv == KeyValue("/w/a", b"2", r1, r3)
    assert events[2].prev == KeyValue("/w/a", b"2", r1, r2)

    watch = store.watch("/w/", r2)  # strictly after r2
    assert summary(await take(watch, 1)) == [("delete", "/w/a", r3)]
    r4 = await store.create("/w/b", b"live")
    await store.create("/other2", b"x")
    assert summary(await take(watch, 1)) == [("put", "/w/b", r4)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(watch), 0.3)


async def test_close_ends_watches(new_store: Callable[[], AnyStore]) -> None:
    s = new_store()
    rev = await s.create("/a", b"1")
    watch = s.watch("/", rev - 1)  # (the shared etcd's older history may be compacted)
    await take(watch, 1)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.1)
    await s.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(StoreError, match="closed"):
        await s.get("/a")


# -- compaction ------------------------------------------------------------------------------


async def test_compacted_history_is_gone(store: AnyStore) -> None:
    r1 = await store.create("/c/a", b"1")
    mid = await store.update("/c/a", b"2", 0)
    later = await store.create("/c/b", b"1")
    at_mid = await store.list("/c/", revision=mid)

    await store.compact(mid)
    assert await store.compacted_revision() >= mid
    assert await store.list("/c/", revision=mid) == at_mid  # the compacted revision itself is kept
    with pytest.raises(Compacted) as err:
        await store.list("/c/", revision=r1)
    assert err.value.requested == r1 and err.value.compacted >= mid
    with pytest.raises(Compacted):
        await anext(store.watch("/c/", r1 - 1))
    assert summary(await take(store.watch("/c/", mid), 1)) == [("put", "/c/b", later)]
    await store.compact(r1)  # already compacted: nothing to do
    with pytest.raises(StoreError, match="current revision"):
        await store.compact(later + 1000)


async def test_compaction_rounds_as_kube_apiserver(etcd: EtcdCluster) -> None:
    """Two API servers run compaction rounds: per interval one wins the epoch transaction on
    compact_rev_key and compacts to the revision recorded one interval before; the other learns
    the epoch and compacts nothing."""
    a, b = store_on(etcd), store_on(etcd)
    kv = await a.get("/nothing")  # connect
    assert kv is None
    out = etcdctl(etcd, "get", "compact_rev_key", "-w", "json")
    epoch = int(out.split('"version":')[1].split(",")[0].rstrip("}]")) if '"kvs"' in out else 0
    # round 1 (a wins): records the current revision, compacts nothing yet
    ea, ra = await a.compact_round(epoch, 0)
    assert ea == epoch + 1
    eb, rb = await b.compact_round(epoch, 0)  # b is behind: loses, learns the epoch
    assert eb == epoch + 1 and rb >= ra
    before = await a.compacted_revision()
    await a.create("/x", b"1")
    # round 2 (b wins now): compacts to the revision recorded in round 1
    eb2, _ = await b.compact_round(eb, rb)
    assert eb2 == eb + 1
    assert await b.compacted_revision() == max(before, rb)
    ea2, _ = await a.compact_round(ea, ra)  # a's epoch is stale: no second compaction
    assert ea2 == eb2
    await a.close()
    await b.close()


async def test_background_compaction(etcd: EtcdCluster) -> None:
    s = store_on(etcd, **{"compaction-interval": "0.2"})
    first = await s.create("/k", b"v")
    async with asyncio.timeout(10):
        while await s.compacted_revision() < first:
            await s.update("/k", b"v", 0)
            await asyncio.sleep(0.1)
    with pytest.raises(Compacted):
        await s.list("/", revision=first - 1)
    await s.close()


# -- TLS -------------------------------------------------------------------------------------


@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    with etcd_cluster(tmp_path / "etcd", tls=tls) as cluster:
        s = store_on(cluster)
        rev = await s.create("/secure", b"1")
        assert (await s.get("/secure")) == KeyValue("/secure", b"1", rev, rev)
        await s.close()
        # without a client certificate the members refuse us
        plain = open_store(f"etcds://{cluster.endpoints}?cacert={tls.ca}&request-timeout=2")
        with pytest.raises(StoreUnavailable):
            await plain.get("/secure")
        await plain.close()
        # and a plain-text client gets nowhere either
        nottls = open_store(f"etcd://{cluster.endpoints}?request-timeout=2")
        with pytest.raises(StoreUnavailable):
            await nottls.get("/secure")
        await nottls.close()


# -- faults on three members -----------------------------------------------------------------


class Writer:
    """Creates ConfigMaps one after another through the API, as fast as it answers, and keeps
    what was acknowledged (name -> resourceVersion) apart from what failed (and how)."""

    def __init__(self, c: ApiClient, namespace: str) -> None:
        self.c, self.ns = c, namespace
        self.acked: dict[str, int] = {}
        self.failed: list[tuple[str, int, str]] = []
        self.n = 0

    async def write(self) -> bool:
        name = f"cm-{self.n:04d}"
        self.n += 1
        try:
            obj = await self.c.create("v1", "configmaps", {"metadata": {"name": name}}, self.ns)
        except ApiException as e:
            self.failed.append((name, e.status, e.message))
            return False
        self.acked[name] = int(obj["metadata"]["resourceVersion"])
        return True

    async def until(self, acks: int, timeout: float) -> None:
        goal = len(self.acked) + acks
        async with asyncio.timeout(timeout):
            while len(self.acked) < goal:
                if not await self.write():
                    await asyncio.sleep(0.05)


async def watch_forever(
    c: ApiClient, ns: str, rv: str, seen: list[tuple[str, str, int]], resumes: list[str]
) -> None:
    """A client's watch loop: on any end of the stream, watch again from the last resourceVersion."""
    while True:
        try:
            async for ev in c.watch("v1", "configmaps", ns, resource_version=rv, timeout_seconds=60):
                if ev.type == "BOOKMARK":
                    rv = ev.resource_version
                    continue
                seen.append((ev.type, ev.object["metadata"]["name"], int(ev.resource_version)))
                rv = ev.resource_version
        except (TimeoutError, ApiException, aiohttp.ClientError) as e:
            resumes.append(repr(e))
            await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
async def test_leader_killed_mid_writes(tmp_path: Path) -> None:
    """kill -9 the etcd leader while the API writes: every acknowledged write survives, the API
    keeps serving on 2 of 3 members, on 1 of 3 it answers 503 (never a wrong answer), and a
    watcher sees every change exactly once, in resourceVersion order, throughout."""
    with etcd_cluster(tmp_path / "etcd", size=3) as cluster:
        url = f"{cluster.url}?request-timeout=2&compaction-interval=0"

        async def factory() -> Store:
            return open_store(url)

        api = ApiServerThread(tmp_path / "api", store_factory=factory).start()
        try:
            async with async_client(api) as c:
                await c.create("v1", "namespaces", {"metadata": {"name": "faults"}})
                rv0 = (await c.list("v1", "configmaps", "faults"))["metadata"]["resourceVersion"]
                seen: list[tuple[str, str, int]] = []
                resumes: list[str] = []
                watcher = asyncio.create_task(watch_forever(c, "faults", rv0, seen, resumes))
                w = Writer(c, "faults")

                await w.until(15, 30)
                leader = await asyncio.to_thread(cluster.leader)
                writing = asyncio.create_task(w.until(40, 60))  # a stream of writes ...
                await asyncio.sleep(0.3)
                await asyncio.to_thread(cluster.kill, leader)  # ... with the leader gone mid-way
                await writing
                # 2 of 3: a new leader, and the API serves reads and writes
                assert (await asyncio.to_thread(cluster.leader)) is not leader
                await w.until(10, 20)
                assert all(code == 503 for _, code, _ in w.failed), w.failed

                # 1 of 3: no quorum; writes and reads fail as unavailable, never succeed wrongly
                other = next(m for m in cluster.members if m.running and m is not cluster.members[0])
                await asyncio.to_thread(cluster.kill, other)
                for _ in range(2):
                    assert not await w.write()
                    name, code, message = w.failed[-1]
                    assert code == 503 and "etcd" in message, w.failed[-1]
                with pytest.raises(ApiException) as err:
                    await c.get("v1", "configmaps", next(iter(w.acked)), "faults")
                assert err.value.status == 503 and err.value.reason == "ServiceUnavailable"

                # members back: the cluster heals and the same API server carries on
                await asyncio.to_thread(cluster.restart, leader)
                await asyncio.to_thread(cluster.restart, other)
                await w.until(5, 60)

                final = (await c.list("v1", "configmaps", "faults"))["items"]
                stored = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in final}
                for name, rv in w.acked.items():
                    assert stored.get(name) == rv, f"acknowledged {name}@{rv} is {stored.get(name)}"
                async with asyncio.timeout(30):
                    while len(seen) < len(stored):
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # anything extra (a repeat) would arrive now
                watcher.cancel()
                # the watch saw exactly what is stored, each once, in resourceVersion order
                expected = [("ADDED", n, rv) for n, rv in sorted(stored.items(), key=lambda x: x[1])]
                assert seen == expected, (seen, stored, resumes)
                revisions = [rv for _, _, rv in seen]
                assert revisions == sorted(set(revisions))
        finally:
            api.stop()


@pytest.mark.slow
@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
async def test_watches_reopen_across_member_kills(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Watches spread over the three members (round robin); the leader, then a follower, is
    killed and brought back while writes go on: the streams on the dead members are reopened
    from the revision after their last event, so every watch sees every acknowledged revision
    exactly once, in order."""
    caplog.set_level("INFO", logger="hypernetes.store.etcd")
    with etcd_cluster(tmp_path / "etcd", size=3) as cluster:
        s = store_on(cluster, **{"request-timeout": "2"})
        start = await s.current_revision()
        watches = [s.watch("/w/", start) for _ in range(6)]
        seen: list[list[int]] = [[] for _ in watches]

        async def follow(i: int) -> None:
            async for ev in watches[i]:
                seen[i].append(ev.revision)

        followers = [asyncio.create_task(follow(i)) for i in range(len(watches))]
        acked: list[int] = []

        async def write(n: int) -> None:
            for _ in range(n):
                try:
                    acked.append(await s.create(f"/w/{len(acked):04d}-{os.urandom(2).hex()}", b"v"))
                except StoreUnavailable:
                    await asyncio.sleep(0.05)

        await write(10)
        for victim in (await asyncio.to_thread(cluster.leader), cluster.members[0]):
            if not victim.running:
                victim = next(m for m in cluster.members if m.running)
            writing = asyncio.create_task(write(20))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(cluster.kill, victim)
            await writing
            await asyncio.to_thread(cluster.restart, victim)
        await write(5)
        async with asyncio.timeout(20):
            while any(len(x) < len(acked) for x in seen):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        for t in followers:
            t.cancel()
        for x in seen:
            assert x == acked
        assert "reopening" in caplog.text  # some stream did break and was resumed
        await s.close()


# -- hypernetes up on etcd ---------------------------------------------------------------------


def _up(data: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                str(REPO / ".venv/bin/hypernetes"),
                "up",
                "--no-node",
                "--no-network",
                "--port",
                "0",
                "--data-dir",
                str(data),
                *args,
            ],
            stdout=out,
            stderr=out,
        )


def _kubectl(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubectl_path("1.32")), "--kubeconfig", str(data / "admin.kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def _wait_up(proc: subprocess.Popen[bytes], data: Path, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if (data / "admin.kubeconfig").exists() and _kubectl(
            data, "get", "ns", "default", check=False
        ).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"up did not come up on etcd: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.slow
def test_up_on_etcd(tmp_path: Path, etcd: EtcdCluster) -> None:
    """`hypernetes up --store etcd://...`: objects made with kubectl are etcd keys laid out as
    Kubernetes does (resourceVersion = their mod revision), and outlive the process."""
    data, log = tmp_path / "data", tmp_path / "up.log"
    prefix = f"/up{os.getpid()}-{next(_n)}"
    flags = ["--store", etcd.url, "--etcd-prefix", prefix, "--etcd-compaction-interval", "0"]
    proc = _up(data, log, *flags)
    try:
        _wait_up(proc, data, log)
        _kubectl(data, "create", "configmap", "on-etcd", "--from-literal=k=v")
        rv = _kubectl(
            data, "get", "configmap", "on-etcd", "-o", "jsonpath={.metadata.resourceVersion}"
        ).stdout
        out = etcdctl(etcd, "get", f"{prefix}/registry/configmaps/default/on-etcd", "-w", "json")
        assert f'"mod_revision":{rv},' in out
        assert _stop(proc) == 0
        proc = _up(data, log, *flags)  # the state is etcd's: a new process serves it
        _wait_up(proc, data, log)
        got = _kubectl(
            data, "get", "configmap", "on-etcd", "-o", "jsonpath={.data.k}@{.metadata.resourceVersion}"
        )
        assert got.stdout == f"v@{rv}"
    finally:
        assert _stop(proc) == 0, log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--etcd-cafile", "/ca.crt"], "need --store etcd://"),
        (["--store", "etcd://host"], "not HOST:PORT"),
        (["--store", "etcd://127.0.0.1:2379", "--etcd-certfile", "/c.crt"], "need etcds://"),
        (["--store", "etcd://127.0.0.1:2379", "--etcd-compaction-interval", "soon"], "compaction-interval"),
    ],
)
def test_up_refuses_bad_store_flags(tmp_path: Path, args: list[str], words: str) -> None:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/hypernetes"), "up", "--no-node", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
async def test_backup_and_restore_with_etcdctl_snapshot(tmp_path: Path) -> None:
    """docs/cluster.md's backup and restore: `etcdctl snapshot save` while the store runs, then
    `snapshot restore` into the member's data dir: the store reads the state of the snapshot."""
    with etcd_cluster(tmp_path / "etcd") as cluster:
        s = store_on(cluster, prefix="")
        await s.create("/registry/configmaps/default/a", b"a")
        await s.create("/registry/configmaps/default/b", b"b")
        snap = tmp_path / "backup.db"
        etcdctl(cluster, "snapshot", "save", str(snap))
        at_snapshot = await s.current_revision()
        await s.create("/registry/configmaps/default/after", b"c")
        await s.delete("/registry/configmaps/default/a")
        await s.close()

        m = cluster.members[0]
        cluster.kill(m)
        restored = m.data_dir.with_name(m.data_dir.name + "-restored")
        subprocess.run(
            [
                ETCDCTL,
                "snapshot",
                "restore",
                str(snap),
                f"--name={m.name}",
                f"--data-dir={restored}",
                f"--initial-cluster={m.name}={m.peer_url}",
                f"--initial-advertise-peer-urls={m.peer_url}",
                "--initial-cluster-token=restored",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        m.data_dir = restored
        await asyncio.to_thread(cluster.restart, m)

        s = store_on(cluster, prefix="")
        items = await s.list("/registry/configmaps/")
        assert [(kv.key, kv.value) for kv in items.items] == [
            ("/registry/configmaps/default/a", b"a"),
            ("/registry/configmaps/default/b", b"b"),
        ]
        assert items.revision == at_snapshot
        assert await s.create("/registry/configmaps/default/new", b"n") == at_snapshot + 1
        await s.close()


def test_up_without_etcd_says_so(tmp_path: Path) -> None:
    """No member answers: `up` stops with the store's reason, not a traceback."""
    with socket.socket() as held:  # bound, never listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        url = f"etcd://127.0.0.1:{held.getsockname()[1]}?request-timeout=1"
        proc = subprocess.run(
            [
                str(REPO / ".venv/bin/hypernetes"),
                "up",
                "--no-node",
                "--no-network",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path),
                "--store",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "etcd did not answer" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_up_folds_etcd_flags_into_the_store_url() -> None:
    args = argparse.Namespace(
        store="etcds://10.0.0.1:2379,10.0.0.2:2379",
        etcd_cafile="/etc/etcd/ca.crt",
        etcd_certfile="/etc/etcd/client.crt",
        etcd_keyfile="/etc/etcd/client.key",
        etcd_prefix="/cluster-a",
        etcd_compaction_interval="60",
    )
    assert resolve_store(args) is None
    c = parse_etcd_url(args.store)
    assert (c.endpoints, c.cacert, c.cert, c.key, c.prefix, c.compaction_interval) == (
        ("10.0.0.1:2379", "10.0.0.2:2379"),
        Path("/etc/etcd/ca.crt"),
        Path("/etc/etcd/client.crt"),
        Path("/etc/etcd/client.key"),
        "/cluster-a",
        60.0,
    )
    plain = argparse.Namespace(
        store=None,
        etcd_cafile=None,
        etcd_certfile=None,
        etcd_keyfile=None,
        etcd_prefix=None,
        etcd_compaction_interval=None,
    )
    assert resolve_store(plain) is None and plain.store is None  # `up` keeps its SQLite default
