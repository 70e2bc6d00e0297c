"""Image references parsed the way Docker does (distribution/reference, normalized form).

`busybox` -> `docker.io/library/busybox:latest`; `127.0.0.1:5000/x@sha256:...` keeps its
registry and digest. The first path component is a registry only if it looks like a host
(has a `.` or `:`, or is `localhost`), exactly as `docker pull` decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
# docker.io is a name, not a host: the v2 API lives here.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io", "registry.hub.docker.com"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
NAME_MAX = 255


def is_digest(value: str) -> bool:
    return _DIGEST.fullmatch(value) is not None


def check_digest(value: str) -> str:
    """Return `value` if it is a sha256 digest we can verify, else raise InvalidReference."""
    if is_digest(value):
        return value
    if _ANY_DIGEST.fullmatch(value):
        raise InvalidReference(f"unsupported digest {value!r}: only sha256 is supported")
    raise InvalidReference(f"invalid digest {value!r}: expected sha256:<64 hex digits>")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`: the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host:port the Distribution API is served from."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def object(self) -> str:
        """What to ask /v2/<path>/manifests/ for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """Docker's short form: `busybox:latest`, `user/app:1`, `127.0.0.1:5000/x:1`."""
        name = self.repository
        if self.domain == DEFAULT_DOMAIN:
            name = self.path.removeprefix("library/") if self.path.count("/") == 1 else self.path
        out = name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize `text`; raise InvalidReference with the reason if it is bad.

    With `default_tag`, a reference with neither tag nor digest gets `:latest`.
    """
    if not text:
        raise InvalidReference("invalid reference: empty image name")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid reference {text!r}: contains whitespace")
    if _HEX64.fullmatch(text):
        raise InvalidReference(
            f"invalid reference {text!r}: cannot pull a 64-character hexadecimal string "
            "(an image ID); use name@sha256:<digest>"
        )
    remainder, at, digest = text.partition("@")
    if at:
        check_digest(digest)
    tag: str | None = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:  # a ':' after the last '/' separates the tag, not a port
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"invalid reference {text!r}: invalid tag {tag!r} (letters, digits, '_', '.', "
                "'-', at most 128, not starting with '.' or '-')"
            )
    if not remainder:
        raise InvalidReference(f"invalid reference {text!r}: empty repository name")
    domain, path = _split_domain(remainder)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"invalid reference {text!r}: invalid registry host {domain!r}")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
                raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
            raise InvalidReference(
                f"invalid reference {text!r}: invalid repository name component {component!r}"
            )
    if len(f"{domain}/{path}") > NAME_MAX:
        raise InvalidReference(
            f"invalid reference {text!r}: repository name longer than {NAME_MAX} characters"
        )
    if tag is None and not at and default_tag:
        tag = "latest"
    return Reference(domain, path, tag, digest if at else None)
