"""A scheduler or controller manager as its own process, under leader election, for failover
tests that SIGKILL the leader (a crash no in-process cancellation can stand for).

    python -m tests.support.elected --server URL --token T --ca FILE --identity cm-a \
        --component controller-manager --controllers replicaset,job --lease-duration 3 ...

The identity is also the client's User-Agent, so every object the process writes names it in
managedFields (the test tells from that who acted).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from hypernetes.apiclient import ApiClient
from hypernetes.controllers import ControllerManager
from hypernetes.leaderelection import ElectionTiming, LeaderElector
from hypernetes.scheduler.loop import Scheduler


async def main(args: argparse.Namespace) -> None:
    client = ApiClient(args.server, token=args.token, ca_file=args.ca, user_agent=f"{args.identity}/test")
    work: Callable[[], Awaitable[None]]
    if args.component == "scheduler":

        def work() -> Awaitable[None]:
            return Scheduler(client).run()

    else:

        def work() -> Awaitable[None]:
            manager = ControllerManager(client, args.controllers.split(","))
            if "job" in manager.controllers:
                manager["job"].backoff_base = 0.2  # type: ignore[attr-defined]
            return manager.run()

    timing = ElectionTiming(args.lease_duration, args.renew_deadline, args.retry_period)
    elector = LeaderElector(client, args.lease, identity=args.identity, timing=timing)
    await elector.run(work)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag in ("--server", "--token", "--ca", "--identity", "--lease"):
        p.add_argument(flag, required=True)
    p.add_argument("--component", choices=("scheduler", "controller-manager"), required=True)
    p.add_argument("--controllers", default="replicaset,job")
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(p.parse_args()))
