"""`hypernetes user create|ls|rm|passwd|revoke`: users of the built-in identity backend, for
operators and tenant admins (and `passwd` for a user itself).

Passwords never travel on the command line (where `ps` and shell history would show them): they
are typed twice on the terminal, or piped in with --password-stdin.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from hypernetes.auth.identity import MASTERS, ROLES
from hypernetes.cli.login import (
    TABLE,
    CliError,
    RequestFailed,
    add_kubeconfig,
    ask_password,
    connect,
    print_table,
    read_stdin_lines,
    run,
    whoami,
)
from hypernetes.objects import Obj
from hypernetes.objects.names import ROLE_EXTRA

USERS = "/apis/hypernetes.io/v1/users"
IDENTITY = "/hypernetes/v1/users"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "user",
        help="manage tenant users",
        description="Create, list and remove users, set passwords, revoke tokens.",
    )
    usub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    create = usub.add_parser(
        "create",
        help="create a user and set its password",
        description="Create a user of TENANT with ROLE, then set its password "
        "(asked twice on the terminal, or the first line of stdin).",
    )
    create.add_argument("name")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="admin: also the tenant's namespaces and users; member: reads and writes "
        "workloads; viewer: reads",
    )
    create.add_argument("--display-name", help="a human-readable name")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ls = usub.add_parser("ls", help="list users", description="List users (a tenant admin sees its own).")
    ls.add_argument("--tenant", help="only this tenant's users")
    rm = usub.add_parser("rm", help="delete a user", description="Delete a user; its tokens stop working.")
    rm.add_argument("name")
    passwd = usub.add_parser(
        "passwd",
        help="set a user's password (revokes its tokens)",
        description="Set a user's password; every token it had stops working. Operators and the tenant's "
        "admin set it outright; a user changing its own password gives the current one too (with "
        "--password-stdin: the current password on the first line, the new one on the second).",
    )
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password(s) from stdin")
    revoke = usub.add_parser(
        "revoke",
        help="revoke every token of a user",
        description="Every token the user holds stops working; the password stays.",
    )
    revoke.add_argument("name")
    for p in (create, ls, rm, passwd, revoke):
        add_kubeconfig(p)
        p.set_defaults(handler=lambda a: run(_handle, a))


def _handle(args: argparse.Namespace) -> int:
    actions = {"create": _create, "ls": _ls, "rm": _rm, "passwd": _passwd, "revoke": _revoke}
    return actions[args.user_command](args)


def _new_password(args: argparse.Namespace, user: str) -> str:
    if args.password_stdin:
        return read_stdin_lines(1)[0]
    return ask_password(f"New password for user {user}: ", confirm=True)


def _create(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig)
    password = _new_password(args, args.name)  # before anything is created: no half-made user
    spec: Obj = {"tenant": args.tenant, "role": args.role}
    if args.display_name:
        spec["displayName"] = args.display_name
    cluster.call(
        "POST",
        USERS,
        {"apiVersion": "hypernetes.io/v1", "kind": "User", "metadata": {"name": args.name}, "spec": spec},
    )
    try:
        cluster.call("PUT", f"{IDENTITY}/{quote(args.name)}/password", {"password": password})
    except RequestFailed as e:
        # a user without a password cannot log in and only confuses: take it back
        try:
            cluster.call("DELETE", f"{USERS}/{quote(args.name)}")
        except RequestFailed as undo:
            raise CliError(
                f"setting the password failed ({e}), and so did deleting the new user "
                f'"{args.name}" ({undo}): delete it with `hypernetes user rm {args.name}`'
            ) from None
        raise CliError(f'user "{args.name}" not created: {e}') from None
    print(f'user "{args.name}" created in tenant "{args.tenant}" with role {args.role}')
    return 0


def _ls(args: argparse.Namespace) -> int:
    table = connect(args.kubeconfig).call("GET", USERS, accept=TABLE)
    print_table(
        table, ["Name", "Tenant", "Role", "Disabled"], keep={"Tenant": args.tenant} if args.tenant else None
    )
    return 0


def _rm(args: argparse.Namespace) -> int:
    connect(args.kubeconfig).call("DELETE", f"{USERS}/{quote(args.name)}")
    print(f'user "{args.name}" deleted; its tokens no longer work')
    return 0


def _passwd(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig)
    me = whoami(cluster)
    role = ((me.get("extra") or {}).get(ROLE_EXTRA) or [""])[0]
    # only a user changing its own password proves it knows the current one (the server checks)
    own = me.get("username") == args.name and MASTERS not in (me.get("groups") or []) and role != "admin"
    body: Obj = {}
    if own and args.password_stdin:
        body["currentPassword"], body["password"] = read_stdin_lines(2)
    elif own:
        body["currentPassword"] = ask_password(f"Current password of user {args.name}: ")
        body["password"] = _new_password(args, args.name)
    else:
        body["password"] = _new_password(args, args.name)
    answer = cluster.call("PUT", f"{IDENTITY}/{quote(args.name)}/password", body)
    print(answer.get("message") or f'password of user "{args.name}" set')
    if own:
        print("your earlier tokens are revoked: log in again", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    answer = connect(args.kubeconfig).call("POST", f"{IDENTITY}/{quote(args.name)}/revoke", {})
    print(answer.get("message") or f'every token of user "{args.name}" is revoked')
    return 0
