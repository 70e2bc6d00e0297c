"""Import OCI image layouts (a directory or a tar of one) and `docker save` archives.

Archives are read in place (tar members are streamed, never extracted to disk), and every
blob is copied into the blob store through the same hash check as a registry download.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .blobs import BlobStore
from .errors import ImageError, InvalidArchive, InvalidReference
from .image import Candidate
from .manifest import (
    MAX_CONFIG_BYTES,
    MAX_LAYERS,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    Descriptor,
    Index,
    Manifest,
    choose_platform,
    parse_document,
    sha256_digest,
    synthesize_manifest,
)
from .reference import check_digest, parse_reference

CHUNK = 1 << 20
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class _Source:
    """Named files of an archive: a directory or a tarball."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_file():
            try:
                self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
                for m in self._tar.getmembers():
                    self._members[m.name.removeprefix("./").rstrip("/")] = m
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise InvalidArchive(f"not a readable tar archive: {exc}") from None
        elif not path.is_dir():
            raise InvalidArchive("no such file or directory")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        if self._tar is not None:
            return name in self._members
        return self._file(name).is_file()

    def _file(self, name: str) -> Path:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            raise InvalidArchive(f"archive refers to {name!r} outside itself")
        return self.path.joinpath(*parts)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._tar is not None:
            member = self._members.get(name.removeprefix("./"))
            f = self._tar.extractfile(member) if member is not None else None
            if f is None:
                raise InvalidArchive(f"archive lacks {name!r}")
            with f:
                yield f
        else:
            file = self._file(name)
            if not file.is_file():
                raise InvalidArchive(f"archive lacks {name!r}")
            with open(file, "rb") as fh:
                yield fh

    def read(self, name: str, limit: int) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidArchive(f"{name} is larger than the {limit} bytes allowed")
        return data

    def ingest(
        self, name: str, blobs: BlobStore, fetched: list[str], digest: str | None, size: int | None = None
    ) -> str:
        """Copy member `name` into the blob store, verified against `digest` (if known)."""
        if digest is not None and blobs.has(digest):
            return digest

        def fill(out: IO[bytes]) -> None:
            with self.open(name) as f:
                while chunk := f.read(CHUNK):
                    out.write(chunk)

        stored = blobs.ingest(digest, fill, size)
        fetched.append(stored)
        return stored


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidArchive(f"{what} is not valid JSON: {exc}") from None


def import_path(
    path: Path, blobs: BlobStore, fetched: list[str], repository: str | None = None
) -> list[Candidate]:
    """Copy every image of the archive into `blobs`; returns store Candidates to install."""
    source = _Source(path)
    try:
        if source.exists("index.json"):
            return _import_oci(source, blobs, fetched, repository)
        if source.exists("manifest.json"):
            return _import_docker(source, blobs, fetched)
        raise InvalidArchive(
            "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)"
        )
    finally:
        source.close()


def _blob_name(digest: str) -> str:
    return "blobs/" + check_digest(digest).replace(":", "/", 1)


def _names_for(desc: Descriptor, repository: str | None) -> list[str]:
    ann = desc.annotations or {}
    value = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)
    if not value:
        return []
    try:
        if "/" not in value and ":" not in value and "@" not in value:
            # OCI allows a bare tag as the ref name; it needs a repository to mean anything.
            if repository is None:
                return []
            return [str(parse_reference(f"{repository}:{value}"))]
        return [str(parse_reference(value))]
    except InvalidReference as exc:
        raise InvalidArchive(f"bad image name in archive: {exc}") from None


def _import_oci(
    source: _Source, blobs: BlobStore, fetched: list[str], repository: str | None
) -> list[Candidate]:
    if source.exists("oci-layout"):
        layout = _json(source.read("oci-layout", 4096), "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidArchive(f"unsupported OCI layout version {version!r}")
    index_doc = parse_document(source.read("index.json", MAX_MANIFEST_BYTES))
    if not isinstance(index_doc, Index):
        raise InvalidArchive("index.json is not an image index")
    out: list[Candidate] = []
    for desc in index_doc.manifests:
        names = _names_for(desc, repository)
        top = desc.digest
        docs = [source.ingest(_blob_name(top), blobs, fetched, top, desc.size)]
        doc = parse_document(blobs.read(top, MAX_MANIFEST_BYTES))
        digest = top
        if isinstance(doc, Index):
            chosen = choose_platform(doc)
            digest = chosen.digest
            docs.append(source.ingest(_blob_name(digest), blobs, fetched, digest, chosen.size))
            doc = parse_document(blobs.read(digest, MAX_MANIFEST_BYTES))
            if isinstance(doc, Index):
                raise InvalidArchive("nested image indexes are not supported")
        manifest: Manifest = doc
        for d in (manifest.config, *manifest.layers):
            source.ingest(_blob_name(d.digest), blobs, fetched, d.digest, d.size)
        names += [f"{parse_reference(n).repository}@{top}" for n in names]
        all_blobs = (*docs, manifest.config.digest, *(d.digest for d in manifest.layers))
        out.append(Candidate(tuple(names), top, digest, manifest, all_blobs))
    if not out:
        raise InvalidArchive("index.json lists no images")
    return out


def _import_docker(source: _Source, blobs: BlobStore, fetched: list[str]) -> list[Candidate]:
    entries = _json(source.read("manifest.json", MAX_MANIFEST_BYTES), "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise InvalidArchive("manifest.json is not a non-empty list")
    out: list[Candidate] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArchive("manifest.json entry lacks Config")
        layer_files = entry.get("Layers")
        if not isinstance(layer_files, list) or not all(isinstance(x, str) for x in layer_files):
            raise InvalidArchive("manifest.json entry lacks a Layers list")
        if len(layer_files) > MAX_LAYERS:
            raise InvalidArchive(f"image has more than {MAX_LAYERS} layers")
        config_bytes = source.read(entry["Config"], MAX_CONFIG_BYTES)
        config_digest = blobs.put(config_bytes)
        fetched.append(config_digest)
        layers = []
        for name in layer_files:
            digest = source.ingest(name, blobs, fetched, None)
            size = blobs.path(digest).stat().st_size
            layers.append(Descriptor("application/vnd.oci.image.layer.v1.tar", digest, size))
        config = Descriptor(OCI_CONFIG, config_digest, len(config_bytes))
        manifest_bytes = synthesize_manifest(config, layers)
        top = blobs.put(manifest_bytes)
        fetched.append(top)
        manifest = parse_document(manifest_bytes)
        assert isinstance(manifest, Manifest)
        names: list[str] = []
        for tag in entry.get("RepoTags") or []:
            try:
                names.append(str(parse_reference(str(tag))))
            except ImageError as exc:
                raise InvalidArchive(f"bad RepoTags entry: {exc}") from None
        names += [f"{parse_reference(n).repository}@{top}" for n in list(names)]
        assert sha256_digest(manifest_bytes) == top
        all_blobs = (top, config_digest, *(d.digest for d in layers))
        out.append(Candidate(tuple(names), top, top, manifest, all_blobs))
    return out
