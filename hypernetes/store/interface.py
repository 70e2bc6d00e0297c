"""The versioned key-value store behind the API server, etcd-shaped so that etcd can replace it.

Keys are strings like `/registry/pods/default/web-1`; values are the objects' JSON bytes. Every
write gets the next store-wide revision (the objects' resourceVersion). SQLite implements this
now (kine-style: the row id is the revision), etcd too (its revision is the revision).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass


class StoreError(Exception):
    """Base of store errors."""


class KeyExists(StoreError):
    """create() of a key that exists."""


class KeyNotFound(StoreError):
    """update()/delete() of a key that does not exist."""


class RevisionConflict(StoreError):
    """update()/delete() with an expected revision that is not the key's current one."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected revision {expected}, found {actual}")
        self.key, self.expected, self.actual = key, expected, actual


class StoreUnavailable(StoreError):
    """The store cannot answer now (no quorum, no member reachable, timed out): the API's 503.
    A write that raised it may or may not have been applied."""


class Compacted(StoreError):
    """A watch or list asked for a revision older than the compacted one (the API's 410 Gone)."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {compacted})")
        self.requested, self.compacted = requested, compacted


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.Enum):
    PUT = "put"  # create or update; create when prev is None
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    type: EventType
    kv: KeyValue  # for DELETE: the key with its last value, mod_revision = the delete's revision
    prev: KeyValue | None
    revision: int


@dataclass(frozen=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the store revision the list was read at
    more: bool  # more keys after the last item (for limit/continue)


class Store(abc.ABC):
    # whether several API servers may use this store at once (etcd): then whatever one server
    # serializes in memory (the per-tenant quota lock) must be serialized through the store
    shared: bool = False

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        """Keys under `prefix` in key order, after `start_after`, at most `limit` (0 = all),
        as of `revision` (0 = now; an older one raises Compacted if compacted away)."""

    async def count(self, prefix: str) -> int:
        """How many keys are under `prefix` now. Quota admission counts a tenant's objects on
        every create: a store that can count without reading the values does so."""
        return len((await self.list(prefix)).items)

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Create `key`; return the new revision. KeyExists if it exists."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Compare-and-swap on the key's mod_revision; expected 0 = unconditional."""

    @abc.abstractmethod
    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Delete `key` (CAS like update); return its last KeyValue with the delete revision."""

    @abc.abstractmethod
    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        """Events under `prefix` with revision > from_revision, in order, forever.
        Raises Compacted (before any event) if from_revision is older than what is kept."""

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history (old values, deletions) at or before `revision`."""

    @abc.abstractmethod
    async def close(self) -> None: ...
