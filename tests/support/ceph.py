"""A real Ceph 16 cluster for tests, from Debian's packages (ceph-mon, ceph-mgr, ceph-osd,
ceph-common): one monitor, one manager and three OSDs (BlueStore on sparse files), on 127.0.0.1
with its own fsid, ports and directory, as vstart.sh does it but without a source tree.

The monitor speaks msgr2 only, on a port the kernel handed out a moment before (a clash
restarts the whole cluster on a fresh port). CRUSH places replicas across OSDs, not hosts
(`osd crush chooseleaf type = 0`: all three OSDs are on this host), so a pool of size 3 is
healthy. Memory is kept small (64 MiB BlueStore caches). The pool `rbd` is made and initialised
for RBD, and the cephx user `client.hypernetes` may only touch that pool
(`profile rbd pool=rbd`), as an operator would give Hypernetes.

Every daemon runs in its own process group and is killed on stop; the directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CEPH = shutil.which("ceph") or "/usr/bin/ceph"
RBD = shutil.which("rbd") or "/usr/bin/rbd"
TOOLS = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool", "ceph", "rbd")
OSDS = 3
POOL = "rbd"
USER = "hypernetes"
_START_TRIES = 3


def have_ceph() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class CephCluster:
    root: Path
    # where the daemons listen: loopback, or the test hosts' gateway (tests/support/hosts.py),
    # since clients connect to every OSD at the address the OSD map gives (a relay cannot do)
    address: str = "127.0.0.1"
    fsid: str = field(default_factory=lambda: str(uuid.uuid4()))
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_in: float = 0.0  # seconds from nothing to a healthy cluster with the pool

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def admin_keyring(self) -> Path:
        return self.root / "client.admin.keyring"

    @property
    def monitors(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def pool(self) -> str:
        return POOL

    @property
    def user(self) -> str:
        return USER

    def user_key(self) -> str:
        """client.hypernetes's cephx key (for a Secret; tests only)."""
        return self.ceph("auth", "print-key", f"client.{USER}").strip()

    # -- running commands as client.admin ----------------------------------------------------

    def ceph(self, *args: str, timeout: float = 60) -> str:
        return self._run(CEPH, *args, timeout=timeout)

    def rbd(self, *args: str, timeout: float = 60) -> str:
        return self._run(RBD, *args, timeout=timeout)

    def _run(self, tool: str, *args: str, timeout: float) -> str:
        proc = subprocess.run(
            [tool, "-c", str(self.conf), "--keyring", str(self.admin_keyring), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(tool).name} {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def images(self) -> list[str]:
        return list(json.loads(self.rbd("ls", "--format", "json", POOL) or "[]"))

    # -- faults ---------------------------------------------------------------------------------

    def stop_mon(self) -> None:
        """A Ceph outage as clients see it: the only monitor is gone (SIGSTOP would leave TCP
        connects succeeding; killing it makes them fail fast, like a dead host)."""
        self._kill("mon.a")

    def start_mon(self) -> None:
        self._spawn("mon.a", "ceph-mon", "-i", "a")
        self._wait(lambda: self.ceph("-s", "--connect-timeout", "5", timeout=20), 60, "monitor back")

    def stop_osds(self) -> None:
        """Every OSD gone: clients' I/O cannot complete (the monitor still answers)."""
        for n in range(OSDS):
            self._kill(f"osd.{n}")

    def start_osds(self) -> None:
        for n in range(OSDS):
            self._spawn(f"osd.{n}", "ceph-osd", "-i", str(n))
        self._wait(self._osds_up, 90, "OSDs up")

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        for attempt in range(_START_TRIES):
            self.port = _free_port(self.address)
            try:
                self._bootstrap()
                break
            except Exception:
                self.stop()
                if attempt == _START_TRIES - 1:
                    raise
                shutil.rmtree(self.root, ignore_errors=True)
        self.started_in = time.monotonic() - t0

    def _bootstrap(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        self.conf.write_text(self._conf_text())
        mon_keyring = self.root / "mon.keyring"
        auth = shutil.which("ceph-authtool") or "ceph-authtool"
        self._tool(
            auth, "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"
        )
        self._tool(
            auth,
            "--create-keyring",
            str(self.admin_keyring),
            "--gen-key",
            "-n",
            "client.admin",
            *("--cap", "mon", "allow *", "--cap", "osd", "allow *"),
            *("--cap", "mgr", "allow *", "--cap", "mds", "allow *"),
        )
        self._tool(auth, str(mon_keyring), "--import-keyring", str(self.admin_keyring))
        monmap = self.root / "monmap"
        self._tool(
            "monmaptool",
            "--create",
            "--fsid",
            self.fsid,
            "--addv",
            "a",
            f"[v2:{self.address}:{self.port}]",
            str(monmap),
        )
        (self.root / "mon.a").mkdir()
        self._tool(
            "ceph-mon",
            "-c",
            str(self.conf),
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            str(monmap),
            "--keyring",
            str(mon_keyring),
        )
        self._spawn("mon.a", "ceph-mon", "-i", "a")
        self._wait(lambda: self.ceph("mon", "stat", "--connect-timeout", "5", timeout=20), 30, "monitor")
        # the manager: its keyring where `mgr data` says
        (self.root / "mgr.x").mkdir()
        self.ceph(
            "auth",
            "get-or-create",
            "mgr.x",
            *("mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"),
            "-o",
            str(self.root / "mgr.x" / "keyring"),
        )
        self._spawn("mgr.x", "ceph-mgr", "-i", "x")
        # OSDs: made one after another (each mkfs is mostly the CPU), started at once
        for n in range(OSDS):
            self._make_osd(n)
        for n in range(OSDS):
            self._spawn(f"osd.{n}", "ceph-osd", "-i", str(n))
        self._wait(self._osds_up, 90, "OSDs up")
        self.ceph("osd", "pool", "create", POOL, "8", "8", "replicated")
        self.ceph("osd", "pool", "set", POOL, "size", "3", "--yes-i-really-mean-it")
        self.ceph("osd", "pool", "application", "enable", POOL, "rbd")
        self.rbd("pool", "init", POOL, timeout=120)
        # the user Hypernetes gets: RBD on this pool only (the mgr profile lets `rbd` ask the
        # manager's rbd_support module, e.g. for trash purges)
        self.ceph(
            "auth",
            "get-or-create",
            f"client.{USER}",
            *("mon", "profile rbd", "osd", f"profile rbd pool={POOL}", "mgr", f"profile rbd pool={POOL}"),
        )

    def _make_osd(self, n: int) -> None:
        data = self.root / f"osd.{n}"
        data.mkdir()
        osd_uuid = str(uuid.uuid4())
        keyring = data / "keyring"
        self._tool(
            shutil.which("ceph-authtool") or "ceph-authtool",
            "--create-keyring",
            str(keyring),
            "--gen-key",
            "-n",
            f"osd.{n}",
        )
        secret = keyring.read_text().split("key = ", 1)[1].split()[0]
        new = data / "new.json"
        new.write_text(json.dumps({"cephx_secret": secret}))
        got = self.ceph("osd", "new", osd_uuid, "-i", str(new)).strip()
        new.unlink()
        if got != str(n):
            raise RuntimeError(f"ceph osd new gave id {got}, expected {n}")
        self._tool(
            "ceph-osd", "-c", str(self.conf), "-i", str(n), "--mkfs", "--osd-uuid", osd_uuid, timeout=120
        )

    def _osds_up(self) -> None:
        stat = json.loads(self.ceph("osd", "stat", "--format", "json"))
        stat = stat.get("osdmap", stat)
        if stat.get("num_up_osds") != OSDS or stat.get("num_in_osds") != OSDS:
            raise RuntimeError(f"OSDs: {stat}")

    def _conf_text(self) -> str:
        r = self.root
        return f"""[global]
fsid = {self.fsid}
mon host = [v2:{self.address}:{self.port}]
public addr = {self.address}
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {r}/run
admin socket = {r}/run/$name.asok
log file = {r}/log/$name.log
mon data = {r}/$name
mgr data = {r}/$name
osd data = {r}/$name
keyring = {r}/$name/keyring
crash dir = {r}/crash
osd crush chooseleaf type = 0
osd pool default size = 3
osd pool default min size = 2
osd pool default pg autoscale mode = off
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
auth allow insecure global id reclaim = false
mon osd down out interval = 3600

[mon]
mon cluster log file = {r}/log/cluster.log

[mgr]
mgr initial modules = rbd_support
mgr/devicehealth/enable_monitoring = false

[osd]
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 4294967296
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2
osd max backfills = 2
"""

    def _tool(self, *cmd: str, timeout: float = 60) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])}: {(proc.stderr + proc.stdout).strip()[-2000:]}")

    def _spawn(self, name: str, *cmd: str) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 (owned by the child)
        with log:
            self.procs[name] = subprocess.Popen(
                [*cmd, "-f", "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _wait(self, probe: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): see {self.root}/log")
            try:
                probe()
                return
            except Exception as e:  # retried until the deadline
                last = e
            time.sleep(0.5)
        raise RuntimeError(f"Ceph: {what} not ready in {timeout:.0f}s: {last}")

    def stop(self) -> None:
        for name in list(self.procs):
            self._kill(name)


@contextlib.contextmanager
def running_ceph(root: Path, address: str = "127.0.0.1") -> Iterator[CephCluster]:
    cluster = CephCluster(root, address)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
