"""The SQLite store: an async Store over the kine-style table in sqldb.py.

sqlite3 blocks, so the event loop never touches a connection. Writes run on one dedicated writer
thread (one connection; SQLite admits one writer anyway), reads on a small pool of threads with a
connection each (WAL lets them read while the writer writes). Point reads (one key, the current
revision) have a thread of their own: they never queue behind scans of thousands of rows, which
another tenant's lists can keep the pool busy with (issue 12).

Watches: the table is the single source of truth. A committed local write is handed to the watch
hub at once if it is the next revision; anything else (another process's writes, a gap) is read
back from the table by the poller, which also runs every `poll_interval` seconds. A new watch
reads its history from the table up to the hub's position at subscription and then takes live
events, so no event is lost or repeated between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypernetes.store import sqldb
from hypernetes.store.interface import Compacted, Event, KeyValue, ListResult, Store, StoreError
from hypernetes.store.watchhub import WatchHub

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows per read: bounds one read's memory and duration. A poll batch is pushed to live watchers
# in one go, so it stays well below the default watch backlog (1000).
_HISTORY_BATCH = 1000
_POLL_BATCH = 200


@dataclass(frozen=True)
class CompactionPolicy:
    """Background compaction keeps at least `keep_revisions` revisions and everything written in
    the last `min_age` seconds (whichever keeps more), checking every `interval` seconds
    (0 disables it). Watches and lists older than the compacted revision get Compacted (410)."""

    interval: float = 60.0
    keep_revisions: int = 10_000
    min_age: float = 300.0


class SqliteStore(Store):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = 2,
        poll_interval: float = 1.0,
        watch_backlog: int = 1000,
        compaction: CompactionPolicy | None = None,
        compact_batch: int = 1000,
    ) -> None:
        self.path = Path(path)
        self._compact_batch = compact_batch
        self._poll_interval = poll_interval
        self._compaction = compaction if compaction is not None else CompactionPolicy()
        _prepare_file(self.path)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, "store-writer", initializer=self._open_conn)
        self._readers = ThreadPoolExecutor(readers, "store-reader", initializer=self._open_conn)
        self._point = ThreadPoolExecutor(1, "store-point-reader", initializer=self._open_conn)
        try:
            # Opening is synchronous (open_store is): a fraction of a millisecond on a warm disk.
            current = self._writer.submit(self._in_thread, _init).result()
        except BaseException:
            self._shutdown()
            raise
        self._hub = WatchHub(current, watch_backlog)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._poll_lock: asyncio.Lock | None = None
        self._closed = False

    # -- threads -------------------------------------------------------------------------------

    def _open_conn(self) -> None:
        # check_same_thread=False only so that close() can close it after the thread is gone.
        conn = sqldb.connect(self.path, check_same_thread=False)
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        conn: sqlite3.Connection = self._local.conn
        return fn(conn, *args)

    def _write_job(self, fn: Callable[..., sqldb.Row], *args: Any) -> sqldb.Row:
        row = self._in_thread(fn, *args)
        # Queued before the caller's future completes, in commit order: watchers see the event
        # no later than the writer sees its revision.
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._on_commit, row)
        return row

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._start()
        return await loop.run_in_executor(self._readers, self._in_thread, fn, *args)

    async def _point_read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._start()
        return await loop.run_in_executor(self._point, self._in_thread, fn, *args)

    async def _write(self, fn: Callable[..., sqldb.Row], *args: Any) -> sqldb.Row:
        loop = self._start()
        return await loop.run_in_executor(self._writer, self._write_job, fn, *args)

    def _start(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop on first use and start the background tasks."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._poll_lock = asyncio.Lock()
            self._tasks.append(self._loop.create_task(self._poller(), name="store-poller"))
            if self._compaction.interval > 0:
                self._tasks.append(self._loop.create_task(self._compactor(), name="store-compactor"))
        return self._loop

    # -- Store ---------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        return await self._point_read(sqldb.get, key)

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        items, rev, more = await self._read(sqldb.list_at, prefix, start_after, limit, revision)
        return ListResult(items, rev, more)

    async def count(self, prefix: str) -> int:
        return await self._point_read(sqldb.count, prefix)

    async def create(self, key: str, value: bytes) -> int:
        return (await self._write(sqldb.create, key, value)).id

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return (await self._write(sqldb.update, key, value, expected_revision)).id

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        return (await self._write(sqldb.delete, key, expected_revision)).event().kv

    async def current_revision(self) -> int:
        return await self._point_read(sqldb.current_revision)

    async def compacted_revision(self) -> int:
        """The revision history was compacted to (0: never); older lists/watches are Compacted."""
        return await self._point_read(sqldb.compact_revision)

    async def compact(self, revision: int) -> None:
        loop = self._start()
        # Let live watchers take everything up to now before its history goes.
        await self._poll_once()
        done = False
        while not done:  # one batch per writer job, so local writes interleave
            _, done = await loop.run_in_executor(
                self._writer, self._in_thread, sqldb.compact_batch, revision, self._compact_batch
            )

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        return self._watch(prefix, from_revision)

    async def _watch(self, prefix: str, after: int) -> AsyncIterator[Event]:
        self._start()
        sub = self._hub.subscribe(prefix, after)
        try:
            # History (after, sub.start] from the table; the first read checks compaction even
            # when there is no history to read.
            pos, upto = after, max(after, sub.start)
            while True:
                rows = await self._read(sqldb.history, prefix, pos, upto, _HISTORY_BATCH)
                for row in rows:
                    yield row.event()
                if len(rows) < _HISTORY_BATCH:
                    break
                pos = rows[-1].id
            while (event := await sub.next()) is not None:
                yield event
        finally:
            self._hub.unsubscribe(sub)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._hub.close_all()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._point.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # -- watch delivery ------------------------------------------------------------------------

    def _on_commit(self, row: sqldb.Row) -> None:
        if self._closed:
            return
        if row.id == self._hub.last + 1:
            self._hub.publish(row.event())
        elif row.id > self._hub.last and self._wake is not None:
            self._wake.set()  # revisions in between came from elsewhere: read them from the table

    async def _poller(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy or broken database: log it and try again next round
                log.exception("store: polling %s for new revisions failed", self.path)

    async def _poll_once(self) -> None:
        assert self._poll_lock is not None
        hub = self._hub
        async with self._poll_lock:
            while True:
                if not hub.subscribers:
                    current = await self._read(sqldb.current_revision)
                    if not hub.subscribers:  # nobody to deliver to: no need to read the rows
                        hub.advance(current)
                        return
                    continue
                rows, compacted, _ = await self._read(sqldb.rows_after, hub.last, _POLL_BATCH)
                if compacted > hub.last:
                    # Another process compacted past what the watchers have seen: events are gone.
                    hub.fail_all(Compacted(hub.last, compacted))
                    hub.advance(compacted)
                for row in rows:
                    hub.publish(row.event())  # ignores what the local path delivered meanwhile
                if len(rows) < _POLL_BATCH:
                    return

    async def _compactor(self) -> None:
        policy = self._compaction
        samples: deque[tuple[float, int]] = deque()  # (when, current revision then)
        while True:
            await asyncio.sleep(policy.interval)
            try:
                now = time.monotonic()
                current = await self.current_revision()
                samples.append((now, current))
                target = current - policy.keep_revisions
                if policy.min_age > 0:
                    # The newest sample at least min_age old bounds what may go.
                    while len(samples) > 1 and now - samples[1][0] >= policy.min_age:
                        samples.popleft()
                    old_enough = samples[0][1] if now - samples[0][0] >= policy.min_age else 0
                    target = min(target, old_enough)
                if target > await self.compacted_revision():
                    await self.compact(target)
                    log.info("store: compacted %s to revision %d", self.path, target)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store: compacting %s failed", self.path)


def _prepare_file(path: Path) -> None:
    """Create the directory and an empty database file readable by its owner only (it will hold
    secrets); SQLite gives the -wal and -shm files the same permissions."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as e:
        raise StoreError(f"cannot open the state database {path}: {e}") from e


def _init(conn: sqlite3.Connection) -> int:
    try:
        sqldb.init(conn)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot use the state database: {e}") from e
    return sqldb.current_revision(conn)
