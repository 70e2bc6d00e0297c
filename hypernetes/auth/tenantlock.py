"""The per-tenant quota lock: no other quota-counted write of the same tenant between a write's
quota check and its commit, or two pods could both take the last slot.

In one API server an asyncio.Lock per tenant is enough. When several API servers share the
store (etcd), the lock must be shared too: a key per tenant created only if absent (the store's
compare-and-swap), deleted on release. A server that dies holding it would block the tenant, so
a holder older than `stale` seconds is broken by the next waiter (a quota check and its write
take milliseconds; the bound is generous against clock skew between servers). Each server still
queues its own callers on a local lock first, so only one of them at a time polls the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator

from hypernetes.store.interface import KeyExists, KeyNotFound, RevisionConflict, Store

PREFIX = "/registry/hypernetes.io/quotalocks/"
STALE = 10.0


class TenantLocks:
    def __init__(self, store: Store | None = None, *, stale: float = STALE) -> None:
        """`store`: the store every API server shares (None: this server is the only one)."""
        self.store, self.stale = store, stale
        self._local: dict[str, asyncio.Lock] = {}
        self.holder = secrets.token_hex(8)

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        async with self._local.setdefault(tenant, asyncio.Lock()):
            if self.store is None:
                yield
                return
            revision = await self._acquire(tenant)
            try:
                yield
            finally:
                with contextlib.suppress(KeyNotFound, RevisionConflict):
                    await self.store.delete(PREFIX + tenant, revision)

    async def _acquire(self, tenant: str) -> int:
        assert self.store is not None
        key, delay = PREFIX + tenant, 0.002
        while True:
            record = json.dumps({"holder": self.holder, "at": time.time()}).encode()
            try:
                return await self.store.create(key, record)
            except KeyExists:
                pass
            kv = await self.store.get(key)
            if kv is not None and self._stale(kv.value):
                with contextlib.suppress(KeyNotFound, RevisionConflict):
                    await self.store.delete(key, kv.mod_revision)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _stale(self, value: bytes) -> bool:
        try:
            at = float(json.loads(value)["at"])
        except (ValueError, KeyError, TypeError):
            return True  # unreadable: nobody can be holding it meaningfully
        return time.time() - at > self.stale
