"""`hypernetes kernel ls|register|rm`: guest kernels a pod can choose (bring-your-own-kernel)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hypernetes.cli.common import add_data_dir, fail, kernel_registry


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "kernel",
        help="manage guest kernels",
        description="List, register and remove guest kernels on this node.",
    )
    ksub = parser.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    ls = ksub.add_parser("ls", help="list registered kernels", description="List guest kernels.")
    reg = ksub.add_parser(
        "register",
        help="register a kernel",
        description="Register a kernel image (bzImage or PVH vmlinux); with "
        "--modules, the modules it needs are put into its initrd.",
    )
    reg.add_argument("name")
    reg.add_argument("image", type=Path)
    reg.add_argument("--modules", type=Path, help="the kernel's /lib/modules/VERSION directory")
    reg.add_argument("--config", type=Path, help="the kernel's config (default: /boot/config-VERSION)")
    reg.add_argument("--cmdline", default="", help="extra kernel arguments for this kernel")
    rm = ksub.add_parser("rm", help="unregister a kernel", description="Unregister a kernel.")
    rm.add_argument("name")
    for p in (ls, reg, rm):
        add_data_dir(p)
        p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from hypernetes.runtime.kernels import KernelError

    registry = kernel_registry(args)
    try:
        if args.kernel_command == "ls":
            for k in registry.list():
                print(f"{k.name:<20} {k.version or '-':<28} acpi={'on' if k.acpi else 'off'} {k.image}")
        elif args.kernel_command == "register":
            k = registry.register(
                args.name, args.image, modules_dir=args.modules, config=args.config, cmdline=args.cmdline
            )
            print(f"registered {k.name} ({k.version or 'unknown version'})")
        else:
            registry.unregister(args.name)
            print(f"removed {args.name}")
    except (KernelError, ValueError, OSError) as e:
        return fail(str(e))
    return 0
