"""The node side of a host, shared by `hypernetes up` and `hypernetes node join`: its tenant
networks and the registries its agent may pull from for tenants."""

from __future__ import annotations

import argparse
import logging
import os
import shutil

from hypernetes.apiclient import ApiClient
from hypernetes.network import TenantNetworkHost
from hypernetes.network.dns import DnsServer
from hypernetes.network.ingress import IngressProxy
from hypernetes.network.netns import local_subnets
from hypernetes.node.network import PodNetworks
from hypernetes.runtime.images import RegistryPolicy

log = logging.getLogger("hypernetes.node")


def node_networks(args: argparse.Namespace, client: ApiClient, node_name: str) -> PodNetworks | None:
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
    return PodNetworks(
        client,
        host,
        node_name,
        dns=DnsServer(),
        mtu=args.network_mtu,
        underlay=args.network_underlay_ip,
        ingress=IngressProxy(args.network_netns),
    )


def registry_policy(args: argparse.Namespace) -> RegistryPolicy:
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
