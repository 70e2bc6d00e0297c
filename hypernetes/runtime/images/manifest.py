"""OCI / Docker schema-2 manifests, indexes and image configs: parse, bound and validate.

Everything here comes from a registry or an archive, so it is untrusted: sizes are bounded,
digests are checked for form, and unknown media types are rejected rather than guessed at.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ImageError, UnsupportedImage
from .reference import check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        # Non-distributable ("foreign") layers are still plain tarballs once fetched.
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 16 << 20
MAX_LAYERS = 128

PLATFORM_OS = "linux"
PLATFORM_ARCH = "amd64"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: tuple[str, str, str] | None = None  # (os, architecture, variant)
    annotations: Mapping[str, str] | None = None

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _load_json(data: bytes, what: str, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise ImageError(f"{what} is {len(data)} bytes, more than the {limit} allowed")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def _descriptor(raw: object, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ImageError(f"{what}: descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise ImageError(f"{what}: descriptor lacks mediaType or digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what}: descriptor {digest} has an invalid size")
    try:
        check_digest(digest)
    except ImageError as exc:
        raise ImageError(f"{what}: {exc}") from None
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict):
        platform = (
            str(plat.get("os", "")),
            str(plat.get("architecture", "")),
            str(plat.get("variant", "")),
        )
    ann = raw.get("annotations")
    annotations = {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else None
    return Descriptor(media_type, digest, size, platform, annotations)


def detect_media_type(doc: Mapping[str, Any], header_type: str | None) -> str:
    """The document's own mediaType wins; OCI allows omitting it, so fall back on shape."""
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if header_type and header_type.split(";")[0].strip() in (*MANIFEST_TYPES, *INDEX_TYPES):
        return header_type.split(";")[0].strip()
    if "manifests" in doc:
        return OCI_INDEX
    if doc.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+prettyjws"
    return OCI_MANIFEST


def parse_document(data: bytes, header_type: str | None = None) -> Manifest | Index:
    doc = _load_json(data, "manifest", MAX_MANIFEST_BYTES)
    media_type = detect_media_type(doc, header_type)
    if media_type in INDEX_TYPES:
        raw = doc.get("manifests")
        if not isinstance(raw, list):
            raise ImageError("image index has no manifests list")
        return Index(media_type, tuple(_descriptor(m, "image index") for m in raw))
    if media_type in MANIFEST_TYPES:
        config = _descriptor(doc.get("config"), "manifest config")
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise ImageError("manifest has no layers list")
        if len(raw_layers) > MAX_LAYERS:
            raise UnsupportedImage(f"image has {len(raw_layers)} layers, more than the {MAX_LAYERS} allowed")
        layers = tuple(_descriptor(layer, "manifest layer") for layer in raw_layers)
        for layer in layers:
            if layer.media_type not in LAYER_TYPES:
                raise UnsupportedImage(f"layer {layer.digest} has unsupported media type {layer.media_type}")
        return Manifest(media_type, config, layers)
    if doc.get("schemaVersion") == 1 or "manifest.v1+" in media_type:
        raise UnsupportedImage("Docker schema-1 manifests are not supported (deprecated); re-push the image")
    raise UnsupportedImage(f"unsupported manifest media type {media_type!r}")


def choose_platform(index: Index, os: str = PLATFORM_OS, arch: str = PLATFORM_ARCH) -> Descriptor:
    """Pick the manifest for os/arch; skip attestation and other non-image entries."""
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.platform[0] == os
        and d.platform[1] == arch
        and d.media_type in (*MANIFEST_TYPES, *INDEX_TYPES)
    ]
    if not candidates:
        found = sorted({f"{d.platform[0]}/{d.platform[1]}" for d in index.manifests if d.platform})
        have = ", ".join(found) or "none"
        raise UnsupportedImage(f"no {os}/{arch} image in the index (platforms: {have})")
    # Prefer an entry without a variant (amd64 has none; v2/v3 variants are optional extras).
    candidates.sort(key=lambda d: d.platform[2] if d.platform else "")
    return candidates[0]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a runtime needs to start its process."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] | None = None
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    os: str = ""
    architecture: str = ""

    @property
    def env_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


@dataclass(frozen=True)
class ParsedConfig:
    config: ImageConfig
    diff_ids: tuple[str, ...]
    created: str = ""


def parse_config(data: bytes) -> ParsedConfig:
    doc = _load_json(data, "image config", MAX_CONFIG_BYTES)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ImageError("image config: 'config' is not an object")
    rootfs = doc.get("rootfs") or {}
    diff_ids = _strings(rootfs.get("diff_ids")) if isinstance(rootfs, dict) else ()
    for diff_id in diff_ids:
        try:
            check_digest(diff_id)
        except ImageError as exc:
            raise ImageError(f"image config: bad diff_id: {exc}") from None
    labels = cfg.get("Labels")
    ports = cfg.get("ExposedPorts")
    volumes = cfg.get("Volumes")
    config = ImageConfig(
        entrypoint=_strings(cfg.get("Entrypoint")),
        cmd=_strings(cfg.get("Cmd")),
        env=_strings(cfg.get("Env")),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        exposed_ports=tuple(sorted(ports)) if isinstance(ports, dict) else (),
        volumes=tuple(sorted(volumes)) if isinstance(volumes, dict) else (),
        stop_signal=str(cfg.get("StopSignal") or ""),
        os=str(doc.get("os") or ""),
        architecture=str(doc.get("architecture") or ""),
    )
    return ParsedConfig(config, diff_ids, str(doc.get("created") or ""))


def synthesize_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A canonical OCI manifest for images that arrive without one (`docker save`)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
