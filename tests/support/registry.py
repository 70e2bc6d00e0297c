"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Variants: open (plain HTTP), HTTPS with a throw-away CA, htpasswd basic auth (bcrypt hashes
from libxcrypt through Python's `crypt`), and bearer tokens issued by `TokenServer`, a real
HTTP token endpoint whose RS256 JWTs are signed by `openssl` and checked by the registry.
Images are pushed with `skopeo`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.listening import listening_port
from tools.imagebuild import ImageSpec, OciLayout, busybox_image

REGISTRY_BIN = "/usr/bin/docker-registry"


def have_registry() -> bool:
    return Path(REGISTRY_BIN).exists() and shutil.which("skopeo") is not None


def make_cert(directory: Path, cn: str, *, ip: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate (also usable as its own CA) and its key."""
    cert, key = directory / f"{cn}.crt", directory / f"{cn}.key"
    san = f"IP:{ip},DNS:localhost" if ip else f"DNS:{cn}"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-addext",
            f"subjectAltName={san}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def htpasswd_line(user: str, password: str) -> str | None:
    """`user:$2b$...` or None if this Python has no bcrypt-capable `crypt`."""
    try:
        import crypt
    except ImportError:
        return None
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        return None
    return f"{user}:{hashed}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ThreadedServer:
    """An HTTP server on 127.0.0.1:<free port> in a daemon thread, for the fakes below."""

    def serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> int:
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class TokenServer(ThreadedServer):
    """A Docker-style token endpoint (`GET /token?service=&scope=`) in a thread.

    Requires HTTP basic credentials when `users` is set, like Docker Hub's auth server.
    `requests` records each (user, scope) it was asked for.
    """

    def __init__(self, workdir: Path, service: str, users: dict[str, str] | None = None) -> None:
        self.service = service
        self.issuer = "hypernetes-test-issuer"
        self.users = users
        self.cert, self.key = make_cert(workdir, "token-issuer")
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self.requests: list[tuple[str | None, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                user = server._check_auth(self.headers.get("Authorization"))
                if url.path != "/token" or user is None:
                    self.send_response(401 if user is None else 404)
                    self.end_headers()
                    return
                scope = query.get("scope", "")
                server.requests.append((user or None, scope))
                body = json.dumps({"token": server.issue(scope, user or "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.url = f"http://127.0.0.1:{self.serve(Handler)}/token"

    def _check_auth(self, header: str | None) -> str | None:
        """The user name ("" if no auth is required), or None if the credentials are bad."""
        if self.users is None:
            return ""
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def issue(self, scope: str, subject: str) -> str:
        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{len(self.requests)}",
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    proc: subprocess.Popen[bytes]
    scheme: str = "http"
    ca: Path | None = None
    creds: tuple[str, str] | None = None
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def push(
        self, layout: Path, src_tag: str, dest: str, *, v2s2: bool = False, all_images: bool = False
    ) -> None:
        """`skopeo copy oci:LAYOUT:SRC_TAG docker://HOST/DEST`."""
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if v2s2:
            cmd += ["--format", "v2s2"]
        if all_images:
            cmd.append("--all")
        if self.creds:
            cmd += ["--dest-creds", f"{self.creds[0]}:{self.creds[1]}"]
        cmd += [f"oci:{layout}:{src_tag}", f"docker://{self.host}/{dest}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo push failed: {proc.stderr.strip()}")

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":")[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _yaml(doc: Any, indent: int = 0) -> str:
    """JSON is YAML; but distribution's config wants maps, so write it block-style."""
    lines = []
    for key, value in doc.items():
        pad = "  " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return "\n".join(lines)


def start_registry(
    workdir: Path,
    *,
    tls: bool = False,
    htpasswd: tuple[str, str] | None = None,
    token: TokenServer | None = None,
    creds: tuple[str, str] | None = None,
) -> Registry:
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": "127.0.0.1:0", "secret": "hypernetes-test"},  # any free port: read back
    }
    ca = None
    if tls:
        cert, key = make_cert(workdir, "registry", ip="127.0.0.1")
        config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
        ca = cert
    if htpasswd:
        line = htpasswd_line(*htpasswd)
        if line is None:
            raise RuntimeError("no bcrypt support to write an htpasswd file")
        (workdir / "htpasswd").write_text(line + "\n")
        config["auth"] = {"htpasswd": {"realm": "hypernetes-test", "path": str(workdir / "htpasswd")}}
        creds = htpasswd
    if token:
        config["auth"] = {
            "token": {
                "realm": token.url,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.cert),
            }
        }
    (workdir / "config.yml").write_text(_yaml(config) + "\n")
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(workdir / "config.yml")], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        host = f"127.0.0.1:{listening_port(proc, 15, 'docker-registry')}"
    except RuntimeError as e:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{e}: {log.read_text()[-2000:]}") from None
    scheme = "https" if tls else "http"
    registry = Registry(host, storage, proc, scheme, ca, creds, log)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{scheme}://{host}/v2/", verify=False, timeout=1)
            return registry
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                registry.stop()
                raise RuntimeError(f"docker-registry did not start: {log.read_text()[-2000:]}") from exc
            time.sleep(0.05)


