"""Many hosts on one machine: each host is a network namespace with its own address on an
underlay bridge the test makes, its own data dir and its own processes; nothing is shared
between hosts but the network.

The underlay is a bridge in a namespace of its own. The test's own namespace (where kubectl, the
test registry and the test code run) is wired to it too, as `gateway`: hosts reach the test's
loopback-only services through `expose()`, a TCP relay on the gateway address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hypernetes.network.netns import list_netns
from tests.support.guests import qemu_processes_under
from tests.support.netns import sh
from tests.support.waiting import wait_for

HYPERNETES = [str(Path(sys.executable).with_name("hypernetes"))]


@dataclass
class Host:
    name: str  # its network namespace
    address: str
    data: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """`hypernetes ARGS` in this host's namespace, in its own process group, logging to DATA/LOG."""
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.data / log, "ab") as out:
            # nsenter, not `ip netns exec`: that one gives the process a mount namespace of its own,
            # where the router namespaces a node agent makes (bind mounts in /run/netns) stay
            # hidden from everyone else and die with the agent (a restarted agent made new ones)
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.name}", "--", *HYPERNETES, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*cmd, netns=self.name, check=check)

    def kill(self, sig: int = signal.SIGKILL, *, vms: bool = True) -> None:
        """Every process this host started and the pod VMs under its data dir, as a host dies
        (VMs are in sessions of their own: they outlive an agent that stops, by design); with
        vms=False only the processes, as when an agent dies and its VMs run on."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        for pid in qemu_processes_under(self.data) if vms else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        self.procs.clear()

    def log(self, name: str) -> str:
        path = self.data / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class Relay:
    """TCP relay from the gateway address to a service on the test's loopback, in a thread."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.listen, self.target = listen, target
        self.port = 0
        self._main: asyncio.Task[None] | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the relay to {target} did not start")

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        await asyncio.gather(self._pipe(r, tw), self._pipe(tr, w))

    async def _serve(self, ready: threading.Event) -> None:
        server = await asyncio.start_server(self._handle, self.listen, 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await server.serve_forever()

    def _run(self, ready: threading.Event) -> None:
        self._main = self.loop.create_task(self._serve(ready))
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self._main)
        self.loop.close()

    def close(self) -> None:
        if self._main is not None:
            self.loop.call_soon_threadsafe(self._main.cancel)
        self.thread.join(10)


class Hosts:
    """The underlay and the hosts on it; close() removes every namespace and stops every process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = "h" + secrets.token_hex(2)
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.underlay = f"{self.prefix}xul"
        self.hosts: list[Host] = []
        self.relays: list[Relay] = []
        sh("ip", "netns", "add", self.underlay)
        sh("ip", "link", "add", "br0", "type", "bridge", netns=self.underlay)
        sh("ip", "link", "set", "br0", "up", netns=self.underlay)
        self.gateway = f"{self.subnet}.254"
        # the test's own namespace on the underlay
        self._gw_if = f"{self.prefix}gw"
        sh("ip", "link", "add", self._gw_if, "type", "veth", "peer", "name", "gw", "netns", self.underlay)
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self._gw_if)
        sh("ip", "link", "set", self._gw_if, "up")
        self._plug("gw")

    def _plug(self, ifname: str) -> None:
        sh("ip", "link", "set", ifname, "master", "br0", netns=self.underlay)
        sh("ip", "link", "set", ifname, "up", netns=self.underlay)

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        host = Host(f"{self.prefix}x{name}", f"{self.subnet}.{index}", self.root / name)
        sh("ip", "netns", "add", host.name)
        self.hosts.append(host)
        sh("ip", "link", "set", "lo", "up", netns=host.name)
        port = f"p{index}"
        sh(
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.underlay,
            netns=host.name,
        )
        sh("ip", "addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.name)
        sh("ip", "link", "set", "eth0", "up", netns=host.name)
        self._plug(port)
        return host

    def expose(self, port: int) -> str:
        """`gateway:PORT'` reaching 127.0.0.1:`port` of the test's namespace."""
        relay = Relay(self.gateway, ("127.0.0.1", port))
        self.relays.append(relay)
        return f"{self.gateway}:{relay.port}"

    def close(self) -> None:
        for host in self.hosts:
            host.kill()
        for relay in self.relays:
            relay.close()
        # the hosts, and what their node agents made (router namespaces are named after the host)
        for name in list_netns():
            if name.startswith(self.prefix) and name != self.underlay:
                sh("ip", "netns", "delete", name, check=False)
        sh("ip", "link", "delete", self._gw_if, check=False)
        sh("ip", "netns", "delete", self.underlay, check=False)


