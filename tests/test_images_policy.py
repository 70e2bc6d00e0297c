"""Pulls on tenants' behalf (issue 12): the registry network policy, and pulling rights checked
with the pod's own credentials for every use of a cached image. Against the real registry
(open, htpasswd and bearer-token variants), a redirecting registry front, and real sockets."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.node.podspec import ConfigError, pod_spec, referenced_objects
from hypernetes.runtime.images import (
    Credentials,
    ImageNotFound,
    ImageNotPresent,
    ImageStore,
    ManifestUnknown,
    RegistryAuth,
    RegistryNotAllowed,
    RegistryPolicy,
    RegistryUnreachable,
    Unauthorized,
    parse_allow_entry,
)
from hypernetes.runtime.images.policy import refusal
from hypernetes.runtime.interface import ImageNeverPull, ImagePullRefused, image_pull_error
from tests.support.registry import (
    BlobRedirector,
    ManifestServer,
    Registry,
    TokenServer,
    have_registry,
    start_registry,
)
from tests.support.registry import private_registry as running_private_registry

pytestmark = pytest.mark.skipif(
    not have_registry() or shutil.which("openssl") is None,
    reason="docker-registry, skopeo or openssl missing",
)
USER, PASSWORD = "alice", "s3cret"
REPO = Path(__file__).resolve().parent.parent


def tenant_store(root: Path, *allow: str, management: tuple[str, ...] = (), **kw: Any) -> ImageStore:
    return ImageStore(root, tenant_policy=RegistryPolicy(allow=allow, management=management), **kw)


class Listener:
    """A TCP socket on loopback that counts connections: a host service a tenant must not reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


# -- the network policy ----------------------------------------------------------------------


def test_default_refuses_loopback_without_connecting(tmp_path: Path, listener: Listener) -> None:
    store = tenant_store(tmp_path)
    for ref, shown in (
        (f"127.0.0.1:{listener.port}/x:1", f"127.0.0.1:{listener.port}"),
        (f"[::ffff:127.0.0.1]:{listener.port}/x:1", f"[::ffff:127.0.0.1]:{listener.port}"),
    ):
        with pytest.raises(RegistryNotAllowed) as err:
            store.pull(ref)
        assert f"registry {shown} is not allowed: loopback address 127.0.0.1" in str(err.value)
        assert "--allow-registry" in str(err.value)
    assert listener.accepted == 0  # refused before any connection


def test_host_name_resolving_to_loopback_is_refused(tmp_path: Path, listener: Listener) -> None:
    with pytest.raises(RegistryNotAllowed) as err:
        tenant_store(tmp_path).pull(f"localhost:{listener.port}/x:1")
    assert f"registry localhost:{listener.port} is not allowed: loopback address" in str(err.value)
    assert "(localhost resolves to it)" in str(err.value)
    assert listener.accepted == 0


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("169.254.169.254/latest/x:1", "link-local address 169.254.169.254"),  # cloud metadata
        ("[fe80::1]:5000/x:1", "link-local address fe80::1"),
        ("0.0.0.0:5000/x:1", "unspecified address 0.0.0.0"),
        ("0.1.2.3:5000/x:1", "unspecified address 0.1.2.3"),
        ("224.0.0.1:5000/x:1", "multicast address 224.0.0.1"),
        ("10.99.3.4:5000/x:1", "address 10.99.3.4 is in the management network 10.99.0.0/16"),
    ],
)
def test_default_refuses_special_and_management_addresses(tmp_path: Path, ref: str, why: str) -> None:
    with pytest.raises(RegistryNotAllowed, match=why):
        tenant_store(tmp_path, management=("10.99.0.0/16",)).pull(ref)


