"""The state store flags of `hypernetes up`: `--store` and, for etcd, kube-apiserver's `--etcd-*`.

The flags are folded into the store URL (store/etcdconfig.py), so the URL alone names everything
and `open_store` stays the one way in.
"""

from __future__ import annotations

import argparse
import urllib.parse

from hypernetes.store.interface import StoreError

# flag dest -> the etcd URL parameter it sets
_ETCD_PARAMS = {
    "etcd_cafile": "cacert",
    "etcd_certfile": "cert",
    "etcd_keyfile": "key",
    "etcd_prefix": "prefix",
    "etcd_compaction_interval": "compaction-interval",
}


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="state store: sqlite:///PATH (default: sqlite:///DATA/state.db), or an etcd v3 "
        "cluster, etcd://HOST:PORT[,HOST:PORT...] or etcds://... for TLS (docs/cluster.md)",
    )
    g = p.add_argument_group("etcd store (with --store etcd:// or etcds://)")
    g.add_argument(
        "--etcd-cafile", metavar="FILE", help="CA bundle that signed the etcd members' certificates"
    )
    g.add_argument(
        "--etcd-certfile", metavar="FILE", help="client certificate for etcd (with --etcd-keyfile)"
    )
    g.add_argument("--etcd-keyfile", metavar="FILE", help="client key for etcd")
    g.add_argument(
        "--etcd-prefix",
        metavar="PATH",
        help="root under which every key lives, to share one etcd between clusters (default: none; "
        "API objects at /registry/..., as kube-apiserver lays them out)",
    )
    g.add_argument(
        "--etcd-compaction-interval",
        metavar="SECONDS",
        help="seconds between compactions of etcd's history, coordinated between API servers "
        "as kube-apiserver does (default 300; 0: never)",
    )


def resolve_store(args: argparse.Namespace) -> str | None:
    """Fold the --etcd-* flags into args.store and check the URL; the error, or None."""
    given = {param: getattr(args, dest) for dest, param in _ETCD_PARAMS.items() if getattr(args, dest, None)}
    url: str | None = args.store
    if url is None or not url.startswith(("etcd://", "etcds://")):
        if given:
            return "the --etcd-* flags need --store etcd://... or etcds://..."
        return None
    if given:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(given, safe="/")
    from hypernetes.store.etcdconfig import parse_etcd_url

    try:
        parse_etcd_url(url)
    except StoreError as e:
        return str(e)
    args.store = url
    return None
