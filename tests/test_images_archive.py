"""Importing OCI layouts (directory or tar) and `docker save` archives, ours and skopeo's."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hypernetes.runtime.images import DigestMismatch, ImageStore, InvalidArchive
from tools import imagebuild as ib
from tools.imagebuild import Layer, LayerBuilder, OciLayout, busybox_image

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def marker(text: str) -> Layer:
    return Layer(LayerBuilder().file("marker", text).tar())


def read(disk: Path, path: str, tmp: Path) -> str:
    subprocess.run(["fsck.erofs", f"--extract={tmp}", str(disk)], check=True, capture_output=True)
    return (tmp / path).read_text()


def test_oci_layout_directory_and_tar(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    digest = layout.add(busybox_image([marker("one")]), "1.0")
    layout.add(busybox_image([marker("two")], user="app"), "example.com/team/two:2")
    store = ImageStore(tmp_path / "store")

    one, two = store.import_archive(tmp_path / "layout", repository="local/one")
    assert one.refs == ("docker.io/local/one:1.0", f"docker.io/local/one@{digest}")
    assert one.digest == digest
    assert two.refs[0] == "example.com/team/two:2" and two.config.user == "app"
    assert read(one.disk, "marker", tmp_path / "x") == "one"

    archive = ib.tar_directory(tmp_path / "layout", tmp_path / "layout.tar")
    again = ImageStore(tmp_path / "store2").import_archive(archive)
    assert [i.id for i in again] == [one.id, two.id]
    assert again[0].refs == ()  # a bare tag without a repository names nothing
    assert ImageStore(tmp_path / "store2").get(one.short_id) == again[0]


def test_oci_layout_with_index_picks_amd64(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    layout.add_index(
        [busybox_image([marker("arm")], architecture="arm64"), busybox_image([marker("amd")])], "multi"
    )
    [image] = ImageStore(tmp_path / "s").import_archive(tmp_path / "layout", repository="m")
    assert image.config.architecture == "amd64"
    assert read(image.disk, "marker", tmp_path / "x") == "amd"


def test_docker_save_archive(tmp_path: Path) -> None:
    archive = ib.write_docker_save(
        tmp_path / "save.tar",
        [
            (busybox_image([marker("a")], entrypoint=["/bin/sh", "-c"]), ["myapp:1", "myapp:latest"]),
            (busybox_image([marker("b")]), ["registry.example:5000/b:2"]),
        ],
    )
    store = ImageStore(tmp_path / "store")
    a, b = store.import_archive(archive)
    assert a.refs[:2] == ("docker.io/library/myapp:1", "docker.io/library/myapp:latest")
    assert a.config.entrypoint == ("/bin/sh", "-c")
    assert b.refs[0] == "registry.example:5000/b:2"
    assert store.get("myapp:1") == a and store.get("registry.example:5000/b:2") == b
    assert read(b.disk, "marker", tmp_path / "x") == "b"
    assert b.id == ib.digest_of(busybox_image([marker("b")]).config())


@needs_skopeo
def test_archives_written_by_skopeo(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    layout.add(busybox_image([marker("skopeo")]), "t")
    src = f"oci:{tmp_path / 'layout'}:t"
    for dest in (
        f"docker-archive:{tmp_path / 'docker.tar'}:skopeo/app:3",
        f"oci-archive:{tmp_path / 'oci.tar'}:example.com/skopeo/app:4",
    ):
        subprocess.run(["skopeo", "copy", "--quiet", src, dest], check=True, capture_output=True)
    store = ImageStore(tmp_path / "store")
    [from_docker] = store.import_archive(tmp_path / "docker.tar")
    [from_oci] = store.import_archive(tmp_path / "oci.tar")
    assert from_docker.id == from_oci.id  # the same content, named twice
    assert {"docker.io/skopeo/app:3", "example.com/skopeo/app:4"} <= set(from_oci.refs)
    assert read(from_oci.disk, "marker", tmp_path / "x") == "skopeo"


def test_tampered_archive_blob_is_rejected(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    spec = busybox_image([marker("tamper")])
    layout.add(spec, "t")
    data, _ = spec.layers[1].blob()
    blob = tmp_path / "layout" / "blobs" / "sha256" / ib.digest_of(data).split(":")[1]
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(DigestMismatch, match=rf"blob {ib.digest_of(data)}: content hashes to"):
        store.import_archive(tmp_path / "layout")
    assert list(store.blobs.digests()) == [] and store.list() == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "neither an OCI image layout"),
        (lambda p: p.write_bytes(b"not a tar"), "not a readable tar archive"),
        (lambda p: None, "no such file or directory"),
    ],
)
def test_bad_archives(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "thing"
    make(path)  # type: ignore[operator]
    with pytest.raises(InvalidArchive) as info:
        ImageStore(tmp_path / "s").import_archive(path)
    assert str(info.value) == f"import {path}: {message}" or message in str(info.value)


def test_archive_paths_cannot_escape(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArchive, match=re.escape("archive lacks '../../etc/passwd'")):
        ImageStore(tmp_path / "s").import_archive(archive)
    layout = tmp_path / "dir"
    layout.mkdir()
    (layout / "manifest.json").write_text(json.dumps([{"Config": "../x", "Layers": []}]))
    with pytest.raises(InvalidArchive, match="outside itself"):
        ImageStore(tmp_path / "s").import_archive(layout)
