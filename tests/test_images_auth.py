"""Registry auth and transport: htpasswd basic auth, the bearer-token flow against a real token
endpoint, HTTPS with and without a trusted CA, and the insecure-registry rules."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypernetes.runtime.images import (
    Credentials,
    ImageError,
    ImageStore,
    RegistryAuth,
    RegistryUnreachable,
    Unauthorized,
)
from hypernetes.runtime.images.registry import RegistryClient, is_insecure, parse_challenge
from tests.support.registry import (
    Registry,
    TokenServer,
    have_registry,
    htpasswd_line,
    start_registry,
)
from tools.imagebuild import OciLayout, busybox_image

pytestmark = pytest.mark.skipif(
    not have_registry() or shutil.which("openssl") is None,
    reason="docker-registry, skopeo or openssl missing",
)
USER, PASSWORD = "alice", "s3cret"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth-layout")
    OciLayout(path).add(busybox_image(), "t")
    return path


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    if htpasswd_line(USER, PASSWORD) is None:
        pytest.skip("no bcrypt-capable crypt() to write an htpasswd file")
    reg = start_registry(tmp_path_factory.mktemp("basic"), htpasswd=(USER, PASSWORD))
    reg.push(layout, "t", "private/app:1")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, layout: Path
) -> Iterator[tuple[Registry, TokenServer]]:
    work = tmp_path_factory.mktemp("token")
    tokens = TokenServer(work, "hn-test-registry", {USER: PASSWORD})
    reg = start_registry(work / "reg", token=tokens, creds=(USER, PASSWORD))
    reg.push(layout, "t", "team/app:1")
    yield reg, tokens
    reg.stop()
    tokens.close()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("tls"), tls=True)
    reg.push(layout, "t", "secure/app:1")
    yield reg
    reg.stop()


def auth_file(tmp_path: Path, host: str, user: str, password: str) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {f"https://{host}": {"auth": token}}}))
    return path


def test_basic_auth_with_docker_auth_file(basic_registry: Registry, tmp_path: Path) -> None:
    ref = f"{basic_registry.host}/private/app:1"
    auth = RegistryAuth.from_docker_config(auth_file(tmp_path, basic_registry.host, USER, PASSWORD))
    image = ImageStore(tmp_path / "s", auth=auth).pull(ref)
    assert image.config.cmd == ("sh",)


def test_basic_auth_failures(basic_registry: Registry, tmp_path: Path) -> None:
    ref = f"{basic_registry.host}/private/app:1"
    with pytest.raises(Unauthorized) as info:
        ImageStore(tmp_path / "a").pull(ref)
    assert str(info.value) == (
        f"pull {ref}: unauthorized to read private/app: authentication required by "
        f"{basic_registry.host} and no credentials are configured for it"
    )
    wrong = RegistryAuth({basic_registry.host: Credentials(USER, "nope")})
    with pytest.raises(Unauthorized, match=f"rejected the credentials of user '{USER}'"):
        ImageStore(tmp_path / "b", auth=wrong).pull(ref)


def test_bearer_token_flow(token_registry: tuple[Registry, TokenServer], tmp_path: Path) -> None:
    reg, tokens = token_registry
    ref = f"{reg.host}/team/app:1"
    tokens.requests.clear()
    auth = RegistryAuth({reg.host: Credentials(USER, PASSWORD)})
    image = ImageStore(tmp_path / "s", auth=auth).pull(ref)
    assert image.refs[0] == ref
    # One token for the repository's pull scope, fetched with the user's credentials.
    assert tokens.requests == [(USER, "repository:team/app:pull")]


def test_bearer_token_refused(token_registry: tuple[Registry, TokenServer], tmp_path: Path) -> None:
    reg, _ = token_registry
    ref = f"{reg.host}/team/app:1"
    with pytest.raises(Unauthorized) as info:
        ImageStore(tmp_path / "a").pull(ref)
    assert str(info.value) == (
        f"pull {ref}: token server refused: authentication required by {reg.host} and no "
        "credentials are configured for it"
    )
    wrong = RegistryAuth({reg.host: Credentials(USER, "bad")})
    with pytest.raises(Unauthorized, match="token server refused"):
        ImageStore(tmp_path / "b", auth=wrong).pull(ref)


def test_https_registry(tls_registry: Registry, tmp_path: Path) -> None:
    # Loopback registries may use unverified TLS (as Docker allows), so this just works.
    image = ImageStore(tmp_path / "s").pull(f"{tls_registry.host}/secure/app:1")
    assert image.disk.is_file()
    # As a registry that is not insecure: verified against the CA we are given ...
    assert tls_registry.ca is not None
    with RegistryClient(tls_registry.host, ca_file=tls_registry.ca) as client:
        _, _, digest = client.get_manifest("secure/app", "1")
        assert digest == image.digest
    # ... and refused without it.
    with RegistryClient(tls_registry.host) as client, pytest.raises(RegistryUnreachable) as info:
        client.get_manifest("secure/app", "1")
    assert str(info.value).startswith("registry unreachable: TLS certificate verification failed")


def test_plain_http_is_refused_for_secure_registries(registry: Registry) -> None:
    with RegistryClient(registry.host) as client, pytest.raises(RegistryUnreachable) as info:
        client.get_manifest("test/busybox", "1")
    assert "TLS error" in str(info.value)


def test_insecure_rules() -> None:
    for host in ("127.0.0.1:5000", "127.3.4.5", "localhost:80", "[::1]:5000", "localhost"):
        assert is_insecure(host, ())
    assert not is_insecure("registry.example:5000", ())
    assert is_insecure("registry.example:5000", ["registry.example:5000"])
    assert is_insecure("registry.example:5000", ["registry.example"])
    assert not is_insecure("registry.example:5000", ["registry.example:6000"])
    assert is_insecure("10.1.2.3:5000", ["10.0.0.0/8"])
    assert not is_insecure("192.168.1.1", ["10.0.0.0/8"])


def test_challenge_parsing() -> None:
    assert parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    ) == (
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/busybox:pull",
        },
    )
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_auth_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}))
    with pytest.raises(ImageError, match="malformed 'auth'"):
        RegistryAuth.from_docker_config(path)
    path.write_text("{")
    with pytest.raises(ImageError, match="not valid JSON"):
        RegistryAuth.from_docker_config(path)
    with pytest.raises(ImageError, match="cannot read registry auth file"):
        RegistryAuth.from_docker_config(tmp_path / "missing.json")
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:q").decode()},
                    "r.io:5000": {"username": "bob", "password": "pw"},
                }
            }
        )
    )
    auth = RegistryAuth.from_docker_config(path)
    assert auth.lookup("docker.io") == Credentials("u", "p:q")
    assert auth.lookup("r.io:5000") == Credentials("bob", "pw")
    assert "pw" not in repr(auth.lookup("r.io:5000"))
