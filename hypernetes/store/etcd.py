"""The etcd v3 store: the Store interface on a real etcd cluster, through etcd3aio (grpc.aio).

Keys: the store's keys with the configured prefix in front (default none), so API objects sit
at /registry/<group>/<resource>/<namespace>/<name> as kube-apiserver lays them out.
resourceVersion = etcd's mod revision. Each write is one etcd transaction, as kube-apiserver's:
create = put if create_revision == 0; update/delete = put/delete if mod_revision == expected (or,
unconditional, if the key exists), else read the key to tell "not found" from "conflict".

Failures: a request etcd does not answer within `request-timeout` (no quorum, no member
reachable, a leader election) raises StoreUnavailable, the API's 503. Reads are retried on
another member first; writes are never retried here, because a write whose answer was lost may
have been applied: the caller is told the outcome is unknown, not a guess.

Watches: one etcd watch stream per store watch, with previous values, and require-leader (a
member that loses its leader ends the stream). A broken stream is reopened from the revision
after the last event delivered, so a watcher sees every revision once, in order, across member
failures; a history compacted meanwhile ends it with Compacted (410 Gone).

Compaction, as kube-apiserver drives it: every `compaction-interval` each API server tries a
transaction on the key `compact_rev_key` (its version is the compaction epoch); the one that wins
records the current revision and compacts to the revision recorded one interval before. So at
most one server compacts per interval, and history of at least one interval is always kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from etcd3aio import EtcdConnectionError, EtcdError, EtcdTransientError
from etcd3aio._protobuf import (  # the library's generated messages and stubs
    Compare,
    RangeResponse,
    RequestOp,
    TxnResponse,
    WatchCreateRequest,
    WatchRequest,
    WatchStub,
)
from etcd3aio.kv import KVService, prefix_range_end

from hypernetes.store.etcdconfig import EtcdConfig
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

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPACT_REV_KEY = b"compact_rev_key"  # kube-apiserver's key: shared with it, on purpose
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# A watch stream that breaks in any other way (a member gone mid-write shows as INTERNAL) is reopened.
_WATCH_FATAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
)
_REQUIRE_LEADER = (("hasleader", "true"),)  # as clientv3.WithRequireLeader
_WATCH_BACKOFF = (0.05, 2.0)  # first and longest pause before reopening a broken watch


class EtcdStore(Store):
    shared = True  # several API servers, one etcd

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._root = config.prefix.encode()
        self._credentials = _credentials(config)
        self._target, self._options = _target(config)
        self._channel: grpc.aio.Channel | None = None
        self._kv: KVService | None = None
        self._watch_stub: WatchStub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_calls: set[Any] = set()
        self._compacted = 0  # the highest compaction revision this store has seen
        self._closed = False

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> KVService:
        """Open the channel on first use, on the running loop (grpc.aio binds to it)."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._kv is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials, self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target, self._options)
            self._kv = KVService(self._channel, max_attempts=3)
            self._watch_stub = WatchStub(self._channel)
            if self.config.compaction_interval > 0:
                self._tasks.append(asyncio.create_task(self._compactor(), name="etcd-compactor"))
        return self._kv

    async def _call(self, what: str, op: Awaitable[T], *, write: bool = False) -> T:
        try:
            return await op
        except (EtcdConnectionError, EtcdTransientError, TimeoutError) as e:
            raise _unavailable(what, e, write) from e
        except grpc.aio.AioRpcError as e:
            if e.code() in _TRANSIENT:
                raise _unavailable(what, e, write) from e
            raise StoreError(f"etcd {what}: {e.code().name}: {e.details()}") from e
        except EtcdError as e:
            raise StoreError(f"etcd {what}: {e}") from e

    def _key(self, key: str) -> bytes:
        if not key.startswith("/"):
            raise StoreError(f"store keys start with '/': {key!r}")
        return self._root + key.encode()

    def _range(self, prefix: str) -> tuple[bytes, bytes]:
        start = self._root + (prefix.encode() or b"/")  # every store key starts with '/'
        return start, prefix_range_end(start)

    def _kv_of(self, kv: Any) -> KeyValue:
        return KeyValue(kv.key[len(self._root) :].decode(), kv.value, kv.create_revision, kv.mod_revision)

    @property
    def _timeout(self) -> float:
        return self.config.request_timeout

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        kv = self._connect()
        resp = await self._call(f"get {key}", kv.get(self._key(key), timeout=self._timeout))
        return self._kv_of(resp.kvs[0]) if resp.kvs else None

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        kv = self._connect()
        start, end = self._range(prefix)
        if start_after:
            start = max(start, self._key(start_after) + b"\0")
        resp: RangeResponse = await self._at_revision(
            f"list {prefix}",
            revision,
            kv.get(start, end, revision=revision, limit=limit, timeout=self._timeout),
        )
        items = [self._kv_of(x) for x in resp.kvs]
        return ListResult(items, revision or resp.header.revision, bool(resp.more))

    async def count(self, prefix: str) -> int:
        kv = self._connect()
        start, end = self._range(prefix)
        resp = await self._call(f"count {prefix}", kv.get(start, end, count_only=True, timeout=self._timeout))
        return int(resp.count)

    async def _at_revision(self, what: str, revision: int, op: Awaitable[T]) -> T:
        try:
            return await self._call(f"{what} at revision {revision}" if revision else what, op)
        except StoreError as e:
            cause = e.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.OUT_OF_RANGE:
                if "compacted" in (cause.details() or ""):
                    raise Compacted(revision, await self.compacted_revision()) from None
                if "future" in (cause.details() or ""):
                    raise StoreError(f"revision {revision} is a future revision") from None
            raise

    async def current_revision(self) -> int:
        kv = self._connect()
        resp = await self._call("revision", kv.get(COMPACT_REV_KEY, count_only=True, timeout=self._timeout))
        return int(resp.header.revision)

    async def compacted_revision(self) -> int:
        """The revision etcd's history was compacted to (0: never), learnt the way clients learn
        it: a watch from revision 1 is refused with it."""
        if self._watch_stub is None:
            self._connect()
        assert self._watch_stub is not None
        call = self._watch_stub.Watch(metadata=_REQUIRE_LEADER, timeout=self._timeout)
        try:
            await call.write(
                WatchRequest(create_request=WatchCreateRequest(key=COMPACT_REV_KEY, start_revision=1))
            )
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    break
                if resp.compact_revision or resp.canceled:
                    self._compacted = max(self._compacted, int(resp.compact_revision))
                    break
                if resp.created:  # not refused: nothing compacted
                    break
        except grpc.aio.AioRpcError as e:
            raise _unavailable("compaction revision", e, False) from e
        finally:
            call.cancel()
        return self._compacted

    # -- writes --------------------------------------------------------------------------------

    async def _txn(
        self,
        what: str,
        compare: Sequence[Compare],
        success: Sequence[RequestOp],
        failure: Sequence[RequestOp],
    ) -> TxnResponse:
        kv = self._connect()
        op = kv.txn(compare, success, failure, timeout=self._timeout, max_attempts=1)
        resp: TxnResponse = await self._call(what, op, write=True)
        return resp

    async def create(self, key: str, value: bytes) -> int:
        k = self._key(key)
        resp = await self._txn(
            f"create {key}",
            [KVService.txn_compare_create_revision(k, 0)],
            [KVService.txn_op_put(k, value)],
            [],
        )
        if not resp.succeeded:
            raise KeyExists(key)
        return int(resp.header.revision)

    def _guard(self, k: bytes, expected: int) -> Sequence[Compare]:
        if expected:
            return [Compare(result=Compare.EQUAL, target=Compare.MOD, key=k, mod_revision=expected)]
        return [KVService.txn_compare_create_revision(k, 0, result=Compare.GREATER)]  # exists

    def _failed(self, key: str, expected: int, resp: TxnResponse) -> StoreError:
        current = resp.responses[0].response_range.kvs
        if not current:
            return KeyNotFound(key)
        return RevisionConflict(key, expected, int(current[0].mod_revision))

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        k = self._key(key)
        resp = await self._txn(
            f"update {key}",
            self._guard(k, expected_revision),
            [KVService.txn_op_put(k, value)],
            [KVService.txn_op_get(k)],
        )
        if not resp.succeeded:
            raise self._failed(key, expected_revision, resp)
        return int(resp.header.revision)

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        k = self._key(key)
        resp = await self._txn(
            f"delete {key}",
            self._guard(k, expected_revision),
            [KVService.txn_op_delete(k, prev_kv=True)],
            [KVService.txn_op_get(k)],
        )
        if not resp.succeeded:
            raise self._failed(key, expected_revision, resp)
        prev = resp.responses[0].response_delete_range.prev_kvs[0]
        return KeyValue(key, prev.value, int(prev.create_revision), int(resp.header.revision))

    async def compact(self, revision: int) -> None:
        kv = self._connect()
        try:
            await self._call(f"compact to {revision}", kv.compact(revision, timeout=self._timeout))
        except StoreError as e:
            details = e.__cause__.details() if isinstance(e.__cause__, grpc.aio.AioRpcError) else ""
            if "compacted" in (details or ""):
                return  # already compacted that far: nothing to do
            if "future" in (details or ""):
                raise StoreError(f"cannot compact to {revision}: beyond the current revision") from None
            raise
        self._compacted = max(self._compacted, revision)

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        return self._watch(prefix, from_revision)

    async def _watch(self, prefix: str, after: int) -> AsyncIterator[Event]:
        self._connect()
        assert self._watch_stub is not None
        start, end = self._range(prefix)
        backoff = _WATCH_BACKOFF[0]
        while not self._closed:
            create = WatchCreateRequest(key=start, range_end=end, start_revision=after + 1, prev_kv=True)
            call = self._watch_stub.Watch(metadata=_REQUIRE_LEADER)
            self._watch_calls.add(call)
            try:
                await call.write(WatchRequest(create_request=create))
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        break
                    if resp.compact_revision:
                        self._compacted = max(self._compacted, int(resp.compact_revision))
                        raise Compacted(after, int(resp.compact_revision))
                    if resp.canceled:  # e.g. the member lost its leader: try another member
                        log.info("etcd watch on %s canceled (%s); reopening", prefix, resp.cancel_reason)
                        break
                    for ev in resp.events:
                        event = self._event(ev)
                        yield event
                        after = event.revision
                    backoff = _WATCH_BACKOFF[0]
            except grpc.aio.AioRpcError as e:
                if e.code() in _WATCH_FATAL:
                    raise StoreError(f"etcd watch on {prefix}: {e.code().name}: {e.details()}") from e
                log.info(
                    "etcd watch on %s broke (%s); reopening from revision %d",
                    prefix,
                    e.code().name,
                    after + 1,
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and call.cancelled() and not (task and task.cancelling()):
                    return  # close() ended it: the watch ends, the watcher is not cancelled
                raise
            finally:
                self._watch_calls.discard(call)
                call.cancel()
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF[1])

    def _event(self, ev: Any) -> Event:
        prev = self._kv_of(ev.prev_kv) if ev.HasField("prev_kv") else None
        rev = int(ev.kv.mod_revision)
        if ev.type == ev.DELETE:
            # etcd's tombstone carries no value: the deleted state is the previous value.
            last = prev or KeyValue(ev.kv.key[len(self._root) :].decode(), b"", 0, rev)
            kv = KeyValue(last.key, last.value, last.create_revision, rev)
            return Event(EventType.DELETE, kv, prev, rev)
        kv = self._kv_of(ev.kv)
        # A create has no previous value; an update whose previous value was compacted has none.
        return Event(EventType.PUT, kv, prev if kv.create_revision != rev else None, rev)

    # -- compaction ----------------------------------------------------------------------------

    async def _compactor(self) -> None:
        epoch, last = 0, 0  # compact_rev_key's version we expect; the revision recorded then
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            try:
                epoch, last = await self.compact_round(epoch, last)
            except asyncio.CancelledError:
                raise
            except StoreError as e:
                log.warning("etcd compaction round failed: %s", e)

    async def compact_round(self, epoch: int, last: int) -> tuple[int, int]:
        """One round of kube-apiserver's compactor (storage/etcd3/compact.go): whoever moves
        compact_rev_key from version `epoch` compacts to `last`, the revision recorded by the
        previous round; the others learn the new epoch. Returns (epoch, revision now)."""
        k = COMPACT_REV_KEY
        compare = [Compare(result=Compare.EQUAL, target=Compare.VERSION, key=k, version=epoch)]
        resp = await self._txn(
            "compaction epoch",
            compare,
            [KVService.txn_op_put(k, str(last).encode())],
            [KVService.txn_op_get(k)],
        )
        now = int(resp.header.revision)
        if not resp.succeeded:
            kvs = resp.responses[0].response_range.kvs
            return (int(kvs[0].version) if kvs else 0), now
        if last:
            await self.compact(last)
            log.info("etcd: compacted to revision %d", last)
        return epoch + 1, now

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for call in list(self._watch_calls):
            call.cancel()
        if self._channel is not None:
            await self._channel.close()


