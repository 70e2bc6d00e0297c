"""Guest kernels: the project's minimal kernel by default, any other kernel an operator registers.

A kernel is usable for pods when QEMU's microvm can direct-boot it (bzImage, or an ELF vmlinux
with a PVH entry note), it can find microvm's virtio-mmio devices (through ACPI, or through the
`virtio_mmio.device=` arguments QEMU appends when ACPI is off) and it has, built in or as
modules, the drivers the agent relies on. When some are modules, the registry copies them in and
builds an initrd whose /init (guest/modload) loads them in dependency order before exec'ing the
agent. Docs for operators: docs/kernels.md.

Layout under `root`:
    <name>/kernel.json          registration metadata (written atomically)
    <name>/vmlinuz|vmlinux      copy of the image, so /boot can change under us
    <name>/config               copy of the kernel config, for operators
    <name>/modules/<rel>.ko     copies of the needed modules (decompressed)
    <name>/initrd-<hash>.img    agent (+ modload and modules), rebuilt when the agent changes
    .default/initrd-<hash>.img  the default kernel's initrd: the agent as /init
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import zstandard

from hypernetes.objects.names import KERNELS_ANNOTATION
from hypernetes.runtime.initrd import Source, Symlink, build_initrd

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "HYPERNETES_KERNEL_DIR"  # the build cache `make kernel` writes (its OUTDIR)
KERNEL_CACHE_DIR = Path("/var/cache/hypernetes/kernels")
AGENT_PATH = "/sbin/hn-agent"  # in the guest; guest/modload/modload.c execs this path
LOAD_LIST = "lib/modules/hn-load.list"  # read by modload.c
INITRD_FORMAT = "hn-initrd-1"  # bump when the initrd layout changes, to rebuild cached ones
METADATA_FORMAT = 1
# A kernel name becomes a directory under the registry and is read from a pod's annotation: DNS-1123
# labels joined by dots (no '/', no '..', nothing path-like), at most 63 characters.
NAME_RE = re.compile(r"(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")  # becomes a path in the initrd
MAX_CMDLINE = 1024  # x86 allows 2048 in all; leave room for the runtime's own arguments

# (config symbol, module name, required): what the agent needs from the guest kernel.
# Optional drivers are loaded when the kernel has them as modules, and not missed otherwise.
DRIVERS = (
    ("VIRTIO_MMIO", "virtio_mmio", True),
    ("VIRTIO_BLK", "virtio_blk", True),
    ("VIRTIO_NET", "virtio_net", True),
    ("VIRTIO_CONSOLE", "virtio_console", True),
    ("EROFS_FS", "erofs", True),
    ("OVERLAY_FS", "overlay", True),
    ("EXT4_FS", "ext4", True),
    ("HW_RANDOM_VIRTIO", "virtio_rng", False),
    ("VIRTIO_BALLOON", "virtio_balloon", False),
)
# Must be built in: the initrd itself, and what the agent mounts before anything else.
BUILTIN = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "TMPFS", "PROC_FS", "SYSFS")


class KernelError(Exception):
    """A kernel cannot be used or registered; str() says why and what to do."""


class KernelNotFound(KernelError):
    pass


@dataclass(frozen=True)
class Kernel:
    name: str
    image: Path  # what QEMU's -kernel gets (vmlinux PVH ELF or bzImage)
    initrd: Path  # built by the registry: the agent (and modules + modload when needed)
    acpi: bool  # microvm acpi=on|off
    cmdline: str  # extra kernel args for this kernel only
    version: str | None


@dataclass(frozen=True)
class _Module:
    path: str  # relative to the modules dir, always ending in .ko
    sha256: str


class KernelRegistry:
    DEFAULT = "hypernetes"
    boot_dir = Path("/boot")  # where register() looks for config-<version>
    modules_root = Path("/lib/modules")  # ... and <version>/ when modules_dir is not given

    def __init__(
        self, root: Path, agent: Path, *, modload: Path | None = None, default_dir: Path | None = None
    ) -> None:
        self.root = root
        self.agent = agent
        # Both guest binaries are built by `make -C guest` into guest/build/.
        self.modload = modload or agent.with_name("hn-modload")
        self._default_dir = default_dir
        self._digests: dict[tuple[str, int, int, int], str] = {}

    # ---- lookup

    def default(self) -> Kernel:
        base = self._default_dir or Path(os.environ.get(KERNEL_DIR_ENV) or KERNEL_CACHE_DIR) / "default"
        # Resolve the `default` symlink now, so a kernel rebuild never changes a booting VM.
        found = base.resolve()
        # PVH vmlinux first: it skips the in-guest decompressor.
        image = next((found / f for f in ("vmlinux", "bzImage") if (found / f).is_file()), None)
        config = found / "config"
        if image is None or not config.is_file():
            raise KernelNotFound(
                f"the default guest kernel is not built (no vmlinux or bzImage and config in "
                f"{base}): run `make kernel`, or point {KERNEL_DIR_ENV} at a build"
            )
        text = config.read_text()
        kconfig = parse_config(text)
        acpi = _check_config(self.DEFAULT, kconfig)
        needed = [module for sym, module, _ in DRIVERS if kconfig.get(sym) == "m"]
        if needed:
            raise KernelError(
                f"the default kernel in {found} has modules ({', '.join(needed)});"
                " it must have everything built in"
            )
        version = (
            bzimage_version(found / "bzImage") if (found / "bzImage").is_file() else None
        ) or config_version(text)
        initrd = self._initrd(self.root / ".default", None, [], None)
        return Kernel(self.DEFAULT, image, initrd, acpi, "", version)

    def get(self, name: str | None) -> Kernel:
        if name is None or name == self.DEFAULT:
            return self.default()
        meta = self._load(name)
        home = self.root / name
        modules = [_Module(m["path"], m["sha256"]) for m in meta["modules"]]
        image = home / meta["image"]
        if not image.is_file():
            raise KernelError(f"kernel {name!r} is damaged: {image} is missing; register it again")
        initrd = self._initrd(home, home / "modules", modules, meta["version"])
        return Kernel(name, image, initrd, meta["acpi"], meta["cmdline"], meta["version"])

    def names(self) -> builtins.list[str]:
        """Registered names, the default first; builds nothing."""
        names = [self.DEFAULT]
        if self.root.is_dir():
            names += sorted(
                p.parent.name for p in self.root.glob("*/kernel.json") if NAME_RE.fullmatch(p.parent.name)
            )
        return names

    def list(self) -> builtins.list[Kernel]:
        """Every usable kernel; the default is left out while it is not built."""
        kernels = []
        for name in self.names():
            try:
                kernels.append(self.get(name))
            except KernelNotFound:
                if name != self.DEFAULT:
                    raise
        return kernels

    # ---- registration

    def register(
        self,
        name: str,
        image: Path,
        *,
        modules_dir: Path | None = None,
        config: Path | None = None,
        cmdline: str = "",
    ) -> Kernel:
        _check_name(name)
        if name == self.DEFAULT:
            raise KernelError(f"kernel name {name!r} is reserved for the project's kernel")
        if (self.root / name / "kernel.json").exists():
            raise KernelError(f"kernel {name!r} is already registered; unregister it first")
        _check_cmdline(cmdline)
        kind = image_kind(image)
        version = image_version(image)
        if modules_dir is not None:
            if version is not None and modules_dir.name != version:
                # The kernel refuses modules built for another version (vermagic).
                raise KernelError(f"{modules_dir} is not for {image}, which is {version}")
            version = _version(modules_dir.name)
            if version is None:
                raise KernelError(f"{modules_dir} is not named after a kernel version")
        if config is None:
            if version is None:
                raise KernelError(f"cannot tell the version of {image}; pass its config")
            config = self.boot_dir / f"config-{version}"
        if not config.is_file():
            raise KernelError(f"kernel config {config} not found; pass the config of {image}")
        kconfig = parse_config(config.read_text())
        acpi = _check_config(name, kconfig)
        wanted = [module for sym, module, _ in DRIVERS if kconfig.get(sym) == "m"]
        modules: dict[str, Path] = {}
        if wanted:
            if kconfig.get("MODULES") != "y":
                raise KernelError(f"config {config} has drivers as modules but not CONFIG_MODULES")
            if modules_dir is None and version is not None:
                modules_dir = self.modules_root / version
            if modules_dir is None or not modules_dir.is_dir():
                raise KernelError(
                    f"kernel {name!r} has {', '.join(wanted)} as modules: pass modules_dir "
                    f"(the kernel's /lib/modules/<version> directory)"
                )
            modules = resolve_modules(modules_dir, wanted)
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            image_name = "vmlinux" if kind == "elf" else "vmlinuz"
            shutil.copyfile(image, work / image_name)
            shutil.copyfile(config, work / "config")
            copied = [_copy_module(src, rel, work / "modules") for rel, src in modules.items()]
            meta = {
                "format": METADATA_FORMAT,
                "name": name,
                "image": image_name,
                "acpi": acpi,
                "cmdline": cmdline,
                "version": version,
                "modules": [{"path": m.path, "sha256": m.sha256} for m in copied],
                "source": {
                    "image": str(image),
                    "config": str(config),
                    "modules_dir": str(modules_dir) if modules_dir else None,
                },
            }
            _write_atomic(work / "kernel.json", json.dumps(meta, indent=2).encode() + b"\n")
            self._initrd(work, work / "modules", copied, version)  # fail now, not at pod start
            try:
                work.rename(self.root / name)
            except OSError as e:  # registered concurrently, or an old directory in the way
                raise KernelError(f"cannot register kernel {name!r}: {e}") from e
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("kernel registered name=%s version=%s acpi=%s modules=%d", name, version, acpi, len(copied))
        return self.get(name)

    def unregister(self, name: str) -> None:
        self._load(name)  # raises KernelNotFound, also for the default
        # Rename first so a half-deleted directory is never seen as a registration.
        trash = Path(tempfile.mkdtemp(prefix=f".{name}.deleted.", dir=self.root))
        (self.root / name).rename(trash / name)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("kernel unregistered name=%s", name)

    # ---- internals

    def _load(self, name: str) -> dict[str, Any]:
        path = self.root / name / "kernel.json"
        if not NAME_RE.fullmatch(name) or not path.is_file():
            raise KernelNotFound(f"unknown kernel {name!r}; registered: {', '.join(self.names())}")
        try:
            meta = json.loads(path.read_bytes())
            _check_meta(meta)
        except (ValueError, KeyError, TypeError) as e:
            raise KernelError(f"registration of kernel {name!r} in {path} is corrupt: {e}") from e
        return meta  # type: ignore[no-any-return]

    def _initrd(
        self, home: Path, module_dir: Path | None, modules: builtins.list[_Module], version: str | None
    ) -> Path:
        """The initrd for these modules and the current agent, built if not cached."""
        if not self.agent.is_file():
            raise KernelError(f"guest agent not built: {self.agent} (run `make -C guest`)")
        key = hashlib.sha256(INITRD_FORMAT.encode())
        key.update(self._digest(self.agent).encode())
        files: dict[str, Source] = {AGENT_PATH.lstrip("/"): self.agent}
        if modules:
            assert module_dir is not None and version is not None
            if not self.modload.is_file():
                raise KernelError(f"module loader not built: {self.modload} (run `make -C guest`)")
            key.update(self._digest(self.modload).encode())
            base = PurePosixPath("lib/modules") / version
            files["init"] = self.modload
            listing = "".join(f"/{base / m.path}\n" for m in modules)
            files[LOAD_LIST] = listing.encode()
            key.update(listing.encode())
            for m in modules:
                files[str(base / m.path)] = module_dir / m.path
                key.update(m.sha256.encode())
        else:
            files["init"] = Symlink(AGENT_PATH.lstrip("/"))
        out = home / f"initrd-{key.hexdigest()[:16]}.img"
        if out.is_file():
            return out
        try:
            build_initrd(out, files)
        except OSError as e:  # a module copy gone from the registration
            raise KernelError(f"cannot build the initrd in {home}: {e}") from e
        # Drop initrds of older agents. QEMU reads the initrd once at start-up, so a VM that
        # is already running does not need its file any more.
        for old in home.glob("initrd-*.img"):
            if old != out:
                old.unlink(missing_ok=True)
        log.info("initrd built path=%s modules=%d", out, len(modules))
        return out

    def _digest(self, path: Path) -> str:
        st = path.stat()
        memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if memo not in self._digests:
            self._digests[memo] = _sha256(path.read_bytes())
        return self._digests[memo]


# ---- kernel images and configs


def image_kind(image: Path) -> str:
    """'bzimage' or 'elf' (with a PVH entry); anything else QEMU's microvm cannot boot."""
    try:
        with image.open("rb") as f:
            head = f.read(0x210)
    except OSError as e:
        raise KernelError(f"cannot read kernel image {image}: {e}") from e
    if head[0x202:0x206] == b"HdrS":
        return "bzimage"
    if head[:4] == b"\x7fELF":
        try:
            pvh = _has_pvh_note(image.read_bytes())
        except (struct.error, IndexError):  # truncated or malformed headers
            pvh = False
        if not pvh:
            raise KernelError(
                f"{image} is an ELF kernel without a PVH entry note "
                "(CONFIG_PVH): QEMU cannot boot it; use its bzImage"
            )
        return "elf"
    raise KernelError(f"{image} is neither a bzImage nor an ELF vmlinux")


