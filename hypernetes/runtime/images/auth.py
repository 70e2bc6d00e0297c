"""Registry credentials, given by the caller (e.g. from a docker-style auth file named by a flag).

Nothing is read from a default location: the operator points us at a file, or passes
credentials directly. Credential helpers (`credsStore`, `credHelpers`) are not supported.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError
from .reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, LEGACY_DOMAINS

# docker login stores Docker Hub credentials under this historical key.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", DEFAULT_DOMAIN)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # keep passwords out of logs and tracebacks
        return f"Credentials(username={self.username!r}, password=***)"


def _host_key(key: str) -> str:
    """`https://host:5000/v2/` -> `host:5000`; Docker Hub spellings -> `docker.io`."""
    if key in _DOCKER_HUB_KEYS:
        return DEFAULT_DOMAIN
    host = key.split("://", 1)[-1].split("/", 1)[0]
    if host in LEGACY_DOMAINS or host == DOCKER_HUB_API_HOST:
        return DEFAULT_DOMAIN
    return host


class RegistryAuth:
    """Credentials per registry host (`host[:port]`, or `docker.io` for Docker Hub)."""

    def __init__(self, credentials: Mapping[str, Credentials] | None = None) -> None:
        self._by_host = {_host_key(k): v for k, v in (credentials or {}).items()}

    def lookup(self, registry: str) -> Credentials | None:
        return self._by_host.get(_host_key(registry))

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_host))

    def merged_over(self, fallback: RegistryAuth) -> RegistryAuth:
        """These credentials, and `fallback`'s for registries these do not name."""
        merged = RegistryAuth()
        merged._by_host = {**fallback._by_host, **self._by_host}
        return merged

    @classmethod
    def from_docker_config(cls, path: Path) -> RegistryAuth:
        """Read a docker `config.json` / podman `auth.json`: `{"auths": {host: {"auth": b64}}}`."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise ImageError(f"cannot read registry auth file {path}: {exc.strerror}") from None
        return cls.from_docker_json(text, f"registry auth file {path}")

    @classmethod
    def from_docker_json(cls, text: str | bytes, source: str, *, legacy: bool = False) -> RegistryAuth:
        """Parse docker's JSON: `{"auths": {...}}`, or with `legacy` the old `.dockercfg` whose
        top level is the map of hosts (Kubernetes' `kubernetes.io/dockercfg` secrets)."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ImageError(f"{source} is not valid JSON: {exc}") from None
        auths = doc if legacy else doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            raise ImageError(f"{source} has no 'auths' object")
        creds: dict[str, Credentials] = {}
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("auth"), str) and entry["auth"]:
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    sep = ""
                if not sep:
                    raise ImageError(
                        f"{source}: entry {key!r} has a malformed 'auth' (expected base64 of user:password)"
                    )
            elif isinstance(entry.get("username"), str):
                user, password = entry["username"], str(entry.get("password", ""))
            else:
                continue
            creds[key] = Credentials(user, password)
        return cls(creds)
