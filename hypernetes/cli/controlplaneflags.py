"""`hypernetes up` flags of the scheduler and the controller manager: leader election and node
lifecycle, under upstream's names and defaults (kube-scheduler, kube-controller-manager, and
kube-apiserver's --default-*-toleration-seconds). Durations are seconds ("40", "40s", "5m")."""

from __future__ import annotations

import argparse
import re


def _seconds(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (seconds, or e.g. 40s, 5m)")
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)


def add_controller_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler and controller manager (docs/cluster.md)")
    g.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the scheduler and the controller manager only while this host holds their Lease "
        "(kube-system/kube-scheduler, kube-system/kube-controller-manager), so that of several "
        "control-plane hosts on one store one of each acts (default: on with etcd; off on SQLite, "
        "which only this process can use: nothing to elect, and no lease to wait out after a crash)",
    )
    for flag, default, text in (
        ("lease-duration", 15.0, "how long a standby waits after the leader's last renewal"),
        ("renew-deadline", 10.0, "how long the leader tries to renew before it stops acting"),
        ("retry-period", 2.0, "how often candidates try and the leader renews"),
    ):
        g.add_argument(
            f"--leader-elect-{flag}",
            type=_seconds,
            default=default,
            metavar="SECONDS",
            help=f"{text} (default {default:g})",
        )
    g.add_argument(
        "--node-monitor-grace-period",
        type=_seconds,
        default=40.0,
        metavar="SECONDS",
        help="a node whose Lease is not renewed this long is NotReady (Ready=Unknown) (default 40)",
    )
    for which, node in (("not-ready", "a not-ready"), ("unreachable", "an unreachable")):
        g.add_argument(
            f"--default-{which}-toleration-seconds",
            type=_seconds,
            default=300.0,
            metavar="SECONDS",
            help=f"pods on {node} node that do not tolerate it themselves are deleted (and "
            "recreated elsewhere by their controllers) this long after (default 300)",
        )


def resolve_controller_options(args: argparse.Namespace) -> str | None:
    """Set args.election (None: no leader election) and args.node_lifecycle; an error message
    if the flags do not fit together."""
    from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
    from hypernetes.leaderelection import ElectionTiming

    try:  # checked even when not electing: a bad flag is a mistake either way
        timing = ElectionTiming(
            args.leader_elect_lease_duration,
            args.leader_elect_renew_deadline,
            args.leader_elect_retry_period,
        )
    except ValueError as e:
        return f"--leader-elect-*: {e}"
    if args.leader_elect is None:  # (resolve_store has run: args.store is the final URL)
        args.leader_elect = bool(args.store) and args.store.startswith(("etcd://", "etcds://"))
    args.election = timing if args.leader_elect else None
    args.node_lifecycle = NodeLifecycleConfig(
        monitor_grace_period=args.node_monitor_grace_period,
        not_ready_toleration=args.default_not_ready_toleration_seconds,
        unreachable_toleration=args.default_unreachable_toleration_seconds,
    )
    return None
