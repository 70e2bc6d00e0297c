"""`hypernetes node join`: make this host a node of a cluster that runs elsewhere.

Runs in the foreground (systemd-friendly; SIGTERM stops it). In order:
1. the cluster CA is fetched from the server over an unverified connection and kept only if it
   hashes to the join token's pin (nothing secret is sent before that);
2. the bootstrap part of the token is exchanged for this node's own credential: a node token
   (NodeRestriction holds it to this node's objects) and the certificate of this node's server,
   signed from a key made here; both are renewed at 80% of their life with the node's own token
   (DATA/pki/node.token, so a restart does not need the join token again);
3. the node agent (runtime, volumes, tenant networks) runs against the remote API, and this
   node's server (node/server.py, port 10250) serves the API servers' log, exec and
   port-forward streams.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hypernetes.cli.common import add_data_dir, data_dir, fail, run_until_stopped
from hypernetes.cli.observability import (
    add_log_options,
    add_metrics_options,
    configure_logging,
    serve_metrics,
)
from hypernetes.cli.up import add_node_options

log = logging.getLogger("hypernetes.node")
RENEW_AT = 0.8  # of a credential's life, as the kubelet rotates its certificates


def register(sub: Any) -> None:
    p = sub.add_parser("node", help="this host as a node of a cluster", description="This host as a node.")
    nsub = p.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    join = nsub.add_parser(
        "join",
        help="join a cluster and run this host's node agent in the foreground",
        description="Join the cluster at SERVER with a token from `hypernetes token create`, then run "
        "this host's node agent and node server until stopped.",
    )
    join.add_argument("server", metavar="SERVER", help="the API server, https://HOST:PORT")
    join.add_argument("--token", required=True, help="the join token (HN10…::id.secret)")
    join.add_argument(
        "--node-ip",
        default=None,
        help="the address the API servers reach this node at (default: the one it reaches the server from)",
    )
    join.add_argument("--node-port", type=int, default=10250, help="this node's server port (default 10250)")
    join.add_argument(
        "--node-listen", default=None, help="the address this node's server listens on (default: --node-ip)"
    )
    add_node_options(join)
    add_data_dir(join)
    add_log_options(join)
    add_metrics_options(join)
    join.set_defaults(handler=handle_join)


class JoinFailed(Exception):
    pass


@dataclass
class Credential:
    token: str
    expires: float  # unix time
    issued: float


def _source_address(server: str) -> str:
    """The local address this host reaches the server from (no packet is sent)."""
    parts = urlsplit(server)
    family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((parts.hostname or "", parts.port or 443))
        return str(s.getsockname()[0])


async def fetch_ca(server: str, pin: str) -> bytes:
    """The cluster CA from the server, if it hashes to `pin`; the connection is not verified (we
    have no CA yet): the pin is what makes it trustworthy."""
    import aiohttp

    from hypernetes.auth.jointoken import ca_hash

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server}/cacerts", ssl=False, timeout=aiohttp.ClientTimeout(total=30)) as resp,
        ):
            pem = await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise JoinFailed(f"cannot reach {server}: {e}") from None
    try:
        got = ca_hash(pem)
    except ValueError:
        raise JoinFailed(f"{server}/cacerts did not answer with a CA certificate") from None
    if got != pin:
        raise JoinFailed(
            f"the CA of {server} (sha256:{got}) is not the one the join token names (sha256:{pin}): "
            "refusing to join"
        )
    return pem


def _token_expiry(token: str) -> float:
    """The `exp` of our own JWT (read to schedule renewal; the server checks it, not us)."""
    try:
        body = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


class NodeIdentity:
    """This node's credential and server certificate under DATA/pki, obtained and renewed."""

    def __init__(self, server: str, pki: Path, name: str, address: str) -> None:
        self.server, self.pki, self.name, self.address = server, pki, name, address
        self.ca, self.cert, self.key = pki / "ca.crt", pki / "node.crt", pki / "node.key"
        self.token_file = pki / "node.token"
        self.credential: Credential | None = None

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    async def _post(self, path: str, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        headers = {"Authorization": f"Bearer {bearer}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{self.server}{path}",
                    json=body,
                    headers=headers,
                    ssl=self._ssl(),
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as resp,
            ):
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise JoinFailed(f"{resp.status}: {(answer or {}).get('message', resp.reason)}")
                return dict(answer)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise JoinFailed(f"cannot reach {self.server}: {e}") from None

    async def obtain(self, bootstrap: str | None) -> Credential:
        """Renew the saved credential if there is one; else join with the bootstrap token."""
        from hypernetes.auth.ca import write_private
        from hypernetes.auth.nodecerts import node_key_and_csr

        saved = self.token_file.read_text().strip() if self.token_file.exists() else ""
        csr = node_key_and_csr(self.key.with_suffix(".key.new"), self.name)
        body: dict[str, Any] = {"nodeName": self.name, "csr": csr, "addresses": [self.address]}
        answer: dict[str, Any] | None = None
        if saved and _token_expiry(saved) > time.time():
            try:
                answer = await self._post(f"/hypernetes/v1/nodes/{self.name}/credential", saved, body)
            except JoinFailed as e:
                if bootstrap is None:
                    raise
                log.warning("renewing the saved node credential failed (%s): joining again", e)
        if answer is None:
            if bootstrap is None:
                raise JoinFailed("no valid node credential is saved: a join token is needed")
            answer = await self._post("/hypernetes/v1/nodes/join", bootstrap, body)
        token, cert = answer.get("token"), answer.get("certificate")
        if not isinstance(token, str) or not isinstance(cert, str):
            raise JoinFailed("the server's answer has no token or certificate")
        self.key.with_suffix(".key.new").replace(self.key)
        write_private(self.cert, cert.encode(), 0o644)
        write_private(self.token_file, token.encode() + b"\n", 0o600)
        self.credential = Credential(token, _token_expiry(token), time.time())
        return self.credential

    def renew_in(self) -> float:
        c = self.credential
        assert c is not None
        return max(c.issued + (c.expires - c.issued) * RENEW_AT - time.time(), 5.0)


def handle_join(args: argparse.Namespace) -> int:
    from hypernetes.auth.jointoken import BadJoinToken, parse

    configure_logging(args)  # --log-format (cli/observability.py)

    try:
        token = parse(args.token)
    except BadJoinToken as e:
        return fail(str(e))
    server = args.server.rstrip("/")
    if urlsplit(server).scheme != "https":
        return fail("the server is an https:// URL")
    try:
        return asyncio.run(_join(args, server, token.ca_hash, token.bootstrap))
    except JoinFailed as e:
        return fail(f"join failed: {e}")
    except OSError as e:
        return fail(str(e))


async def _join(args: argparse.Namespace, server: str, pin: str, bootstrap: str) -> int:
    from hypernetes.apiclient import ApiClient
    from hypernetes.auth.ca import write_private
    from hypernetes.cli.nodehost import node_networks, registry_policy
    from hypernetes.cli.run import make_runtime
    from hypernetes.node.agent import NodeAgent
    from hypernetes.node.proxy import NodePodProxy
    from hypernetes.node.server import NodeServer, server_ssl
    from hypernetes.runtime.paths import private_dir
    from hypernetes.volumes import LocalVolumes

    data = data_dir(args)
    pki = private_dir(data / "pki")
    name = args.node_name or NodeAgent.default_name()
    address = args.node_ip or _source_address(server)
    write_private(pki / "ca.crt", await fetch_ca(server, pin), 0o644)
    identity = NodeIdentity(server, pki, name, address)
    credential = await identity.obtain(bootstrap)
    client = ApiClient(server, token=credential.token, ca_file=identity.ca)
    args.registry_policy = registry_policy(args)
    runtime = make_runtime(args)
    agent = NodeAgent(
        client,
        runtime,
        name,
        volumes=LocalVolumes(data / "volumes"),
        networks=node_networks(args, client, name),
        address=address,
        server_port=args.node_port,
    )
    await agent.adopt()
    tls = server_ssl(identity.cert, identity.key, identity.ca)
    runner = await NodeServer(NodePodProxy(runtime, agent.networks), name).start(
        args.node_listen or address, args.node_port, tls
    )
    metrics = await serve_metrics(args)  # --metrics-bind-address: no API server in this process

    async def rotate() -> None:
        while True:
            await asyncio.sleep(identity.renew_in())
            try:
                renewed = await identity.obtain(None)
            except JoinFailed as e:
                log.error("renewing this node's credential failed: %s (retrying in a minute)", e)
                await asyncio.sleep(60)
                continue
            client.set_token(renewed.token)
            tls.load_cert_chain(str(identity.cert), str(identity.key))  # new handshakes use it
            log.info("node credential renewed, valid until %s", time.ctime(renewed.expires))

    tasks = [
        asyncio.create_task(agent.run(), name="node-agent"),
        asyncio.create_task(rotate(), name="rotate"),
    ]
    print(
        f"hypernetes node {name} joined {server}; serving pod streams on {address}:{args.node_port}",
        file=sys.stderr,
        flush=True,
    )
    code = await run_until_stopped(tasks, log)
    await agent.shutdown(stop_pods=args.stop_pods)
    await runner.cleanup()
    if metrics is not None:
        await metrics.cleanup()
    await client.close()
    return code
