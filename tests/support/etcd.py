"""Real etcd for tests (Debian's `etcd-server`): one member, or three on loopback for faults.

etcd takes its ports as URL flags, so the kernel cannot pick them at bind time: each member gets
two ports the kernel handed out a moment before (bind to port 0, read it, close), and if another
process takes one in between, etcd fails to listen and the cluster is started again on fresh
ports. Every member runs in its own process group in a temp dir and is always killed on stop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
_START_TRIES = 5


def have_etcd() -> bool:
    return os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel just handed out (all held open together, so distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class EtcdTLS:
    """A CA, the members' serving certificate (for 127.0.0.1) and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def query(self) -> str:
        return f"cacert={self.ca}&cert={self.client_cert}&key={self.client_key}"

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_tls(directory: Path) -> EtcdTLS:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def issue(
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey,
        usage: list[x509.ObjectIdentifier] | None,
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if usage is None:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False).add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        c, k = directory / f"{name}.crt", directory / f"{name}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        k.chmod(0o600)
        return c, k

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("etcd-test-ca", ca_key, None, ca_key, None)
    ca_path, _ = write("ca", ca, ca_key)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    srv = issue(
        "etcd",
        srv_key,
        ca.subject,
        ca_key,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cli = issue("apiserver", cli_key, ca.subject, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    return EtcdTLS(ca_path, *write("server", srv, srv_key), *write("client", cli, cli_key))


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    tls: EtcdTLS | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            ctx = self.tls.client_context() if self.tls else None
            with urllib.request.urlopen(self.client_url + "/health", timeout=1, context=ctx) as r:
                return bool(json.load(r).get("health") == "true")
        except (OSError, ValueError):
            return False


class EtcdStartError(RuntimeError):
    pass


@dataclass
class EtcdCluster:
    """`size` members on 127.0.0.1. Election timings are shortened (heartbeat 50 ms, election
    500 ms) so that a fault test sees a new leader within a second, as a LAN cluster would."""

    workdir: Path
    size: int = 1
    tls: EtcdTLS | None = None  # members serve clients over TLS and require client certificates
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        """`HOST:PORT,HOST:PORT`, as `--store etcd://` takes them."""
        return ",".join(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        if self.tls:
            return f"etcds://{self.endpoints}?{self.tls.query()}"
        return f"etcd://{self.endpoints}"

    def start(self, timeout: float = 90) -> EtcdCluster:
        last: Exception | None = None
        for attempt in range(_START_TRIES):
            try:
                self._start_once(attempt, timeout)
                return self
            except EtcdStartError as e:  # a port taken between our probe and etcd's bind
                last = e
                self.stop()
        raise EtcdStartError(f"etcd did not start after {_START_TRIES} tries: {last}")

    def _start_once(self, attempt: int, timeout: float) -> None:
        ports = _free_ports(2 * self.size)
        base = self.workdir / f"try{attempt}"
        self.members = [
            Member(f"m{i}", ports[2 * i], ports[2 * i + 1], base / f"m{i}", base / f"m{i}.log", self.tls)
            for i in range(self.size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.data_dir.mkdir(parents=True, mode=0o700)
            self._spawn(m, initial, "new")
        deadline = time.monotonic() + timeout
        while not all(m.healthy() for m in self.members):
            for m in self.members:
                if not m.running:
                    raise EtcdStartError(f"member {m.name} exited: {self.log_tail(m)}")
            if time.monotonic() > deadline:
                raise EtcdStartError(f"not healthy within {timeout}s: {self.log_tail(self.members[0])}")
            time.sleep(0.1)

    def _spawn(self, m: Member, initial: str, state: str) -> None:
        # setpriv: the member gets SIGKILL when its parent dies, so none outlives a killed test run
        # (a preexec_fn would run Python in the child of a threaded process: unsafe)
        args = [
            *(["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []),
            ETCD,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token=test-{os.getpid()}-{id(self)}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if m.tls:
            args += [
                f"--cert-file={m.tls.server_cert}",
                f"--key-file={m.tls.server_key}",
                f"--trusted-ca-file={m.tls.ca}",
                "--client-cert-auth",
            ]
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, m: Member, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(m.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    # -- faults -------------------------------------------------------------------------------

    def status(self, m: Member) -> dict[str, object]:
        """`etcdctl endpoint status` of one member: its id and the leader it knows."""
        out = subprocess.run(
            [
                ETCDCTL,
                f"--endpoints={m.client_url}",
                "--command-timeout=2s",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        st: dict[str, object] = json.loads(out)[0]["Status"]
        return st

    def leader(self, timeout: float = 10) -> Member:
        """The member every running member agrees leads."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(subprocess.SubprocessError, KeyError, ValueError):
                ids = {}
                for m in self.members:
                    if m.running:
                        st = self.status(m)
                        ids[m.name] = (st["header"]["member_id"], st["leader"])  # type: ignore[index]
                leaders = {leader for _, leader in ids.values()}
                if len(leaders) == 1 and (lead := leaders.pop()) != 0:
                    for name, (mid, _) in ids.items():
                        if mid == lead:
                            return next(m for m in self.members if m.name == name)
            if time.monotonic() > deadline:
                raise TimeoutError("the etcd members agree on no leader")
            time.sleep(0.1)

    def kill(self, m: Member) -> None:
        """kill -9, as a crash or a power cut of that host."""
        if m.proc is not None and m.proc.poll() is None:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)

    def restart(self, m: Member, timeout: float = 90) -> None:
        """Start a killed member again on its data dir and ports."""
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        self._spawn(m, initial, "existing")
        deadline = time.monotonic() + timeout
        while not m.healthy():
            if not m.running or time.monotonic() > deadline:
                raise EtcdStartError(f"member {m.name} did not come back: {self.log_tail(m)}")
            time.sleep(0.1)

    def stop(self) -> None:
        for m in self.members:
            self.kill(m)


@contextlib.contextmanager
def etcd_cluster(workdir: Path, size: int = 1, tls: EtcdTLS | None = None) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(workdir, size, tls)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


_shared: EtcdCluster | None = None


def shared_etcd(request: pytest.FixtureRequest) -> EtcdCluster:
    """The run's one single-member etcd, started on first use and stopped when pytest ends.
    Users isolate themselves by key prefix (each store gets its own); the revision counter and
    compaction are shared, as between the tenants of a real cluster."""
    global _shared
    if _shared is None:
        if not have_etcd():
            pytest.skip("etcd is not installed (Debian's etcd-server and etcd-client)")
        workdir = request.getfixturevalue("tmp_path_factory").mktemp("etcd")
        cluster = EtcdCluster(workdir).start()
        request.config.add_cleanup(cluster.stop)
        _shared = cluster
    return _shared


@pytest.fixture(name="etcd")
def etcd_fixture(request: pytest.FixtureRequest) -> EtcdCluster:
    """The shared etcd, for modules that import this fixture."""
    return shared_etcd(request)
