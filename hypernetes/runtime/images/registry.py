"""A small client for the OCI Distribution API v2: ping, token/basic auth, manifests, blobs.

It fetches, bounds and verifies; it stores nothing (the blob store owns the files). One client
talks to one registry host and lives for one pull.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpcore
import httpx

from .auth import Credentials
from .errors import (
    DigestMismatch,
    ImageError,
    ImageNotFound,
    ManifestUnknown,
    RegistryError,
    RegistryNotAllowed,
    RegistryUnreachable,
    Unauthorized,
)
from .manifest import ACCEPT, MAX_MANIFEST_BYTES, Descriptor, sha256_digest
from .policy import RegistryPolicy, VettingBackend
from .reference import is_digest

CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 60.0  # per read/write, so a stalled transfer fails instead of hanging
MAX_TOKEN_BYTES = 1 << 20
MAX_ERROR_BYTES = 64 << 10
CHUNK = 1 << 20

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def split_host(host: str) -> str:
    """`[::1]:5000` -> `::1`, `127.0.0.1:5000` -> `127.0.0.1`, `example.com` -> itself."""
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = split_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure(host: str, insecure_registries: Sequence[str]) -> bool:
    """Plain HTTP / unverified TLS is allowed for loopback and registries the operator lists.

    Entries are `host[:port]` or a CIDR (`10.0.0.0/8`), as in Docker's `insecure-registries`.
    """
    if is_loopback(host):
        return True
    name = split_host(host)
    for entry in insecure_registries:
        if entry in (host, name):
            return True
        if "/" in entry:
            try:
                if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def describe_network_error(exc: BaseException) -> str:
    """The one-line reason a person can act on, from httpx's nested exceptions."""
    if isinstance(exc, httpx.TimeoutException):
        kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        return f"timed out ({kind})"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error: {seen.reason or seen}"
        if isinstance(seen, socket.gaierror):
            return "cannot resolve host name"
        if isinstance(seen, OSError) and seen.errno is not None:
            if seen.errno == errno.ECONNREFUSED:
                return "connection refused"
            return (seen.strerror or str(seen)).lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate verification failed"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "cannot resolve host name"
    return text.splitlines()[0] if text else type(exc).__name__


