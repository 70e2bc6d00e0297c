"""Options and objects shared by sub-commands: data dir, image store, kernels, runtimes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hypernetes.runtime.paths import default_data_dir

if TYPE_CHECKING:
    from hypernetes.runtime.images import ImageStore
    from hypernetes.runtime.kernels import KernelRegistry


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"where images, kernels and sandboxes live (default: {default_data_dir()})",
    )
    parser.add_argument(
        "--registry-auth", type=Path, default=None, metavar="FILE",
        help="docker-style auth file (config.json with \"auths\") for registry credentials",
    )
    parser.add_argument(
        "--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
        help="allow plain HTTP to this registry (loopback registries always are); repeatable",
    )


def data_dir(args: argparse.Namespace) -> Path:
    path: Path = args.data_dir or default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_store(args: argparse.Namespace) -> ImageStore:
    from hypernetes.runtime.images import ImageStore, RegistryAuth

    auth = RegistryAuth.from_docker_config(args.registry_auth) if args.registry_auth else None
    return ImageStore(data_dir(args) / "images", insecure_registries=args.insecure_registry, auth=auth)


def kernel_registry(args: argparse.Namespace) -> KernelRegistry:
    from hypernetes.runtime.kernels import KernelRegistry
    from hypernetes.runtime.paths import agent_binary

    return KernelRegistry(data_dir(args) / "kernels", agent_binary())


def fail(message: str, code: int = 1) -> int:
    print(f"hypernetes: {message}", file=sys.stderr)
    return code
