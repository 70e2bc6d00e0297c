"""Resolve a reference on its registry and fetch the image's blobs into the blob store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from .blobs import BlobStore
from .errors import DigestMismatch, UnsupportedImage
from .manifest import MAX_CONFIG_BYTES, Descriptor, Index, Manifest, choose_platform, parse_document
from .progress import ProgressCallback, ProgressEvent, short
from .reference import Reference
from .registry import RegistryClient

PARALLEL_DOWNLOADS = 3


@dataclass(frozen=True)
class Resolved:
    top_digest: str  # what the tag points at: an index or a manifest
    manifest_digest: str  # the linux/amd64 manifest
    manifest: Manifest
    blobs: tuple[str, ...]  # every document and blob of the image (for prune)


def _keep(blobs: BlobStore, body: bytes, digest: str, fetched: list[str]) -> None:
    if not blobs.has(digest):
        blobs.put(body, digest)
        fetched.append(digest)


def resolve(client: RegistryClient, ref: Reference, blobs: BlobStore, fetched: list[str]) -> Resolved:
    """Fetch the manifest (via the index if there is one) and keep the documents;
    `fetched` collects the digests this added to the store."""
    body, content_type, top = client.get_manifest(ref.path, ref.object)
    doc = parse_document(body, content_type)
    _keep(blobs, body, top, fetched)
    docs = [top]
    digest = top
    if isinstance(doc, Index):
        desc = choose_platform(doc)
        body, content_type, digest = client.get_manifest(ref.path, desc.digest)
        if len(body) != desc.size:
            raise DigestMismatch(f"manifest {desc.digest}: {len(body)} bytes, the index declares {desc.size}")
        doc = parse_document(body, content_type)
        if isinstance(doc, Index):
            raise UnsupportedImage("nested image indexes are not supported")
        _keep(blobs, body, digest, fetched)
        docs.append(digest)
    manifest = doc
    all_blobs = (*docs, manifest.config.digest, *(layer.digest for layer in manifest.layers))
    return Resolved(top, digest, manifest, all_blobs)


def fetch_blobs(
    client: RegistryClient,
    ref: Reference,
    manifest: Manifest,
    blobs: BlobStore,
    progress: ProgressCallback | None,
    fetched: list[str],
    *,
    refetch: bool = False,
) -> None:
    """Download the config, then the missing layers (a few at a time, like Docker), each
    verified; `fetched` collects the digests added to the store. With `refetch`, blobs already
    in the store are downloaded (and verified) again: the registry must show it has them."""
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise UnsupportedImage(
            f"image config is {manifest.config.size} bytes, more than {MAX_CONFIG_BYTES} allowed"
        )
    name = str(ref)
    lock = threading.Lock()  # progress renderers and `fetched` are not thread-safe

    def report(event: ProgressEvent) -> None:
        if progress is not None:
            with lock:
                progress(event)

    def fetch(desc: Descriptor, is_layer: bool) -> None:
        item = short(desc.digest)
        if blobs.has(desc.digest) and not refetch:
            if is_layer:
                report(ProgressEvent(name, "exists", item, desc.size, desc.size))
            return
        on_bytes: Callable[[int], None] | None = None
        if is_layer and progress is not None:

            def on_bytes(n: int) -> None:
                report(ProgressEvent(name, "download", item, n, desc.size))

            report(ProgressEvent(name, "download", item, 0, desc.size))
        blobs.ingest(desc.digest, _filler(client, ref, desc, on_bytes), desc.size)
        with lock:
            fetched.append(desc.digest)

    fetch(manifest.config, False)
    unique = list({layer.digest: layer for layer in manifest.layers}.values())
    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS, thread_name_prefix="pull") as pool:
        futures = [pool.submit(fetch, layer, True) for layer in unique]
    for future in futures:  # all have finished; report the first failure in layer order
        future.result()


def _filler(
    client: RegistryClient,
    ref: Reference,
    desc: Descriptor,
    on_bytes: Callable[[int], None] | None,
) -> Callable[[IO[bytes]], None]:
    def fill(out: IO[bytes]) -> None:
        client.fetch_blob(ref.path, desc, out, on_bytes)

    return fill