@contextlib.contextmanager
def running_registry(workdir: Path, **kw: Any) -> Iterator[Registry]:
    registry = start_registry(workdir, **kw)
    try:
        yield registry
    finally:
        registry.stop()


@contextlib.contextmanager
def private_registry(workdir: Path, user: str, password: str, repository: str) -> Iterator[Registry]:
    """A registry behind htpasswd basic auth holding the busybox test image as `repository`
    (pytest skips where no bcrypt-capable crypt() can write the htpasswd file)."""
    import pytest

    if htpasswd_line(user, password) is None:
        pytest.skip("no bcrypt-capable crypt() to write an htpasswd file")
    OciLayout(workdir / "layout").add(busybox_image(), "t")
    with running_registry(workdir / "reg", htpasswd=(user, password)) as reg:
        reg.push(workdir / "layout", "t", repository)
        yield reg


class BlobRedirector(ThreadedServer):
    """A registry front in a thread, as registries backed by object storage behave: answers
    `/v2/` and manifests by asking `upstream` (`host:port`, plain HTTP), and answers blob
    downloads with a 307 to `redirect_base` + the same path. `hits` counts requests per path."""

    def __init__(self, upstream: str, redirect_base: str) -> None:
        self.hits: dict[str, int] = {}
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, body: bool) -> None:
                front.hits[self.path] = front.hits.get(self.path, 0) + 1
                if "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", redirect_base + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                url = f"http://{upstream}{self.path}"
                resp = httpx.request(self.command, url, headers=headers, timeout=10)
                self.send_response(resp.status_code)
                for key in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate"):
                    if key in resp.headers:
                        self.send_header(key, resp.headers[key])
                self.send_header("Content-Length", resp.headers.get("Content-Length", str(len(resp.content))))
                self.end_headers()
                if body:
                    self.wfile.write(resp.content)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

        self.host = f"127.0.0.1:{self.serve(Handler)}"


class ManifestServer(ThreadedServer):
    """A hostile registry in a thread: it serves one manifest it was given (for any repository,
    tag or digest) but holds none of the blobs it names, as a tenant who learnt another tenant's
    image digests could run. `blob_requests` counts the blob downloads asked of it."""

    def __init__(self, manifest: bytes, media_type: str) -> None:
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.blob_requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str], send: bool) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send:
                    self.wfile.write(body)

            def _serve(self, send: bool) -> None:
                if "/manifests/" in self.path:
                    self._reply(
                        200, manifest, {"Content-Type": media_type, "Docker-Content-Digest": digest}, send
                    )
                elif "/blobs/" in self.path:
                    server.blob_requests += 1
                    error = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
                    self._reply(404, error.encode(), {"Content-Type": "application/json"}, send)
                else:
                    self._reply(200, b"{}", {"Content-Type": "application/json"}, send)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

        self.host = f"127.0.0.1:{self.serve(Handler)}"


class ImageFactory:
    """Builds OCI layouts under `workdir` and pushes them to `registry` with skopeo."""

    def __init__(self, workdir: Path, registry: Registry) -> None:
        self.workdir = workdir
        self.registry = registry
        self._n = 0
        self._busybox: str | None = None

    def layout(self) -> tuple[OciLayout, Path]:
        self._n += 1
        path = self.workdir / f"layout-{self._n}"
        return OciLayout(path), path

    def push(self, spec: ImageSpec, dest: str, *, v2s2: bool = False) -> str:
        """Push `spec` as `registry/dest`; returns the full reference."""
        layout, path = self.layout()
        layout.add(spec, "t")
        self.registry.push(path, "t", dest, v2s2=v2s2)
        return f"{self.registry.host}/{dest}"

    def push_index(self, specs: list[ImageSpec], dest: str) -> str:
        layout, path = self.layout()
        layout.add_index(specs, "t")
        self.registry.push(path, "t", dest, all_images=True)
        return f"{self.registry.host}/{dest}"

    @property
    def busybox(self) -> str:
        """The standard busybox test image (pushed once per session)."""
        if self._busybox is None:
            self._busybox = self.push(busybox_image(), "test/busybox:1")
        return self._busybox
