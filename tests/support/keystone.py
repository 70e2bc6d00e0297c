"""A real OpenStack Keystone for tests: Debian's `keystone` package on SQLite in a temp dir, its
public API served on 127.0.0.1 by `keystone-wsgi-public` (wsgiref, one request at a time: plenty
for tests), set up the way `reference/environment-notes.md` describes.

`Keystone.start(workdir)` runs `keystone-manage` (db_sync, fernet_setup, credential_setup,
bootstrap), starts the primary server and logs in as the bootstrap admin; `create_*`/`grant` use
the REST API like an operator would. `extra_server()` starts another server on the same database
and keys (optionally with its own token lifetime), so a test can stop one for an outage without
taking Keystone away from the others. `close()` stops every server it started.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.listening import listening_port

KEYSTONE_WSGI = Path("/usr/bin/keystone-wsgi-public")
KEYSTONE_MANAGE = Path("/usr/bin/keystone-manage")
SYSTEM_PYTHON = "/usr/bin/python3"  # Keystone's modules live in Debian's python3, not a venv
ADMIN_PASSWORD = "bootstrap-admin-pw"
START_TIMEOUT = 60.0


def have_keystone() -> bool:
    return KEYSTONE_WSGI.exists() and KEYSTONE_MANAGE.exists()


def require_keystone() -> None:
    if not have_keystone():
        pytest.skip(f"{KEYSTONE_WSGI} missing: install Debian's keystone package (make setup)")


def _env(config: Path | None = None) -> dict[str, str]:
    # a venv's PYTHONPATH/PYTHONHOME must not leak into Debian's python3
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if config is not None:
        env["OS_KEYSTONE_CONFIG_FILES"] = str(config)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class KeystoneServer:
    """One `keystone-wsgi-public` process on 127.0.0.1:<port>: any free port on the first start
    (read back from the process), the same one on a restart, as a restarted service keeps its
    address."""

    def __init__(self, config: Path, log: Path, port: int = 0) -> None:
        self.config, self.log, self.port = config, log, port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port, "the server has not started yet: its port is not known"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(KEYSTONE_WSGI), "--host", "127.0.0.1", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(self.config),
                start_new_session=True,
            )
        if not self.port:
            try:
                self.port = listening_port(self._proc, START_TIMEOUT, "keystone")
            except RuntimeError as e:
                self.stop()
                raise RuntimeError(f"{e}:\n{_tail(self.log)}") from None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"keystone exited with {self._proc.returncode}:\n{_tail(self.log)}")
            try:
                if httpx.get(self.url + "/v3", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"keystone did not answer on {self.url} in {START_TIMEOUT:.0f} s:\n{_tail(self.log)}"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Keystone:
    """A Keystone data dir (SQLite, fernet and credential keys), its servers and an admin client."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "keystone.db"
        self.config = self.write_config("keystone.conf")
        self.servers: list[KeystoneServer] = []
        self.primary = self._server(self.config)
        self._admin_token = ""

    @classmethod
    def start(cls, workdir: Path) -> Keystone:
        ks = cls(workdir)
        try:
            ks._setup()
            ks.primary.start()  # before bootstrap, which records the server's URL in the catalog
            ks._bootstrap()
            ks._admin_token = ks.issue_token("admin", ADMIN_PASSWORD, project="admin")
        except BaseException:
            ks.close()
            raise
        return ks

    @property
    def url(self) -> str:
        return self.primary.url

    def write_config(self, name: str, *, token_expiration: int | None = None) -> Path:
        for d in ("fernet-keys", "credential-keys"):
            (self.workdir / d).mkdir(mode=0o700, exist_ok=True)
        text = f"""[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///{self.db}
[token]
provider = fernet
{f"expiration = {token_expiration}" if token_expiration is not None else ""}
[fernet_tokens]
key_repository = {self.workdir / "fernet-keys"}
[credential]
key_repository = {self.workdir / "credential-keys"}
[identity]
# bcrypt's minimum cost: a password check in ~2 ms instead of ~250 ms keeps the tests quick
password_hash_rounds = 4
"""
        path = self.workdir / name
        path.write_text(text)
        return path

    def _manage(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(KEYSTONE_MANAGE), "--config-file", str(self.config), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_env(),
        )

    def _setup(self) -> None:
        owner = [
            "--keystone-user",
            pwd.getpwuid(os.getuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getgid()).gr_name,
        ]
        # the key repositories do not need the database: set all three up at once (~4 s saved)
        keys = [
            self._manage("db_sync"),
            self._manage("fernet_setup", *owner),
            self._manage("credential_setup", *owner),
        ]
        failures = [f for f in map(self._finish, keys) if f]  # wait for all before failing
        if failures:
            raise RuntimeError(failures[0])
        # in SQLite's default rollback-journal mode Keystone's REST writes fail now and then with
        # "database is locked" after 5 s (apparently a pooled connection still holds a read lock);
        # WAL lets readers and a writer, and the servers sharing this file, coexist
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            db.execute("PRAGMA journal_mode=WAL")

    def _bootstrap(self) -> None:
        failure = self._finish(
            self._manage(
                "bootstrap",
                "--bootstrap-password",
                ADMIN_PASSWORD,
                "--bootstrap-public-url",
                self.url + "/v3",
            )
        )
        if failure:
            raise RuntimeError(failure)

    @staticmethod
    def _finish(proc: subprocess.Popen[bytes]) -> str:
        """ "" if `proc` succeeded, else what went wrong."""
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode == 0:
            return ""
        return f"{proc.args!r} failed ({proc.returncode}):\n" + out.decode(errors="replace")[-3000:]

    def _server(self, config: Path) -> KeystoneServer:
        server = KeystoneServer(config, self.workdir / f"server-{len(self.servers)}.log")
        self.servers.append(server)
        return server

    def extra_server(self, *, token_expiration: int | None = None) -> KeystoneServer:
        """Another running server over the same database and keys (stopped by `close`)."""
        config = self.config
        if token_expiration is not None:
            name = f"keystone-{len(self.servers)}.conf"
            config = self.write_config(name, token_expiration=token_expiration)
        server = self._server(config)
        server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()

    # -- REST API ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        url: str | None = None,
        expect: tuple[int, ...] = (200, 201, 204),
    ) -> httpx.Response:
        h = {"X-Auth-Token": self._admin_token} if self._admin_token else {}
        h.update(headers or {})
        resp = httpx.request(method, (url or self.url) + "/v3" + path, json=body, headers=h, timeout=30)
        if resp.status_code not in expect:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp

    def issue_token(
        self,
        user: str,
        password: str,
        *,
        project: str | None = None,
        domain: str = "Default",
        project_domain: str | None = None,
        url: str | None = None,
    ) -> str:
        """A token for `user` (a name in `domain`): scoped to `project` or, without one, unscoped."""
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"name": domain}, "password": password}},
            }
        }
        if project is not None:
            auth["scope"] = {"project": {"name": project, "domain": {"name": project_domain or domain}}}
        resp = httpx.post((url or self.url) + "/v3/auth/tokens?nocatalog", json={"auth": auth}, timeout=30)
        if resp.status_code != 201:
            raise RuntimeError(f"login as {user}: {resp.status_code} {resp.text[:500]}")
        return resp.headers["X-Subject-Token"]

    def revoke_token(self, token: str) -> None:
        self._call("DELETE", "/auth/tokens", headers={"X-Subject-Token": token})

    def create_domain(self, name: str) -> str:
        return str(self._call("POST", "/domains", body={"domain": {"name": name}}).json()["domain"]["id"])

    def create_project(self, name: str, *, domain_id: str = "default") -> str:
        body = {"project": {"name": name, "domain_id": domain_id}}
        return str(self._call("POST", "/projects", body=body).json()["project"]["id"])

    def create_user(self, name: str, password: str, *, domain_id: str = "default") -> str:
        body = {"user": {"name": name, "password": password, "domain_id": domain_id}}
        return str(self._call("POST", "/users", body=body).json()["user"]["id"])

    def create_role(self, name: str) -> str:
        return str(self._call("POST", "/roles", body={"role": {"name": name}}).json()["role"]["id"])

    def role_id(self, name: str) -> str:
        roles = self._call("GET", f"/roles?name={name}").json()["roles"]
        return str(roles[0]["id"])

    def grant(self, user_id: str, project_id: str, role_id: str) -> None:
        self._call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
