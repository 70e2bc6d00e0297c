"""Events expire: kube-apiserver stores them with a one-hour lease (--event-ttl). The store has
no leases, so the API server sweeps instead: every few minutes it deletes the events whose last
occurrence is older than the TTL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

from hypernetes.api import objects, schema
from hypernetes.store.interface import KeyNotFound, RevisionConflict, Store

log = logging.getLogger(__name__)


def _last_seen(event: dict[str, object]) -> str:
    meta = event.get("metadata")
    series = event.get("series")
    candidates = [
        event.get("lastTimestamp"),
        event.get("eventTime"),
        series.get("lastObservedTime") if isinstance(series, dict) else None,
        meta.get("creationTimestamp") if isinstance(meta, dict) else None,
    ]
    return max((str(c)[:19] for c in candidates if c), default="")


async def sweep(store: Store, ttl: float, now: datetime | None = None) -> int:
    """Delete expired events once; returns how many."""
    cutoff = ((now or datetime.now(UTC)) - timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%S")
    removed = 0
    for kind in (schema.kind_for("", "v1", "events"), schema.kind_for("events.k8s.io", "v1", "events")):
        if kind is None:
            continue
        start = ""
        while True:
            page = await store.list(
                objects.key_prefix(kind.group, kind.plural, None), start_after=start, limit=500
            )
            for kv in page.items:
                try:
                    seen = _last_seen(json.loads(kv.value))
                except ValueError:
                    continue
                if seen and seen < cutoff:
                    with contextlib.suppress(KeyNotFound, RevisionConflict):  # changed or gone meanwhile
                        await store.delete(kv.key, kv.mod_revision)
                        removed += 1
            if not page.more or not page.items:
                break
            start = page.items[-1].key
    return removed


async def run(store: Store, ttl: float) -> None:
    interval = max(1.0, min(ttl / 4, 300.0))
    while True:
        await asyncio.sleep(interval)
        try:
            n = await sweep(store, ttl)
            if n:
                log.info("deleted %d expired events", n)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event expiry sweep failed")
