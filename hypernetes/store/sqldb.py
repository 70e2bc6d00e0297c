"""The synchronous SQLite layer of the store: schema and one function per statement shape.

One append-only table, kine-style: every write appends a row and the row id is the revision.
A key's current state is its latest row unless that row is a deletion. These functions run on
the store's own threads (see sqlite.py), never on the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from hypernetes.store.interface import (
    Compacted,
    Event,
    EventType,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    StoreError,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""

_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, value, old_value"


class Row(NamedTuple):
    id: int
    name: str
    created: int
    deleted: int
    create_revision: int
    prev_revision: int
    value: bytes
    old_value: bytes | None

    def event(self) -> Event:
        # A deletion row keeps the last value in old_value; its KeyValue carries that value with
        # the delete's revision, as etcd and the Kubernetes DELETED event do.
        old = self.old_value if self.old_value is not None else b""
        prev = None if self.created else KeyValue(self.name, old, self.create_revision, self.prev_revision)
        if self.deleted:
            return Event(
                EventType.DELETE, KeyValue(self.name, old, self.create_revision, self.id), prev, self.id
            )
        return Event(
            EventType.PUT, KeyValue(self.name, self.value, self.create_revision, self.id), prev, self.id
        )


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on every commit."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, cached_statements=64
    )
    conn.execute("PRAGMA busy_timeout = 10000")  # other processes' writers and checkpoints
    conn.execute("PRAGMA synchronous = FULL")  # per connection: an acknowledged commit is on disk
    conn.execute("PRAGMA journal_size_limit = 67108864")  # shrink the WAL back after a burst
    return conn


def init(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"cannot put the database in WAL mode (got {mode!r})")
    conn.executescript(SCHEMA)


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so bumping the last code
    point works; a last character that cannot be bumped falls back to a filter in Python.
    """
    if not prefix:
        return None
    last = ord(prefix[-1]) + 1
    if last > 0x10FFFF or 0xD800 <= last <= 0xDFFF:
        return None
    return prefix[:-1] + chr(last)


# -- reads ---------------------------------------------------------------------------------


def current_revision(conn: sqlite3.Connection) -> int:
    # sqlite_sequence, not MAX(id): compaction may delete the newest row (a deletion tombstone).
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
    return int(row[0]) if row else 0


def compact_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'compact_rev'").fetchone()
    return int(row[0]) if row else 0


def latest(conn: sqlite3.Connection, key: str) -> Row | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)
    ).fetchone()
    return Row(*row) if row else None


def get(conn: sqlite3.Connection, key: str) -> KeyValue | None:
    row = conn.execute(
        "SELECT id, deleted, create_revision, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)
    ).fetchone()
    if row is None or row[1]:
        return None
    return KeyValue(key, row[3], row[2], row[0])


_LIST_SQL = """
SELECT k.name, k.value, k.create_revision, k.id FROM kine AS k
WHERE k.name >= ? AND k.name > ? {upper} AND k.id <= ? AND k.deleted = 0
  AND k.id = (SELECT MAX(l.id) FROM kine AS l WHERE l.name = k.name AND l.id <= ?)
ORDER BY k.name {limit}
"""
_LIST_BOUNDED = _LIST_SQL.format(upper="AND k.name < ?", limit="LIMIT ?")
_LIST_OPEN = _LIST_SQL.format(upper="", limit="")


def list_at(
    conn: sqlite3.Connection, prefix: str, start_after: str, limit: int, revision: int
) -> tuple[list[KeyValue], int, bool]:
    """Keys under `prefix` as of `revision` (0 = now) in one read snapshot."""
    conn.execute("BEGIN")
    try:
        current = current_revision(conn)
        compacted = compact_revision(conn)
        if revision == 0:
            revision = current
        elif revision < compacted:
            raise Compacted(revision, compacted)
        elif revision > current:
            raise StoreError(f"revision {revision} is in the future (current: {current})")
        high = prefix_end(prefix)
        rows: Sequence[tuple[str, bytes, int, int]]
        if high is not None:
            rows = conn.execute(
                _LIST_BOUNDED, (prefix, start_after, high, revision, revision, limit + 1 if limit > 0 else -1)
            ).fetchall()
        else:
            cursor = conn.execute(_LIST_OPEN, (prefix, start_after, revision, revision))
            rows = []
            for r in cursor:
                if not r[0].startswith(prefix):
                    if r[0] > prefix:
                        break
                    continue
                rows.append(r)
                if 0 < limit < len(rows):
                    break
    finally:
        conn.execute("COMMIT")
    more = 0 < limit < len(rows)
    if more:
        rows = rows[:limit]
    return [KeyValue(name, value, cr, mod) for name, value, cr, mod in rows], revision, more