class _VettedTransport(httpx.HTTPTransport):
    """httpx's transport over a pool whose every TCP connection the policy vets.

    httpx has no parameter for httpcore's network backend, so the pool it built is replaced by
    one with the same settings and a vetting backend (no proxies: trust_env is off)."""

    def __init__(self, verify: ssl.SSLContext | bool, policy: RegistryPolicy) -> None:
        super().__init__(verify=verify, trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.ConnectionPool(
            ssl_context=self._pool._ssl_context,  # the context httpx made from `verify`
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=VettingBackend(policy),
        )


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class RegistryClient:
    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        ca_file: Path | None = None,
        io_timeout: float = IO_TIMEOUT,
        policy: RegistryPolicy | None = None,
    ) -> None:
        """`policy`: vet every connection (registry, redirects, token realm) for a pull on a
        tenant's behalf; None for the operator's own pulls, which may go anywhere."""
        self.host = host
        self._insecure = insecure
        self._credentials = credentials
        timeout = httpx.Timeout(io_timeout, connect=min(CONNECT_TIMEOUT, io_timeout))
        verify: ssl.SSLContext | bool
        if insecure:
            verify = False
        else:
            # The system trust store (and SSL_CERT_FILE), not certifi: operators add private
            # CAs there. An explicit CA file is added on top.
            verify = ssl.create_default_context()
            if ca_file is not None:
                verify.load_verify_locations(cafile=str(ca_file))
        self._http = httpx.Client(
            timeout=timeout,
            verify=verify,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "hypernetes"},
            trust_env=False,
            transport=_VettedTransport(verify, policy) if policy is not None else None,
        )
        self._base: str | None = None
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection and auth -------------------------------------------------------------

    def _ping(self) -> str:
        """Find the scheme that works (`/v2/`), remembering the auth challenge it returns."""
        if self._base is not None:
            return self._base
        schemes = ("https", "http") if self._insecure else ("https",)
        last: BaseException | None = None
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            try:
                resp = self._http.get(f"{base}/v2/")
            except httpx.HTTPError as exc:
                last = exc
                continue
            resp.close()
            if resp.status_code == 401:
                header = resp.headers.get("www-authenticate", "")
                if header:
                    self._challenge = parse_challenge(header)
            elif resp.status_code >= 400 and resp.status_code != 404:
                # Something answered, but not a registry we can use (some reply 404 here).
                raise RegistryError(
                    f"{self.host} does not look like a registry: GET /v2/ answered HTTP {resp.status_code}"
                )
            self._base = base
            return base
        assert last is not None
        raise RegistryUnreachable(f"registry unreachable: {describe_network_error(last)}") from last

    def _authorization(self, scope: str) -> str | None:
        if self._challenge is None:
            return None
        scheme, params = self._challenge
        if scheme == "basic":
            if self._credentials is None:
                return None
            return _basic(self._credentials)
        if scheme == "bearer":
            token = self._tokens.get(scope)
            if token is None:
                token = self._fetch_token(params, scope)
                self._tokens[scope] = token
            return f"Bearer {token}"
        raise Unauthorized(f"registry {self.host} asks for unsupported auth scheme {scheme!r}")

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Unauthorized(f"registry {self.host} sent a bad token realm {realm!r}")
        realm_host = realm.split("://", 1)[1].split("/", 1)[0]
        if (
            realm.startswith("http://")
            and self._credentials is not None
            and not self._insecure
            and not is_loopback(realm_host)
        ):
            raise Unauthorized(
                f"registry {self.host} wants our credentials sent to {realm} over plain HTTP; "
                "refusing (list the registry as insecure to allow it)"
            )
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth = (
            httpx.BasicAuth(self._credentials.username, self._credentials.password)
            if self._credentials
            else None
        )
        try:
            with self._http.stream("GET", realm, params=query, auth=auth) as resp:
                body = self._read_bounded(resp, MAX_TOKEN_BYTES, "token response")
                status = resp.status_code
        except RegistryNotAllowed as exc:
            raise exc.prefixed(f"token realm {realm}") from exc
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"token server {realm} unreachable: {describe_network_error(exc)}"
            ) from exc
        if status in (401, 403):
            raise Unauthorized(self._denied_message("token server refused"))
        if status != 200:
            raise RegistryError(f"token server {realm} answered HTTP {status}")
        try:
            doc = httpx.Response(200, content=body).json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {realm} returned no token")
        return token

    def _denied_message(self, what: str) -> str:
        if self._credentials is None:
            return f"{what}: authentication required by {self.host} and no credentials are configured for it"
        return f"{what}: {self.host} rejected the credentials of user {self._credentials.username!r}"

    @contextmanager
    def _request(
        self, method: str, path: str, scope: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """Send with auth; on a 401, re-read the challenge, authenticate and retry once."""
        base = self._ping()
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            authz = self._authorization(scope)
            if authz:
                hdrs["Authorization"] = authz
            try:
                with self._http.stream(method, f"{base}{path}", headers=hdrs) as resp:
                    header = resp.headers.get("www-authenticate", "")
                    if resp.status_code == 401 and attempt == 1 and header:
                        # A new challenge (e.g. a wider scope), or a bearer token that
                        # expired: authenticate again. The same Basic challenge twice means
                        # the credentials are wrong, so give up.
                        fresh = parse_challenge(header)
                        if fresh != self._challenge or (authz or "").startswith("Bearer "):
                            self._challenge = fresh
                            self._tokens.pop(scope, None)
                            continue
                    yield resp
                    return
            except httpx.HTTPError as exc:
                raise RegistryUnreachable(f"registry unreachable: {describe_network_error(exc)}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise RegistryError(f"{what} is {length} bytes, more than the {limit} allowed")
        data = bytearray()
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise RegistryError(f"{what} is larger than the {limit} bytes allowed")
        return bytes(data)

    def _raise_for_status(self, resp: httpx.Response, repo: str, what: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        code, detail = "", ""
        try:
            doc: Any = httpx.Response(
                status, content=self._read_bounded(resp, MAX_ERROR_BYTES, "error")
            ).json()
            first = doc["errors"][0]
            code, detail = str(first.get("code", "")), str(first.get("message", ""))
        except (ImageError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        if status == 401:
            raise Unauthorized(self._denied_message(f"unauthorized to read {repo}"))
        if status == 403:
            raise Unauthorized(f"access to {repo} denied by {self.host}")
        if status == 404 or code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"):
            if code == "NAME_UNKNOWN":
                raise ImageNotFound(f"repository {repo} not found on {self.host}")
            if code == "BLOB_UNKNOWN" or what.startswith("blob"):
                raise ImageNotFound(f"{what} not found in {repo} on {self.host}")
            raise ManifestUnknown(f"manifest unknown: {what} not found in {repo} on {self.host}")
        if status == 429:
            raise RegistryError(f"registry {self.host} is rate-limiting us (HTTP 429)")
        suffix = f": {code} {detail}".rstrip() if code else ""
        raise RegistryError(f"registry {self.host} answered HTTP {status} for {what}{suffix}")

    # -- the API --------------------------------------------------------------------------

    def get_manifest(self, repo: str, obj: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest: (body, content type, verified digest)."""
        scope = f"repository:{repo}:pull"
        what = f"digest {obj}" if is_digest(obj) else f"tag {obj!r}"
        with self._request("GET", f"/v2/{repo}/manifests/{obj}", scope, {"Accept": ACCEPT}) as resp:
            self._raise_for_status(resp, repo, what)
            body = self._read_bounded(resp, MAX_MANIFEST_BYTES, f"manifest {obj}")
            content_type = resp.headers.get("content-type", "")
            header_digest = resp.headers.get("docker-content-digest", "")
        actual = sha256_digest(body)
        if is_digest(obj) and actual != obj:
            raise DigestMismatch(f"manifest {obj}: content hashes to {actual}; refusing it")
        if header_digest.startswith("sha256:") and header_digest != actual:
            raise DigestMismatch(
                f"manifest for {what}: registry says {header_digest} but content hashes to "
                f"{actual}; refusing it"
            )
        return body, content_type, actual

    def check_manifest(self, repo: str, digest: str) -> None:
        """Ask whether our credentials may read the manifest `digest` of `repo` (a HEAD, no
        body): returns if so, raises Unauthorized / ImageNotFound / ... if not."""
        scope = f"repository:{repo}:pull"
        with self._request("HEAD", f"/v2/{repo}/manifests/{digest}", scope, {"Accept": ACCEPT}) as resp:
            self._raise_for_status(resp, repo, f"digest {digest}")

    def fetch_blob(
        self,
        repo: str,
        desc: Descriptor,
        out: IO[bytes],
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into `out`, checking its size and sha256 against the descriptor.

        On any failure the caller must discard `out`: nothing here is trusted until it returns.
        """
        scope = f"repository:{repo}:pull"
        hasher = hashlib.sha256()
        count = 0
        with self._request("GET", f"/v2/{repo}/blobs/{desc.digest}", scope) as resp:
            self._raise_for_status(resp, repo, f"blob {desc.digest}")
            try:
                for chunk in resp.iter_bytes(CHUNK):
                    count += len(chunk)
                    if count > desc.size:
                        raise DigestMismatch(
                            f"blob {desc.digest}: registry sent more than the {desc.size} "
                            "bytes the manifest declares; refusing it"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(count)
            except httpx.HTTPError as exc:
                raise RegistryUnreachable(
                    f"download of blob {desc.digest} failed: {describe_network_error(exc)}"
                ) from exc
        if count != desc.size:
            raise DigestMismatch(
                f"blob {desc.digest}: got {count} bytes, the manifest declares {desc.size}; refusing it"
            )
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            raise DigestMismatch(f"blob {desc.digest}: content hashes to {actual}; refusing it")
