"""The cluster `hypernetes up` runs: a whole single-host cluster in one process.

API server (HTTPS, cluster CA made on first start), scheduler, controllers and this host's node
agent, on the embedded SQLite store under the data dir. Writes DATA/admin.kubeconfig. Stops on
SIGINT/SIGTERM; pod VMs keep running and are adopted by the next `up` on the same dir unless
--stop-pods is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from hypernetes.api.audit import AuditLog
from hypernetes.api.authn import Authenticator
from hypernetes.api.join import NodeJoin
from hypernetes.api.nodeclient import NodeStreams, RemotePods, client_ssl
from hypernetes.api.server import bound_port, create_app, serve
from hypernetes.api.subresources import LogOptions, PodProxyError, StreamIO
from hypernetes.api.tenancy import Tenancy, build_tenancy
from hypernetes.apiclient import ApiClient
from hypernetes.auth.ca import ClusterCA, ensure_ca, write_kubeconfig
from hypernetes.auth.nodecerts import ensure_apiserver_client
from hypernetes.cli.common import data_dir, fail, run_until_stopped
from hypernetes.cli.nodehost import node_networks, registry_policy
from hypernetes.cli.observability import configure_logging, node_pressure
from hypernetes.cli.run import make_runtime
from hypernetes.cli.up import api_limits
from hypernetes.leaderelection import (
    CONTROLLER_MANAGER_LEASE,
    SCHEDULER_LEASE,
    ElectionTiming,
    LeaderElector,
)
from hypernetes.node.agent import NodeAgent
from hypernetes.node.proxy import NodePodProxy
from hypernetes.node.stats import NodeStats
from hypernetes.objects import Obj
from hypernetes.runtime.interface import PodRuntimeError
from hypernetes.scheduler.loop import Scheduler
from hypernetes.store import open_store
from hypernetes.store.interface import Store, StoreError
from hypernetes.volumes import LocalVolumes

log = logging.getLogger("hypernetes.up")


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

    async def port_forward(self, pod: Obj, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await self.inner.port_forward(pod, port)
        except PodRuntimeError as e:
            raise PodProxyError(str(e)) from e


Work = Callable[[], Awaitable[None]]


def _controllers(client: ApiClient, root_ca: str, args: argparse.Namespace) -> Work | None:
    """Makes the controller manager and runs it (a fresh one for each term as leader), once the
    controllers room provides it."""
    try:
        from hypernetes import controllers
    except ImportError:
        return None
    manager = getattr(controllers, "ControllerManager", None)
    if manager is None:
        return None
    lifecycle = getattr(args, "node_lifecycle", None)
    return lambda: manager(client, root_ca=root_ca, node_lifecycle=lifecycle).run()


async def _elected(client: ApiClient, timing: ElectionTiming | None, lease: str, work: Work) -> None:
    """`work` while this host holds the Lease (every control-plane host campaigns), or at once
    with --no-leader-elect."""
    if timing is None:
        await work()
    else:
        await LeaderElector(client, lease, timing=timing).run(work)


def _identity(args: argparse.Namespace, ca: ClusterCA, store: Store) -> tuple[Tenancy, Authenticator, Any]:
    """Who may call: the admin token, the cluster's signed tokens (built-in users, service accounts,
    nodes), and Keystone's when configured (then tenant users log in through Keystone)."""
    keystone = None
    if args.keystone_url:
        from hypernetes.auth.keystone import KeystoneBackend

        role_map = (
            dict(pair.split("=", 1) for pair in args.keystone_role_map.split(","))
            if args.keystone_role_map
            else None
        )
        keystone = KeystoneBackend(args.keystone_url, role_map=role_map, cache_ttl=args.keystone_cache_ttl)
    tenancy, authenticator = build_tenancy(store, ca.dir, ca.admin_token, external=keystone)
    return tenancy, authenticator, keystone


