"""A write through the API is seen by the very next request's authentication and authorization:
the write waits for the tenancy directory's mirrors to apply it (auth/mirror.py `caught_up`).
On etcd the watch event comes a moment after the write returns; CI once caught a demoted admin's
next write admitted in that moment. The store here is the real SQLite store with its watch
slowed: a watch that lags cannot be produced on demand otherwise."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from hypernetes.auth.directory import GROUP, Directory
from hypernetes.store import open_store
from hypernetes.store.interface import Event, Store
from hypernetes.store.keys import key_prefix

LAG = 0.3


class _LaggingWatch:
    """The store, with every watch event delivered `LAG` seconds late."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        async for ev in self.inner.watch(prefix, from_revision):
            await asyncio.sleep(LAG)
            yield ev


def _user(role: str) -> bytes:
    return json.dumps({"metadata": {"name": "ann"}, "spec": {"tenant": "acme", "role": role}}).encode()


async def test_a_write_waits_until_the_directory_has_it(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    key = key_prefix(GROUP, "users", None) + "ann"
    await store.create(key, _user("admin"))
    directory = Directory(_LaggingWatch(store))  # type: ignore[arg-type]
    await directory.start()
    try:
        assert (directory.user("ann") or {})["spec"]["role"] == "admin"

        rev = await store.update(key, _user("viewer"), 0)
        assert directory.user("ann")["spec"]["role"] == "admin"  # type: ignore[index]  # the lag
        started = time.monotonic()
        await directory.settled(key, rev)
        assert directory.user("ann")["spec"]["role"] == "viewer"  # type: ignore[index]
        assert time.monotonic() - started >= LAG / 2  # it did wait for the watch

        gone = await store.delete(key)
        await directory.settled(key, gone.mod_revision)
        assert directory.user("ann") is None
        # a key no mirror holds, and a revision already applied: no wait
        started = time.monotonic()
        await directory.settled("/registry/configmaps/x/y", gone.mod_revision + 100)
        await directory.settled(key, gone.mod_revision)
        assert time.monotonic() - started < LAG / 2
    finally:
        await directory.stop()
        await store.close()
