"""The cluster `hypernetes up` runs: a whole single-host cluster in one process.

API server (HTTPS, cluster CA made on first start), scheduler, controllers and this host's node
agent, on the embedded SQLite store under the data dir. Writes DATA/admin.kubeconfig. Stops on
SIGINT/SIGTERM; pod VMs keep running and are adopted by the next `up` on the same dir unless
--stop-pods is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

from hypernetes.api.authn import ADMIN, TokenAuthenticator
from hypernetes.api.authz import GroupAuthorizer
from hypernetes.api.server import create_app, serve
from hypernetes.api.subresources import LogOptions, PodProxyError, StreamIO
from hypernetes.apiclient import ApiClient
from hypernetes.auth.ca import ensure_ca, write_kubeconfig
from hypernetes.cli.common import data_dir, fail
from hypernetes.cli.run import make_runtime
from hypernetes.node.agent import NodeAgent
from hypernetes.node.proxy import NodePodProxy
from hypernetes.runtime.interface import PodRuntimeError
from hypernetes.scheduler.loop import Scheduler
from hypernetes.store import open_store

log = logging.getLogger("hypernetes.up")
Obj = dict[str, Any]


class ProxyAdapter:
    """The node's pod proxy as the API server expects it: runtime errors become PodProxyErrors."""

    def __init__(self, inner: NodePodProxy) -> None:
        self.inner = inner

    async def logs(self, pod: Obj, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner.logs(pod, container, options):
                yield chunk
        except PodRuntimeError as e:
            raise PodProxyError(str(e)) from e

    async def exec(self, pod: Obj, container: str, command: list[str], io: StreamIO) -> int:
        try:
            return await self.inner.exec(pod, container, command, io)
        except PodRuntimeError as e:
            raise PodProxyError(str(e)) from e

    async def attach(self, pod: Obj, container: str, io: StreamIO) -> int:
        try:
            return await self.inner.attach(pod, container, io)
        except PodRuntimeError as e:
            raise PodProxyError(str(e)) from e


def _controllers(client: ApiClient) -> Any:
    """The controller manager's run() coroutine, once the controllers room provides it."""
    try:
        from hypernetes import controllers
    except ImportError:
        return None
    manager = getattr(controllers, "ControllerManager", None)
    return None if manager is None else manager(client).run()


def handle(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("hypernetes").setLevel(logging.INFO)
        logging.getLogger().handlers[0].setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    try:
        return asyncio.run(_up(args))
    except OSError as e:
        return fail(str(e))


async def _up(args: argparse.Namespace) -> int:
    data = data_dir(args)
    hosts = ["127.0.0.1", "localhost", socket.gethostname()]
    if args.host not in ("0.0.0.0", "::"):
        hosts.append(args.host)
    ca = ensure_ca(data / "pki", hosts=hosts)
    store = open_store(args.store or f"sqlite:///{data / 'state.db'}")
    runtime = make_runtime(args) if not args.no_node else None
    proxy = ProxyAdapter(NodePodProxy(runtime)) if runtime is not None else None
    app = create_app(store, authenticator=TokenAuthenticator({ca.admin_token: ADMIN}),
                     authorizer=GroupAuthorizer(), pod_proxy=proxy)
    url = f"https://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    client = ApiClient(url, token=ca.admin_token, ca_file=ca.ca_cert)
    node = NodeAgent(client, runtime, args.node_name) if runtime is not None else None
    if node is not None:
        await node.adopt()  # surviving VMs are known before `kubectl exec` can ask for them
    runner = await serve(app, args.host, args.port, ca.server)
    kubeconfig = data / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, url, ca.ca_cert, ca.admin_token)
    tasks = [asyncio.create_task(Scheduler(client, args.scheduling).run(), name="scheduler")]
    manager = _controllers(client)
    if manager is not None:
        tasks.append(asyncio.create_task(manager, name="controllers"))
    if node is not None:
        tasks.append(asyncio.create_task(node.run(), name="node-agent"))
    print(f"hypernetes is up: {url}\n  export KUBECONFIG={kubeconfig}\n  kubectl get nodes",
          file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not waiter and task.exception() is not None:
            log.error("%s failed: %r", task.get_name(), task.exception())
            code = 1
    print("hypernetes: stopping", file=sys.stderr, flush=True)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if node is not None:
        await node.shutdown(stop_pods=args.stop_pods)
    await client.close()
    await runner.cleanup()
    await store.close()
    waiter.cancel()
    return code

