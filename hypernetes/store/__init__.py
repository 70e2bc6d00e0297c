"""Versioned key-value store behind the API server (see interface.py)."""

from __future__ import annotations

from hypernetes.store.interface import (
    Compacted,
    Event,
    EventType,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionConflict,
    Store,
    StoreError,
    StoreUnavailable,
)
from hypernetes.store.watchhub import WatchLagged

__all__ = [
    "Compacted",
    "Event",
    "EventType",
    "KeyExists",
    "KeyNotFound",
    "KeyValue",
    "ListResult",
    "RevisionConflict",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WatchLagged",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open the store named by `url`: `sqlite:///abs/path/state.db` (or `sqlite://rel/path.db`),
    or `etcd://HOST:PORT[,HOST:PORT...]` / `etcds://...` (parameters: store/etcdconfig.py)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"store URL {url!r} has no scheme; expected sqlite:///path/state.db")
    if scheme == "sqlite":
        if not rest:
            raise StoreError(f"store URL {url!r} names no file; expected sqlite:///path/state.db")
        from hypernetes.store.sqlite import SqliteStore

        return SqliteStore(rest)
    if scheme in ("etcd", "etcds"):
        from hypernetes.store.etcd import EtcdStore
        from hypernetes.store.etcdconfig import parse_etcd_url

        return EtcdStore(parse_etcd_url(url))
    raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (supported: sqlite, etcd, etcds)")
