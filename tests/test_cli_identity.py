"""The identity CLI (`hypernetes tenant|user|kubeconfig|login|logout`) as people run it: the real
`hypernetes` program in a subprocess, against a real multi-tenant API server, with the real kubectl
using the kubeconfigs it writes (token and exec-plugin modes). Prompts are answered on a real
pseudo-terminal."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.apifixtures import have_kubectl, running_api
from tests.support.apiserver import ApiServerThread, kubectl_path

pytestmark = pytest.mark.skipif(not have_kubectl("1.32"), reason="kubectl 1.32 is not installed")

_ENTRY = Path(sys.executable).parent / "hypernetes"
HN = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "hypernetes.cli.main"]
PASSWORD = "correct horse battery"
# tenant users cannot reach POST/PUT /hypernetes/v1/* yet: the middleware authorizes those paths as
# non-resource requests and the tenant authorizer allows only GETs there (see docs/tenants.md)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory, tenancy=True)


@pytest.fixture(scope="module")
def env(api: ApiServerThread, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """HOME (so the token cache) in the test's directory; the operator's kubeconfig by default."""
    home = tmp_path_factory.mktemp("home")
    out = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "KUBERNETES_EXEC_INFO")}
    return {**out, "HOME": str(home), "KUBECONFIG": str(api.kubeconfig)}


def hn(
    env: dict[str, str], *args: str, input: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # a new session: no controlling terminal, so nothing can prompt on the one running the tests
    return subprocess.run(
        [*HN, *args],
        input=input,
        capture_output=True,
        text=True,
        env={**env, **(extra_env or {})},
        timeout=60,
        start_new_session=True,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(env: dict[str, str], *args: str, input: str | None = None) -> str:
    proc = hn(env, *args, input=input)
    assert proc.returncode == 0, (
        f"hypernetes {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def kubectl(env: dict[str, str], kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubectl_path("1.32")), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def on_tty(
    env: dict[str, str], args: list[str], answers: list[tuple[str, str]], *, program: list[str] = HN
) -> tuple[int, str]:
    """Run `hypernetes ARGS` (or `program ARGS`) with a new pseudo-terminal as its stdin, stdout,
    stderr and controlling terminal (/dev/tty, where getpass asks), typing each answer once its
    prompt shows."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        ["setsid", "-w", "-c", *program, *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    out, pending, deadline = b"", list(answers), time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in out:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last holder exited
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, out.decode(errors="replace").replace("\r\n", "\n")


def make_user(env: dict[str, str], name: str, tenant: str, role: str, password: str = PASSWORD) -> None:
    ok(
        env,
        "user",
        "create",
        name,
        "--tenant",
        tenant,
        "--role",
        role,
        "--password-stdin",
        input=password + "\n",
    )


def login_args(api: ApiServerThread, tenant: str, user: str) -> list[str]:
    return ["--server", api.url, "--ca", str(api.ca.ca_cert), "--tenant", tenant, "--user", user]


def cache_files(env: dict[str, str], user: str) -> list[Path]:
    """The token cache's files for `user` (the file names are hashes)."""
    files = (Path(env["HOME"]) / ".cache" / "hypernetes" / "tokens").glob("*.json")
    return [f for f in files if json.loads(f.read_text())["user"] == user]


def whoami(env: dict[str, str], kubeconfig: Path) -> str:
    proc = kubectl(env, kubeconfig, "auth", "whoami", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["status"]["userInfo"]["username"])


# -- tenants and users ---------------------------------------------------------------------------------