def test_host_name_resolving_to_management_network_is_refused(tmp_path: Path) -> None:
    """Resolved by the policy's resolver (getaddrinfo's signature): here a fixed answer, since
    the test may not edit /etc/hosts."""

    def resolver(host: str, port: int, *_: Any) -> list[tuple[Any, ...]]:
        assert host == "registry.corp"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.99.3.4", port))]

    store = ImageStore(
        tmp_path, tenant_policy=RegistryPolicy(management=("10.99.0.0/16",), resolver=resolver)
    )
    with pytest.raises(
        RegistryNotAllowed,
        match=r"registry registry.corp:443 is not allowed: address "
        r"10.99.3.4 is in the management network 10.99.0.0/16 \(registry.corp resolves",
    ):
        store.pull("registry.corp/x:1")


def test_allow_list(tmp_path: Path, registry: Registry, busybox_ref: str) -> None:
    port = registry.host.split(":")[1]
    assert tenant_store(tmp_path / "a", registry.host).pull(busybox_ref).refs
    assert tenant_store(tmp_path / "b", "127.0.0.1").pull(busybox_ref).refs  # any port
    with pytest.raises(RegistryNotAllowed, match=f"registry {registry.host} is not allowed: loopback"):
        tenant_store(tmp_path / "c", "127.0.0.1:1").pull(busybox_ref)  # another port only
    # allowed by name: `localhost` is allowed, the address it resolves to is not named
    assert tenant_store(tmp_path / "d", f"localhost:{port}").pull(f"localhost:{port}/test/busybox:1").refs


def test_operator_store_still_pulls_from_loopback(image_store: ImageStore, busybox_ref: str) -> None:
    """`hypernetes image pull` and `hypernetes run`: the operator acting, no policy."""
    assert image_store.tenant_policy is None
    assert image_store.pull(busybox_ref).refs


def test_connects_to_the_vetted_address(tmp_path: Path, registry: Registry, busybox_ref: str) -> None:
    """A name is resolved once per connection, by the policy, and the connection goes to that
    address: `registry.test` resolves nowhere else, yet the pull reaches the registry."""
    port = int(registry.host.split(":")[1])
    asked: list[str] = []

    def resolver(host: str, p: int, *_: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]

    name = f"registry.test:{port}"
    store = ImageStore(
        tmp_path, insecure_registries=[name], tenant_policy=RegistryPolicy(allow=[name], resolver=resolver)
    )
    image = store.pull(f"{name}/test/busybox:1")
    assert image.refs and set(asked) == {"registry.test"}
    with pytest.raises(httpx.ConnectError):  # the system resolver does not know the name
        httpx.get(f"http://{name}/v2/", timeout=5)


def test_only_vetted_addresses_are_dialled(tmp_path: Path, registry: Registry, busybox_ref: str) -> None:
    """A name with several addresses: the refused ones are never dialled, the vetted ones are
    tried in order (as create_connection does)."""
    port = int(registry.host.split(":")[1])
    host_service = socket.socket()
    host_service.bind(("127.0.0.2", port))  # a host service where the name also points
    host_service.listen(8)
    answers = ["127.0.0.2", "127.0.0.3", "127.0.0.1"]

    def resolver(host: str, p: int, *_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, p)) for a in answers]

    name = f"registry.test:{port}"
    path = busybox_ref.split("/", 1)[1]
    # 127.0.0.3 and 127.0.0.1 allowed by address: .3 refuses the connection, .1 is the registry
    policy = RegistryPolicy(allow=[f"127.0.0.3:{port}", f"127.0.0.1:{port}"], resolver=resolver)
    try:
        store = ImageStore(tmp_path, insecure_registries=[name], tenant_policy=policy)
        assert store.pull(f"{name}/{path}").refs
        host_service.settimeout(0.5)
        with pytest.raises(TimeoutError):
            host_service.accept()  # never dialled
    finally:
        host_service.close()


