"""The SQLite store on real database files: CAS, lists at a revision, watches, compaction,
durability across kill -9, and the slow-watcher bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernetes.store import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    StoreError,
    WatchLagged,
    open_store,
)
from hypernetes.store.sqlite import CompactionPolicy, SqliteStore

NO_AUTO = CompactionPolicy(interval=0)
REPO = Path(__file__).resolve().parent.parent


def new_store(path: Path, **kw: object) -> SqliteStore:
    kw.setdefault("compaction", NO_AUTO)
    kw.setdefault("poll_interval", 0.05)
    return SqliteStore(path, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = new_store(tmp_path / "state.db")
    yield s
    await s.close()


async def take(it: AsyncIterator[Event], n: int, timeout: float = 5.0) -> list[Event]:
    async def run() -> list[Event]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(run(), timeout)


async def nothing_more(it: AsyncIterator[Event], wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(it), wait)


def summary(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type.value, e.kv.key, e.revision) for e in events]


# -- open_store ------------------------------------------------------------------------------


async def test_open_store_urls(tmp_path: Path) -> None:
    s = open_store(f"sqlite://{tmp_path}/sub/state.db")
    assert await s.create("/k", b"v") == 1
    await s.close()
    assert (tmp_path / "sub" / "state.db").stat().st_mode & 0o777 == 0o600
    for url, msg in [
        ("mysql://x", "unknown scheme"),
        ("state.db", "no scheme"),
        ("sqlite://", "names no file"),
    ]:
        with pytest.raises(StoreError, match=msg):
            open_store(url)


# -- CRUD and compare-and-swap ---------------------------------------------------------------


async def test_crud_and_cas(store: SqliteStore) -> None:
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
    assert gone.key == "/a" and gone.value == b"3" and gone.create_revision == r1
    assert gone.mod_revision > r3
    assert await store.get("/a") is None
    for op in (store.update("/a", b"x", 0), store.delete("/a"), store.update("/nope", b"x", 5)):
        with pytest.raises(KeyNotFound):
            await op

    # Failed writes take no revision; a re-created key gets a new create_revision.
    assert await store.current_revision() == gone.mod_revision
    r5 = await store.create("/a", b"new")
    assert r5 == gone.mod_revision + 1
    assert await store.get("/a") == KeyValue("/a", b"new", r5, r5)


async def test_concurrent_cas_one_winner(tmp_path: Path) -> None:
    """20 updates from the same revision, through two store instances (two writer threads and
    connections on one file): exactly one wins."""
    a, b = new_store(tmp_path / "s.db"), new_store(tmp_path / "s.db")
    rev = await a.create("/k", b"0")

    async def attempt(s: SqliteStore, i: int) -> int | None:
        try:
            return await s.update("/k", str(i).encode(), rev)
        except RevisionConflict:
            return None

    results = await asyncio.gather(*(attempt(a if i % 2 else b, i) for i in range(20)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    kv = await a.get("/k")
    assert kv is not None and kv.mod_revision == winners[0]
    await a.close()
    await b.close()


async def test_revision_survives_reopen(tmp_path: Path) -> None:
    s = new_store(tmp_path / "s.db")
    await s.create("/x", b"1")
    last = (await s.delete("/x")).mod_revision
    await s.compact(last)  # removes every row, the newest included
    await s.close()
    s = new_store(tmp_path / "s.db")
    assert await s.current_revision() == last
    assert await s.create("/y", b"1") == last + 1
    await s.close()


# -- lists -----------------------------------------------------------------------------------


async def test_list_prefix_limit_start_after_revision(store: SqliteStore) -> None:
    for key in ["/a/1", "/a/2", "/a/3", "/ab", "/b/1", "/a"]:
        await store.create(key, key.encode())
    before = await store.current_revision()
    await store.update("/a/2", b"changed", 0)
    await store.delete("/a/3")

    now = await store.list("/a/")
    assert [kv.key for kv in now.items] == ["/a/1", "/a/2"] and not now.more
    assert now.revision == await store.current_revision()
    assert now.items[1].value == b"changed"

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
    page = await store.list("/a/", limit=1, start_after="/a/1")
    assert [kv.key for kv in page.items] == ["/a/2"] and not page.more

    assert [kv.key for kv in (await store.list("")).items] == ["/a", "/a/1", "/a/2", "/ab", "/b/1"]
    assert [kv.key for kv in (await store.list("/a")).items] == ["/a", "/a/1", "/a/2", "/ab"]
    assert (await store.list("/zzz")).items == []
    with pytest.raises(StoreError, match="future"):
        await store.list("/a/", revision=now.revision + 1)


async def test_list_odd_prefixes(store: SqliteStore) -> None:
    keys = ["/ns/é", "/ns/\U0010ffff", "/ns/\U0010ffffx", "/ns/z", "/nt"]
    for key in keys:
        await store.create(key, b"v")
    assert [kv.key for kv in (await store.list("/ns/\U0010ffff")).items] == keys[1:3]
    assert [kv.key for kv in (await store.list("/ns/")).items] == sorted(keys[:4])  # code points


async def test_paging_is_consistent_while_writes_happen(store: SqliteStore) -> None:
    for i in range(60):
        await store.create(f"/p/{i:03d}", b"v0")
    snapshot = await store.list("/p/")
    pages: list[KeyValue] = []
    last, i = "", 0
    while True:
        page = await store.list("/p/", start_after=last, limit=7, revision=snapshot.revision)
        pages += page.items
        # Writes between pages: updates, deletes and creates on both sides of the cursor.
        await store.update(f"/p/{i:03d}", b"v1", 0)
        await store.delete(f"/p/{59 - i:03d}")
        await store.create(f"/p/{i:03d}x", b"new")
        i += 1
        if not page.more:
            break
        last = page.items[-1].key
    assert pages == snapshot.items


# -- watches ---------------------------------------------------------------------------------


async def test_watch_from_past_revision(store: SqliteStore) -> None:
    r1 = await store.create("/w/a", b"1")
    await store.create("/other", b"x")
    r2 = await store.update("/w/a", b"2", r1)
    r3 = (await store.delete("/w/a")).mod_revision

    events = await take(store.watch("/w/", 0), 3)
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
    await nothing_more(watch)


async def test_watch_from_a_future_revision(store: SqliteStore) -> None:
    watch = store.watch("", 2)
    task = asyncio.ensure_future(take(watch, 1))
    await asyncio.sleep(0.05)
    for i in range(3):
        await store.create(f"/{i}", b"v")
    assert summary(await task) == [("put", "/2", 3)]


async def test_close_ends_watches(tmp_path: Path) -> None:
    s = new_store(tmp_path / "s.db")
    await s.create("/a", b"1")
    watch = s.watch("", 0)
    await take(watch, 1)
    await s.close()
    with pytest.raises(StopAsyncIteration):
        await anext(watch)
    with pytest.raises(StoreError, match="closed"):
        await s.get("/a")


async def _race(path: Path, ops: list[tuple[int, int, int]], starts: list[tuple[int, int]]) -> None:
    """Writers in two store instances on one file (the second stands for another process: its
    writes reach the first one's watchers only through polling) race with watches started at
    chosen points; every watch must see exactly the revisions after its start, in order."""
    main, other = new_store(path, poll_interval=0.01), new_store(path, poll_interval=0.01)
    log: list[tuple[int, str]] = []  # (revision, key) of every successful write
    writes_done = asyncio.Event()

    async def writer(idx: int) -> None:
        for n, (who, key, yields) in enumerate(ops):
            if n % 2 != idx:
                continue
            s, k = (main, other)[who], f"/r/{key}" if key < 3 else f"/q/{key}"
            try:
                if await s.get(k) is None:
                    rev = await s.create(k, str(n).encode())
                elif n % 3 == 0:
                    rev = (await s.delete(k)).mod_revision
                else:
                    rev = await s.update(k, str(n).encode(), 0)
                log.append((rev, k))
            except (KeyExists, KeyNotFound):
                pass  # the other writer got there first
            for _ in range(yields):
                await asyncio.sleep(0)

    async def watcher(after_writes: int, back: int) -> None:
        while len(log) < after_writes and not writes_done.is_set():
            await asyncio.sleep(0)
        start = max(0, await main.current_revision() - back)
        got: list[int] = []

        async def consume() -> None:
            async for event in main.watch("/r/", start):
                got.append(event.revision)

        consumer = asyncio.create_task(consume())
        async with asyncio.timeout(10):
            await writes_done.wait()
            expected = sorted(r for r, k in log if k.startswith("/r/") and r > start)
            while len(got) < len(expected) and not consumer.done():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.03)  # room for a duplicate or stray event to show up
        assert got == expected, start
        consumer.cancel()

    async def writers() -> None:
        await asyncio.gather(writer(0), writer(1))
        writes_done.set()

    try:
        await asyncio.gather(writers(), *(watcher(a, b) for a, b in starts))
    finally:
        await main.close()
        await other.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=40),
    starts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10)), min_size=1, max_size=4),
)
def test_watch_races_writes_no_gaps_no_duplicates(
    ops: list[tuple[int, int, int]], starts: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_race(Path(tmp) / "s.db", ops, starts))


CHILD_WRITER = """
import asyncio, sys
from hypernetes.store.sqlite import SqliteStore, CompactionPolicy
async def main():
    s = SqliteStore(sys.argv[1], compaction=CompactionPolicy(interval=0))
    n = int(sys.argv[2])
    i = 0
    while n == 0 or i < n:
        rev = await s.create(f"/child/{i:06d}", str(i).encode())
        print(i, rev, flush=True)
        i += 1
    await s.close()
asyncio.run(main())
"""


def spawn_writer(path: Path, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_WRITER, str(path), str(n)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


async def test_watch_sees_another_process(tmp_path: Path) -> None:
    """Another process's writes arrive by polling, in bulk (hundreds per poll), and a watcher
    with the default backlog that keeps reading is not dropped for it."""
    s = new_store(tmp_path / "s.db", poll_interval=0.3)
    await s.create("/child/before", b"x")
    watch = s.watch("/child/", 1)
    child = spawn_writer(tmp_path / "s.db", 600)
    events = await take(watch, 600, timeout=30)
    child.communicate(timeout=10)
    assert child.returncode == 0
    assert [e.kv.key for e in events] == [f"/child/{i:06d}" for i in range(600)]
    assert [e.revision for e in events] == list(range(2, 602))
    # A local write after the other process's: delivered once the gap is read from the table.
    r = await s.create("/child/after", b"y")
    assert summary(await take(watch, 1)) == [("put", "/child/after", r)]
    await s.close()


async def test_slow_watcher_is_dropped_not_buffered(tmp_path: Path) -> None:
    small = new_store(tmp_path / "state.db", watch_backlog=10)
    await small.create("/s/0", b"0")
    slow, fast = small.watch("/s/", 0), small.watch("/s/", 0)
    await take(slow, 1)
    await take(fast, 1)
    for i in range(1, 31):
        await small.create(f"/s/{i}", b"x")
        await take(fast, 1)  # a watcher that keeps up is never dropped
    with pytest.raises(WatchLagged):
        await anext(slow)
    assert len(small._hub.subscribers) == 1  # the slow one's backlog is gone
    await small.close()


# -- compaction ------------------------------------------------------------------------------


def row_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM kine").fetchone()[0])


async def test_compaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = new_store(path)
    r1 = await s.create("/c/a", b"1")
    await s.update("/c/a", b"2", 0)
    await s.create("/c/b", b"1")
    await s.delete("/c/b")
    mid = await s.update("/c/a", b"3", 0)
    later = await s.create("/c/c", b"1")
    before = {r: await s.list("/c/", revision=r) for r in range(mid, later + 1)}

    await s.compact(mid)
    assert row_count(path) == 2  # /c/a at mid and /c/c; superseded rows and tombstones gone
    assert await s.compacted_revision() == mid
    for r in range(mid, later + 1):
        assert await s.list("/c/", revision=r) == before[r]
    with pytest.raises(Compacted) as err:
        await s.list("/c/", revision=r1)
    assert (err.value.requested, err.value.compacted) == (r1, mid)

    watch = s.watch("/c/", r1)
    with pytest.raises(Compacted):
        await anext(watch)
    assert summary(await take(s.watch("/c/", mid), 1)) == [("put", "/c/c", later)]

    await s.compact(r1)  # already compacted: no-op
    with pytest.raises(StoreError, match="current revision"):
        await s.compact(later + 1)
    await s.close()
    s = new_store(path)
    assert await s.compacted_revision() == mid
    with pytest.raises(Compacted):
        await s.list("/c/", revision=mid - 1)
    await s.close()


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["put", "delete"])), max_size=60),
    data=st.data(),
)
def test_compaction_keeps_every_view_after_it(ops: list[tuple[int, str]], data: st.DataObject) -> None:
    async def run(path: Path) -> None:
        s = new_store(path, compact_batch=3)
        for key, op in ops:
            k = f"/h/{key}"
            if op == "put":
                if await s.get(k) is None:
                    await s.create(k, b"c")
                else:
                    await s.update(k, str(key).encode(), 0)
            elif await s.get(k) is not None:
                await s.delete(k)
        current = await s.current_revision()
        views = {r: await s.list("/h/", revision=r) for r in range(1, current + 1)}
        target = data.draw(st.integers(0, current))
        # Two compactions, in batches of 3 revisions, to exercise the batch boundaries.
        await s.compact(target // 2)
        await s.compact(target)
        for r in range(max(target, 1), current + 1):
            assert await s.list("/h/", revision=r) == views[r]
        live = {kv.key for kv in views[current].items} if current else set()
        assert row_count(path) >= len(live)
        await s.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "s.db"))


async def test_auto_compaction(tmp_path: Path) -> None:
    s = new_store(tmp_path / "s.db", compaction=CompactionPolicy(interval=0.05, keep_revisions=10, min_age=0))
    for i in range(30):
        await s.create(f"/k/{i}", b"v")
    async with asyncio.timeout(5):
        while await s.compacted_revision() != 20:
            await asyncio.sleep(0.02)
    await s.close()


async def test_auto_compaction_respects_min_age(tmp_path: Path) -> None:
    s = new_store(tmp_path / "s.db", compaction=CompactionPolicy(interval=0.05, keep_revisions=1, min_age=60))
    for i in range(20):
        await s.create(f"/k/{i}", b"v")
    await asyncio.sleep(0.3)
    assert await s.compacted_revision() == 0
    await s.close()


async def test_compaction_by_another_process_fails_lagging_watchers(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s, other = new_store(path, poll_interval=3600), new_store(path)
    await s.create("/k", b"0")
    watch = s.watch("/k", 0)
    await take(watch, 1)
    for i in range(5):
        await other.update("/k", str(i).encode(), 0)  # s never hears of these (no polling)
    await other.compact(await other.current_revision())
    await s.compact(1)  # no-op, but polls first: the watcher's events are gone
    with pytest.raises(Compacted):
        await anext(watch)
    await s.close()
    await other.close()


# -- durability ------------------------------------------------------------------------------


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    child = spawn_writer(path, 0)
    assert child.stdout is not None
    acked: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    while len(acked) < 300:
        line = await loop.run_in_executor(None, child.stdout.readline)
        assert line, "the writer died"
        i, rev = map(int, line.split())
        acked[i] = rev
    os.kill(child.pid, signal.SIGKILL)
    # Anything printed before the kill was acknowledged; read whatever else made it out too.
    rest, _ = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):
            i, rev = map(int, line.split())
            acked[i] = rev
    s = new_store(path)
    for i, rev in acked.items():
        kv = await s.get(f"/child/{i:06d}")
        assert kv is not None and kv.mod_revision == rev
    assert await s.current_revision() >= max(acked.values())
    await s.close()
