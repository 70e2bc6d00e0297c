"""The RBD backend (hypernetes/volumes/rbd.py) against a real Ceph cluster (tests/support/ceph.py):
images made, grown and deleted as the confined cephx user, the key never on a command line or in
an error, and a wrong key a clear error in bounded time."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hypernetes.volumes import VolumeError
from hypernetes.volumes.rbd import RbdVolumes
from hypernetes.volumes.rbd_objects import CephCredentials, check_features
from tests.support.ceph import CephCluster

pytestmark = pytest.mark.slow
GiB = 1 << 30


@pytest.fixture(scope="module")
def creds(ceph: CephCluster) -> CephCredentials:
    return CephCredentials(monitors=ceph.monitors, user=ceph.user, key=ceph.user_key())


@pytest.fixture
def rbd(creds: CephCredentials, ceph: CephCluster) -> RbdVolumes:
    return RbdVolumes(creds, ceph.pool)


def test_the_cluster_is_real_and_the_user_confined(ceph: CephCluster, rbd: RbdVolumes) -> None:
    status = json.loads(ceph.ceph("status", "--format", "json"))
    assert status["osdmap"]["num_up_osds"] == 3 and status["monmap"]["num_mons"] == 1
    assert status["mgrmap"]["available"]
    print(f"ceph started in {ceph.started_in:.1f}s")
    assert ceph.started_in < 120
    other = RbdVolumes(rbd.creds, "other")
    ceph.ceph("osd", "pool", "create", "other", "8")
    try:
        with pytest.raises(VolumeError, match="no access to pool other"):
            other.create("x", GiB, fs_type=None)
    finally:
        ceph.ceph("osd", "pool", "rm", "other", "other", "--yes-i-really-really-mean-it")


def test_create_grow_delete(ceph: CephCluster, rbd: RbdVolumes) -> None:
    assert rbd.create("pvc-a", GiB) is True
    assert rbd.create("pvc-a", GiB) is False  # a retried provisioning finds it made
    info = rbd.info("pvc-a")
    assert info["size"] == GiB
    assert {"exclusive-lock", "object-map", "layering"} <= set(info["features"])
    # the filesystem is there (ext4's magic at 1080) and a 1 GiB volume stored only its metadata
    ceph.rbd("export", "--no-progress", "rbd/pvc-a", str(ceph.root / "export"))
    with open(ceph.root / "export", "rb") as f:
        f.seek(1080)
        assert f.read(2) == b"\x53\xef"
    (ceph.root / "export").unlink()
    du = json.loads(ceph.rbd("du", "--format", "json", "rbd/pvc-a"))
    assert du["images"][0]["used_size"] < 64 << 20
    assert rbd.resize("pvc-a", 2 * GiB) is True
    assert rbd.size("pvc-a") == 2 * GiB
    assert rbd.resize("pvc-a", GiB) is False  # never shrinks
    assert rbd.create("blk", 3 * GiB, fs_type=None, features="layering,exclusive-lock") is True
    assert sorted(rbd.info("blk")["features"]) == ["exclusive-lock", "layering"]
    assert rbd.delete("pvc-a") and rbd.delete("blk")
    assert rbd.delete("pvc-a") is False
    assert "pvc-a" not in ceph.images()
    assert rbd.size("pvc-a") is None


def test_the_key_never_reaches_a_command_line(rbd: RbdVolumes) -> None:
    key = rbd.creds.key
    seen: set[str] = set()
    leaked: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except OSError:
                        continue
                    if "rbd " in args or args.startswith("rbd") or "/rbd" in args:
                        seen.add(args)
                    if key in args:
                        leaked.append(args)
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(3):
            rbd.create("pvc-ps", GiB)
            rbd.resize("pvc-ps", 2 * GiB)
            rbd.delete("pvc-ps")
    finally:
        stop.set()
        t.join()
    assert seen, "the watcher saw no rbd process: it proves nothing"
    assert not leaked


def test_wrong_key_is_a_clear_error(ceph: CephCluster, rbd: RbdVolumes) -> None:
    assert check_features("layering,object-map")[0] == "object-map needs exclusive-lock"
    with pytest.raises(VolumeError, match="monitors: must be"):
        RbdVolumes(CephCredentials("", "hypernetes", rbd.creds.key), "rbd")
    wrong = subprocess.check_output(["ceph-authtool", "--gen-print-key"], text=True).strip()
    bad = RbdVolumes(CephCredentials(ceph.monitors, ceph.user, wrong), ceph.pool)
    t0 = time.monotonic()
    with pytest.raises(VolumeError) as err:
        bad.create("pvc-w", GiB, fs_type=None)
    assert "authentication as client.hypernetes failed: wrong key" in str(err.value)
    assert wrong not in str(err.value)
    assert time.monotonic() - t0 < 30
    undecodable = RbdVolumes(CephCredentials(ceph.monitors, ceph.user, "AQ" + "B" * 36 + "=="), ceph.pool)
    with pytest.raises(VolumeError, match="wrong key") as err:
        undecodable.size("pvc-w")
    assert "B" * 36 not in str(err.value)  # Ceph's own message quotes the key
    # an outage (no monitor) is in tests/test_volumes_rbd_api.py: the claim's event, then recovery
