"""Manifest, index and config parsing: bounds and refusals with clear messages."""

from __future__ import annotations

import json

import pytest

from hypernetes.runtime.images import ImageError, UnsupportedImage
from hypernetes.runtime.images.manifest import (
    MAX_LAYERS,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Index,
    Manifest,
    choose_platform,
    parse_config,
    parse_document,
)

D = "sha256:" + "1" * 64
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 1}


def manifest(**kw: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 2},
        "layers": [LAYER],
    }
    doc.update(kw)
    return json.dumps(doc).encode()


def test_manifest_and_index() -> None:
    m = parse_document(manifest())
    assert isinstance(m, Manifest) and m.layers[0].digest == D
    untyped = json.loads(manifest())
    del untyped["mediaType"]  # OCI allows leaving it out; the Content-Type or shape decides
    assert isinstance(parse_document(json.dumps(untyped).encode()), Manifest)
    idx = parse_document(json.dumps({"manifests": []}).encode())
    assert isinstance(idx, Index) and idx.media_type == OCI_INDEX


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"x" * (MAX_MANIFEST_BYTES + 1), ImageError, "more than the 4194304 allowed"),
        (b"{", ImageError, "not valid JSON"),
        (b"[]", ImageError, "not a JSON object"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), UnsupportedImage, "schema-1"),
        (manifest(mediaType="application/x-thing"), UnsupportedImage, "unsupported manifest"),
        (manifest(layers=[LAYER] * (MAX_LAYERS + 1)), UnsupportedImage, "more than the 128"),
        (
            manifest(layers=[{**LAYER, "mediaType": "application/x-helm"}]),
            UnsupportedImage,
            "unsupported media type application/x-helm",
        ),
        (manifest(layers=[{**LAYER, "digest": "sha256:12"}]), ImageError, "invalid digest"),
        (manifest(layers=[{**LAYER, "size": -1}]), ImageError, "invalid size"),
    ],
)
def test_refusals(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_document(data)


def test_platform_choice() -> None:
    def entry(arch: str, variant: str = "") -> dict[str, object]:
        plat = {"os": "linux", "architecture": arch}
        if variant:
            plat["variant"] = variant
        media = "application/vnd.oci.image.manifest.v1+json"
        return {
            "mediaType": media,
            "digest": "sha256:" + arch[0] * 63 + (variant or "0")[-1],
            "size": 1,
            "platform": plat,
        }

    idx = parse_document(
        json.dumps(
            {
                "manifests": [
                    entry("arm64", "v8"),
                    entry("amd64", "v3"),
                    entry("amd64"),
                ]
            }
        ).encode()
    )
    assert isinstance(idx, Index)
    assert choose_platform(idx).platform == ("linux", "amd64", "")
    only_arm = Index(OCI_INDEX, idx.manifests[:1])
    expected = r"no linux/amd64 image in the index \(platforms: linux/arm64\)"
    with pytest.raises(UnsupportedImage, match=expected):
        choose_platform(only_arm)


def test_config() -> None:
    parsed = parse_config(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {
                    "Entrypoint": ["/e"],
                    "Cmd": ["c"],
                    "Env": ["A=1", "B=x=y"],
                    "WorkingDir": "/w",
                    "User": "1:2",
                    "Labels": {"k": "v"},
                    "ExposedPorts": {"80/tcp": {}},
                    "StopSignal": "SIGQUIT",
                },
                "rootfs": {"type": "layers", "diff_ids": [D]},
            }
        ).encode()
    )
    c = parsed.config
    assert (c.entrypoint, c.cmd, c.working_dir, c.user) == (("/e",), ("c",), "/w", "1:2")
    assert c.env_map == {"A": "1", "B": "x=y"} and c.labels == {"k": "v"}
    assert c.exposed_ports == ("80/tcp",) and c.stop_signal == "SIGQUIT"
    assert parsed.diff_ids == (D,) and parsed.created.startswith("2024")
    empty = parse_config(b'{"config": null}').config
    assert empty.cmd == () and empty.env == ()


def test_error_prefix_keeps_type() -> None:
    err = UnsupportedImage("no  good\n thing").prefixed("pull x")
    assert isinstance(err, UnsupportedImage) and str(err) == "pull x: no good thing"
