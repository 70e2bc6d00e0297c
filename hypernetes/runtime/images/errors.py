"""One exception hierarchy for the image subsystem.

Every message is a single line a user can act on: these strings end up in pod status messages
(`pull 127.0.0.1:1/x:1: registry unreachable: connection refused`).
"""

from __future__ import annotations

from typing import Self


class ImageError(Exception):
    """Base of every image error; str() is the whole user-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])

    def prefixed(self, context: str) -> Self:
        """The same error with `context: ` in front, e.g. `pull busybox: ...`."""
        return type(self)(f"{context}: {self.message}")


class InvalidReference(ImageError):
    """The image reference does not parse (bad name, tag, digest or registry)."""


class RegistryUnreachable(ImageError):
    """Connection refused, DNS failure, timeout or TLS failure talking to a registry."""


class RegistryNotAllowed(ImageError):
    """The operator's registry policy forbids connecting there (loopback, link-local, a
    management network, ...): retrying will not help until the operator allows it."""


class ImageNotPresent(ImageError):
    """`imagePullPolicy: Never` and the image is not on this node."""


class RegistryError(ImageError):
    """The registry answered, but with something we cannot use (5xx, bad JSON, too big)."""


class ImageNotFound(ImageError):
    """No such image locally, or the registry does not know the repository/tag/digest."""


class ManifestUnknown(ImageNotFound):
    """The registry has the repository but not this tag or digest."""


class Unauthorized(ImageError):
    """The registry refused our credentials (or we had none and it wanted some)."""


class DigestMismatch(ImageError):
    """Downloaded or imported content does not hash to the digest that named it."""


class UnsupportedImage(ImageError):
    """Valid content we do not handle: unknown media type, no linux/amd64 manifest, ..."""


class UnsafeLayer(ImageError):
    """A layer tries to write outside the root filesystem or is otherwise malformed."""


class InvalidArchive(ImageError):
    """An imported OCI layout or `docker save` archive is malformed."""


class DiskBuildError(ImageError):
    """mkfs.erofs failed or is missing."""


class StoreError(ImageError):
    """The local image store failed (disk full, permissions, corrupt files)."""

    @classmethod
    def from_os_error(cls, exc: OSError) -> StoreError:
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(f"image store error: {(exc.strerror or str(exc)).lower()}{where}")


class UnknownUser(ImageError):
    """A container user or group name that the image's /etc/passwd or /etc/group lacks."""