@contextlib.contextmanager
def hosts(root: Path) -> Iterator[Hosts]:
    made = Hosts(root)
    try:
        yield made
    finally:
        made.close()


# -- control planes and nodes on those hosts -------------------------------------------------

KUBECTL = "kubectl"
API_PORT = 6443


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYPERNETES, *args], capture_output=True, text=True, timeout=120)


class ControlPlane:
    """`hypernetes up --no-node` on a host of its own, reached by its underlay address. `pki`: a
    copy of another control plane's (an API server that shares a store shares its CA and keys)."""

    def __init__(self, underlay: Hosts, *extra: str, name: str = "cp", pki: Path | None = None) -> None:
        self.host = underlay.add(name)
        if pki is not None:
            self.host.data.mkdir(parents=True, mode=0o700)
            shutil.copytree(pki, self.host.data / "pki")
        self.url = f"https://{self.host.address}:{API_PORT}"
        self.host.start(
            "up", "--no-node", "--host", self.host.address, "--port", str(API_PORT),
            "--data-dir", str(self.host.data), "--tls-san", self.host.address, *extra, log="up.log",
        )  # fmt: skip
        self.kubeconfig = self.host.data / "admin.kubeconfig"
        wait_for(self._ready, timeout=90, interval=0.5, what=f"the control plane: {self.host.log('up.log')}")

    def _ready(self) -> bool:
        return (
            self.kubeconfig.exists() and self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0
        )

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [KUBECTL, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True, input=input,
            timeout=120,
        )  # fmt: skip
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def token(self, *args: str) -> str:
        made = cli("token", "create", "--data-dir", str(self.host.data), *args)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        self.host.kill(sig)

    def audit(self) -> str:
        path = self.host.data / "audit.log"
        return path.read_text() if path.exists() else ""


def start_node(host: Host, cp: ControlPlane, token: str, *extra: str, network: bool = False) -> None:
    """`node join` in the background; with `network`, tenant networks on (router namespaces named
    after the host: namespace names are global on this one machine)."""
    name = host.name.rsplit("x", 1)[1]
    networking = ["--network-prefix", f"{host.name}n"] if network else ["--no-network"]
    host.start(
        "node", "join", cp.url, "--token", token, "--data-dir", str(host.data),
        "--node-name", name, *networking, *extra, log="node.log",
    )  # fmt: skip


def node_ready(cp: ControlPlane, name: str) -> bool:
    got = cp.kubectl("get", "node", name, "-o", "json", check=False)
    if got.returncode != 0:
        return False
    conditions = json.loads(got.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def port_forwarded(cp: ControlPlane, pod: str, path: str) -> str:
    """GET `path` from the pod's port 8080 through `kubectl port-forward` (API server → node)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [KUBECTL, f"--kubeconfig={cp.kubeconfig}", "port-forward", f"pod/{pod}", f"{port}:8080"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as forward:
        try:
            assert forward.stdout is not None and "Forwarding from" in forward.stdout.readline()
            return httpx.get(f"http://127.0.0.1:{port}{path.removeprefix('/etc')}", timeout=30).text
        finally:
            forward.terminate()
