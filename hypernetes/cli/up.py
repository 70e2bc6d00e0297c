"""`hypernetes up`: a whole single-host cluster in the foreground (see `cli/cluster.py`).

Only argument parsing lives here, so that other sub-commands do not pay for importing the API
server.
"""

from __future__ import annotations

import argparse
from typing import Any

from hypernetes.cli.common import add_data_dir, fail
from hypernetes.cli.controlplaneflags import add_controller_options, resolve_controller_options
from hypernetes.cli.observability import add_log_options, add_node_pressure_options
from hypernetes.cli.storeflags import add_store_options, resolve_store

BIN_PACKING, SPREADING = "binpack", "spread"  # hypernetes.scheduler.placement's strategy names


def register(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="run a whole single-host cluster in the foreground",
        description="Run the API server, scheduler, controllers and a node agent in one process; "
        "writes DATA/admin.kubeconfig. Ctrl-C stops it; running again on the same data dir continues.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the API server listens on")
    p.add_argument("--port", type=int, default=6443, help="API server port (default 6443; 0: any free one)")
    p.add_argument(
        "--tls-san",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another name or address of the API server in its certificate, as nodes and clients "
        "on other hosts reach it (repeatable)",
    )
    add_store_options(p)
    p.add_argument("--scheduling", choices=(BIN_PACKING, SPREADING), default=BIN_PACKING)
    p.add_argument("--no-node", action="store_true", help="control plane only, no node agent")
    add_controller_options(p)
    p.add_argument(
        "--keystone-url",
        default=None,
        metavar="URL",
        help="check tenant users' passwords and tokens against this OpenStack Keystone "
        "(v3 API); the Keystone project is the tenant (default: built-in users)",
    )
    p.add_argument(
        "--keystone-role-map",
        default=None,
        metavar="KS=ROLE,...",
        help="Keystone role names to admin|member|viewer (default: admin=admin,member=member,"
        "_member_=member,reader=viewer)",
    )
    p.add_argument(
        "--keystone-cache-ttl",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a Keystone answer is trusted (default 60)",
    )
    p.add_argument(
        "--audit-log",
        default=None,
        metavar="FILE",
        help="audit log of every mutating request and every exec, attach and port-forward, "
        "operators' and nodes' here, each tenant's in FILE's directory as "
        "audit-tenant-NAME.log (default: DATA/audit.log)",
    )
    add_node_options(p)
    _add_api_limits(p)
    add_data_dir(p)
    add_log_options(p)
    p.set_defaults(handler=handle)


def add_node_options(p: argparse.ArgumentParser) -> None:
    """What a host's node agent runs with: `up` and `node join` take the same."""
    add_node_pressure_options(p)
    p.add_argument("--node-name", default=None, help="this node's name (default: hostname)")
    p.add_argument("--runtime", choices=("hypervm", "gvisor"), default="hypervm")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--stop-pods", action="store_true", help="stop pod VMs when exiting")
    p.add_argument("--no-templates", action="store_true", help="boot every pod VM cold (no template VMs)")
    p.add_argument(
        "--template-scope",
        choices=("namespace", "node"),
        default="namespace",
        help="whose pods a template VM serves: one namespace's (default) or the whole node's",
    )
    p.add_argument(
        "--no-network",
        action="store_true",
        help="no tenant networks: pod VMs get no network interface (default: on when root)",
    )
    p.add_argument(
        "--network-prefix",
        default="hn",
        metavar="NAME",
        help="names of this host's router namespaces and links: NAME-<id> (default hn)",
    )
    p.add_argument(
        "--network-netns",
        default=None,
        metavar="NETNS",
        help="build tenant networks against this network namespace instead of the host's "
        "own (for tests and trials)",
    )
    p.add_argument(
        "--network-management",
        action="append",
        default=None,
        metavar="CIDR",
        help="a network pods must never reach, even with egress on (repeatable; default: "
        "the subnets of the host's own interfaces)",
    )
    p.add_argument(
        "--network-underlay-ip",
        default=None,
        metavar="ADDRESS",
        help="this node's address for tenant networks' VXLAN between nodes, published on its Node "
        "(default: its InternalIP, i.e. --node-ip)",
    )
    p.add_argument(
        "--network-mtu",
        type=int,
        default=None,
        metavar="BYTES",
        help="MTU of tenant bridges, taps and pod interfaces (default: the underlay link's, less 50 "
        "for VXLAN)",
    )
    p.add_argument(
        "--allow-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        type=_allow_entry,
        help="let pods pull from this registry even though it is on loopback, link-local or a "
        "management network, which are refused by default (repeatable; HOST alone: any port)",
    )


def _add_api_limits(p: argparse.ArgumentParser) -> None:
    """Per-tenant fairness and connection limits of the API server (docs/api.md)."""
    g = p.add_argument_group("API fairness and connection limits")
    g.add_argument(
        "--tenant-concurrency",
        type=int,
        default=2,
        metavar="N",
        help="tenant requests executing at once, shared fairly among tenants (default 2)",
    )
    g.add_argument(
        "--system-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="requests of operators, node agents and controllers executing at once (default 16)",
    )
    g.add_argument(
        "--max-watches-per-tenant",
        type=int,
        default=100,
        metavar="N",
        help="open watches per tenant, or per user outside tenants (default 100)",
    )
    g.add_argument(
        "--max-streams-per-tenant",
        type=int,
        default=50,
        metavar="N",
        help="open exec/attach/port-forward/followed logs per tenant (default 50)",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest a non-streaming request may take (default 60)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=0,
        metavar="N",
        help="open connections (default: the open-file limit minus 1024, at most 20000)",
    )
    g.add_argument(
        "--max-connections-per-address",
        type=int,
        default=1000,
        metavar="N",
        help="open connections from one client address (default 1000)",
    )


def api_limits(args: argparse.Namespace) -> tuple[Any, Any]:
    """(FairnessConfig, ConnectionLimits) from the flags."""
    from hypernetes.api.connections import ConnectionLimits
    from hypernetes.api.fairness import FairnessConfig

    fairness = FairnessConfig(
        workload_seats=args.tenant_concurrency,
        system_seats=args.system_concurrency,
        max_watches=args.max_watches_per_tenant,
        max_long_running=args.max_streams_per_tenant,
        request_timeout=args.request_timeout,
    )
    return fairness, ConnectionLimits(
        max_connections=args.max_connections, max_per_source=args.max_connections_per_address
    )


def _allow_entry(text: str) -> str:
    from hypernetes.runtime.images.policy import parse_allow_entry

    try:
        return str(parse_allow_entry(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def handle(args: argparse.Namespace) -> int:
    from hypernetes.cli.cluster import handle as run_cluster

    if (error := resolve_store(args)) is not None:  # --store and --etcd-*, before anything starts
        return fail(error, 2)
    if (error := resolve_controller_options(args)) is not None:  # leader election, node lifecycle
        return fail(error, 2)
    return run_cluster(args)
