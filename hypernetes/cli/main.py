"""`hypernetes` command line: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from hypernetes import __version__
from hypernetes.cli import image, kernel, login, node, run, tenant, token, up, user

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypernetes",
        description="Multi-tenant, Kubernetes-compatible container platform: every pod is a micro-VM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    up.register(sub)
    run.register(sub)
    image.register(sub)
    kernel.register(sub)
    tenant.register(sub)
    user.register(sub)
    login.register(sub)
    token.register(sub)
    node.register(sub)
    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(handler=lambda _args: print(f"hypernetes {__version__}") or 0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
