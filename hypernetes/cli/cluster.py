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
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hypernetes.api.audit import AuditLog
from hypernetes.api.authn import Authenticator
from hypernetes.api.server import bound_port, create_app, serve
from hypernetes.api.subresources import LogOptions, PodProxyError, StreamIO
from hypernetes.api.tenancy import Tenancy, build_tenancy
from hypernetes.apiclient import ApiClient
from hypernetes.asyncwait import cancel_and_wait
from hypernetes.auth.ca import ClusterCA, ensure_ca, write_kubeconfig
from hypernetes.cli.common import data_dir, fail
from hypernetes.cli.run import make_runtime
from hypernetes.cli.up import api_limits
from hypernetes.network import TenantNetworkHost
from hypernetes.network.dns import DnsServer
from hypernetes.network.netns import local_subnets
from hypernetes.node.agent import NodeAgent
from hypernetes.node.network import PodNetworks
from hypernetes.node.proxy import NodePodProxy
from hypernetes.objects import Obj
from hypernetes.runtime.images import RegistryPolicy
from hypernetes.runtime.interface import PodRuntimeError
from hypernetes.scheduler.loop import Scheduler
from hypernetes.store import open_store
from hypernetes.store.interface import Store
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


def _controllers(client: ApiClient, root_ca: str) -> Any:
    """The controller manager's run() coroutine, once the controllers room provides it."""
    try:
        from hypernetes import controllers
    except ImportError:
        return None
    manager = getattr(controllers, "ControllerManager", None)
    return None if manager is None else manager(client, root_ca=root_ca).run()


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


def _networks(args: argparse.Namespace, client: ApiClient, node_name: str) -> PodNetworks | None:
    """This node's tenant networks, unless disabled or impossible here (they need root, nft and
    a VM runtime: gVisor sandboxes take no tap)."""
    if args.no_network:
        return None
    missing = [
        why
        for bad, why in (
            (os.geteuid() != 0, "root"),
            (shutil.which("nft") is None, "nft"),
            (not os.path.exists("/dev/net/tun"), "/dev/net/tun"),
            (args.runtime != "hypervm", "the hypervm runtime"),
        )
        if bad
    ]
    if missing:
        log.warning("tenant networks are off (they need %s): pods get no network", ", ".join(missing))
        return None
    management = args.network_management or local_subnets(args.network_netns, args.network_prefix)
    host = TenantNetworkHost(args.network_netns, args.network_prefix, management=management)
    log.info(
        "tenant networks: prefix %s, pods never reach %s",
        args.network_prefix,
        ", ".join(management) or "no management network",
    )
    return PodNetworks(client, host, node_name, dns=DnsServer(), mtu=args.network_mtu)


def _registry_policy(args: argparse.Namespace) -> RegistryPolicy:
    """What the node agent may pull from for tenants: not loopback, link-local or the management
    networks (those given, and the subnets of this host's own interfaces, where the agent pulls
    from), except the registries the operator allows."""
    management = list(args.network_management or [])
    # no try: without the host's subnets the policy would fail open
    management += [n for n in local_subnets(None, args.network_prefix) if n not in management]
    log.info(
        "registries: pods never pull from loopback, link-local or %s%s",
        ", ".join(management) or "(no management network)",
        f"; allowed: {', '.join(args.allow_registry)}" if args.allow_registry else "",
    )
    return RegistryPolicy(allow=args.allow_registry, management=management)


def handle(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("hypernetes").setLevel(logging.INFO)
        logging.getLogger().handlers[0].setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
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
    if not args.no_node:
        args.registry_policy = _registry_policy(args)  # read by image_store(): pulls for tenants
    runtime = make_runtime(args) if not args.no_node else None
    proxy = ProxyAdapter(NodePodProxy(runtime)) if runtime is not None else None
    tenancy, authenticator, keystone = _identity(args, ca, store)
    audit = AuditLog(Path(args.audit_log) if args.audit_log else data / "audit.log")
    limits = api_limits(args)  # per-tenant fairness, connection caps (cli/up.py flags)
    app = create_app(
        store,
        authenticator=authenticator,
        authorizer=tenancy.authorizer,
        pod_proxy=proxy,
        tenancy=tenancy,
        audit=audit,
        fairness=limits[0],
    )
    url = f"https://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    client = ApiClient(url, token=ca.admin_token, ca_file=ca.ca_cert)
    node_client = None
    node = None
    if runtime is not None:
        # the node agent runs with a node identity (NodeRestriction), not as an operator
        node_name = args.node_name or NodeAgent.default_name()
        node_client = ApiClient(url, token=tenancy.issuer.issue_node(node_name).token, ca_file=ca.ca_cert)
        node = NodeAgent(
            node_client,
            runtime,
            node_name,
            volumes=LocalVolumes(data / "volumes"),
            networks=_networks(args, node_client, node_name),
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
    tasks = [asyncio.create_task(Scheduler(client, args.scheduling).run(), name="scheduler")]
    manager = _controllers(client, ca.ca_cert.read_text())
    if manager is not None:
        tasks.append(asyncio.create_task(manager, name="controllers"))
    if node is not None:
        tasks.append(asyncio.create_task(node.run(), name="node-agent"))
    print(
        f"hypernetes is up: {url}\n  export KUBECONFIG={kubeconfig}\n  kubectl get nodes",
        file=sys.stderr,
        flush=True,
    )

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
    await cancel_and_wait(tasks)
    if node is not None:
        await node.shutdown(stop_pods=args.stop_pods)
    if node_client is not None:
        await node_client.close()
    if keystone is not None:
        await keystone.close()
    await client.close()
    await runner.cleanup()
    await store.close()
    waiter.cancel()
    return code
