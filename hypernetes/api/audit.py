"""The audit trail: one JSON line per mutating request and per stream into a pod (exec, attach,
port-forward: whatever the method, allowed or not), naming who, their tenant, the verb, the object
and the result. Reads are not logged: they are many, and the question an audit answers is "who
changed what, or reached into what". Files are opened 0600 (they name users).

One tenant cannot push others' evidence out (docs/tenants.md, "Audit"):

- every caller class writes its own rotated file: operators and cluster components `audit.log`,
  each tenant `audit-tenant-NAME.log`, unauthenticated callers `audit-anonymous.log`; a tenant's
  volume rotates only its own file;
- refusals repeat cheaply, so they are aggregated: the first `FULL_REPEATS` of identical refused
  requests in a window are written in full, further repeats become one line with `count`,
  `firstTs` and `lastTs` when the window ends;
  past a file's budget of refusals, refusals that differ only by name (name spraying) aggregate
  too. Allowed requests are always written in full.

Streams are recorded twice, as upstream's stages: `ResponseStarted` when the stream opens (a shell
held for hours is on record from its first second) and `ResponseComplete` with its outcome (exit
code, error, or the client leaving).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from hypernetes.auth.identity import UserInfo
from hypernetes.objects import Obj

MUTATING = frozenset(("POST", "PUT", "PATCH", "DELETE"))
# upstream's "connect" subresources: a GET upgraded to a WebSocket is a write into the pod
CONNECT = frozenset(("exec", "attach", "portforward"))
MAIN, ANONYMOUS = "", "anonymous"
WINDOW = 60.0  # seconds over which identical refusals become one line
FULL_REPEATS = 5  # identical refusals written in full per window before the rest are counted
REFUSALS_PER_SECOND, REFUSAL_BURST = 5.0, 1000.0  # per file, before refusals aggregate by kind
MAX_PENDING = 10000  # aggregates held in memory; the oldest is written out beyond this
MAX_OPEN = 64  # files held open; more are reopened on demand
_SAFE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")

# details a stream handler adds to its records (container, command, ports, outcome)
AUDIT_DETAIL: web.RequestKey[Obj] = web.RequestKey("audit_detail")
# set by the server when auditing: a stream handler calls it once the stream is upgraded
AUDIT_STARTED: web.RequestKey[Callable[[], None]] = web.RequestKey("audit_started")


def audited(method: str, subresource: str) -> bool:
    return method in MUTATING or subresource in CONNECT


def connect_detail(request: web.Request) -> Obj:
    """What a stream request asked for, from its query: also on record when it is refused before
    a handler reads it."""
    q = request.query
    out: Obj = {"method": request.method}
    if q.get("container"):
        out["container"] = q["container"]
    if q.getall("command", []):
        out["command"] = q.getall("command")
    if q.get("ports"):
        out["ports"] = q["ports"]
    return out


def stream_detail(request: web.Request) -> Obj:
    detail = request.get(AUDIT_DETAIL)
    if detail is None:
        detail = request[AUDIT_DETAIL] = {}
    return detail


def stream_started(request: web.Request, **detail: Any) -> None:
    """A stream handler's call just before it upgrades: `detail` joins the stream's records and
    its start is recorded now."""
    stream_detail(request).update(detail)
    started = request.get(AUDIT_STARTED)
    if started is not None:
        started()


def stream_ended(request: web.Request, **outcome: Any) -> None:
    """How the stream ended (exitCode, error, ...), for its ResponseComplete record."""
    stream_detail(request).update(outcome)


def now_ts(t: float | None = None) -> str:
    when = dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")  # as upstream's audit events


def stream_of(user: UserInfo | None) -> str:
    """Which file a caller's records go to: by the caller, never by what it addressed, so a
    tenant's requests into an operator's namespace still count against its own file."""
    if user is None:
        return ANONYMOUS
    return f"tenant-{user.tenant}" if user.tenant else MAIN


@dataclass
class _Pending:
    """Repeats of one refused request (or, past the budget, of one kind of refusal)."""

    entry: Obj
    opened: float  # the window ends `window` seconds after this
    first: float = 0.0
    last: float = 0.0
    count: int = 0
    written: int = 0  # occurrences written in full in this window
    names: list[str] = field(default_factory=list)


@dataclass
class _Bucket:
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(REFUSAL_BURST, self.tokens + (now - self.at) * REFUSALS_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 50 * 1024 * 1024,
        backups: int = 5,
        tenant_max_bytes: int = 16 * 1024 * 1024,
        tenant_backups: int = 4,
        window: float = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.window, self._clock = path, window, clock
        self._sizes = {MAIN: (max_bytes, backups)}
        self._tenant_size = (tenant_max_bytes, tenant_backups)
        self._handlers: OrderedDict[str, logging.handlers.RotatingFileHandler] = OrderedDict()
        self._pending: OrderedDict[tuple[Any, ...], _Pending] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._handler(MAIN)  # the main file exists from the start

    # -- files -----------------------------------------------------------------------------------

    def file_of(self, stream: str) -> Path:
        if stream == MAIN:
            return self.path
        if stream.startswith("tenant-") and not _SAFE.match(stream[7:]):
            stream = "tenant-invalid-name"  # tenant names are DNS labels; anything else is not a path
        return self.path.with_name(f"{self.path.stem}-{stream}{self.path.suffix}")

    @staticmethod
    def files(path: Path) -> list[Path]:
        """Every file of the trail whose main file is `path`, rotated ones included."""
        ours = re.compile(rf"^{re.escape(path.stem)}(-[a-z0-9.-]+)?{re.escape(path.suffix)}(\.\d+)?$")
        return sorted(p for p in path.parent.iterdir() if ours.match(p.name))

    def _handler(self, stream: str) -> logging.handlers.RotatingFileHandler:
        h = self._handlers.get(stream)
        if h is not None:
            self._handlers.move_to_end(stream)
            return h
        path = self.file_of(stream)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        max_bytes, backups = self._sizes.get(stream, self._tenant_size)
        h = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        h.setFormatter(logging.Formatter("%(message)s"))
        self._handlers[stream] = h
        while len(self._handlers) > MAX_OPEN:
            self._handlers.popitem(last=False)[1].close()
        return h

    def _write(self, stream: str, entry: Obj) -> None:
        self._handler(stream).emit(
            logging.makeLogRecord(
                {
                    "msg": json.dumps(entry, separators=(",", ":")),
                    "levelno": logging.INFO,
                    "levelname": "INFO",
                }
            )
        )

    # -- records ---------------------------------------------------------------------------------

    def record(
        self,
        *,
        user: UserInfo | None,
        tenant: str,
        verb: str,
        path: str,
        resource: str,
        subresource: str,
        namespace: str,
        name: str,
        code: int,
        source: str,
        stage: str = "ResponseComplete",
        detail: Obj | None = None,
        query: str = "",
    ) -> None:
        now = self._clock()
        entry: Obj = {
            "ts": now_ts(now),
            "stage": stage,
            "user": user.name if user else None,
            "groups": list(user.groups) if user else [],
            "tenant": tenant or None,
            "verb": verb,
            "path": path,
            **({"query": query[:1024]} if query else {}),  # dryRun, the command of an exec, ...
            "resource": resource,
            "subresource": subresource or None,
            "namespace": namespace or None,
            "name": name or None,
            "code": code,
            "result": "allowed" if code < 400 else ("denied" if code in (401, 403) else "failed"),
            "source": source,
        }
        if detail:
            entry.update(detail)
        stream = stream_of(user)
        self._flush_due(now)
        if code < 400:
            self._write(stream, entry)
            return
        self._refused(stream, entry, now)

    def _refused(self, stream: str, entry: Obj, now: float) -> None:
        exact = (stream, json.dumps({k: v for k, v in entry.items() if k != "ts"}, sort_keys=True))
        pending = self._pending.get(exact)
        if pending is not None and pending.written >= FULL_REPEATS:
            self._repeat(pending, entry, now)
            return
        bucket = self._buckets.setdefault(stream, _Bucket(REFUSAL_BURST, now))
        if bucket.take(now):
            self._write(stream, entry)  # the first few in full; further repeats in this window are counted
            if pending is None:
                self._hold(exact, _Pending(entry, now))
            pending = self._pending[exact]
            pending.written += 1
            return
        coarse = (
            stream,
            entry["user"],
            entry["verb"],
            entry["resource"],
            entry["subresource"],
            entry["namespace"],
            entry["code"],
            entry["source"],
        )
        pending = self._pending.get(coarse)
        if pending is None:
            pending = _Pending({**entry, "name": None, "path": None}, now)
            self._hold(coarse, pending)
        self._repeat(pending, entry, now)

    def _repeat(self, pending: _Pending, entry: Obj, now: float) -> None:
        if pending.count == 0:
            pending.first = now
        pending.count += 1
        pending.last = now
        name = entry.get("name")
        if (
            name
            and pending.entry.get("name") is None
            and len(pending.names) < 10
            and name not in pending.names
        ):
            pending.names.append(str(name))

    def _hold(self, key: tuple[Any, ...], pending: _Pending) -> None:
        self._pending[key] = pending
        while len(self._pending) > MAX_PENDING:
            self._emit(*self._pending.popitem(last=False))
        self._schedule()

    def _emit(self, key: tuple[Any, ...], p: _Pending) -> None:
        if p.count == 0:
            return
        out = {
            **p.entry,
            "ts": now_ts(p.last),
            "stage": "Aggregated",
            "count": p.count,
            "firstTs": now_ts(p.first),
            "lastTs": now_ts(p.last),
        }
        if p.names:
            out["names"] = p.names  # a sample of what was asked for
        self._write(key[0], out)

    def _flush_due(self, now: float) -> None:
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if now - p.opened < self.window:
                break  # windows open in insertion order: the rest are not due either
            del self._pending[key]
            self._emit(key, p)

    def _schedule(self) -> None:
        """Write out due aggregates even if no further request comes."""
        if self._timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the next record or close()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._flush_due(self._clock())
        if self._pending:
            self._schedule()

    def flush(self) -> None:
        """Write out every aggregate now (at shutdown)."""
        while self._pending:
            self._emit(*self._pending.popitem(last=False))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        for h in self._handlers.values():
            h.close()
        self._handlers.clear()

    @staticmethod
    def read(path: Path) -> list[Obj]:
        """Every record of the trail whose main file is `path` (all files, rotated ones
        included), oldest first."""
        out: list[Obj] = []
        for p in AuditLog.files(path):
            out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return sorted(out, key=lambda e: str(e.get("ts")))
