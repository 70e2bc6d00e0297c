"""Options of long-running commands for what an operator watches: the log format, and the
thresholds at which a node reports memory, disk and PID pressure (docs/operations.md)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypernetes.node.conditions import NodePressure, Threshold
    from hypernetes.runtime.interface import Runtime


def add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as logfmt key=value text or as JSON objects, with pod, namespace, tenant "
        "and sandbox fields where they apply (default text)",
    )


def configure_logging(args: argparse.Namespace) -> None:
    from hypernetes.logfmt import configure

    configure(args.log_format, logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)


def add_metrics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-bind-address",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve this process's Prometheus metrics at http://HOST:PORT/metrics, plain HTTP "
        "without authentication as kube-proxy's: a loopback or management address (default: off)",
    )


async def serve_metrics(args: argparse.Namespace) -> Any:
    """The metrics listener of --metrics-bind-address (an aiohttp runner), or None."""
    if args.metrics_bind_address is None:
        return None
    from hypernetes.metrics import serve

    return await serve(*args.metrics_bind_address)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: HOST:PORT, e.g. 127.0.0.1:10249 ([::1]:10249 for IPv6)")
    return host.strip("[]"), int(port)


def add_node_pressure_options(p: argparse.ArgumentParser) -> None:
    from hypernetes.node.conditions import DEFAULT_EVICTION_HARD, DEFAULT_TRANSITION_PERIOD

    p.add_argument(
        "--eviction-hard",
        type=_thresholds,
        default=None,
        metavar="SIGNAL<QUANTITY,...",
        help="when the node reports MemoryPressure, DiskPressure or PIDPressure (and is tainted "
        "so no pod is scheduled to it), in kubelet's syntax; replaces the whole default set "
        f"(default {DEFAULT_EVICTION_HARD.replace('%', '%%')})",
    )
    p.add_argument(
        "--eviction-pressure-transition-period",
        type=float,
        default=DEFAULT_TRANSITION_PERIOD,
        metavar="SECONDS",
        help="how long a pressure condition stays on after its threshold was last met (default 300)",
    )


def _thresholds(text: str) -> tuple[Threshold, ...]:
    from hypernetes.node.conditions import parse_thresholds

    try:
        return parse_thresholds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def node_pressure(args: argparse.Namespace, runtime: Runtime) -> NodePressure:
    """The runtime's default measuring (hypernetes.node.agent) with the thresholds of the flags."""
    from hypernetes.node.agent import default_pressure

    pressure = default_pressure(runtime)
    if args.eviction_hard is not None:
        pressure.thresholds = args.eviction_hard
    pressure.transition_period = args.eviction_pressure_transition_period
    return pressure
