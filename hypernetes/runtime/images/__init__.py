"""Images: pull (OCI Distribution), import archives, unpack safely, build erofs disks, cache.

The runtime and CLI use `ImageStore`; its methods are synchronous (wrap them in
`asyncio.to_thread`). See docs/images.md for the on-disk layout and operator knobs.
"""

from .auth import Credentials, RegistryAuth
from .errors import (
    DigestMismatch,
    DiskBuildError,
    ImageError,
    ImageNotFound,
    ImageNotPresent,
    InvalidArchive,
    InvalidReference,
    ManifestUnknown,
    RegistryError,
    RegistryNotAllowed,
    RegistryUnreachable,
    StoreError,
    Unauthorized,
    UnknownUser,
    UnsafeLayer,
    UnsupportedImage,
)
from .image import Image, resolve_user
from .manifest import ImageConfig
from .policy import RegistryPolicy, parse_allow_entry
from .progress import ProgressCallback, ProgressEvent, terminal_progress
from .reference import Reference, parse_reference
from .store import ImageStore

__all__ = [
    "Credentials",
    "DigestMismatch",
    "DiskBuildError",
    "Image",
    "ImageConfig",
    "ImageError",
    "ImageNotFound",
    "ImageNotPresent",
    "ImageStore",
    "InvalidArchive",
    "InvalidReference",
    "ManifestUnknown",
    "ProgressCallback",
    "ProgressEvent",
    "Reference",
    "RegistryAuth",
    "RegistryError",
    "RegistryNotAllowed",
    "RegistryPolicy",
    "RegistryUnreachable",
    "StoreError",
    "Unauthorized",
    "UnknownUser",
    "UnsafeLayer",
    "UnsupportedImage",
    "parse_allow_entry",
    "parse_reference",
    "resolve_user",
    "terminal_progress",
]
