"""Layer application: hostile layers are refused without touching the host; everything a root
filesystem needs (whiteouts, links, devices, modes, owners, times) survives into the erofs disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hypernetes.runtime.images import DigestMismatch, ImageStore, UnsafeLayer
from hypernetes.runtime.images.unpack import LayerApplier
from tools import imagebuild as ib
from tools.imagebuild import Layer, LayerBuilder, OciLayout, busybox_image

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="ownership and device nodes need root")


def apply_layers(rootfs: Path, *tars: bytes, compression: str = "gzip") -> LayerApplier:
    with LayerApplier(rootfs) as applier:
        for i, tar in enumerate(tars):
            data, _ = ib.compress(tar, compression)
            blob = rootfs.parent / f"layer{i}"
            blob.write_bytes(data)
            applier.apply(blob, ib.digest_of(data), ib.digest_of(tar))
    return applier


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory standing for the host's /etc: nothing may ever appear in it."""
    d = tmp_path / "host-etc"
    d.mkdir()
    (d / "passwd").write_text("host secret\n")
    return d


def _evil_layers(host: Path) -> dict[str, Callable[[], bytes]]:
    return {
        "dotdot": lambda: ib.evil_dotdot("host-etc/pwned"),
        "absolute": lambda: ib.evil_absolute(host / "pwned"),
        "symlink-write": lambda: ib.evil_symlink_write(host),
        "relative-symlink-chain": lambda: ib.evil_symlink_dir_chain(host),
        "hardlink-dotdot": lambda: ib.evil_hardlink(host / "passwd"),
        "hardlink-via-symlink": lambda: ib.evil_hardlink_via_symlink(host, "passwd"),
        "hardlink-absolute": lambda: LayerBuilder().hardlink("x", str(host / "passwd")).tar(),
        "whiteout-dotdot": lambda: LayerBuilder().file("../.wh.host-etc").tar(),
        "symlink-then-dir": lambda: LayerBuilder().symlink("d", str(host)).dir("d/sub").tar(),
    }


EVIL = sorted(_evil_layers(Path("/")))


def assert_host_untouched(host: Path) -> None:
    assert sorted(p.name for p in host.iterdir()) == ["passwd"]
    assert (host / "passwd").read_text() == "host secret\n"
    assert os.stat(host / "passwd").st_nlink == 1


@pytest.mark.parametrize("kind", EVIL)
def test_hostile_layer_is_refused(kind: str, tmp_path: Path, host: Path) -> None:
    tar = _evil_layers(host)[kind]()
    rootfs = tmp_path / "x" / "rootfs"
    rootfs.parent.mkdir()
    with pytest.raises(UnsafeLayer) as info:
        apply_layers(rootfs, tar)
    assert str(info.value).startswith("layer ")
    assert_host_untouched(host)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("kind", ["dotdot", "symlink-write", "hardlink-via-symlink"])
