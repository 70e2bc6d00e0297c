"""`hypernetes token create`: a join token for new nodes (operators, on a control-plane host)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
from typing import Any

from hypernetes.cli.common import add_data_dir, data_dir, fail

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration(text: str) -> dt.timedelta | None:
    """`24h`, `90m`, `1h30m`, `45s`; `0`: never expires (as kubeadm's --ttl)."""
    if text == "0":
        return None
    m = _DURATION.match(text)
    if not text or m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 24h, 30m or 0 (never)")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="join tokens for new nodes", description="Join tokens for new nodes.")
    tsub = p.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = tsub.add_parser(
        "create",
        help="print a new join token",
        description="Create a join token and print it: `hypernetes node join https://SERVER:6443 "
        "--token TOKEN` on a new host makes it a node. The token names the cluster CA by its hash, "
        "so the new host trusts no other server. Stored as a bootstrap-token Secret in kube-system.",
    )
    create.add_argument(
        "--ttl",
        type=duration,
        default=dt.timedelta(hours=24),
        help="lifetime (default 24h; 0: never expires)",
    )
    create.add_argument("--description", default="", help="why the token exists (kept on its Secret)")
    add_data_dir(create)
    create.set_defaults(handler=handle_create)


def handle_create(args: argparse.Namespace) -> int:
    from hypernetes.apiclient import ApiClient, ApiException
    from hypernetes.auth import jointoken

    data = data_dir(args)
    kubeconfig, ca = data / "admin.kubeconfig", data / "pki" / "ca.crt"
    if not kubeconfig.exists() or not ca.exists():
        return fail(
            f"no cluster in {data}: run this on a control-plane host (hypernetes up) or give --data-dir"
        )
    token = jointoken.new_token(ca.read_bytes())

    async def create() -> None:
        async with ApiClient.from_kubeconfig(kubeconfig) as client:
            secret = jointoken.bootstrap_secret(token, args.ttl, args.description)
            await client.create("v1", "secrets", secret, jointoken.NAMESPACE)

    try:
        asyncio.run(create())
    except (ApiException, OSError) as e:
        return fail(f"cannot create the token: {e}")
    print(token)
    return 0
