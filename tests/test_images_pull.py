"""Pulling through the real path: Debian's docker-registry on 127.0.0.1, images pushed by skopeo."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from hypernetes.runtime.images import (
    DigestMismatch,
    ImageNotFound,
    ImageStore,
    ManifestUnknown,
    ProgressEvent,
    RegistryUnreachable,
    UnsupportedImage,
    terminal_progress,
)
from hypernetes.runtime.images.manifest import ACCEPT
from hypernetes.runtime.images.registry import RegistryClient
from tests.support.registry import ImageFactory, Registry
from tools.imagebuild import Layer, LayerBuilder, busybox_image


def registry_manifest(registry: Registry, repo: str, tag: str) -> tuple[str, dict[str, object]]:
    resp = httpx.get(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    resp.raise_for_status()
    return resp.headers["docker-content-digest"], resp.json()


def extract(disk: Path, dest: Path) -> Path:
    """The erofs disk's tree, via erofs-utils' own reader."""
    subprocess.run(["fsck.erofs", f"--extract={dest}", str(disk)], check=True, capture_output=True)
    return dest


def marker(text: str) -> Layer:
    return Layer(LayerBuilder().file("marker", text).tar())


def test_pull_oci_image(
    image_store: ImageStore, busybox_ref: str, registry: Registry, tmp_path: Path
) -> None:
    image = image_store.pull(busybox_ref)
    digest, manifest = registry_manifest(registry, "test/busybox", "1")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert image.digest == digest
    assert image.refs == (busybox_ref, f"{registry.host}/test/busybox@{digest}")
    assert image.config.cmd == ("sh",)
    assert image.config.env_map["HELLO"] == "world"
    assert image.disk.is_file() and image.size == image.disk.stat().st_size
    tree = extract(image.disk, tmp_path / "tree")
    assert (tree / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert os.readlink(tree / "bin" / "sh") == "/bin/busybox"
    assert image_store.get(busybox_ref) == image
    assert image_store.get(image.id) == image
    assert image_store.get(image.short_id) == image
    assert image_store.get(f"{registry.host}/test/busybox@{digest}") == image


def test_pull_docker_schema2(
    image_store: ImageStore, image_factory: ImageFactory, registry: Registry
) -> None:
    ref = image_factory.push(busybox_image([marker("v2s2")]), "test/v2s2:1", v2s2=True)
    _, manifest = registry_manifest(registry, "test/v2s2", "1")
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    image = image_store.pull(ref)
    assert image.config.cmd == ("sh",)
    assert len(image.layers) == 2


def test_pull_index_picks_linux_amd64(
    image_store: ImageStore, image_factory: ImageFactory, registry: Registry, tmp_path: Path
) -> None:
    arm = busybox_image([marker("arm64")], architecture="arm64")
    amd = busybox_image([marker("amd64")], architecture="amd64")
    ref = image_factory.push_index([arm, amd], "test/multi:1")
    index_digest, index = registry_manifest(registry, "test/multi", "1")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    image = image_store.pull(ref)
    assert image.config.architecture == "amd64"
    assert image.digest == index_digest  # what the tag points at, as `docker pull` reports
    assert (extract(image.disk, tmp_path / "t") / "marker").read_text() == "amd64"
    # Pinning the index digest finds the same image locally.
    assert image_store.get(f"{registry.host}/test/multi@{index_digest}") == image


def test_index_without_amd64_is_refused(image_store: ImageStore, image_factory: ImageFactory) -> None:
    ref = image_factory.push_index([busybox_image([marker("arm")], architecture="arm64")], "test/armonly:1")
    with pytest.raises(UnsupportedImage) as info:
        image_store.pull(ref)
    assert str(info.value) == (f"pull {ref}: no linux/amd64 image in the index (platforms: linux/arm64)")


def test_pull_by_digest(image_store: ImageStore, busybox_ref: str, registry: Registry) -> None:
    digest, _ = registry_manifest(registry, "test/busybox", "1")
    pinned = f"{registry.host}/test/busybox@{digest}"
    image = image_store.pull(pinned)
    assert image.refs == (pinned,)
    assert image_store.ensure(pinned) == image


def test_tampered_blob_is_rejected_and_nothing_kept(
    image_store: ImageStore, image_factory: ImageFactory, registry: Registry
) -> None:
    ref = image_factory.push(busybox_image([marker("tampered")]), "test/tampered:1")
    _, manifest = registry_manifest(registry, "test/tampered", "1")
    layer = manifest["layers"][1]  # type: ignore[index]
    blob = registry.blob_file(layer["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    with pytest.raises(DigestMismatch) as info:
        image_store.pull(ref)
    assert str(info.value).startswith(f"pull {ref}: blob {layer['digest']}: content hashes to ")
    assert str(info.value).endswith("; refusing it")
    assert not image_store.blobs.has(layer["digest"])
    assert not image_store.blobs.has(manifest["config"]["digest"])  # type: ignore[index]
    assert list(image_store.blobs.digests()) == []
    assert list(image_store.tmp.iterdir()) == []
    assert image_store.list() == [] and image_store.get(ref) is None


def test_unreachable_registry_message(image_store: ImageStore) -> None:
    with pytest.raises(RegistryUnreachable) as info:
        image_store.pull("127.0.0.1:1/x:1")
    assert str(info.value) == "pull 127.0.0.1:1/x:1: registry unreachable: connection refused"


def test_stalled_registry_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        with (
            RegistryClient(host, insecure=True, io_timeout=0.3) as client,
            pytest.raises(RegistryUnreachable, match=r"registry unreachable: timed out"),
        ):
            client.get_manifest("x", "1")


def test_unknown_tag_and_repository(image_store: ImageStore, busybox_ref: str, registry: Registry) -> None:
    missing_tag = busybox_ref.replace(":1", ":nope")
    with pytest.raises(ManifestUnknown) as info:
        image_store.pull(missing_tag)
    assert str(info.value) == (
        f"pull {missing_tag}: manifest unknown: tag 'nope' not found in test/busybox on {registry.host}"
    )
    with pytest.raises(ImageNotFound) as info2:
        image_store.pull(f"{registry.host}/no/such:1")
    assert "not found" in str(info2.value) and "no/such" in str(info2.value)


def test_cache_is_shared_by_digest(image_store: ImageStore, image_factory: ImageFactory) -> None:
    spec = busybox_image([marker("shared")])
    first = image_factory.push(spec, "test/shared-a:1")
    second = image_factory.push(spec, "test/shared-b:2")
    events: list[ProgressEvent] = []
    a = image_store.pull(first)
    b = image_store.pull(second, events.append)
    assert a.id == b.id and a.disk == b.disk
    assert [e.phase for e in events if e.phase in ("download", "build")] == []
    assert len(image_store.list()) == 1
    assert set(image_store.get(first).refs) >= {first, second}  # type: ignore[union-attr]


def test_concurrent_pulls_build_once(tmp_path: Path, image_factory: ImageFactory) -> None:
    ref = image_factory.push(busybox_image([marker("concurrent")]), "test/concurrent:1")
    events: list[ProgressEvent] = []
    results: list[object] = []

    def pull() -> None:  # separate store objects, like separate processes on one node
        results.append(ImageStore(tmp_path / "store").pull(ref, events.append))

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.disk for r in results}) == 1  # type: ignore[attr-defined]
    assert [e.phase for e in events].count("build") == 1


def test_remove_and_prune(image_store: ImageStore, image_factory: ImageFactory) -> None:
    spec = busybox_image([marker("remove")])
    one = image_factory.push(spec, "test/rm:1")
    two = image_factory.push(spec, "test/rm:2")
    image = image_store.pull(one)
    image_store.pull(two)
    image_store.remove(one)  # another tag still uses it: only untagged
    kept = image_store.get(two)
    assert kept is not None and kept.disk.exists() and image_store.get(one) is None
    assert image_store.prune() == 0
    image_store.remove(two)
    assert image_store.get(two) is None and image_store.list() == []
    assert not image.disk.exists()
    assert image_store.prune() > 0
    assert list(image_store.blobs.digests()) == []
    with pytest.raises(ImageNotFound, match=r"^remove nothing:1: image not found$"):
        image_store.remove("nothing:1")


def test_remove_by_id_drops_every_ref(image_store: ImageStore, busybox_ref: str) -> None:
    image = image_store.pull(busybox_ref)
    image_store.remove(image.short_id)
    assert image_store.list() == [] and json.loads((image_store.root / "refs.json").read_text())["refs"] == {}


def test_progress_on_a_real_terminal(busybox_ref: str, tmp_path: Path) -> None:
    import io

    assert terminal_progress(io.StringIO()) is None
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as tty:
            progress = terminal_progress(tty)
            assert progress is not None
            ImageStore(tmp_path / "s").pull(busybox_ref, progress)
        output = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the slave side is closed and everything was read
                break
            output += chunk
    finally:
        os.close(master)
    text = output.decode()
    assert "downloading" in text and f"{busybox_ref}: ready" in text


def test_many_layers_with_repeats(
    image_store: ImageStore, image_factory: ImageFactory, tmp_path: Path
) -> None:
    """Layers download in parallel; a layer listed twice (common for empty layers) is fetched
    once and applied twice, in order."""
    a, b = marker("first"), marker("second")
    ref = image_factory.push(busybox_image([a, b, a, marker("x"), marker("last")]), "test/many:1")
    events: list[ProgressEvent] = []
    image = image_store.pull(ref, events.append)
    assert len(image.layers) == 6 and len(set(image.layers)) == 5
    downloads = {e.item for e in events if e.phase == "download"}
    assert len(downloads) == 5
    assert [e.current for e in events if e.phase == "unpack"] == [1, 2, 3, 4, 5, 6]
    assert (extract(image.disk, tmp_path / "t") / "marker").read_text() == "last"