_COUNT_SQL = """
SELECT COUNT(*) FROM kine AS k
WHERE k.name >= ? {upper} AND k.deleted = 0
  AND k.id = (SELECT MAX(l.id) FROM kine AS l WHERE l.name = k.name)
"""
_COUNT_BOUNDED = _COUNT_SQL.format(upper="AND k.name < ?")


def count(conn: sqlite3.Connection, prefix: str) -> int:
    """How many live keys are under `prefix` now, without reading their values."""
    high = prefix_end(prefix)
    if high is None:  # no upper bound as SQL text: count what a list returns
        return len(list_at(conn, prefix, "", 0, 0)[0])
    row = conn.execute(_COUNT_BOUNDED, (prefix, high)).fetchone()
    return int(row[0])


def rows_after(conn: sqlite3.Connection, after: int, limit: int) -> tuple[list[Row], int, int]:
    """Rows with id > `after` (any key), plus the compacted and current revisions, in one snapshot."""
    conn.execute("BEGIN")
    try:
        compacted = compact_revision(conn)
        current = current_revision(conn)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM kine WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [Row(*r) for r in rows], compacted, current


def history(conn: sqlite3.Connection, prefix: str, after: int, upto: int, limit: int) -> list[Row]:
    """Rows under `prefix` with `after` < id <= `upto`, oldest first; Compacted if `after` is."""
    conn.execute("BEGIN")
    try:
        compacted = compact_revision(conn)
        if after < compacted:
            raise Compacted(after, compacted)
        high = prefix_end(prefix)
        if high is None:
            cursor = conn.execute(
                f"SELECT {_COLUMNS} FROM kine WHERE id > ? AND id <= ? AND name >= ? ORDER BY id",
                (after, upto, prefix),
            )
            rows = []
            for r in cursor:
                if r[1].startswith(prefix):
                    rows.append(r)
                    if len(rows) >= limit:
                        break
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM kine WHERE id > ? AND id <= ? "
                "AND name >= ? AND name < ? ORDER BY id LIMIT ?",
                (after, upto, prefix, high, limit),
            ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [Row(*r) for r in rows]


# -- writes (the caller runs these on the single writer connection) ------------------------


def _append(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(f"INSERT INTO kine ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)


def _write(conn: sqlite3.Connection, key: str, value: bytes | None, expected: int | None) -> Row:
    """One write in one IMMEDIATE transaction: create (expected None), update (value set) or
    delete (value None). IMMEDIATE takes the write lock first, so the check and the append cannot
    interleave with another writer, in this process or another."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        prev = latest(conn, key)
        rev = current_revision(conn) + 1
        if expected is None:
            if prev is not None and not prev.deleted:
                raise KeyExists(key)
            assert value is not None
            row = Row(rev, key, 1, 0, rev, prev.id if prev else 0, value, None)
        else:
            if prev is None or prev.deleted:
                raise KeyNotFound(key)
            if expected and expected != prev.id:
                raise RevisionConflict(key, expected, prev.id)
            if value is None:
                row = Row(rev, key, 0, 1, prev.create_revision, prev.id, b"", prev.value)
            else:
                row = Row(rev, key, 0, 0, prev.create_revision, prev.id, value, prev.value)
        _append(conn, row)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return row


def create(conn: sqlite3.Connection, key: str, value: bytes) -> Row:
    return _write(conn, key, value, None)


def update(conn: sqlite3.Connection, key: str, value: bytes, expected_revision: int) -> Row:
    return _write(conn, key, value, expected_revision)


def delete(conn: sqlite3.Connection, key: str, expected_revision: int) -> Row:
    return _write(conn, key, None, expected_revision)


def compact_batch(conn: sqlite3.Connection, revision: int, batch: int = 1000) -> tuple[int, bool]:
    """One step of compaction to `revision`: returns (compacted revision, finished).

    Compaction deletes rows superseded at or before `revision` and deletion tombstones at or
    before it. A row is superseded exactly when a later row names it as prev_revision, so each
    step reads only its own id range (kine's approach); the caller runs one step per writer job
    so that writes wait at most one batch.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = compact_revision(conn)
        current = current_revision(conn)
        if revision > current:
            raise StoreError(f"cannot compact to {revision}: the current revision is {current}")
        if revision <= done:
            conn.execute("ROLLBACK")
            return done, True
        upto = min(revision, done + batch)
        conn.execute(
            "DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine "
            "WHERE id > ? AND id <= ? AND prev_revision != 0)",
            (done, upto),
        )
        conn.execute("DELETE FROM kine WHERE id > ? AND id <= ? AND deleted = 1", (done, upto))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('compact_rev', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (upto,),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return upto, upto >= revision
