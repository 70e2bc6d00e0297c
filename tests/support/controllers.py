"""The controller manager's harness: the manager on its own loop in a thread, against the real API
server, with a fake kubelet standing in for the node agent, and the module-scoped `controllers`
fixture (import it into a test module beside `tests.support.apifixtures.api`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import ControllerManager
from hypernetes.objects import Obj
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread

T = TypeVar("T")
FAKE = "fake.hypernetes.io/"  # pod annotations that tell the fake kubelet what to do


class FakeKubelet:
    """Simulates one node for the pods of the tests: binds every pod to itself, reports it
    Running and Ready with an IP (or Succeeded/Failed with an exit code), and finalizes deleted
    pods with a grace period 0 delete, as the node agent does once the VM is gone.

    Pod annotations steer it: `fake.hypernetes.io/ready-delay` (seconds until Ready),
    `.../ready: "false"` (never Ready), `.../exit-code` (finish after `.../run-seconds`),
    `.../termination-delay` (seconds a deleted pod takes to stop), `.../ignore` (left alone)."""

    NODE = "fake-node"

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._ips = itertools.count(2)
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._again: dict[str, Obj] = {}

    async def run(self) -> None:
        from tests.support.nodes import FakeNode  # (it imports this module)

        # its Node exists and stays Ready, as a live agent's: the node lifecycle controller and
        # the pod garbage collector (orphans of missing nodes) leave its pods alone
        beat = asyncio.create_task(FakeNode(self.client, self.NODE, period=5.0).heartbeat())
        try:
            async for ev in self.client.informer("v1", "pods"):
                pods = ev.object.get("items", []) if ev.type == "SYNC" else [ev.object]
                if ev.type == "DELETED":
                    continue
                for pod in pods:
                    self._schedule(pod)
        finally:
            beat.cancel()

    def _schedule(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._busy:
            self._again[uid] = pod
            return
        self._busy[uid] = asyncio.create_task(self._handle_all(uid, pod))

    async def _handle_all(self, uid: str, pod: Obj) -> None:
        try:
            while True:
                with contextlib.suppress(ApiException):
                    await self._handle(pod)
                if uid not in self._again:
                    return
                pod = self._again.pop(uid)
        finally:
            self._busy.pop(uid, None)

    async def _handle(self, pod: Obj) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        notes = meta.get("annotations") or {}
        if notes.get(FAKE + "ignore") == "true":
            return  # a pod no node has picked up (yet)
        if meta.get("deletionTimestamp"):
            await asyncio.sleep(float(notes.get(FAKE + "termination-delay", 0)))
            await self.client.delete(
                "v1", "pods", name, ns, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
            )
            return
        if not spec.get("nodeName"):
            await self.client.create(
                "v1",
                "pods",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.NODE},
                },
                ns,
                subresource="binding",
                name=name,
            )
            return
        if status.get("phase") not in (None, "Pending"):
            return
        n = next(self._ips)
        ip = f"10.244.{n // 250}.{n % 250 + 2}"
        ready_delay = float(notes.get(FAKE + "ready-delay", 0))
        never_ready = notes.get(FAKE + "ready") == "false"
        await self._set_status(pod, "Running", ip, ready=not never_ready and ready_delay == 0)
        if ready_delay and not never_ready:
            await asyncio.sleep(ready_delay)
            await self._set_status(pod, "Running", ip, ready=True)
        if FAKE + "exit-code" in notes:
            code = int(notes[FAKE + "exit-code"])
            run = float(notes.get(FAKE + "run-seconds", 0.2))
            restarts = 0
            while code != 0 and spec.get("restartPolicy") == "OnFailure" and restarts < 20:
                await asyncio.sleep(run)  # the container fails and is restarted in place
                restarts += 1
                if not await self._set_status(pod, "Running", ip, ready=False, restarts=restarts):
                    return
            await asyncio.sleep(run)
            await self._set_status(
                pod, "Succeeded" if code == 0 else "Failed", ip, ready=False, exit_code=code
            )

    async def _set_status(
        self, pod: Obj, phase: str, ip: str, *, ready: bool, exit_code: int | None = None, restarts: int = 0
    ) -> bool:
        """False once the pod is gone."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        containers = (pod.get("spec") or {}).get("containers") or []
        state: Obj = (
            {"running": {"startedAt": now}}
            if exit_code is None
            else {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": now,
                    "finishedAt": now,
                }
            }
        )
        flag = "True" if ready else "False"
        status = {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "192.0.2.1",
            "startTime": now,
            "conditions": [
                {"type": t, "status": s, "lastTransitionTime": now}
                for t, s in (
                    ("PodScheduled", "True"),
                    ("Initialized", "True"),
                    ("ContainersReady", flag),
                    ("Ready", flag),
                )
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                    "started": exit_code is None,
                    "state": state,
                }
                for c in containers
            ],
        }
        m = pod["metadata"]
        try:
            await self.client.patch(
                "v1", "pods", m["name"], {"status": status}, m["namespace"], subresource="status"
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True


class ControllersThread:
    """The controller manager (and the fake kubelet) on their own loop in a thread, so that
    blocking kubectl calls in a test do not stop them."""

    def __init__(
        self,
        server: ApiServerThread,
        *,
        only: Iterable[str] | None = None,
        kubelet: bool = True,
        tune: Callable[[ControllerManager], None] | None = None,
    ) -> None:
        self.api, self.only, self.with_kubelet, self.tune = server, only, kubelet, tune
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="controllers", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> ControllersThread:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.client = ApiClient(self.api.url, token=self.api.token, ca_file=self.api.ca.ca_cert)
        self.manager = ControllerManager(self.client, self.only)
        if self.tune is not None:
            self.tune(self.manager)
        self._tasks.append(asyncio.create_task(self.manager.run()))
        if self.with_kubelet:
            self._tasks.append(asyncio.create_task(FakeKubelet(self.client).run()))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        async def _stop() -> None:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.client.close()
            await asyncio.sleep(0.3)  # lets aiohttp's TLS transports finish closing

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- synchronous API helpers for tests -----------------------------------------------------

    def get(self, api_version: str, plural: str, name: str, ns: str | None = None) -> Obj | None:
        return self.call(self.client.get_or_none(api_version, plural, name, ns))

    def items(self, api_version: str, plural: str, ns: str | None = None, selector: str = "") -> list[Obj]:
        listed = self.call(self.client.list(api_version, plural, ns, label_selector=selector))
        out: list[Obj] = listed["items"]
        return out

    def create(self, api_version: str, plural: str, obj: Obj, ns: str | None = None) -> Obj:
        return self.call(self.client.create(api_version, plural, obj, ns))

    def patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Obj,
        ns: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        return self.call(self.client.patch(api_version, plural, name, patch, ns, subresource=subresource))

    def delete(
        self, api_version: str, plural: str, name: str, ns: str | None = None, body: Obj | None = None
    ) -> Obj | None:
        return self.call(self.client.delete(api_version, plural, name, ns, body))

    def namespace(self, name: str) -> str:
        self.create("v1", "namespaces", {"metadata": {"name": name}})
        return name

    def pods(self, ns: str, selector: str = "") -> list[Obj]:
        return self.items("v1", "pods", ns, selector)


def quick_backoff(manager: ControllerManager) -> None:
    """Failed job pods are replaced after 0.2 s, 0.4 s ... instead of 10 s, 20 s ..."""
    if "job" in manager.controllers:
        manager["job"].backoff_base = 0.2  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def controllers(api: ApiServerThread) -> Iterator[ControllersThread]:
    h = ControllersThread(api, tune=quick_backoff).start()
    try:
        yield h
    finally:
        h.stop()
