"""Build images in Python from Debian's static busybox: OCI layouts, OCI archives, `docker save`
tarballs, and deliberately malicious layers. Used by the demo and the README's registry (tools/),
the tests and the benchmarks; it imports nothing from them.

Everything is deterministic (fixed mtimes, sorted JSON), so digests are stable per machine.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
APPLETS = (
    "sh",
    "echo",
    "cat",
    "ls",
    "sleep",
    "id",
    "env",
    "pwd",
    "head",
    "yes",
    "wc",
    "true",
    "false",
    "kill",
    "ps",
    "mkdir",
    "touch",
    "httpd",
    "dd",
    "sync",
    "stat",
    "sha256sum",
    "seq",
    "tr",
    "grep",
    "od",
    "printf",
)

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nwheel:x:10:root\napp:x:1000:\nextra:x:2000:app\naudio:x:29:app,nobody\nnogroup:x:65534:\n"

OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class LayerBuilder:
    """A tar layer assembled entry by entry, including entries no sane tool would write."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(  # noqa: SIM115 (closed by tar())
            fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT
        )

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = MTIME
        return info

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> LayerBuilder:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))
        return self

    def file(
        self,
        name: str,
        data: bytes | str = b"",
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int = MTIME,
        xattrs: dict[str, str] | None = None,
    ) -> LayerBuilder:
        raw = data.encode() if isinstance(data, str) else data
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size, info.mtime = len(raw), mtime
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        self._tar.addfile(info, io.BytesIO(raw))
        return self

    def symlink(self, name: str, target: str, uid: int = 0, gid: int = 0) -> LayerBuilder:
        info = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def hardlink(self, name: str, target: str) -> LayerBuilder:
        info = self._info(name, tarfile.LNKTYPE, 0o644, 0, 0)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def device(
        self, name: str, char: bool, major: int, minor: int, mode: int = 0o666, uid: int = 0, gid: int = 0
    ) -> LayerBuilder:
        info = self._info(name, tarfile.CHRTYPE if char else tarfile.BLKTYPE, mode, uid, gid)
        info.devmajor, info.devminor = major, minor
        self._tar.addfile(info)
        return self

    def fifo(self, name: str, mode: int = 0o600) -> LayerBuilder:
        self._tar.addfile(self._info(name, tarfile.FIFOTYPE, mode, 0, 0))
        return self

    def whiteout(self, path: str) -> LayerBuilder:
        parent, _, name = path.rstrip("/").rpartition("/")
        return self.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")

    def opaque(self, directory: str) -> LayerBuilder:
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq")

    def tar(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


@functools.cache
def busybox_base() -> bytes:
    """The uncompressed base layer: busybox, applet symlinks, /etc/passwd and /etc/group."""
    b = LayerBuilder()
    for d in ("bin", "etc", "home", "root", "usr", "usr/bin", "var"):
        b.dir(d, 0o700 if d == "root" else 0o755)
    b.dir("tmp", 0o1777)
    b.dir("home/app", 0o750, uid=1000, gid=1000)
    b.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in APPLETS:
        b.symlink(f"bin/{applet}", "/bin/busybox")  # absolute, like real images
    b.file("etc/passwd", PASSWD)
    b.file("etc/group", GROUP)
    return b.tar()


def compress(tar: bytes, kind: str = "gzip") -> tuple[bytes, str]:
    if kind == "gzip":
        return gzip.compress(tar, compresslevel=1, mtime=0), OCI_LAYER_GZ
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(tar), OCI_LAYER_ZSTD
    return tar, OCI_LAYER


@dataclass
class Layer:
    tar: bytes  # uncompressed: its digest is the diff_id
    compression: str = "gzip"

    def blob(self) -> tuple[bytes, str]:
        return compress(self.tar, self.compression)


@dataclass
class ImageSpec:
    layers: list[Layer]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = field(default_factory=lambda: ["sh"])
    env: list[str] = field(default_factory=lambda: ["PATH=/bin:/usr/bin", "HELLO=world"])
    working_dir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    architecture: str = "amd64"

    def config(self) -> bytes:
        cfg: dict[str, Any] = {"Env": self.env, "WorkingDir": self.working_dir, "User": self.user}
        if self.entrypoint is not None:
            cfg["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            cfg["Cmd"] = self.cmd
        if self.labels:
            cfg["Labels"] = self.labels
        return canonical(
            {
                "architecture": self.architecture,
                "os": "linux",
                "created": "2023-11-14T22:13:20Z",
                "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": [digest_of(x.tar) for x in self.layers]},
            }
        )


def busybox_image(extra: Sequence[Layer] = (), **kw: Any) -> ImageSpec:
    return ImageSpec([Layer(busybox_base()), *extra], **kw)


class OciLayout:
    """Writes an OCI image layout directory: oci-layout, index.json, blobs/sha256/*."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> str:
        digest = digest_of(data)
        (self.root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return digest

    def manifest(self, spec: ImageSpec) -> dict[str, Any]:
        """Write the image's blobs and manifest; return the manifest's descriptor."""
        config = spec.config()
        layers = []
        for layer in spec.layers:
            data, media_type = layer.blob()
            layers.append({"mediaType": media_type, "digest": self.blob(data), "size": len(data)})
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config), "size": len(config)},
                "layers": layers,
            }
        )
        return {
            "mediaType": OCI_MANIFEST,
            "digest": self.blob(manifest),
            "size": len(manifest),
            "platform": {"os": "linux", "architecture": spec.architecture},
        }

    def add(self, spec: ImageSpec, tag: str | None = None) -> str:
        desc = self.manifest(spec)
        desc.pop("platform")
        return self._add(desc, tag)

    def add_index(self, specs: Iterable[ImageSpec], tag: str | None = None) -> str:
        index = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [self.manifest(s) for s in specs],
            }
        )
        desc = {"mediaType": OCI_INDEX, "digest": self.blob(index), "size": len(index)}
        return self._add(desc, tag)

    def _add(self, desc: dict[str, Any], tag: str | None) -> str:
        if tag is not None:
            desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.entries.append(desc)
        (self.root / "index.json").write_bytes(
            canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": self.entries,
                }
            )
        )
        return str(desc["digest"])


def tar_directory(src: Path, dest: Path) -> Path:
    """An OCI archive: the layout directory's contents at the top of a tarball."""
    with tarfile.open(dest, "w") as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return dest


def write_docker_save(dest: Path, images: Sequence[tuple[ImageSpec, list[str]]]) -> Path:
    """A classic `docker save` tarball: <id>.json configs, <n>/layer.tar, manifest.json."""
    entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    with tarfile.open(dest, "w") as tar:

        def put(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))

        for spec, tags in images:
            config = spec.config()
            config_name = digest_of(config).split(":")[1] + ".json"
            put(config_name, config)
            layer_names = []
            for layer in spec.layers:
                name = digest_of(layer.tar).split(":")[1] + "/layer.tar"
                put(name, layer.tar)
                layer_names.append(name)
            entries.append({"Config": config_name, "RepoTags": tags, "Layers": layer_names})
            for tag in tags:
                repo, _, t = tag.rpartition(":")
                repositories.setdefault(repo, {})[t] = layer_names[-1].split("/")[0]
        put("manifest.json", json.dumps(entries).encode())
        put("repositories", json.dumps(repositories).encode())
    return dest