def _unavailable(what: str, e: BaseException, write: bool) -> StoreUnavailable:
    cause = e.__cause__ if isinstance(e, EtcdError) and e.__cause__ is not None else e
    detail = cause.details() if isinstance(cause, grpc.aio.AioRpcError) else str(cause) or "timed out"
    if write:
        return StoreUnavailable(
            f"etcd did not confirm {what} ({detail}); it may or may not have been applied"
        )
    return StoreUnavailable(f"etcd did not answer {what} ({detail})")


def _credentials(config: EtcdConfig) -> grpc.ChannelCredentials | None:
    if not config.tls:
        return None

    def read(path: Any) -> bytes | None:
        if path is None:
            return None
        try:
            data: bytes = path.read_bytes()
        except OSError as e:
            raise StoreError(f"etcd TLS: cannot read {path}: {e.strerror}") from e
        return data

    return grpc.ssl_channel_credentials(read(config.cacert), read(config.key), read(config.cert))


def _target(config: EtcdConfig) -> tuple[str, list[tuple[str, Any]]]:
    """A gRPC target over every member, balanced round robin (a dead member is skipped once
    its connection fails), with keepalives that notice a silent member within 15 s."""
    hosts = [e.rpartition(":")[0].strip("[]") for e in config.endpoints]
    options: list[tuple[str, Any]] = [
        ("grpc.lb_policy_name", "round_robin"),
        # etcd answers pings more often than every 5 s, or without a call open, with GOAWAY
        # (--grpc-keepalive-min-time): ping every 10 s while calls (watches) are open
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    families: set[int] = set()
    for h in hosts:
        try:
            families.add(ipaddress.ip_address(h).version)
        except ValueError:
            families.add(0)
    if families == {4}:
        return "ipv4:" + ",".join(config.endpoints), options
    if families == {6}:
        return "ipv6:" + ",".join(config.endpoints), options
    if len(hosts) == 1:  # a name: every address it resolves to is a member
        return f"dns:///{config.endpoints[0]}", options
    raise StoreError(
        "etcd members must be all IPv4 or all IPv6 addresses, or one DNS name that resolves to "
        f"each member: got {','.join(config.endpoints)}"
    )
