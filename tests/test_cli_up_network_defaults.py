"""`hypernetes up`'s network defaults, exercised as they are: no --network-netns (the host's own
namespace), networks on as root, management subnets read from the host.

These read the host namespace and build nothing in it; tests/test_readme.py runs the whole
default path end to end.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess

import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.cli.main import build_parser
from hypernetes.cli.nodehost import node_networks
from hypernetes.network.netns import local_subnets, run_in_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tenant networks are on by default only as root")


def _host_subnets() -> set[str]:
    """The host's IPv4 subnets as iproute2 sees them (not loopback)."""
    out = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True).stdout)
    return {
        str(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network)
        for link in out
        if link["ifname"] != "lo" and not link["ifname"].startswith("hn-")
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    }


async def test_host_namespace_netlink_works_inside_the_event_loop() -> None:
    # pyroute2's synchronous IPRoute raised "This event loop is already running" here (issue 11)
    assert set(local_subnets(None, "hn")) == _host_subnets()
    assert run_in_netns(None, lambda: asyncio.get_event_loop_policy() is not None)


async def test_up_defaults_build_networks_on_the_host_with_its_subnets_as_management() -> None:
    args = build_parser().parse_args(["up"])
    assert args.network_netns is None and not args.no_network and args.network_management is None
    client = ApiClient("https://127.0.0.1:1", token="unused")
    try:
        networks = node_networks(args, client, "node-a")
    finally:
        await client.close()
    assert networks is not None, "tenant networks must be on by default as root"
    assert networks.host.host_netns is None
    assert networks.host.prefix == "hn"
    assert set(networks.host.management) == _host_subnets()
