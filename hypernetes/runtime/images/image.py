"""The Image value the runtime consumes, and its on-disk record (ROOT/images/<hex>/meta.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import ImageConfig, Manifest, parse_config
from .users import UserDb, resolve

META_VERSION = 1


@dataclass(frozen=True)
class Image:
    """A built image: its read-only erofs disk plus what is needed to start its process.

    id: config digest (Docker's image ID); digest: the manifest (or index) digest it was last
    pulled or imported by; refs: normalized names pointing at it (`docker.io/library/x:1`,
    `repo@sha256:...`); size: bytes of the erofs disk.
    """

    id: str
    digest: str
    refs: tuple[str, ...]
    size: int
    disk: Path
    config: ImageConfig
    users: UserDb = field(default_factory=UserDb, repr=False)
    layers: tuple[str, ...] = ()
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]


def resolve_user(image: Image, user: str) -> tuple[int, int, tuple[int, ...]]:
    """The (uid, gid, supplementary gids) to run as: `user` or, if empty, the image's USER."""
    return resolve(image.users, user or image.config.user)


@dataclass(frozen=True)
class Candidate:
    """An image whose blobs are all in the store, ready to be built and named."""

    names: tuple[str, ...]
    top_digest: str  # what a name points at: a manifest, or an index
    manifest_digest: str  # the linux/amd64 manifest
    manifest: Manifest
    blobs: tuple[str, ...]


@dataclass(frozen=True)
class ImageMeta:
    """What meta.json holds. Blobs listed here are kept by prune()."""

    id: str
    digest: str
    manifest: str  # the platform manifest's digest (== digest unless pulled via an index)
    blobs: tuple[str, ...]  # every blob this image was made from: manifest(s), config, layers
    layers: tuple[str, ...]
    size: int
    created: str
    users: UserDb

    def to_json(self) -> dict[str, Any]:
        return {
            "version": META_VERSION,
            "id": self.id,
            "digest": self.digest,
            "manifest": self.manifest,
            "blobs": list(self.blobs),
            "layers": list(self.layers),
            "size": self.size,
            "created": self.created,
            "users": self.users.to_json(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageMeta:
        return cls(
            id=str(doc["id"]),
            digest=str(doc["digest"]),
            manifest=str(doc["manifest"]),
            blobs=tuple(map(str, doc["blobs"])),
            layers=tuple(map(str, doc["layers"])),
            size=int(doc["size"]),
            created=str(doc.get("created", "")),
            users=UserDb.from_json(doc["users"]),
        )

    def image(self, image_dir: Path, refs: tuple[str, ...]) -> Image:
        config = parse_config((image_dir / "config.json").read_bytes()).config
        return Image(
            id=self.id,
            digest=self.digest,
            refs=refs,
            size=self.size,
            disk=image_dir / "disk.erofs",
            config=config,
            users=self.users,
            layers=self.layers,
            created=self.created,
        )


def load_meta(image_dir: Path) -> ImageMeta | None:
    try:
        return ImageMeta.from_json(json.loads((image_dir / "meta.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