def test_redirect_to_loopback_is_refused(tmp_path: Path, registry: Registry, busybox_ref: str) -> None:
    """An allowed registry whose blob downloads redirect to a host service: the hop is vetted."""
    port = registry.host.split(":")[1]
    front = BlobRedirector(registry.host, f"http://localhost:{port}")
    try:
        path = busybox_ref.split("/", 1)[1]
        with pytest.raises(RegistryNotAllowed) as err:
            tenant_store(tmp_path / "a", front.host).pull(f"{front.host}/{path}")
        assert f"registry localhost:{port} is not allowed: loopback address" in str(err.value)
        assert any("/blobs/" in p for p in front.hits)  # the manifest came through the front
        # allowing the redirect target too makes the same pull work
        image = tenant_store(tmp_path / "b", front.host, f"localhost:{port}").pull(f"{front.host}/{path}")
        assert image.refs
    finally:
        front.close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    from tools.imagebuild import OciLayout, busybox_image

    work = tmp_path_factory.mktemp("policy-token")
    layout = work / "layout"
    OciLayout(layout).add(busybox_image(), "t")
    tokens = TokenServer(work, "policy-registry", users={USER: PASSWORD})
    reg = start_registry(work / "reg", token=tokens)
    reg.creds = (USER, PASSWORD)
    # skopeo logs in through the token server too
    reg.push(layout, "t", "private/app:1")
    yield reg, tokens
    reg.stop()
    tokens.close()


