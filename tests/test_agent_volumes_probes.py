"""The agent's volumes (pod tmpfs volumes, disks, sub-paths, sizeLimit, fsGroup) and probes
(tcp, http) on real VMs, driven with raw CREATE/MOUNT/PROBE requests: the runtime's host-side
plumbing for them is separate. Booted from the building blocks, as test_hostile_guest.py does."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hypernetes.runtime import guestproto as gp
from hypernetes.runtime.agentclient import AgentError
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import ExitStatus
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.qemu import Disk
from tests.support.agent import booted, run, start, vol

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_disk(busybox_ref: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ImageStore(tmp_path_factory.mktemp("images")).ensure(busybox_ref).disk


# -- volumes -------------------------------------------------------------------------------------


async def test_pod_volume_shared_sizelimit_subpath_readonly(
    tmp_path: Path, kernels: KernelRegistry, image_disk: Path
) -> None:
    async with booted(tmp_path, kernels, image_disk) as client:
        limit = 1 << 20
        status, out = await run(
            client,
            "writer",
            "echo hello > /data/msg && mkdir /data/sub && echo inner > /data/sub/f && id -u",
            mounts=[vol("pod:shared", "/data", size=limit)],
        )
        assert status == ExitStatus(code=0), out

        # another container sees the same files: the whole volume, and sub-paths of it (an
        # existing one, and a new one the agent creates); a later SIZE_LIMIT does not resize it
        status, out = await run(
            client,
            "reader",
            "cat /mnt/msg /s/f && ls -ld /n && ls /mnt/new",
            mounts=[
                vol("pod:shared", "/mnt", size=64 << 20),
                vol("pod:shared", "/s", subpath="sub"),
                vol("pod:shared", "/n", subpath="new/dir"),
            ],
        )
        assert status == ExitStatus(code=0), out
        lines = out.splitlines()
        assert lines[:2] == ["hello", "inner"]
        assert lines[2].startswith("drwxrwxrwx"), out  # the volume root's mode (emptyDir 0777)
        assert lines[3] == "dir"

        # sizeLimit is enforced: ENOSPC past 1 MiB
        status, out = await run(
            client,
            "filler",
            "dd if=/dev/zero of=/data/big bs=64k count=64 2>&1; echo rc=$?; stat -c %s /data/big",
            mounts=[vol("pod:shared", "/data")],
        )
        assert "No space left on device" in out, out
        assert "rc=1" in out
        assert int(out.split()[-1]) <= limit

        # read-only mount of the same volume refuses writes, reads work
        status, out = await run(
            client,
            "ro",
            "cat /data/msg; touch /data/x 2>&1; echo rc=$?",
            mounts=[vol("pod:shared", "/data", readonly=True)],
        )
        assert out.splitlines()[0] == "hello"
        assert "Read-only file system" in out and "rc=1" in out, out

        # the volume outlives its containers: remove one, a new one still sees the data
        await client.request(gp.MSG_REMOVE, gp.TLV().add_str(gp.TAG_CONTAINER_ID, "writer"))
        status, out = await run(client, "later", "cat /v/msg", mounts=[vol("pod:shared", "/v")])
        assert out == "hello\n"

        # bad requests fail the CREATE with a clear message, not the VM
        for mount, message in [
            (vol("pod:Bad_Name", "/x"), "pod volume names must match"),
            (vol("pod:shared", "/x", subpath="../etc"), "SUBPATH must be relative"),
            (vol("pod:shared", "/x", subpath="/abs"), "SUBPATH must be relative"),
            (vol("tmpfs", "/x", subpath="a"), "SUBPATH needs a disk or pod volume"),
            (vol("pod:shared", "/x", subpath="msg/deeper"), "a file is in the way"),
        ]:
            with pytest.raises(AgentError, match=message):
                await start(client, "bad", "true", mounts=[mount])


async def test_subpath_symlink_is_not_followed(
    tmp_path: Path, kernels: KernelRegistry, image_disk: Path
) -> None:
    async with booted(tmp_path, kernels, image_disk) as client:
        status, out = await run(client, "evil", "busybox ln -s / /v/escape", mounts=[vol("pod:v", "/v")])
        assert status == ExitStatus(code=0), out
        with pytest.raises(AgentError, match="is a symlink") as err:
            await start(client, "victim", "true", mounts=[vol("pod:v", "/x", subpath="escape/etc")])
        assert err.value.errno == errno.ELOOP


def make_ext4(path: Path, content: Path) -> None:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(content), str(path), "16M"],
        check=True,
        capture_output=True,
    )


async def test_disks_fsgroup_and_readonly_subpaths(
    tmp_path: Path, kernels: KernelRegistry, image_disk: Path
) -> None:
    content = tmp_path / "content"
    (content / "conf").mkdir(parents=True)
    (content / "conf" / "app.conf").write_text("setting=1\n")
    content.chmod(0o755)
    ext4, erofs = tmp_path / "vol.ext4", tmp_path / "ro.erofs"
    make_ext4(ext4, content)
    subprocess.run(["mkfs.erofs", str(erofs), str(content)], check=True, capture_output=True)
    disks = [Disk(ext4, "data0", readonly=False), Disk(erofs, "ro0")]
    async with booted(tmp_path, kernels, image_disk, disks) as client:
        # uid 1000 cannot write the root-owned ext4 root without fsGroup
        status, out = await run(
            client,
            "nofsg",
            "touch /data/x 2>&1; echo rc=$?",
            mounts=[vol("data0", "/data")],
            uid=1000,
            gid=1000,
        )
        assert "Permission denied" in out and "rc=1" in out, out

        # with fsGroup 2000 it can, and 2000 is among its groups; new files get group 2000
        status, out = await run(
            client,
            "fsg",
            "id -G; touch /data/x && stat -c '%g %A' /data /data/x",
            mounts=[vol("data0", "/data"), vol("data0", "/w", subpath="work/a")],
            fsgroup=2000,
            uid=1000,
            gid=1000,
        )
        assert status == ExitStatus(code=0), out
        groups, root, made = out.splitlines()
        assert "2000" in groups.split() and "1000" in groups.split()
        assert root == "2000 drwxrwsr-x"
        assert made.startswith("2000 ")
        # the sub-path directory the agent created gets fsGroup too
        status, out = await run(
            client,
            "fsg2",
            "touch /w/y && stat -c '%g %A' /w",
            mounts=[vol("data0", "/w", subpath="work/a")],
            fsgroup=2000,
            uid=1000,
            gid=1000,
        )
        assert status == ExitStatus(code=0), out
        assert out.strip().startswith("2000 drwxrws")

        # one read-only erofs disk serves several containers and sub-paths, including a file
        for cid in ("ro1", "ro2"):
            status, out = await run(
                client,
                cid,
                "cat /etc/app/app.conf /one.conf; ls /all; touch /etc/app/x 2>&1; echo rc=$?",
                mounts=[
                    vol("ro0", "/etc/app", subpath="conf", fstype="erofs", readonly=True),
                    vol("ro0", "/one.conf", subpath="conf/app.conf", fstype="erofs", readonly=True),
                    vol("ro0", "/all", fstype="erofs", readonly=True),
                ],
            )
            lines = out.splitlines()
            assert lines[:3] == ["setting=1", "setting=1", "conf"], out
            assert "Read-only file system" in out and "rc=1" in out, out
        # a missing sub-path of a read-only source is an error, not created
        with pytest.raises(AgentError, match="sub-path nope does not exist in read-only volume ro0"):
            await start(
                client,
                "ro3",
                "true",
                mounts=[vol("ro0", "/x", subpath="nope", fstype="erofs", readonly=True)],
            )
        # a read-only mount of the writable disk is read-only, next to the read-write ones
        status, out = await run(
            client,
            "ro4",
            "cat /d/x && touch /d/z 2>&1; echo rc=$?",
            mounts=[vol("data0", "/d", readonly=True)],
        )
        assert "Read-only file system" in out and "rc=1" in out, out


# -- probes --------------------------------------------------------------------------------------


def probe(
    kind: str,
    port: int,
    *,
    host: str | None = None,
    path: str | None = None,
    timeout_ms: int | None = None,
    headers: Sequence[str] = (),
) -> gp.TLV:
    t = gp.TLV().add_str(gp.TAG_PROBE_KIND, kind).add_u32(gp.TAG_PORT, port)
    if host is not None:
        t.add_str(gp.TAG_HOST, host)
    if path is not None:
        t.add_str(gp.TAG_PATH, path)
    if timeout_ms is not None:
        t.add_u32(gp.TAG_TIMEOUT_MS, timeout_ms)
    return t.add_strs(gp.TAG_HEADER, headers)


async def test_tcp_and_http_probes(tmp_path: Path, kernels: KernelRegistry, image_disk: Path) -> None:
    async with booted(tmp_path, kernels, image_disk) as client:
        # probes work before and without any tenant network: SETUP configured no interface
        script = (
            "mkdir /www && echo served > /www/index.html && "
            "busybox ip route add 192.0.2.0/24 dev lo && "  # a route that goes nowhere
            "(sleep 600 | busybox nc -l -p 8081 >/dev/null &) && exec httpd -f -p 8080 -h /www"
        )
        web, out = await start(client, "web", script)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert await client.request(gp.MSG_PROBE, probe("tcp", 8080)) is not None
                break
            except AgentError as e:
                assert "connection refused" in str(e)
                assert time.monotonic() < deadline, f"httpd never listened: {out}"
                await asyncio.sleep(0.5)

        reply = await client.request(
            gp.MSG_PROBE, probe("http", 8080, path="/index.html", headers=["X-Probe: yes", "Host: example"])
        )
        assert gp.probe_status_code(reply) == 200
        reply = await client.request(gp.MSG_PROBE, probe("http", 8080, path="/missing"))
        assert gp.probe_status_code(reply) == 404

        with pytest.raises(AgentError) as err:
            await client.request(gp.MSG_PROBE, probe("tcp", 8082))
        assert str(err.value) == "dial tcp 127.0.0.1:8082: connect: connection refused"
        assert err.value.errno == errno.ECONNREFUSED
        with pytest.raises(AgentError) as err:
            await client.request(gp.MSG_PROBE, probe("http", 8082, path="/healthz"))
        assert str(err.value) == (
            'Get "http://127.0.0.1:8082/healthz": dial tcp 127.0.0.1:8082: connect: connection refused'
        )

        # timeouts are enforced inside the loop: the agent answers a PING meanwhile
        async def timed(tlv: gp.TLV) -> tuple[float, AgentError]:
            t0 = time.monotonic()
            with pytest.raises(AgentError) as err:
                await client.request(gp.MSG_PROBE, tlv)
            return time.monotonic() - t0, err.value

        async def ping() -> float:
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await client.request(gp.MSG_PING, gp.TLV())
            return time.monotonic() - t0

        (tcp_t, tcp_err), (http_t, http_err), ping_t = await asyncio.gather(
            timed(probe("tcp", 80, host="192.0.2.1", timeout_ms=2000)),
            timed(probe("http", 8081, timeout_ms=2000)),  # nc accepts and never answers
            ping(),
        )
        assert str(tcp_err) == "dial tcp 192.0.2.1:80: i/o timeout"
        assert tcp_err.errno == errno.ETIMEDOUT
        assert str(http_err) == (
            'Get "http://127.0.0.1:8081/": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
        assert 1.9 < tcp_t < 10 and 1.9 < http_t < 10
        assert ping_t < 1.5

        # malformed probes are refused
        for tlv, message in [
            (probe("udp", 53), "PROBE_KIND must be"),
            (probe("tcp", 0), "PORT must be"),
            (probe("tcp", 80, host="::1"), "HOST must be an IPv4"),
            (probe("http", 80, path="/a b"), "PATH: must start"),
            (probe("http", 80, headers=["X: a\r\nY: b"]), "HEADER"),
        ]:
            with pytest.raises(AgentError, match=message):
                await client.request(gp.MSG_PROBE, tlv)
        assert web.exited is None
