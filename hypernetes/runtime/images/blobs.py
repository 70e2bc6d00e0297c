"""Content-addressed blobs under ROOT/blobs/sha256/<hex>, shared by every image.

A blob appears under its name only after its bytes were hashed and matched: writers fill a
temp file in ROOT/tmp, and `ingest` renames it into place (atomic) or deletes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import DigestMismatch
from .reference import check_digest


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self._out.write(data)


def _write(out: IO[bytes], data: bytes) -> None:
    out.write(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path, tmp: Path) -> None:
        self.dir = root / "sha256"
        self.tmp = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str, limit: int) -> bytes:
        with open(self.path(digest), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise DigestMismatch(f"blob {digest} is larger than the {limit} bytes allowed")
        return data

    def ingest(self, digest: str | None, fill: Callable[[IO[bytes]], None], size: int | None = None) -> str:
        """Run `fill(out)`, then keep the bytes as `digest` only if they hash to it.

        With `digest=None` (content whose name we learn by hashing it, e.g. `docker save`
        layers) the bytes are kept under whatever they hash to. Returns the digest.
        """
        fd, tmp_name = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = _HashingWriter(f)
                fill(writer)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            actual = "sha256:" + writer.hasher.hexdigest()
            digest = digest or actual
            if actual != digest:
                raise DigestMismatch(f"blob {digest}: content hashes to {actual}; refusing it")
            if size is not None and writer.size != size:
                raise DigestMismatch(
                    f"blob {digest}: {writer.size} bytes, but {size} were declared; refusing it"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(digest))
            fsync_dir(self.dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store small bytes (manifests, configs); returns their digest."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.ingest(digest, lambda out: _write(out, data), len(data))
        return digest

    def remove(self, digest: str) -> int:
        path = self.path(digest)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            return size
        return 0

    def digests(self) -> Iterator[str]:
        for entry in os.scandir(self.dir):
            if len(entry.name) == 64:
                yield f"sha256:{entry.name}"
