"""The image store: pull/import, build one erofs disk per image, look up, remove, prune.

Layout under ROOT (everything written atomically: temp file or dir, fsync, rename):

    blobs/sha256/<hex>           verified manifests, configs and layers (shared)
    images/<config hex>/         one per image ID: config.json, meta.json, disk.erofs
    refs.json                    normalized name -> {id, digest}
    locks/                       flock files: gc (shared by pulls, exclusive for prune),
                                 refs, and one per image ID (one builder at a time)
    tmp/                         downloads and builds in progress; cleared by prune()

Crash safety: an image directory appears complete or not at all; a ref is only added after
its image exists, and removed before its image is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .archive import import_path
from .auth import RegistryAuth
from .blobs import BlobStore, fsync_dir
from .erofs import build_erofs
from .errors import ImageError, ImageNotFound, ImageNotPresent, InvalidReference, StoreError
from .image import Candidate, Image, ImageMeta, load_meta
from .manifest import MAX_CONFIG_BYTES, parse_config
from .policy import RegistryPolicy
from .progress import ProgressCallback, ProgressEvent, short
from .pull import fetch_blobs, resolve
from .pullmetrics import timed_pull
from .reference import Reference, parse_reference
from .registry import RegistryClient, is_insecure
from .unpack import LayerApplier, read_file_in_root
from .users import UserDb

log = logging.getLogger(__name__)

_ID_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{1,64})")
REFS_VERSION = 1
# Where a name came from (refs.json "source"): a registry, or `import` on this node. Names from
# before this field count as pulled: their use is checked against the registry.
SOURCE_REGISTRY, SOURCE_IMPORT = "registry", "import"


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # Layers may leave directories without write permission (e.g. 0555).
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=onerror)
    else:
        path.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ImageStore:
    def __init__(
        self,
        root: Path,
        *,
        insecure_registries: Sequence[str] = (),
        auth: RegistryAuth | None = None,
        ca_file: Path | None = None,
        compressor: str | None = None,
        tenant_policy: RegistryPolicy | None = None,
    ) -> None:
        """`tenant_policy`: this store pulls for tenants (the node agent's): every connection is
        vetted by the policy, and `ensure_for_pod` asks the registry, with the pod's own
        credentials, before a cached image is used. None: the operator's own store."""
        self.root = Path(root)
        self.tenant_policy = tenant_policy
        self.insecure_registries = tuple(insecure_registries)
        self.auth = auth or RegistryAuth()
        self.ca_file = ca_file
        self.compressor = compressor
        self.images_dir = self.root / "images"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.refs_path = self.root / "refs.json"
        try:
            for d in (self.images_dir, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(self.root / "blobs", self.tmp)
        except OSError as exc:
            raise StoreError.from_os_error(exc) from exc

    # -- locks and refs ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, *, shared: bool = False) -> Iterator[int]:
        fd = os.open(self.locks / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _read_refs(self) -> dict[str, dict[str, str]]:
        try:
            doc = json.loads(self.refs_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageError(f"image store {self.refs_path} is corrupt: {exc}") from None
        refs = doc.get("refs", {}) if isinstance(doc, dict) else {}
        return {str(k): dict(v) for k, v in refs.items() if isinstance(v, dict)}

    @contextlib.contextmanager
    def _refs_txn(self) -> Iterator[dict[str, dict[str, str]]]:
        with self._lock("refs"):
            refs = self._read_refs()
            before = json.dumps(refs, sort_keys=True)
            yield refs
            after = json.dumps(refs, sort_keys=True)
            if after != before:
                doc = {"version": REFS_VERSION, "refs": dict(sorted(refs.items()))}
                _write_atomic(self.refs_path, json.dumps(doc, indent=1).encode())

    def _image_dir(self, image_id: str) -> Path:
        return self.images_dir / image_id.split(":", 1)[1]

    def _load(self, image_id: str, refs: dict[str, dict[str, str]] | None = None) -> Image | None:
        image_dir = self._image_dir(image_id)
        meta = load_meta(image_dir)
        if meta is None or not (image_dir / "disk.erofs").is_file():
            return None
        refs = self._read_refs() if refs is None else refs
        names = tuple(sorted(k for k, v in refs.items() if v.get("id") == image_id))
        try:
            return meta.image(image_dir, names)
        except (OSError, ImageError):
            return None

    # -- pull and import --------------------------------------------------------------------

    def _client(self, ref: Reference, auth: RegistryAuth | None) -> RegistryClient:
        """A client for `ref`'s registry with `auth`'s credentials (the store's where `auth`
        names none), vetted by the tenant policy if this store has one."""
        host = ref.api_host
        creds = auth.merged_over(self.auth) if auth is not None else self.auth
        return RegistryClient(
            host,
            insecure=is_insecure(host, self.insecure_registries),
            credentials=creds.lookup(ref.domain),
            ca_file=self.ca_file,
            policy=self.tenant_policy,
        )

    @timed_pull
    def pull(
        self, ref: str, progress: ProgressCallback | None = None, *, auth: RegistryAuth | None = None
    ) -> Image:
        """Resolve `ref` on its registry, download what is missing, build the disk if needed.
        `auth`: credentials to use before the store's own (a pod's pull secrets)."""
        parsed = parse_reference(ref)
        fetched: list[str] = []
        with self._lock("gc", shared=True) as gc_fd:
            try:
                with self._client(parsed, auth) as client:
                    if progress:
                        progress(ProgressEvent(str(parsed), "resolve"))
                    resolved = resolve(client, parsed, self.blobs, fetched)
                    image_id = resolved.manifest.config.digest
                    present = self._load(image_id) is not None
                    if not present or not self._pulled_from(parsed, image_id):
                        fetch_blobs(
                            client, parsed, resolved.manifest, self.blobs, progress, fetched, refetch=present
                        )
                names = [f"{parsed.repository}@{resolved.top_digest}"]
                if parsed.tag and not parsed.digest:
                    names.insert(0, str(parsed))
                candidate = Candidate(
                    tuple(names),
                    resolved.top_digest,
                    resolved.manifest_digest,
                    resolved.manifest,
                    resolved.blobs,
                )
                return self._install(candidate, progress, SOURCE_REGISTRY)
            except ImageError as exc:
                self._discard(gc_fd, fetched)
                raise exc.prefixed(f"pull {ref}") from exc
            except OSError as exc:
                self._discard(gc_fd, fetched)
                raise StoreError.from_os_error(exc).prefixed(f"pull {ref}") from exc

    def _pulled_from(self, ref: Reference, image_id: str) -> bool:
        """Whether this store may take `image_id` for `ref` without downloading its blobs again.

        On a tenant store, only if the image was pulled from `ref`'s repository before: content
        digests are not secrets, so a registry that serves a manifest naming another tenant's
        private layers has not shown it holds them until it has served every blob.
        """
        if self.tenant_policy is None:
            return True
        for name, entry in self._read_refs().items():
            if entry.get("id") != image_id or entry.get("source") != SOURCE_REGISTRY:
                continue
            with contextlib.suppress(InvalidReference):
                if parse_reference(name).repository == ref.repository:
                    return True
        return False

    def import_archive(
        self,
        path: Path,
        progress: ProgressCallback | None = None,
        *,
        repository: str | None = None,
    ) -> list[Image]:
        """Import an OCI layout (directory or tar) or a `docker save` tarball.

        Images named only by a tag in an OCI layout get `repository:tag` if `repository` is
        given, and no name otherwise (they are still reachable by ID).
        """
        fetched: list[str] = []
        with self._lock("gc", shared=True) as gc_fd:
            try:
                candidates = import_path(Path(path), self.blobs, fetched, repository)
                return [self._install(c, progress, SOURCE_IMPORT) for c in candidates]
            except ImageError as exc:
                self._discard(gc_fd, fetched)
                raise exc.prefixed(f"import {path}") from exc
            except OSError as exc:
                self._discard(gc_fd, fetched)
                raise StoreError.from_os_error(exc).prefixed(f"import {path}") from exc

    def _discard(self, gc_fd: int, fetched: list[str]) -> None:
        """After a failed pull: drop blobs it downloaded that no image uses, if no other pull
        is running (they may share blobs); otherwise prune() will."""
        if not fetched:
            return
        try:
            fcntl.flock(gc_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        with contextlib.suppress(OSError):  # never hide the error that got us here
            keep = self._referenced_blobs()
            for digest in fetched:
                if digest not in keep:
                    self.blobs.remove(digest)

    def _install(self, c: Candidate, progress: ProgressCallback | None, source: str) -> Image:
        image_id = c.manifest.config.digest
        name = c.names[0] if c.names else image_id
        with self._lock(image_id.split(":", 1)[1]):
            image_dir = self._image_dir(image_id)
            meta = load_meta(image_dir)
            if meta is None or not (image_dir / "disk.erofs").is_file():
                if image_dir.exists():  # a broken leftover; rebuild it
                    self._delete_dir(image_dir)
                meta = self._build(c, name, progress)
            elif meta.digest != c.top_digest or not set(c.blobs) <= set(meta.blobs):
                meta = ImageMeta(
                    **{
                        **meta.__dict__,
                        "digest": c.top_digest,
                        "blobs": tuple(dict.fromkeys((*meta.blobs, *c.blobs))),
                    }
                )
                _write_atomic(image_dir / "meta.json", json.dumps(meta.to_json()).encode())
            with self._refs_txn() as refs:
                for n in c.names:
                    refs[n] = {"id": image_id, "digest": c.top_digest, "source": source}
            image = self._load(image_id)
        if image is None:
            raise ImageError(f"image {image_id} vanished right after it was built")
        if progress:
            progress(ProgressEvent(name, "done"))
        return image

    def _build(self, c: Candidate, name: str, progress: ProgressCallback | None) -> ImageMeta:
        image_id = c.manifest.config.digest
        config_bytes = self.blobs.read(image_id, MAX_CONFIG_BYTES)
        parsed = parse_config(config_bytes)
        layers = c.manifest.layers
        if parsed.diff_ids and len(parsed.diff_ids) != len(layers):
            raise ImageError(
                f"image config lists {len(parsed.diff_ids)} layers but the manifest has {len(layers)}"
            )
        work = Path(tempfile.mkdtemp(prefix=f"build-{short(image_id)}-", dir=self.tmp))
        try:
            rootfs, out = work / "rootfs", work / "image"
            out.mkdir()
            with LayerApplier(rootfs) as applier:
                for i, layer in enumerate(layers):
                    if progress:
                        progress(ProgressEvent(name, "unpack", short(layer.digest), i + 1, len(layers)))
                    diff_id = parsed.diff_ids[i] if parsed.diff_ids else None
                    applier.apply(self.blobs.path(layer.digest), layer.digest, diff_id)
                newest = applier.newest_mtime
            users = UserDb.parse(
                read_file_in_root(rootfs, "etc/passwd"), read_file_in_root(rootfs, "etc/group")
            )
            if progress:
                progress(ProgressEvent(name, "build"))
            disk = out / "disk.erofs"
            build_erofs(rootfs, disk, image_id=image_id, newest_mtime=newest, compressor=self.compressor)
            _rmtree(rootfs)
            os.chmod(disk, 0o444)
            meta = ImageMeta(
                id=image_id,
                digest=c.top_digest,
                manifest=c.manifest_digest,
                blobs=tuple(dict.fromkeys(c.blobs)),
                layers=tuple(layer.digest for layer in layers),
                size=disk.stat().st_size,
                created=parsed.created,
                users=users,
            )
            _write_atomic(out / "config.json", config_bytes)
            _write_atomic(out / "meta.json", json.dumps(meta.to_json()).encode())
            with open(disk, "rb") as f:
                os.fsync(f.fileno())
            fsync_dir(out)
            os.rename(out, self._image_dir(image_id))
            fsync_dir(self.images_dir)
            return meta
        finally:
            _rmtree(work)

    # -- lookup -----------------------------------------------------------------------------

    def get(self, ref: str) -> Image | None:
        """By name[:tag], name@digest, image ID (`sha256:...`) or a unique ID prefix."""
        refs = self._read_refs()
        text = ref.strip()
        with contextlib.suppress(InvalidReference):
            entry = refs.get(str(parse_reference(text)))
            if entry is not None:
                return self._load(entry["id"], refs)
        match = _ID_PREFIX.fullmatch(text)
        if match is None:
            return None
        prefix = match.group(1)
        ids = [d.name for d in self.images_dir.iterdir() if d.name.startswith(prefix)]
        if len(prefix) < 64 and not text.startswith("sha256:") and not ids:
            return None
        if len(ids) > 1:
            raise ImageError(f"image ID prefix {prefix!r} is ambiguous: {len(ids)} images match")
        if ids:
            return self._load(f"sha256:{ids[0]}", refs)
        # A manifest or index digest that some ref recorded.
        for entry in refs.values():
            if entry.get("digest") == f"sha256:{prefix}":
                return self._load(entry["id"], refs)
        return None

    def ensure(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        """The local image if there is one (no registry round-trip), else pull it."""
        return self.get(ref) or self.pull(ref, progress)

    def ensure_for_pod(
        self,
        ref: str,
        pull_policy: str = "IfNotPresent",
        auth: RegistryAuth | None = None,
        progress: ProgressCallback | None = None,
    ) -> Image:
        """The image for a pod's container, by its `imagePullPolicy`, pulled with the pod's
        credentials (`auth`, over the store's own).

        On a tenant store, a cached image pulled from a registry is used only after that
        registry, asked with the pod's credentials, serves its manifest: pulling rights are
        checked for every use, not only the first pull. Images imported on this node by the
        operator have no registry behind them and are used as they are.
        """
        if self.tenant_policy is None:
            if pull_policy == "Always":
                return self.pull(ref, progress, auth=auth)
            image = self.get(ref)
            if image is None and pull_policy == "Never":
                raise ImageNotPresent(
                    f'image "{ref}" is not present on this node and its pull policy is Never'
                )
            return image or self.pull(ref, progress, auth=auth)
        parsed = parse_reference(ref)  # a pod names images by reference, not by local ID
        entry = self._read_refs().get(str(parsed))
        image = self._load(entry["id"]) if entry is not None else None
        if image is not None and entry is not None and entry.get("source") == SOURCE_IMPORT:
            return image
        if pull_policy == "Always" or (image is None and pull_policy != "Never"):
            return self.pull(ref, progress, auth=auth)
        if image is None or entry is None:
            raise ImageNotPresent(f'image "{ref}" is not present on this node and its pull policy is Never')
        self._check_access(parsed, entry["digest"], auth, ref)
        return image

    def _check_access(self, ref: Reference, digest: str, auth: RegistryAuth | None, name: str) -> None:
        try:
            with self._client(ref, auth) as client:
                client.check_manifest(ref.path, digest)
        except ImageError as exc:
            raise exc.prefixed(
                f"image {name} is cached on this node, but its registry must confirm that this "
                "pod may pull it"
            ) from exc

    def list(self) -> list[Image]:
        refs = self._read_refs()
        images = []
        for d in sorted(self.images_dir.iterdir()):
            image = self._load(f"sha256:{d.name}", refs)
            if image is not None:
                images.append(image)
        return images

    # -- removal and garbage collection ---------------------------------------------------

    def remove(self, ref: str) -> None:
        """Untag `ref`; delete the image when no tag is left (or when given an ID/digest).

        A VM that has the disk open keeps working (the file is only unlinked).
        """
        image = self.get(ref)
        if image is None:
            raise ImageNotFound(f"remove {ref}: image not found")
        tag_key = None
        with contextlib.suppress(InvalidReference):
            parsed = parse_reference(ref.strip())
            if parsed.tag and not parsed.digest:
                tag_key = str(parsed)
        with self._lock(image.id.split(":", 1)[1]):
            with self._refs_txn() as refs:
                mine = [k for k, v in refs.items() if v.get("id") == image.id]
                if tag_key in mine and any("@" not in k and k != tag_key for k in mine):
                    del refs[tag_key]  # other tags still use the image
                    return
                for k in mine:
                    del refs[k]
            self._delete_dir(self._image_dir(image.id))

    def _delete_dir(self, image_dir: Path) -> None:
        # Rename first so a half-deleted image is never visible under images/.
        doomed = Path(tempfile.mkdtemp(prefix="remove-", dir=self.tmp))
        os.rename(image_dir, doomed / "image")
        fsync_dir(self.images_dir)
        _rmtree(doomed)

    def _referenced_blobs(self) -> set[str]:
        keep: set[str] = set()
        for d in self.images_dir.iterdir():
            meta = load_meta(d)
            if meta is not None:
                keep.update(meta.blobs)
        return keep

    def prune(self) -> int:
        """Delete blobs no image references and leftovers of interrupted work; returns bytes
        freed. Waits for running pulls and imports to finish first."""
        freed = 0
        with self._lock("gc"):
            keep = self._referenced_blobs()
            for digest in list(self.blobs.digests()):
                if digest not in keep:
                    freed += self.blobs.remove(digest)
            for entry in self.tmp.iterdir():
                _rmtree(entry)
        return freed
