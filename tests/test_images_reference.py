from __future__ import annotations

import pytest

from hypernetes.runtime.images import InvalidReference, parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "normalized", "api_host"),
    [
        ("busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "registry-1.docker.io"),
        ("user/app", "docker.io/user/app:latest", "registry-1.docker.io"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("index.docker.io/library/x:1", "docker.io/library/x:1", "registry-1.docker.io"),
        ("quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3", "quay.io"),
        ("localhost/app", "localhost/app:latest", "localhost"),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000"),
        ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1", "127.0.0.1:5000"),
        ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}", "registry-1.docker.io"),
        (f"r.io:443/x:tag@{D}", f"r.io:443/x:tag@{D}", "r.io:443"),
        ("a_b__c---d/e.f", "docker.io/a_b__c---d/e.f:latest", "registry-1.docker.io"),
        # Uppercase first component: a host, as Docker decides.
        ("Registry/app", "Registry/app:latest", "Registry"),
    ],
)
def test_parse_normalizes_like_docker(text: str, normalized: str, api_host: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == normalized
    assert ref.api_host == api_host


def test_parts_and_familiar_form() -> None:
    ref = parse_reference("busybox:1")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "1", None)
    assert ref.familiar == "busybox:1"
    assert ref.object == "1"
    assert parse_reference("user/app").familiar == "user/app:latest"
    pinned = parse_reference(f"x@{D}")
    assert pinned.tag is None and pinned.object == D
    assert parse_reference("x", default_tag=False).tag is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Busybox", "must be lowercase"),
        ("user/App", "must be lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:" + "a" * 129, "invalid tag"),
        ("bad name", "whitespace"),
        ("x@sha256:1234", "invalid digest"),
        ("x@md5:" + "a" * 32, "unsupported digest"),
        ("a" * 64, "64-character hexadecimal"),
        ("host:5000/", "invalid repository name component ''"),
        ("x/../y", "invalid repository name component"),
        ("-x", "invalid repository name component"),
        ("ho_st.io/x", "invalid registry host"),
        ("r.io/" + "a" * 260, "longer than 255"),
        ("x:1:2", "invalid repository name component 'x:1'"),
    ],
)
def test_bad_references_have_clear_errors(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