def image_version(image: Path) -> str | None:
    if image_kind(image) == "bzimage":
        return bzimage_version(image)
    match = re.search(rb"Linux version (\S+)", image.read_bytes())
    return _version(match.group(1).decode(errors="replace")) if match else None


def bzimage_version(image: Path) -> str | None:
    """The version from the boot protocol header's kernel_version string."""
    with image.open("rb") as f:
        head = f.read(0x210)
        if head[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", head, 0x206)[0] < 0x200:
            return None
        pointer = struct.unpack_from("<H", head, 0x20E)[0]
        if not pointer:
            return None
        f.seek(pointer + 0x200)
        text = f.read(256).split(b"\0")[0].split(b" ")[0]
    return _version(text.decode(errors="replace"))


def config_version(text: str) -> str | None:
    match = re.search(r"^# Linux/\S+ (\S+) Kernel Configuration$", text, re.MULTILINE)
    return _version(match.group(1)) if match else None


def _version(text: str) -> str | None:
    return text if VERSION_RE.fullmatch(text) else None


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_FOO=value lines, without the CONFIG_ prefix; unset options are absent."""
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line[len("CONFIG_") :].partition("=")
            config[key] = value.strip('"')
    return config


def _has_pvh_note(elf: bytes) -> bool:
    """True if a PT_NOTE segment has the Xen PHYS32_ENTRY note that QEMU's PVH loader needs."""
    if elf[4] != 2 or elf[5] != 1:  # 64-bit, little-endian: all x86-64 kernels
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        (offset,) = struct.unpack_from("<Q", elf, phoff + i * phentsize + 8)
        (size,) = struct.unpack_from("<Q", elf, phoff + i * phentsize + 32)
        pos, end = offset, offset + size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + _align4(namesz) + _align4(descsz)
    return False


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _check_config(name: str, config: Mapping[str, str]) -> bool:
    """Refuse a kernel that cannot run the agent; return whether it needs ACPI."""
    missing = [f"CONFIG_{sym}" for sym in BUILTIN if config.get(sym) != "y"]
    missing += [
        f"CONFIG_{sym} ({module})"
        for sym, module, required in DRIVERS
        if required and config.get(sym) not in ("y", "m")
    ]
    if missing:
        raise KernelError(f"kernel {name!r} lacks {', '.join(missing)}")
    acpi = config.get("ACPI") == "y"
    if not acpi and config.get("VIRTIO_MMIO_CMDLINE_DEVICES") != "y":
        raise KernelError(
            f"kernel {name!r} has neither CONFIG_ACPI nor "
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: it cannot find virtio-mmio devices"
        )
    if not acpi and config.get("VIRTIO_MMIO") != "y":
        # Without ACPI, QEMU lists the devices as virtio_mmio.device= on the kernel command
        # line; only a built-in virtio_mmio reads that (kmod's modprobe would, modload does not).
        raise KernelError(f"kernel {name!r} has no ACPI, so its virtio_mmio must be built in")
    return acpi


# ---- modules


def resolve_modules(modules_dir: Path, wanted: list[str]) -> dict[str, Path]:
    """The wanted modules and their dependencies, in load order: relative path -> file."""
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        raise KernelError(f"{dep_file} not found: run `depmod {modules_dir.name}`")
    deps: dict[str, list[str]] = {}
    for line in dep_file.read_text().splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[path] = rest.split()
    by_name = {module_name(p): p for p in deps}
    softdeps = _softdeps(modules_dir / "modules.softdep")

    order: dict[str, Path] = {}
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise KernelError(f"dependency cycle at {path} in {dep_file}")
        visiting.add(path)
        # modules.dep lists the full closure; softdeps that name a real module come first too.
        for pre in softdeps.get(module_name(path), []):
            if pre in by_name:
                visit(by_name[pre])
        for dep in reversed(deps[path]):  # depmod lists the deepest dependency last
            if dep not in deps:
                raise KernelError(f"{path} depends on {dep}, which is not in {dep_file}")
            visit(dep)
        visiting.discard(path)
        if not _good_rel(path):
            raise KernelError(f"bad module path {path!r} in {dep_file}")
        if not (modules_dir / path).is_file():
            raise KernelError(f"module file {modules_dir / path} is missing")
        order[path] = modules_dir / path

    for name in wanted:
        if name not in by_name:
            raise KernelError(
                f"module {name} is not in {modules_dir}: the kernel's config has "
                "it as a module, so its modules directory must have it"
            )
        visit(by_name[name])
    return order


def module_name(path: str) -> str:
    base = PurePosixPath(path).name
    return base[: base.index(".ko")].replace("-", "_") if ".ko" in base else base


def _softdeps(path: Path) -> dict[str, list[str]]:
    """`softdep mod pre: a b post: c` lines -> {mod: [a, b]}; post: is not needed to boot."""
    result: dict[str, list[str]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "softdep":
                pre: list[str] = []
                target: list[str] | None = None
                for word in words[2:]:
                    if word.endswith(":"):
                        target = pre if word == "pre:" else None
                    elif target is not None:
                        target.append(word.replace("-", "_"))
                result[words[1].replace("-", "_")] = pre
    return result


def _copy_module(src: Path, rel: str, dest_dir: Path) -> _Module:
    """Copy one module, decompressed: modload passes no MODULE_INIT_COMPRESSED_FILE flag."""
    data = src.read_bytes()
    if rel.endswith(".ko.xz"):
        data = lzma.decompress(data)
    elif rel.endswith(".ko.gz"):
        data = gzip.decompress(data)
    elif rel.endswith(".ko.zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif not rel.endswith(".ko"):
        raise KernelError(f"unsupported module file {src}")
    rel = rel[: rel.index(".ko") + 3]
    dest = dest_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return _Module(rel, _sha256(data))


# ---- small checks and helpers


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a kernel, or None if it can."""
    if NAME_RE.fullmatch(name):
        return None
    return (
        f"bad kernel name {name!r}: use 1-63 of a-z 0-9 . - in dot-separated parts that start "
        "and end with a letter or digit"
    )


def offered(node: dict[str, Any]) -> set[str]:
    """The kernel names a Node object says its agent has registered (NODE_ANNOTATION)."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(KERNELS_ANNOTATION)
    names = text.split(",") if isinstance(text, str) else []
    return {n for n in names if NAME_RE.fullmatch(n)}


def _check_name(name: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise KernelError(problem)


def _check_cmdline(cmdline: str) -> None:
    if len(cmdline) > MAX_CMDLINE or not all(" " <= c <= "~" for c in cmdline):
        raise KernelError(
            f"bad kernel cmdline: printable ASCII on one line, at most {MAX_CMDLINE} characters"
        )


def _good_rel(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not rel.startswith("/") and all(p not in (".", "..") for p in parts)


def _check_meta(meta: Any) -> None:
    if meta.get("format") != METADATA_FORMAT:
        raise ValueError(f"unknown format {meta.get('format')!r}")
    if not isinstance(meta["image"], str) or meta["image"] not in ("vmlinux", "vmlinuz"):
        raise ValueError("bad image")
    if not isinstance(meta["acpi"], bool) or not isinstance(meta["cmdline"], str):
        raise TypeError("bad acpi or cmdline")
    if meta["version"] is not None and (
        not isinstance(meta["version"], str) or not VERSION_RE.fullmatch(meta["version"])
    ):
        raise ValueError("bad version")
    for module in meta["modules"]:
        if not isinstance(module["path"], str) or not _good_rel(module["path"]):
            raise ValueError(f"bad module path {module['path']!r}")
        if not isinstance(module["sha256"], str):
            raise TypeError("bad module digest")
    if meta["modules"] and meta["version"] is None:
        raise ValueError("modules without a version")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