def test_token_realm_on_loopback_is_refused(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    reg, tokens = token_registry
    realm_host = tokens.url.split("/")[2]
    auth = RegistryAuth({reg.host: Credentials(USER, PASSWORD)})
    asked = len(tokens.requests)
    with pytest.raises(RegistryNotAllowed) as err:
        tenant_store(tmp_path / "a", reg.host, auth=auth).pull(f"{reg.host}/private/app:1")
    assert f"token realm {tokens.url}: registry {realm_host} is not allowed: loopback" in str(err.value)
    assert len(tokens.requests) == asked  # our credentials never went there
    assert tenant_store(tmp_path / "b", reg.host, realm_host, auth=auth).pull(f"{reg.host}/private/app:1")


def test_allow_entry_parsing() -> None:
    assert str(parse_allow_entry("127.0.0.1:5000")) == "127.0.0.1:5000"
    assert str(parse_allow_entry("Registry.Example.")) == "registry.example"
    assert str(parse_allow_entry("[::1]:5000")) == "[::1]:5000"
    for bad in ("a:b", "a:0", "a:70000", "[::1", "10.0.0.0/8", ""):
        with pytest.raises(ValueError):
            parse_allow_entry(bad)
    proc = subprocess.run(
        [str(REPO / ".venv/bin/hypernetes"), "up", "--allow-registry", "host:port"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--allow-registry" in proc.stderr and "Traceback" not in proc.stderr


def test_refusal_reasons() -> None:
    import ipaddress

    assert refusal(ipaddress.ip_address("93.184.216.34"), ()) is None
    assert refusal(ipaddress.ip_address("::1"), ()) == "loopback address ::1"
    assert refusal(ipaddress.ip_address("255.255.255.255"), ()) == "reserved address 255.255.255.255"


def test_refusals_are_not_transient() -> None:
    refused = image_pull_error(RegistryNotAllowed("registry 127.0.0.1:5000 is not allowed: loopback"))
    assert isinstance(refused, ImagePullRefused) and not refused.transient
    assert refused.reason == "ErrImagePull"
    assert isinstance(image_pull_error(Unauthorized("no")), ImagePullRefused)
    never = image_pull_error(ImageNotPresent("x"))
    assert isinstance(never, ImageNeverPull) and never.reason == "ErrImageNeverPull"
    assert image_pull_error(OSError("x")).transient


# -- pulling rights for every use of a cached image -------------------------------------------


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_private_registry(
        tmp_path_factory.mktemp("policy-private"), USER, PASSWORD, "private/app:1"
    ) as reg:
        yield reg


def creds(user: str, password: str, host: str) -> RegistryAuth:
    return RegistryAuth({host: Credentials(user, password)})


def test_cached_private_image_needs_the_pods_own_rights(tmp_path: Path, private_registry: Registry) -> None:
    reg = private_registry
    ref = f"{reg.host}/private/app:1"
    store = tenant_store(tmp_path, reg.host)
    a = creds(USER, PASSWORD, reg.host)
    image = store.ensure_for_pod(ref, "IfNotPresent", a)  # tenant A pulls with its secret
    for policy in ("IfNotPresent", "Never"):
        with pytest.raises(
            Unauthorized,
            match=f"image {ref} is cached on this node, but its registry "
            "must confirm that this pod may pull it: .*no credentials",
        ):
            store.ensure_for_pod(ref, policy, None)  # tenant B, no secret
        with pytest.raises(Unauthorized, match="rejected the credentials of user 'mallory'"):
            store.ensure_for_pod(ref, policy, creds("mallory", "guess", reg.host))
        assert store.ensure_for_pod(ref, policy, a).id == image.id
    by_digest = f"{reg.host}/private/app@{image.digest}"
    with pytest.raises(Unauthorized):
        store.ensure_for_pod(by_digest, "IfNotPresent", None)
    with pytest.raises(ImageNotPresent, match="pull policy is Never"):
        store.ensure_for_pod(f"{reg.host}/private/other:1", "Never", a)


def test_a_manifest_alone_does_not_unlock_a_cached_image(tmp_path: Path, private_registry: Registry) -> None:
    """Tenant B learnt the digests of tenant A's private image and serves its manifest from a
    registry of its own, under another name: the node must not answer the blobs from its cache."""
    reg = private_registry
    store = tenant_store(tmp_path, reg.host, "127.0.0.1")
    a = creds(USER, PASSWORD, reg.host)
    image = store.ensure_for_pod(f"{reg.host}/private/app:1", "IfNotPresent", a)
    manifest = store.blobs.read(image.digest, 1 << 22)
    evil = ManifestServer(manifest, json.loads(manifest)["mediaType"])
    try:
        for ref in (f"{evil.host}/b/app@{image.digest}", f"{evil.host}/b/app:1"):
            with pytest.raises(ImageNotFound, match="not found in b/app"):
                store.ensure_for_pod(ref, "IfNotPresent")
        assert evil.blob_requests >= 2
        # A's own repository needs no second download
        assert store.pull(f"{reg.host}/private/app:1", auth=a).id == image.id
    finally:
        evil.close()


def test_cached_image_the_registry_stopped_serving(tmp_path: Path) -> None:
    from tools.imagebuild import OciLayout, busybox_image

    OciLayout(tmp_path / "layout").add(busybox_image(), "t")
    reg = start_registry(tmp_path / "reg")
    try:
        reg.push(tmp_path / "layout", "t", "policy/gone:1")
        ref = f"{reg.host}/policy/gone:1"
        store = tenant_store(tmp_path / "store", reg.host)
        image = store.ensure_for_pod(ref, "IfNotPresent")
        r = httpx.delete(f"http://{reg.host}/v2/policy/gone/manifests/{image.digest}", timeout=10)
        assert r.status_code == 202, r.text
        with pytest.raises(ManifestUnknown, match="cached on this node"):
            store.ensure_for_pod(ref, "IfNotPresent")
    finally:
        reg.stop()
    with pytest.raises(RegistryUnreachable, match=r"cached on this node.*connection refused"):
        store.ensure_for_pod(ref, "Never")


def test_imported_images_stay_usable(tmp_path: Path) -> None:
    from tools.imagebuild import OciLayout, busybox_image

    layout = tmp_path / "layout"
    OciLayout(layout).add(busybox_image(), "1")
    store = tenant_store(tmp_path / "store")
    [image] = store.import_archive(layout, repository="127.0.0.1:1/imported/app")
    # no registry behind it (nothing listens on port 1, and loopback is not even allowed)
    assert store.ensure_for_pod("127.0.0.1:1/imported/app:1", "IfNotPresent").id == image.id
    assert store.ensure_for_pod("127.0.0.1:1/imported/app:1", "Never").id == image.id


def test_operator_store_uses_its_cache(tmp_path: Path) -> None:
    """The operator's own store (`hypernetes run`) trusts its cache: no registry to ask here."""
    from tools.imagebuild import OciLayout, busybox_image

    OciLayout(tmp_path / "layout").add(busybox_image(), "t")
    reg = start_registry(tmp_path / "reg")
    try:
        reg.push(tmp_path / "layout", "t", "op/app:1")
        store = ImageStore(tmp_path / "store")
        image = store.ensure_for_pod(f"{reg.host}/op/app:1")
    finally:
        reg.stop()
    assert store.ensure_for_pod(f"{reg.host}/op/app:1", "Never").id == image.id


# -- imagePullSecrets reach the runtime --------------------------------------------------------


def _secret(name: str, kind: str, key: str, doc: object) -> dict[str, Any]:
    raw = json.dumps(doc).encode()
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "type": kind,
        "data": {key: base64.b64encode(raw).decode()},
    }


def test_pull_secrets_to_pod_spec() -> None:
    auth = base64.b64encode(b"alice:s3cret").decode()
    secrets = {
        "json": _secret(
            "json",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            {"auths": {"reg.example:5000": {"auth": auth}}},
        ),
        "legacy": _secret(
            "legacy",
            "kubernetes.io/dockercfg",
            ".dockercfg",
            {"https://other.example/v1/": {"username": "bob", "password": "pw"}},
        ),
        "opaque": _secret("opaque", "Opaque", "x", {}),
        "bad": _secret("bad", "kubernetes.io/dockerconfigjson", ".dockerconfigjson", {"auths": 1}),
    }
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {
            "containers": [{"name": "c", "image": "reg.example:5000/a:1", "imagePullPolicy": "Never"}],
            "imagePullSecrets": [
                {"name": "json"},
                {"name": "legacy"},
                {"name": "opaque"},
                {"name": "missing"},
            ],
        },
    }

    def lookup(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return secrets.get(name) if kind == "Secret" and ns == "ns" else None

    spec = pod_spec(pod, lookup)
    assert dict(spec.pull_credentials) == {
        "reg.example:5000": Credentials("alice", "s3cret"),
        "other.example": Credentials("bob", "pw"),
    }
    assert spec.containers[0].pull_policy == "Never"
    assert "s3cret" not in repr(spec)
    # the sandbox's saved state (for adoption) never holds them
    from hypernetes.runtime.hypervm_state import pod_from_dict, pod_to_dict

    saved = json.dumps(pod_to_dict(spec))
    assert "s3cret" not in saved and pod_from_dict(json.loads(saved)).pull_credentials == ()
    assert {("Secret", "json"), ("Secret", "missing")} <= referenced_objects(pod)
    pod["spec"]["imagePullSecrets"] = [{"name": "bad"}]
    with pytest.raises(ConfigError, match="imagePullSecret \"bad\" has no 'auths' object"):
        pod_spec(pod, lookup)


def test_up_builds_the_node_policy_from_its_flags(tmp_path: Path) -> None:
    """`up`'s node agent: management networks given and the host's own subnets, plus the
    operator's allow-list; the operator's CLI stores get no policy."""
    from hypernetes.cli.main import build_parser
    from hypernetes.cli.nodehost import registry_policy
    from hypernetes.network.netns import local_subnets

    args = build_parser().parse_args(
        [
            "up",
            "--allow-registry",
            "127.0.0.1:5000",
            "--allow-registry",
            "Registry.Example",
            "--network-management",
            "10.99.0.0/16",
        ]
    )
    policy = registry_policy(args)
    assert [str(a) for a in policy.allow] == ["127.0.0.1:5000", "registry.example"]
    assert {str(n) for n in policy.management} == {"10.99.0.0/16", *local_subnets(None, "hn")}
    assert policy.vet("127.0.0.1", 5000) == ["127.0.0.1"]
    with pytest.raises(RegistryNotAllowed, match="loopback"):
        policy.vet("127.0.0.1", 5001)
    from hypernetes.cli.common import image_store

    operator = build_parser().parse_args(["image", "pull", "x", "--data-dir", str(tmp_path)])
    assert image_store(operator).tenant_policy is None
    args.data_dir, args.registry_policy = tmp_path, policy  # as `up` sets it for its node agent
    assert image_store(args).tenant_policy is policy