def handle(args: argparse.Namespace) -> int:
    configure_logging(args)  # --log-format (cli/observability.py)
    try:
        return asyncio.run(_up(args))
    except (OSError, StoreError) as e:  # StoreError: e.g. no etcd member answers
        return fail(str(e))


async def _up(args: argparse.Namespace) -> int:
    data = data_dir(args)
    hosts = ["127.0.0.1", "localhost", socket.gethostname(), *args.tls_san]
    if args.host not in ("0.0.0.0", "::"):
        hosts.append(args.host)
    ca = ensure_ca(data / "pki", hosts=hosts)
    store = open_store(args.store or f"sqlite:///{data / 'state.db'}")
    if not args.no_node:
        args.registry_policy = registry_policy(args)  # read by image_store(): pulls for tenants
    runtime = make_runtime(args) if not args.no_node else None
    tenancy, authenticator, keystone = _identity(args, ca, store)
    audit = AuditLog(Path(args.audit_log) if args.audit_log else data / "audit.log")
    limits = api_limits(args)  # per-tenant fairness, connection caps (cli/up.py flags)
    url = f"https://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    client = ApiClient(url, token=ca.admin_token, ca_file=ca.ca_cert)
    node_name = args.node_name or NodeAgent.default_name()
    node_client = None
    node = None
    if runtime is not None:
        # the node agent runs with a node identity (NodeRestriction), not as an operator
        node_client = ApiClient(url, token=tenancy.issuer.issue_node(node_name).token, ca_file=ca.ca_cert)
        node = NodeAgent(
            node_client,
            runtime,
            node_name,
            volumes=LocalVolumes(data / "volumes"),
            networks=node_networks(args, node_client, node_name),
            pressure=node_pressure(args, runtime),
        )
    # pods of this host's node agent in process; those of joined nodes through their servers
    streams = NodeStreams(
        RemotePods(store, client_ssl(ca.ca_cert, *ensure_apiserver_client(ca))),
        local=ProxyAdapter(NodePodProxy(node.runtime, node.networks)) if node is not None else None,
        local_node=node_name,
        local_stats=NodeStats(node.runtime, node_name).summary if node is not None else None,
    )
    app = create_app(
        store,
        authenticator=authenticator,
        authorizer=tenancy.authorizer,
        pod_proxy=streams,
        node_join=NodeJoin(store, tenancy.issuer, ca),
        tenancy=tenancy,
        audit=audit,
        fairness=limits[0],
    )
    if node is not None:
        await node.adopt()  # surviving VMs are known before `kubectl exec` can ask for them
    runner = await serve(app, args.host, args.port, ca.server, limits[1])
    if args.port == 0:  # any free port (tests): the kubeconfig and our own clients get the one bound
        url = f"{url.rsplit(':', 1)[0]}:{bound_port(runner)}"
        for c in (client, node_client):
            if c is not None:
                c.server = url
    kubeconfig = data / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, url, ca.ca_cert, ca.admin_token)
    timing = getattr(args, "election", ElectionTiming())  # set by up's flags (--leader-elect-*)
    scheduler = _elected(client, timing, SCHEDULER_LEASE, lambda: Scheduler(client, args.scheduling).run())
    tasks = [asyncio.create_task(scheduler, name="scheduler")]
    manager = _controllers(client, ca.ca_cert.read_text(), args)
    if manager is not None:
        elected = _elected(client, timing, CONTROLLER_MANAGER_LEASE, manager)
        tasks.append(asyncio.create_task(elected, name="controllers"))
    if node is not None:
        tasks.append(asyncio.create_task(node.run(), name="node-agent"))
    print(
        f"hypernetes is up: {url}\n  export KUBECONFIG={kubeconfig}\n  kubectl get nodes",
        file=sys.stderr,
        flush=True,
    )

    code = await run_until_stopped(tasks, log)
    if node is not None:
        await node.shutdown(stop_pods=args.stop_pods)
    if node_client is not None:
        await node_client.close()
    if keystone is not None:
        await keystone.close()
    await client.close()
    await runner.cleanup()
    await streams.remote.close()
    await store.close()
    return code