# -- malicious layers ---------------------------------------------------------------------


def evil_dotdot(target_name: str) -> bytes:
    """Writes ../../<target_name> after a harmless entry."""
    return LayerBuilder().file("ok", "fine").file(f"../../{target_name}", "pwned").tar()


def evil_absolute(host_path: Path) -> bytes:
    return LayerBuilder().file(str(host_path), "pwned").tar()


def evil_symlink_write(host_dir: Path) -> bytes:
    """`a -> host_dir`, then `a/pwned`: must never write into host_dir."""
    return LayerBuilder().symlink("a", str(host_dir)).file("a/pwned", "pwned").tar()


def evil_symlink_dir_chain(host_dir: Path) -> bytes:
    """A relative symlink climbing out (`b -> ../../..<host_dir>`), then a write through it."""
    rel = "../" * 16 + str(host_dir).lstrip("/")
    return LayerBuilder().dir("x").symlink("x/b", rel).file("x/b/pwned", "pwned").tar()


def evil_hardlink(host_file: Path) -> bytes:
    """A hard link to a host file, by `..` and by absolute path variants."""
    return LayerBuilder().hardlink("stolen", "../../../../" + str(host_file).lstrip("/")).tar()


def evil_hardlink_via_symlink(host_dir: Path, name: str) -> bytes:
    return LayerBuilder().symlink("s", str(host_dir)).hardlink("stolen", f"s/{name}").tar()


# -- inspecting built erofs disks ------------------------------------------------------------


@dataclass(frozen=True)
class ErofsInode:
    kind: str  # "regular file", "directory", "symlink file", "char dev", "block dev", "FIFO file"
    uid: int
    gid: int
    perm: int  # dump.erofs in erofs-utils 1.5 prints rwx bits only (no setuid/setgid)
    links: int
    mtime: str


def erofs_stat(disk: Path, path: str) -> ErofsInode | None:
    """One inode of an erofs image, as erofs-utils' dump.erofs reads it."""
    import re
    import subprocess

    proc = subprocess.run(
        ["dump.erofs", f"--path={path}", str(disk)], capture_output=True, text=True, check=False
    )
    out = proc.stdout
    m = re.search(r"Size: \d+\s+On-disk size: \d+\s+(.+)\n", out)
    if proc.returncode != 0 or m is None:
        return None
    ids = re.search(r"Uid: (\d+)\s+Gid: (\d+)\s+Access: (\d+)", out)
    links = re.search(r"Links: (\d+)", out)
    ts = re.search(r"Timestamp: (.+)", out)
    assert ids and links and ts, out
    return ErofsInode(
        m.group(1).strip(),
        int(ids.group(1)),
        int(ids.group(2)),
        int(ids.group(3), 8),
        int(links.group(1)),
        ts.group(1).strip(),
    )


def mount_erofs(disk: Path, where: Path) -> bool:
    """Loop-mount read-only (needs root and the erofs module); False if not possible."""
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "erofs", "-o", "loop,ro", str(disk), str(where)], capture_output=True, check=False
    )
    return proc.returncode == 0


def umount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(where)], capture_output=True, check=False)
