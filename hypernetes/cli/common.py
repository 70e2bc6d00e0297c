"""Options and objects shared by sub-commands: data dir, image store, kernels, runtimes, and how
the long-running ones stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hypernetes.asyncwait import cancel_and_wait
from hypernetes.runtime.paths import PRIVATE_DIR, PRIVATE_FILE, default_data_dir, private_dir

if TYPE_CHECKING:
    from hypernetes.runtime.images import ImageStore
    from hypernetes.runtime.kernels import KernelRegistry


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where images, kernels and sandboxes live (default: {default_data_dir()})",
    )
    parser.add_argument(
        "--registry-auth",
        type=Path,
        default=None,
        metavar="FILE",
        help='docker-style auth file (config.json with "auths") for registry credentials',
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="allow plain HTTP to this registry (loopback registries always are); repeatable",
    )


# What under a data dir holds tenant data or credentials. Whoever makes these makes them owner-only;
# a data dir written by an older version (0755 dirs, 0644 files) is tightened on every start.
PRIVATE_DIRS = ("runtime", "runtime/hypervm", "images", "volumes", "pki")
PRIVATE_FILES = ("state.db", "state.db-wal", "state.db-shm", "admin.kubeconfig")
PRIVATE_GLOBS = (
    "audit*.log*",
    "runtime/hypervm/*/state.json",
    "runtime/hypervm/*/volumes.erofs",
    "runtime/hypervm/*/logs/*",
)


def data_dir(args: argparse.Namespace) -> Path:
    """The data dir, made (or tightened to) 0700: no other local user may reach a tenant's data."""
    path = private_dir(args.data_dir or default_data_dir())
    for name in PRIVATE_DIRS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path / name, PRIVATE_DIR)
    for sandbox in path.glob("runtime/hypervm/*/"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(sandbox, PRIVATE_DIR)
    for file in [*(path / n for n in PRIVATE_FILES), *(p for g in PRIVATE_GLOBS for p in path.glob(g))]:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, PRIVATE_FILE)
    return path


def image_store(args: argparse.Namespace) -> ImageStore:
    from hypernetes.runtime.images import ImageStore, RegistryAuth

    auth = RegistryAuth.from_docker_config(args.registry_auth) if args.registry_auth else None
    # private images are tenant data: the store's dir is owner-only
    return ImageStore(
        private_dir(data_dir(args) / "images"),
        insecure_registries=args.insecure_registry,
        auth=auth,
        tenant_policy=getattr(args, "registry_policy", None),
    )


def kernel_registry(args: argparse.Namespace) -> KernelRegistry:
    from hypernetes.runtime.kernels import KernelRegistry
    from hypernetes.runtime.paths import agent_binary

    return KernelRegistry(data_dir(args) / "kernels", agent_binary())


def fail(message: str, code: int = 1) -> int:
    print(f"hypernetes: {message}", file=sys.stderr)
    return code


async def run_until_stopped(tasks: list[asyncio.Task[None]], log: logging.Logger) -> int:
    """Wait for SIGINT/SIGTERM or for one of `tasks` to end, then cancel them all; 1 if a task
    failed (logged), else 0. The long-running commands (`up`, `node join`) stop this way."""
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
    await cancel_and_wait([*tasks, waiter])
    return code
