"""`hypernetes tenant create|update|ls|rm|quota`: Tenant objects (hypernetes.io/v1), for operators.

Everything here is a plain API call; quota checks, usage and the deletion of a tenant's namespaces
and users belong to the API server's admission and the tenant controller.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from hypernetes.cli.login import (
    MERGE_PATCH,
    TABLE,
    CliError,
    Cluster,
    add_kubeconfig,
    connect,
    print_table,
    run,
    split_pairs,
)
from hypernetes.objects import Obj
from hypernetes.objects.names import TENANT_LABEL

TENANTS = "/apis/hypernetes.io/v1/tenants"
QUOTA_EXAMPLE = "pods=10,vcpus=8,memory=16Gi,namespaces=5"
QUOTA_HELP = (
    "also storage, persistentvolumeclaims, services.nodeports and object counts such as "
    "count/secrets, count/deployments.apps, count/networks.hypernetes.io"
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "tenant",
        help="manage tenants (operators)",
        description="Create, list, remove tenants and set their quotas.",
    )
    tsub = parser.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create",
        help="create a tenant",
        description="Create a tenant. Every quota it is not given gets the "
        "server's default for new tenants; the quota is printed.",
    )
    update = tsub.add_parser(
        "update",
        help="change a tenant's quota or policy",
        description="Change a tenant's display name, quota or allowed lists.",
    )
    for p in (create, update):
        p.add_argument("name")
        p.add_argument("--display-name", help="a human-readable name")
        p.add_argument(
            "--quota",
            action="append",
            default=[],
            metavar="K=V,...",
            help=f"hard limits across the tenant's namespaces, e.g. {QUOTA_EXAMPLE} ({QUOTA_HELP})",
        )
        p.add_argument(
            "--allow-runtime-class",
            action="append",
            metavar="CLASS",
            help="a runtime class its pods may use (repeatable; default: any)",
        )
        p.add_argument(
            "--allow-kernel",
            action="append",
            metavar="KERNEL",
            help="a guest kernel its pods may pick besides the default (repeatable; default: any)",
        )
        p.add_argument(
            "--allow-registry",
            action="append",
            metavar="HOST[:PORT]",
            help="a registry its pods' images may come from (repeatable; default: any the cluster allows)",
        )
    for what in ("runtime-class", "kernel", "registry"):
        update.add_argument(
            f"--any-{what}", action="store_true", help=f"drop the {what} allow-list (any allowed again)"
        )
    ls = tsub.add_parser("ls", help="list tenants", description="List tenants with their usage.")
    rm = tsub.add_parser(
        "rm",
        help="delete a tenant, its namespaces and users",
        description="Delete a tenant. Its namespaces (with everything in them, pod "
        "VMs included) and its users are deleted too. Asks for confirmation unless "
        "--yes is given.",
    )
    rm.add_argument("name")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    quota = tsub.add_parser(
        "quota",
        help="show or change a tenant's quota",
        description="Show a tenant's quota and usage, or change it.",
    )
    quota.add_argument("name")
    quota.add_argument(
        "--set", action="append", default=[], metavar="K=V,...", help=f"set limits, e.g. {QUOTA_EXAMPLE}"
    )
    quota.add_argument(
        "--unset", action="append", default=[], metavar="K,...", help="remove limits (unlimited again)"
    )
    for p in (create, update, ls, rm, quota):
        add_kubeconfig(p)
        p.set_defaults(handler=lambda a: run(_handle, a))


def _handle(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig)
    actions = {"create": _create, "update": _update, "ls": _ls, "rm": _rm, "quota": _quota}
    return actions[args.tenant_command](cluster, args)


ALLOW_FLAGS = (
    ("allow_runtime_class", "allowedRuntimeClasses"),
    ("allow_kernel", "allowedKernels"),
    ("allow_registry", "allowedRegistries"),
)


def _spec(args: argparse.Namespace) -> Obj:
    """The spec fields the flags set."""
    spec: Obj = {}
    if args.display_name:
        spec["displayName"] = args.display_name
    quota = split_pairs(args.quota, "--quota")
    if quota:
        spec["quota"] = quota
    for flag, field in ALLOW_FLAGS:
        if getattr(args, flag):
            spec[field] = getattr(args, flag)
    return spec


def _create(cluster: Cluster, args: argparse.Namespace) -> int:
    tenant = cluster.call(
        "POST",
        TENANTS,
        {
            "apiVersion": "hypernetes.io/v1",
            "kind": "Tenant",
            "metadata": {"name": args.name},
            "spec": _spec(args),
        },
    )
    print(f'tenant "{args.name}" created')
    _print_quota(args.name, tenant)
    return 0


def _update(cluster: Cluster, args: argparse.Namespace) -> int:
    spec = _spec(args)
    for flag, field in ALLOW_FLAGS:
        any_flag = flag.replace("allow_", "any_")
        if getattr(args, any_flag):
            if field in spec:
                raise CliError(f"--{flag} and --{any_flag} contradict each other".replace("_", "-"))
            spec[field] = None  # a merge patch's null removes the list
    if not spec:
        raise CliError("nothing to change: give --quota, --display-name or an --allow-/--any- flag")
    tenant = cluster.call("PATCH", f"{TENANTS}/{quote(args.name)}", {"spec": spec}, content_type=MERGE_PATCH)
    print(f'tenant "{args.name}" updated')
    _print_quota(args.name, tenant)
    return 0


def _ls(cluster: Cluster, args: argparse.Namespace) -> int:
    print_table(cluster.call("GET", TENANTS, accept=TABLE), ["Name", "Phase", "Namespaces", "Pods", "Memory"])
    return 0


def _rm(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.call("GET", f"{TENANTS}/{quote(args.name)}")  # a missing tenant fails before any question
    namespaces = (
        cluster.call(
            "GET", "/api/v1/namespaces", params={"labelSelector": f"{TENANT_LABEL}={args.name}"}
        ).get("items")
        or []
    )
    names = sorted(str((ns.get("metadata") or {}).get("name")) for ns in namespaces)
    if names:
        plural = "s" if len(names) > 1 else ""
        print(
            f'Deleting tenant "{args.name}" also deletes its {len(names)} namespace{plural} '
            f"({', '.join(names)}) with everything in them, pod VMs included, and all its users.",
            file=sys.stderr,
        )
    else:
        print(
            f'Deleting tenant "{args.name}" also deletes all its users (it owns no namespaces).',
            file=sys.stderr,
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("not deleting without confirmation: give --yes (stdin is not a terminal)")
        print(f"Type the tenant's name ({args.name}) to confirm: ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip() != args.name:
            raise CliError("not confirmed; nothing deleted")
    cluster.call("DELETE", f"{TENANTS}/{quote(args.name)}")
    print(f'tenant "{args.name}" deleted (its namespaces and users are being removed)')
    return 0


def _quota(cluster: Cluster, args: argparse.Namespace) -> int:
    url = f"{TENANTS}/{quote(args.name)}"
    changes: dict[str, str | None] = dict(split_pairs(args.set, "--set"))
    for chunk in args.unset:
        changes.update({k.strip(): None for k in chunk.split(",") if k.strip()})
    if changes:
        tenant = cluster.call("PATCH", url, {"spec": {"quota": changes}}, content_type=MERGE_PATCH)
    else:
        tenant = cluster.call("GET", url)
    _print_quota(args.name, tenant)
    return 0


def _print_quota(name: str, tenant: Obj) -> None:
    """Each limit with its use (the tenant controller's count; `-` until it has counted)."""
    limits = (tenant.get("spec") or {}).get("quota") or {}
    used = (tenant.get("status") or {}).get("used") or {}
    keys = sorted(set(limits) | set(used))
    if not keys:
        print(f'tenant "{name}" has no quota (unlimited)')
        return
    width = max(len(k) for k in keys)
    print(f"{'RESOURCE':<{max(width, 8)}}   {'USED':<10} LIMIT")
    for k in keys:
        print(f"{k:<{max(width, 8)}}   {used.get(k, '-'):<10} {limits.get(k, 'unlimited')}")
