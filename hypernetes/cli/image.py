"""`hypernetes image pull|import|ls|rm`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hypernetes.cli.common import add_data_dir, fail, image_store


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "image", help="manage images", description="Pull, import, list and remove images."
    )
    isub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    pull = isub.add_parser(
        "pull",
        help="pull an image from a registry",
        description="Pull an image (OCI distribution API) and build its disk.",
    )
    pull.add_argument("ref", help="image reference, e.g. 127.0.0.1:5000/busybox:1")
    imp = isub.add_parser(
        "import",
        help="import an OCI layout/archive or `docker save` tarball",
        description="Import an OCI image layout (dir or tar) or a docker save archive. "
        "Imported images have no registry to ask whether a pod may pull them: every "
        "tenant's pods on this node may use them by name.",
    )
    imp.add_argument("file", type=Path)
    ls = isub.add_parser("ls", help="list images", description="List local images.")
    ls.add_argument("-q", "--quiet", action="store_true", help="only print image ids")
    rm = isub.add_parser("rm", help="remove an image", description="Remove a local image and its disk.")
    rm.add_argument("refs", nargs="+", metavar="REF")
    for p in (pull, imp, ls, rm):
        add_data_dir(p)
        p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from hypernetes.runtime.images import ImageError, terminal_progress

    store = image_store(args)
    try:
        if args.image_command == "pull":
            image = store.pull(args.ref, progress=terminal_progress())
            print(image.digest)
        elif args.image_command == "import":
            for image in store.import_archive(args.file, progress=terminal_progress()):
                print(f"{', '.join(image.refs) or '<none>'} {image.id}")
        elif args.image_command == "ls":
            images = store.list()
            if args.quiet:
                for image in images:
                    print(image.id)
                return 0
            print(f"{'REFERENCE':<50} {'IMAGE ID':<19} {'SIZE':>10}")
            for image in images:
                short = image.id.split(":")[-1][:12]
                for ref in image.refs or ("<none>",):
                    print(f"{ref:<50} {short:<19} {image.size / 1e6:>8.1f}MB")
        else:
            for ref in args.refs:
                store.remove(ref)
                print(f"removed {ref}")
    except ImageError as e:
        return fail(str(e))
    return 0