def test_hostile_image_leaves_nothing_behind(kind: str, tmp_path: Path, host: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    evil = Layer(_evil_layers(host)[kind]())
    layout.add(busybox_image([evil]), "evil")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(UnsafeLayer) as info:
        store.import_archive(tmp_path / "layout", repository="evil")
    assert str(info.value).startswith(f"import {tmp_path / 'layout'}: layer ")
    assert_host_untouched(host)
    assert store.list() == []
    assert list(store.tmp.iterdir()) == []
    assert list(store.blobs.digests()) == []
    assert list((store.root / "images").iterdir()) == []


def test_dotdot_error_names_the_path(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    with pytest.raises(UnsafeLayer, match=r"path '\.\./\.\./evil' escapes the root filesystem"):
        apply_layers(rootfs, LayerBuilder().file("../../evil", "x").tar())


def test_symlink_error_is_clear(tmp_path: Path, host: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    with pytest.raises(UnsafeLayer, match=r"goes through the symlink 'a'; refusing to follow"):
        apply_layers(rootfs, ib.evil_symlink_write(host))


def test_symlink_from_earlier_layer_is_not_followed(tmp_path: Path, host: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    first = LayerBuilder().symlink("etc", str(host)).tar()
    second = LayerBuilder().file("etc/passwd", "pwned").tar()
    with pytest.raises(UnsafeLayer):
        apply_layers(rootfs, first, second)
    assert_host_untouched(host)


def test_replacing_a_symlink_replaces_the_link_not_its_target(tmp_path: Path, host: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    first = LayerBuilder().symlink("passwd", str(host / "passwd")).tar()
    second = LayerBuilder().file("passwd", "image's own").tar()
    apply_layers(rootfs, first, second)
    assert (rootfs / "passwd").read_text() == "image's own"
    assert not (rootfs / "passwd").is_symlink()
    assert_host_untouched(host)


def test_diff_id_mismatch_is_rejected(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    tar = LayerBuilder().file("a", "a").tar()
    blob = tmp_path / "r" / "blob"
    blob.write_bytes(tar)
    expected = r"uncompressed content hashes to .* but the image config says"
    with LayerApplier(rootfs) as applier, pytest.raises(DigestMismatch, match=expected):
        applier.apply(blob, ib.digest_of(tar), "sha256:" + "0" * 64)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compressions(compression: str, tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    apply_layers(rootfs, LayerBuilder().file("x/y", "data").tar(), compression=compression)
    assert (rootfs / "x" / "y").read_text() == "data"


def test_truncated_layer_is_refused(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    tar = LayerBuilder().file("big", b"x" * 100_000).tar()
    blob = tmp_path / "r" / "blob"
    blob.write_bytes(tar[:20_000])
    with LayerApplier(rootfs) as applier, pytest.raises(UnsafeLayer):
        applier.apply(blob, ib.digest_of(tar))


# -- a rich image, checked in the unpacked tree and in the erofs disk ---------------------------

OLD = 1_234_567_890


def rich_layers() -> tuple[bytes, bytes]:
    lower = (
        LayerBuilder()
        .dir("data")
        .file("data/a", "A")
        .file("data/b", "B")
        .dir("data/sub")
        .file("data/sub/c", "C")
        .dir("opq")
        .file("opq/x", "x")
        .file("opq/y", "y")
        .dir("opq2")
        .file("opq2/old", "old")
        .file("gone", "bye")
        .dir("bin")
        .file("bin/suid", "#!", 0o4755)
        .file("bin/sgid", "#!", 0o2755, gid=50)
        .file("owned", "o", 0o640, uid=1000, gid=2000)
        .file("old", "old", mtime=OLD)
        .dir("dev")
        .device("dev/null", True, 1, 3)
        .device("dev/loop9", False, 7, 9, 0o660, gid=6)
        .dir("run")
        .fifo("run/fifo", 0o620)
        .symlink("link", "/etc/passwd")
        .hardlink("hard", "data/a")
        .dir("sticky", 0o1777)
        .file("xa", "xattr", xattrs={"user.hn": "value"})
        .tar()
    )
    upper = (
        LayerBuilder()
        .whiteout("gone")
        .opaque("opq")
        .file("opq/z", "z")
        .file("opq2/new", "new")
        .opaque("opq2")  # marker after a sibling: the sibling stays
        .whiteout("data/sub")
        .file("data/new", "N")
        .dir("data/b")  # a file becomes a directory
        .tar()
    )
    return lower, upper


def check_tree(root: Path) -> None:
    assert not (root / "gone").exists()
    assert sorted(os.listdir(root / "opq")) == ["z"]
    assert sorted(os.listdir(root / "opq2")) == ["new"]
    assert sorted(os.listdir(root / "data")) == ["a", "b", "new"]
    assert (root / "data" / "b").is_dir()
    assert os.readlink(root / "link") == "/etc/passwd"
    assert os.stat(root / "hard").st_ino == os.stat(root / "data" / "a").st_ino
    assert stat.S_ISFIFO(os.lstat(root / "run" / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "sticky").st_mode) == 0o1777
    assert os.lstat(root / "old").st_mtime == OLD


def test_rich_layers_unpack(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    apply_layers(rootfs, *rich_layers())
    check_tree(rootfs)
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "sgid").st_mode) == 0o2755
    assert os.lstat(rootfs / "link").st_mtime == ib.MTIME
    assert os.getxattr(rootfs / "xa", "user.hn") == b"value"
    if ROOT:
        st = os.stat(rootfs / "owned")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o640)
        assert os.stat(rootfs / "bin" / "sgid").st_gid == 50
        null = os.lstat(rootfs / "dev" / "null")
        assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
        loop = os.lstat(rootfs / "dev" / "loop9")
        assert stat.S_ISBLK(loop.st_mode) and os.minor(loop.st_rdev) == 9
        assert (loop.st_gid, stat.S_IMODE(loop.st_mode)) == (6, 0o660)


@pytest.fixture
def rich_image(tmp_path: Path) -> Iterator[tuple[ImageStore, Path]]:
    lower, upper = rich_layers()
    layout = OciLayout(tmp_path / "layout")
    layout.add(busybox_image([Layer(lower), Layer(upper, "zstd")]), "rich")
    store = ImageStore(tmp_path / "store")
    [image] = store.import_archive(tmp_path / "layout", repository="rich")
    yield store, image.disk


def test_rich_image_disk_contents(rich_image: tuple[ImageStore, Path], tmp_path: Path) -> None:
    _, disk = rich_image
    st = ib.erofs_stat
    assert st(disk, "/gone") is None and st(disk, "/opq/x") is None
    assert st(disk, "/data/sub") is None and st(disk, "/opq2/new") is not None
    hard = st(disk, "/hard")
    assert hard is not None and hard.links == 2
    old = st(disk, "/old")
    assert old is not None and old.mtime.startswith("2009-02-13 23:31:30")
    link = st(disk, "/link")
    assert link is not None and link.kind == "symlink file"
    fifo = st(disk, "/run/fifo")
    assert fifo is not None and fifo.kind == "FIFO file" and fifo.perm == 0o620
    if ROOT:
        owned = st(disk, "/owned")
        assert owned is not None and (owned.uid, owned.gid, owned.perm) == (1000, 2000, 0o640)
        null = st(disk, "/dev/null")
        assert null is not None and null.kind == "char dev"
        loop = st(disk, "/dev/loop9")
        assert loop is not None and loop.kind == "block dev" and loop.gid == 6
        home = st(disk, "/home/app")
        assert home is not None and (home.uid, home.gid, home.perm) == (1000, 1000, 0o750)


@needs_root
def test_rich_image_mounted(rich_image: tuple[ImageStore, Path], tmp_path: Path) -> None:
    """The kernel's own erofs driver sees setuid bits, devices and owners as the layers said."""
    _, disk = rich_image
    mnt = tmp_path / "mnt"
    if not ib.mount_erofs(disk, mnt):
        pytest.skip("cannot loop-mount erofs here")
    try:
        check_tree(mnt)
        assert stat.S_IMODE(os.stat(mnt / "bin" / "suid").st_mode) == 0o4755
        assert stat.S_IMODE(os.stat(mnt / "bin" / "sgid").st_mode) == 0o2755
        assert stat.S_IMODE(os.stat(mnt / "tmp").st_mode) == 0o1777
        assert os.stat(mnt / "bin" / "busybox").st_mode & 0o111
        assert os.getxattr(mnt / "xa", "user.hn") == b"value"
        assert (mnt / "data" / "new").read_text() == "N"
    finally:
        ib.umount(mnt)


def test_disk_is_reproducible(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    layout.add(busybox_image(list(map(Layer, rich_layers()))), "r")
    disks = []
    for n in range(2):
        [image] = ImageStore(tmp_path / f"s{n}").import_archive(tmp_path / "layout")
        disks.append(image.disk.read_bytes())
    assert disks[0] == disks[1]


def test_limits(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    deep = "/".join(["d"] * 200) + "/f"
    with pytest.raises(UnsafeLayer, match="too deep or too long"):
        apply_layers(rootfs, LayerBuilder().file(deep, "x").tar())
    tar = LayerBuilder().file("a", "x").file("b", "x").file("c", "x").tar()
    blob = tmp_path / "r" / "blob"
    blob.write_bytes(tar)
    with (
        LayerApplier(tmp_path / "r2", max_entries=2) as applier,
        pytest.raises(UnsafeLayer, match="more than 2 entries"),
    ):
        applier.apply(blob, ib.digest_of(tar))


def test_whiteout_of_missing_path_creates_nothing(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    apply_layers(rootfs, LayerBuilder().whiteout("no/such/dir/file").tar())
    assert os.listdir(rootfs) == []


def test_unprivileged_unpack_keeps_what_it_can(tmp_path: Path) -> None:
    rootfs = tmp_path / "r" / "rootfs"
    rootfs.parent.mkdir()
    tar = (
        LayerBuilder()
        .dir("ro", 0o555)
        .file("ro/f", "x", 0o400, uid=1000)
        .device("null", True, 1, 3)
        .fifo("p")
        .tar()
    )
    blob = tmp_path / "r" / "blob"
    blob.write_bytes(tar)
    with LayerApplier(rootfs, privileged=False) as applier:
        applier.apply(blob, ib.digest_of(tar))
    assert (rootfs / "ro" / "f").read_text() == "x"
    assert stat.S_IMODE(os.stat(rootfs / "ro").st_mode) == 0o755  # owner may still write
    assert os.stat(rootfs / "ro" / "f").st_uid == os.geteuid()
    assert not (rootfs / "null").exists() and (rootfs / "p").exists()