def test_tenants_and_users(env: dict[str, str]) -> None:
    out = ok(
        env,
        "tenant",
        "create",
        "acme",
        "--display-name",
        "ACME Corp",
        "--quota",
        "pods=10,vcpus=8,memory=16Gi,namespaces=5",
        "--allow-runtime-class",
        "hypervm",
        "--allow-kernel",
        "debian",
    )
    assert out.startswith('tenant "acme" created\n')  # then its quota, the server's defaults filled in
    assert {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:]}["pods"] == "10"
    again = hn(env, "tenant", "create", "acme")
    assert again.returncode == 1 and 'hypernetes: tenants.hypernetes.io "acme" already exists' in again.stderr
    bad = hn(env, "tenant", "create", "bad", "--quota", "gpus=1")
    assert bad.returncode == 1 and "unsupported quota" in bad.stderr
    ok(env, "tenant", "create", "globex")

    lines = ok(env, "tenant", "ls").splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "NAMESPACES", "PODS", "MEMORY"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["acme"][1] == "Active"
    assert rows["acme"][3].endswith("/10") and rows["acme"][4].endswith("/16Gi")
    assert "globex" in rows

    quota = ok(env, "tenant", "quota", "acme", "--set", "pods=3,memory=2Gi", "--unset", "vcpus")
    limits = {line.split()[0]: line.split()[-1] for line in quota.splitlines()[1:]}
    assert {k: limits[k] for k in ("pods", "memory", "namespaces")} == {
        "pods": "3",
        "memory": "2Gi",
        "namespaces": "5",
    }
    assert limits.get("vcpus", "unlimited") == "unlimited"
    assert ok(env, "tenant", "quota", "acme") == quota

    make_user(env, "ann", "acme", "admin")
    make_user(env, "bob", "acme", "member")
    make_user(env, "gil", "globex", "viewer")
    short = hn(
        env,
        "user",
        "create",
        "tom",
        "--tenant",
        "acme",
        "--role",
        "member",
        "--password-stdin",
        input="short\n",
    )
    assert short.returncode == 1 and "password must be at least 8 characters" in short.stderr
    role = hn(env, "user", "create", "tom", "--tenant", "acme", "--role", "owner", "--password-stdin")
    assert role.returncode == 2 and "invalid choice: 'owner'" in role.stderr
    nowhere = hn(
        env,
        "user",
        "create",
        "tom",
        "--tenant",
        "nope",
        "--role",
        "member",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert nowhere.returncode == 1 and 'tenant "nope" does not exist' in nowhere.stderr

    listed = ok(env, "user", "ls", "--tenant", "acme").splitlines()
    assert listed[0].split() == ["NAME", "TENANT", "ROLE", "DISABLED"]
    assert [line.split() for line in listed[1:]] == [
        ["ann", "acme", "admin", "false"],
        ["bob", "acme", "member", "false"],
    ]
    everyone = ok(env, "user", "ls")
    assert "gil" in everyone and "tom" not in everyone  # the failed creates left nothing behind


def test_no_password_on_the_command_line(env: dict[str, str]) -> None:
    proc = hn(env, "user", "create", "eve", "--tenant", "acme", "--role", "member", "--password", "x")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    # no terminal and no --password-stdin: refused before anything is created
    proc = hn(env, "user", "create", "eve", "--tenant", "acme", "--role", "member")
    assert proc.returncode == 1
    assert "no terminal to ask for the password on; pipe it in with --password-stdin" in proc.stderr
    assert "eve" not in ok(env, "user", "ls")


def test_user_create_asks_twice_on_a_terminal(api: ApiServerThread, env: dict[str, str]) -> None:
    args = ["user", "create", "tia", "--tenant", "acme", "--role", "viewer"]
    code, out = on_tty(env, args, [("New password", "one password"), ("Repeat", "another one")])
    assert code == 1 and "the passwords do not match" in out and "one password" not in out
    code, out = on_tty(env, args, [("New password", "tia's password"), ("Repeat", "tia's password")])
    assert code == 0, out
    assert 'user "tia" created in tenant "acme" with role viewer' in out and "tia's password" not in out
    cred = hn(env, "login", *login_args(api, "acme", "tia"), "--password-stdin", input="tia's password\n")
    assert cred.returncode == 0, cred.stderr


# -- kubeconfigs -----------------------------------------------------------------------------------------


def test_kubeconfig_with_token(env: dict[str, str], tmp_path: Path) -> None:
    kc = tmp_path / "ann.kubeconfig"
    proc = hn(
        env, "kubeconfig", "--tenant", "acme", "--user", "ann", "--ttl", "2h", "-n", "acme-dev", "-o", str(kc)
    )
    assert proc.returncode == 0, proc.stderr
    assert "token of user ann of tenant acme expires" in proc.stderr
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600
    cfg = yaml.safe_load(kc.read_text())
    assert cfg["current-context"] == "ann@acme" and cfg["contexts"][0]["context"]["namespace"] == "acme-dev"
    assert cfg["users"][0]["user"]["token"].startswith("eyJ")

    info = json.loads(kubectl(env, kc, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert info["username"] == "ann" and info["extra"]["hypernetes.io/tenant"] == ["acme"]
    table = kubectl(env, kc, "auth", "whoami").stdout
    assert "ann" in table and "hypernetes:tenant:acme" in table

    assert kubectl(env, kc, "create", "namespace", "acme-dev").returncode == 0
    names = kubectl(env, kc, "get", "ns", "-o", "name").stdout.split()
    assert names == ["namespace/acme-dev"]  # filtered to the tenant: no default, no kube-system
    denied = kubectl(env, kc, "get", "pods", "-n", "default")
    assert denied.returncode == 1 and "Forbidden" in denied.stderr

    unknown = hn(env, "kubeconfig", "--tenant", "acme", "--user", "nobody")
    assert unknown.returncode == 1 and 'users.hypernetes.io "nobody" not found' in unknown.stderr
    wrong = hn(env, "kubeconfig", "--tenant", "globex", "--user", "ann")
    assert wrong.returncode == 1 and 'does not belong to tenant "globex"' in wrong.stderr


def test_exec_plugin(api: ApiServerThread, env: dict[str, str], tmp_path: Path) -> None:
    kc = tmp_path / "bob.kubeconfig"
    ok(
        env,
        "kubeconfig",
        "--exec",
        "--tenant",
        "acme",
        "--user",
        "bob",
        "--ca",
        str(api.ca.ca_cert),
        "-o",
        str(kc),
    )
    user = yaml.safe_load(kc.read_text())["users"][0]["user"]
    assert "token" not in user
    plugin = user["exec"]
    assert plugin["apiVersion"] == "client.authentication.k8s.io/v1"
    assert plugin["interactiveMode"] == "IfAvailable" and plugin["provideClusterInfo"] is False
    assert plugin["args"][-13:] == ["login", *login_args(api, "acme", "bob"), "--ttl", "86400s"]

    # nothing cached and kubectl gives the plugin no terminal: a clear refusal, not a hang
    first = kubectl(env, kc, "get", "ns")
    assert first.returncode == 1 and "not logged in as user bob of tenant acme" in first.stderr

    wrong = hn(env, "login", *login_args(api, "acme", "bob"), "--password-stdin", input="not the password\n")
    assert wrong.returncode == 1
    assert "login failed for user bob of tenant acme" in wrong.stderr
    assert "invalid user name, password or tenant" in wrong.stderr
    assert wrong.stdout == "" and not cache_files(env, "bob")

    proc = hn(env, "login", *login_args(api, "acme", "bob"), "--password-stdin", input=PASSWORD + "\n")
    assert proc.returncode == 0, proc.stderr
    cred = json.loads(proc.stdout)
    assert cred["apiVersion"] == "client.authentication.k8s.io/v1" and cred["kind"] == "ExecCredential"
    assert set(cred["status"]) == {"token", "expirationTimestamp"}
    assert cred["status"]["expirationTimestamp"].endswith("Z")
    [cached] = cache_files(env, "bob")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700

    assert whoami(env, kc) == "bob"  # kubectl ran the plugin, which answered from the cache
    noninteractive = {
        "KUBERNETES_EXEC_INFO": json.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "spec": {"interactive": False},
            }
        )
    }
    again = hn(env, "login", *login_args(api, "acme", "bob"), extra_env=noninteractive)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == cred["status"]

    # user passwd (by the operator) revokes every earlier token: the plugin notices, drops the
    # cached one and, without a terminal, says so instead of handing kubectl a dead token
    ok(env, "user", "passwd", "bob", "--password-stdin", input="bob's new password\n")
    dead = kubectl(env, kc, "get", "ns")
    assert dead.returncode == 1 and "not logged in as user bob" in dead.stderr
    assert not cache_files(env, "bob")
    ok(env, "login", *login_args(api, "acme", "bob"), "--password-stdin", input="bob's new password\n")
    assert whoami(env, kc) == "bob"
    # the CLI itself runs a kubeconfig's plugin too: bob's tenant list is filtered to his tenant
    rows = ok({**env, "KUBECONFIG": str(kc)}, "tenant", "ls").splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["acme"]
    denied = hn({**env, "KUBECONFIG": str(kc)}, "user", "ls")
    assert denied.returncode == 1 and "only a tenant admin manages users" in denied.stderr


def test_exec_plugin_asks_on_the_terminal(api: ApiServerThread, env: dict[str, str], tmp_path: Path) -> None:
    make_user(env, "hal", "acme", "viewer")
    kc = tmp_path / "hal.kubeconfig"
    ok(env, "kubeconfig", "--exec", "--tenant", "acme", "--user", "hal", "-o", str(kc))  # CA embedded
    assert "--ca-data" in yaml.safe_load(kc.read_text())["users"][0]["user"]["exec"]["args"]
    code, out = on_tty(
        env,
        ["--kubeconfig", str(kc), "auth", "whoami"],
        [(f"Password for user hal of tenant acme at {api.url}: ", PASSWORD)],
        program=[str(kubectl_path("1.32"))],
    )
    assert code == 0 and "hal" in out and PASSWORD not in out, out
    assert whoami(env, kc) == "hal"  # now from the cache, without asking
    # by hand on a terminal, login says where it stands instead of printing the bearer token
    code, out = on_tty(env, ["login", *login_args(api, "acme", "hal")], [])
    assert code == 0 and "logged in as user hal of tenant acme; token cached until" in out
    assert "eyJ" not in out


def test_passwd_and_revoke_end_old_tokens(env: dict[str, str], tmp_path: Path) -> None:
    make_user(env, "cy", "acme", "member")
    kc = tmp_path / "cy.kubeconfig"
    ok(env, "kubeconfig", "--tenant", "acme", "--user", "cy", "-o", str(kc))
    assert whoami(env, kc) == "cy"
    out = ok(env, "user", "passwd", "cy", "--password-stdin", input="cy's second password\n")
    assert 'password of user "cy" set; its earlier tokens are revoked' in out
    gone = kubectl(env, kc, "get", "pods", "-n", "acme-dev")
    assert gone.returncode == 1 and "Unauthorized" in gone.stderr

    ok(env, "kubeconfig", "--tenant", "acme", "--user", "cy", "-o", str(kc))
    assert whoami(env, kc) == "cy"
    assert 'every token of user "cy" issued until now is revoked' in ok(env, "user", "revoke", "cy")
    assert "Unauthorized" in kubectl(env, kc, "get", "pods", "-n", "acme-dev").stderr
    ok(env, "kubeconfig", "--tenant", "acme", "--user", "cy", "-o", str(kc))  # new tokens work again
    assert whoami(env, kc) == "cy"

    assert 'user "cy" deleted' in ok(env, "user", "rm", "cy")
    assert "Unauthorized" in kubectl(env, kc, "get", "pods", "-n", "acme-dev").stderr


def test_logout_of_a_dead_token_just_forgets_it(api: ApiServerThread, env: dict[str, str]) -> None:
    make_user(env, "dee", "acme", "member")
    ok(env, "login", *login_args(api, "acme", "dee"), "--password-stdin", input=PASSWORD + "\n")
    assert len(cache_files(env, "dee")) == 1
    ok(env, "user", "revoke", "dee")
    proc = hn(env, "logout", *login_args(api, "acme", "dee"))
    assert proc.returncode == 0
    assert "logged out user dee of tenant acme (the token was no longer valid)" in proc.stderr
    assert not cache_files(env, "dee")
    assert "not logged in" in hn(env, "logout", *login_args(api, "acme", "dee")).stderr


def test_logout_revokes_the_cached_token(api: ApiServerThread, env: dict[str, str], tmp_path: Path) -> None:
    make_user(env, "eli", "acme", "member")
    cred = json.loads(
        ok(env, "login", *login_args(api, "acme", "eli"), "--password-stdin", input=PASSWORD + "\n")
    )
    kc = tmp_path / "eli.kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": api.url, "certificate-authority": str(api.ca.ca_cert)},
                    }
                ],
                "users": [{"name": "u", "user": {"token": cred["status"]["token"]}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    assert whoami(env, kc) == "eli"
    proc = hn(env, "logout", *login_args(api, "acme", "eli"))
    assert proc.returncode == 0, proc.stderr
    assert "Unauthorized" in kubectl(env, kc, "get", "ns").stderr


def test_tenant_admin_and_users_themselves(api: ApiServerThread, env: dict[str, str], tmp_path: Path) -> None:
    admin_kc = tmp_path / "ann.kubeconfig"
    ok(env, "kubeconfig", "--tenant", "acme", "--user", "ann", "-o", str(admin_kc))
    as_ann = {**env, "KUBECONFIG": str(admin_kc)}
    make_user(as_ann, "fay", "acme", "viewer")  # a tenant admin creates its users and sets passwords
    ok(as_ann, "kubeconfig", "--tenant", "acme", "--user", "fay", "-o", str(tmp_path / "fay.kubeconfig"))
    fay_kc = tmp_path / "fay.kubeconfig"
    as_fay = {**env, "KUBECONFIG": str(fay_kc)}
    # a user changing its own password gives the current one first
    ok(as_fay, "user", "passwd", "fay", "--password-stdin", input=f"{PASSWORD}\nfay's new password\n")
    ok(env, "login", *login_args(api, "acme", "fay"), "--password-stdin", input="fay's new password\n")


# -- deleting a tenant -------------------------------------------------------------------------------------


def test_tenant_rm_asks_first(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "tenant", "create", "initech")
    make_user(env, "ivy", "initech", "admin")
    kc = tmp_path / "ivy.kubeconfig"
    ok(env, "kubeconfig", "--tenant", "initech", "--user", "ivy", "-o", str(kc))
    for ns in ("initech-a", "initech-b"):
        assert kubectl(env, kc, "create", "namespace", ns).returncode == 0

    blind = hn(env, "tenant", "rm", "initech")
    assert blind.returncode == 1
    assert (
        'Deleting tenant "initech" also deletes its 2 namespaces (initech-a, initech-b) with everything '
        "in them, pod VMs included, and all its users."
    ) in blind.stderr
    assert "give --yes" in blind.stderr
    code, out = on_tty(env, ["tenant", "rm", "initech"], [("to confirm", "initec")])
    assert code == 1 and "not confirmed; nothing deleted" in out
    assert "Active" in next(x for x in ok(env, "tenant", "ls").splitlines() if x.startswith("initech"))

    code, out = on_tty(env, ["tenant", "rm", "initech"], [("to confirm", "initech")])
    assert code == 0 and 'tenant "initech" deleted' in out, out
    # no controller runs here to remove the namespaces and the finalizer: the tenant is Terminating
    assert "Terminating" in next(x for x in ok(env, "tenant", "ls").splitlines() if x.startswith("initech"))
    assert "Unauthorized" in kubectl(env, kc, "get", "ns").stderr  # its users' tokens died with it

    missing = hn(env, "tenant", "rm", "nope", "--yes")
    assert missing.returncode == 1 and 'tenants.hypernetes.io "nope" not found' in missing.stderr
