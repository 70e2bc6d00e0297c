"""A pod the node agent sees before the network controller gave it its address (the scheduler
binds it first): its worker waits out a back-off after NetworkNotReady, and the address
arriving must end that back-off, as a spec change does (it waited the whole 10 s: `hypernetes
up`'s p99 pod start was 13.7 s for 3.5 s p50, bench/RESULTS.md issue 15)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from hypernetes.node.worker import CONFIG_RETRY, PodWorker
from hypernetes.objects.names import IP_ANNOTATION, MAC_ANNOTATION, NETWORK_ANNOTATION

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "default", "uid": "0b7f3c1e-2a8d-4a55-9e51-7d0c4f1e2a10"},
    "spec": {"containers": [{"name": "main", "image": "busybox"}]},
}


async def test_the_address_arriving_ends_the_back_off_of_a_pod_waiting_for_it() -> None:
    # the back-off is the worker's own: nothing here reaches the runtime or the API
    worker = PodWorker(copy.deepcopy(POD), runtime=None, api=None, host_ip="10.0.0.1")  # type: ignore[arg-type]
    waiting = asyncio.create_task(worker._wait_backoff(CONFIG_RETRY, worker._spec_key))
    await asyncio.sleep(0.05)
    status = copy.deepcopy(POD) | {"status": {"phase": "Pending"}}  # our own status write
    worker.update(status)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # does not end a back-off
    addressed = copy.deepcopy(status)
    addressed["metadata"]["annotations"] = {
        NETWORK_ANNOTATION: "default",
        IP_ANNOTATION: "10.0.0.5",
        MAC_ANNOTATION: "02:00:0a:00:00:05",
    }
    worker.update(addressed)
    assert await asyncio.wait_for(waiting, 1.0) == "spec"
