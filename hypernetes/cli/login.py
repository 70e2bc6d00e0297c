"""`hypernetes kubeconfig`, `hypernetes login`, `hypernetes logout`: kubectl credentials for a
tenant user; and the small synchronous HTTPS client the identity commands (`tenant`, `user`) share.

Two ways to give kubectl a user's credentials:

- `kubeconfig` (default mode) embeds a token an operator or the tenant's admin obtains for the user
  (POST /hypernetes/v1/tokens): nothing to type, but the file is a secret until the token expires;
- `kubeconfig --exec` writes no token: kubectl runs `hypernetes login` (a client-go credential
  plugin), which logs in with the user's password (POST /hypernetes/v1/login) and caches the token
  under ~/.cache/hypernetes/tokens/ until about a minute before it expires.

Plain urllib on purpose: these commands run once per kubectl call (the plugin) and must start fast,
so no event loop, no aiohttp and no API server imports.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernetes.cli.common import fail
from hypernetes.objects import Obj
from hypernetes.runtime.paths import default_data_dir

EXEC_API = "client.authentication.k8s.io/v1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MERGE_PATCH = "application/merge-patch+json"
REFRESH_MARGIN = 60.0  # seconds: a cached token this close to expiry is not handed out again
DEFAULT_TTL = "24h"


class CliError(Exception):
    """A failure the user should read: printed as `hypernetes: <message>`, exit status 1."""


class RequestFailed(CliError):
    """The server refused (a Status), or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after


# -- HTTPS ----------------------------------------------------------------------------------------


def ssl_context(
    ca_file: str | None = None, ca_data: bytes | None = None, *, insecure: bool = False
) -> ssl.SSLContext:
    """Pinned to the cluster CA when one is given: the system store is not consulted then."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return ctx
    if ca_file is None and ca_data is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file, cadata=ca_data.decode() if ca_data else None)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise CliError(f"cannot load the cluster CA {ca_file or '(embedded)'}: {e}") from None


@dataclass
class Cluster:
    """One API server and the credential to present to it."""

    server: str
    ssl: ssl.SSLContext
    token: str | None = None
    ca_file: str | None = None  # where the pinned CA came from, when it was a file
    ca_data: bytes | None = None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Obj:
        url = self.server.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Accept": accept, "User-Agent": "hypernetes-cli"}
        bearer = token if token is not None else self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=timeout) as resp:
                return _decode(resp.read())
        except urllib.error.HTTPError as e:
            status = _decode(e.read())
            retry = (status.get("details") or {}).get("retryAfterSeconds")
            raise RequestFailed(
                e.code,
                str(status.get("reason") or e.reason),
                str(status.get("message") or e.reason or f"HTTP {e.code}"),
                retry if isinstance(retry, int) else 0,
            ) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise RequestFailed(0, "Unreachable", f"cannot reach {self.server}: {why}") from None


def _decode(payload: bytes) -> Obj:
    try:
        obj = json.loads(payload) if payload else {}
    except ValueError:
        return {"message": payload[:200].decode(errors="replace")}
    return obj if isinstance(obj, dict) else {}


def whoami(cluster: Cluster) -> Obj:
    """The caller's userInfo, as `kubectl auth whoami` asks for it."""
    review = cluster.call(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    info = (review.get("status") or {}).get("userInfo")
    return info if isinstance(info, dict) else {}


# -- kubeconfigs ------------------------------------------------------------------------------------


def add_kubeconfig(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        metavar="FILE",
        help="whose credentials to use (default: $KUBECONFIG, else the operator's "
        f"{default_data_dir() / 'admin.kubeconfig'})",
    )


def kubeconfig_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("KUBECONFIG")
    if env:
        # kubectl merges a list; we take the first file that exists
        paths = [Path(p) for p in env.split(os.pathsep) if p]
        return next((p for p in paths if p.exists()), paths[0])
    return default_data_dir() / "admin.kubeconfig"


@dataclass
class Kubeconfig:
    path: Path
    server: str
    ca_file: str | None
    ca_data: bytes | None
    insecure: bool
    user: Obj


def read_kubeconfig(path: Path) -> Kubeconfig:
    """The current context's cluster and user entries."""
    import yaml  # only the commands that read a kubeconfig pay for it

    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no kubeconfig at {path} (give --kubeconfig, or set KUBECONFIG)") from None
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"cannot read kubeconfig {path}: {e}") from None
    try:
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user: Obj = next((u["user"] for u in cfg.get("users") or [] if u["name"] == ctx.get("user")), {})
    except (KeyError, TypeError, StopIteration):
        raise CliError(f"kubeconfig {path}: no usable current context") from None
    ca_file = cluster.get("certificate-authority")
    if ca_file and not Path(ca_file).is_absolute():
        ca_file = str(path.parent / ca_file)  # relative to the kubeconfig, as client-go resolves it
    ca_data = cluster.get("certificate-authority-data")
    return Kubeconfig(
        path,
        str(cluster["server"]),
        ca_file,
        base64.b64decode(ca_data) if ca_data else None,
        bool(cluster.get("insecure-skip-tls-verify")),
        user or {},
    )


def connect(path_arg: Path | None) -> Cluster:
    """A client for the current context of the kubeconfig: token, tokenFile or exec plugin."""
    kc = read_kubeconfig(kubeconfig_path(path_arg))
    user = kc.user
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token_file = Path(user["tokenFile"])
        token = (token_file if token_file.is_absolute() else kc.path.parent / token_file).read_text().strip()
    if not token and isinstance(user.get("exec"), dict):
        token = _exec_plugin(user["exec"], kc.path.parent)
    if not token:
        raise CliError(
            f"kubeconfig {kc.path}: the current user has no token (client certificates "
            "are not supported by this command)"
        )
    return Cluster(
        kc.server,
        ssl_context(kc.ca_file, kc.ca_data, insecure=kc.insecure),
        str(token),
        kc.ca_file,
        kc.ca_data,
    )


def _exec_plugin(spec: Obj, base: Path) -> str:
    """Run a kubeconfig's credential plugin as client-go does, and return its token."""
    command = str(spec.get("command") or "")
    if os.sep in command and not Path(command).is_absolute():
        command = str(base / command)
    env = {
        **os.environ,
        **{str(e.get("name")): str(e.get("value", "")) for e in spec.get("env") or [] if isinstance(e, dict)},
    }
    interactive = sys.stdin.isatty() and spec.get("interactiveMode") != "Never"
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": spec.get("apiVersion", EXEC_API),
            "kind": "ExecCredential",
            "spec": {"interactive": interactive},
        }
    )
    try:
        proc = subprocess.run(
            [command, *map(str, spec.get("args") or [])],
            env=env,
            stdout=subprocess.PIPE,
            stdin=None if interactive else subprocess.DEVNULL,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CliError(f"credential plugin {command}: {e}") from None
    if proc.returncode != 0:
        raise CliError(f"credential plugin {command} failed with exit status {proc.returncode}")
    token = (_decode(proc.stdout).get("status") or {}).get("token")
    if not isinstance(token, str) or not token:
        raise CliError(f"credential plugin {command} returned no token")
    return token


def write_private(path: Path, text: str) -> None:
    """Write a file holding a secret: 0600 from the first byte, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- small parsers and prompts ----------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds in `90`, `30m`, `24h`, `1h30m`, `7d`."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def has_terminal() -> bool:
    """Whether /dev/tty can be opened: getpass would otherwise fall back to echoing stdin."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def read_stdin_lines(count: int) -> list[str]:
    """`count` lines of stdin (passwords piped in), without their line ends."""
    lines = [sys.stdin.readline() for _ in range(count)]
    out = [line.rstrip("\r\n") for line in lines]
    if any(not line for line in out):
        raise CliError(f"expected {count} non-empty line{'s' if count > 1 else ''} on stdin")
    return out


def ask_password(prompt: str, *, confirm: bool = False) -> str:
    """A password typed on the terminal (never echoed); asked twice when `confirm`."""
    if not has_terminal():
        raise CliError("no terminal to ask for the password on; pipe it in with --password-stdin")
    password = getpass.getpass(prompt)
    if not password:
        raise CliError("empty password")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise CliError("the passwords do not match")
    return password


def split_pairs(text: Sequence[str], what: str) -> dict[str, str]:
    """`k=v,k2=v2` (the flag may repeat) as a dict."""
    out: dict[str, str] = {}
    for chunk in text:
        for pair in filter(None, (p.strip() for p in chunk.split(","))):
            key, sep, value = pair.partition("=")
            if not sep or not key or not value:
                raise CliError(f"{what}: expected KEY=VALUE, got {pair!r}")
            out[key.strip()] = value.strip()
    return out


def print_table(table: Obj, columns: Sequence[str], *, keep: dict[str, str] | None = None) -> None:
    """The named columns of a server-rendered Table (what `kubectl get` prints), optionally only
    the rows whose cells equal `keep`'s values."""
    names = [str(c.get("name")) for c in table.get("columnDefinitions") or []]
    missing = [c for c in [*columns, *(keep or {})] if c not in names]
    if table.get("kind") != "Table" or missing:
        raise CliError(f"the server's table lacks column(s) {', '.join(missing) or '(not a Table)'}")
    rows = []
    for row in table.get("rows") or []:
        cells = dict(zip(names, row.get("cells") or [], strict=False))
        if all(_cell(cells.get(k)) == v for k, v in (keep or {}).items()):
            rows.append([_cell(cells.get(c)) for c in columns])
    headers = [c.upper() for c in columns]
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        print("   ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as kubectl prints them
    return "" if value is None else str(value)


def run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command's body; its CliErrors (and file errors) become the usual one-line message
    and exit status 1."""
    try:
        return handler(args)
    except (CliError, OSError) as e:
        return fail(str(e))


# -- sub-commands ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    kc = sub.add_parser(
        "kubeconfig",
        help="write a kubeconfig for a tenant user",
        description="Write a kubeconfig for USER of TENANT. By default it embeds a token obtained with "
        "the operator's or the tenant admin's kubeconfig (no password needed; the file is a secret "
        "until the token expires). With --exec it holds no token: kubectl runs `hypernetes login`, "
        "which asks the user's password and caches the token.",
    )
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--user", required=True)
    kc.add_argument("--server", help="API server URL (default: the --kubeconfig's)")
    kc.add_argument(
        "--ca", type=Path, metavar="FILE", help="cluster CA certificate (default: the --kubeconfig's)"
    )
    kc.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here, mode 0600 (default: stdout)"
    )
    kc.add_argument(
        "--ttl",
        type=duration,
        default=duration(DEFAULT_TTL),
        metavar="DURATION",
        help=f"token lifetime, e.g. 8h or 7d (at most 7 days; default {DEFAULT_TTL})",
    )
    kc.add_argument(
        "--exec",
        dest="exec_mode",
        action="store_true",
        help="store no token: kubectl runs `hypernetes login` to get one",
    )
    kc.add_argument("-n", "--namespace", help="the context's namespace")
    add_kubeconfig(kc)
    kc.set_defaults(handler=lambda a: run(_kubeconfig, a))

    for name, text in (
        ("login", "log in as a tenant user (a kubectl credential plugin)"),
        ("logout", "revoke and forget the cached token of a tenant user"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=(
                "Print a client.authentication.k8s.io/v1 ExecCredential for USER of TENANT: the cached "
                "token while it has more than a minute left, else a new one from the password (asked on "
                "the terminal, or read from stdin with --password-stdin). kubectl runs this from a "
                "kubeconfig written by `hypernetes kubeconfig --exec`."
                if name == "login"
                else "Revoke the cached token of USER of TENANT on the server and delete it from the cache."
            ),
        )
        p.add_argument("--server", required=True, help="API server URL")
        ca = p.add_mutually_exclusive_group(required=True)
        ca.add_argument("--ca", metavar="FILE", help="cluster CA certificate (the only CA trusted)")
        ca.add_argument("--ca-data", metavar="BASE64", help="the cluster CA certificate, base64 PEM")
        p.add_argument("--tenant", required=True)
        p.add_argument("--user", required=True)
        if name == "login":
            p.add_argument(
                "--password-stdin", action="store_true", help="read the password from the first line of stdin"
            )
            p.add_argument(
                "--ttl",
                type=duration,
                default=duration(DEFAULT_TTL),
                metavar="DURATION",
                help=f"lifetime of a new token (default {DEFAULT_TTL}, at most 7 days)",
            )
        p.set_defaults(handler=lambda a: run(_login if a.command_name == "login" else _logout, a))


# -- kubeconfig ------------------------------------------------------------------------------------


def _kubeconfig(args: argparse.Namespace) -> int:
    ca_data = args.ca.read_bytes() if args.ca else None
    server = args.server
    cluster: Cluster | None = None
    if not args.exec_mode:
        cluster = connect(args.kubeconfig)
    elif not (server and args.ca):
        kc = read_kubeconfig(kubeconfig_path(args.kubeconfig))  # only for server and CA: no token
        cluster = Cluster(kc.server, ssl_context(kc.ca_file, kc.ca_data), None, kc.ca_file, kc.ca_data)
    if cluster is not None:
        server = server or cluster.server
        if ca_data is None:
            ca_data = cluster.ca_data or (Path(cluster.ca_file).read_bytes() if cluster.ca_file else None)
    if ca_data is None:
        raise CliError("no cluster CA: give --ca FILE")
    name = f"{args.user}@{args.tenant}"
    if args.exec_mode:
        if args.ca:
            ca_args = ["--ca", str(args.ca.resolve())]
        else:  # the CA came embedded: keep the kubeconfig one self-contained file
            ca_args = ["--ca-data", base64.b64encode(ca_data).decode()]
        command = _self_command()
        user: Obj = {
            "exec": {
                "apiVersion": EXEC_API,
                "command": command[0],
                "args": [
                    *command[1:],
                    "login",
                    "--server",
                    server,
                    *ca_args,
                    "--tenant",
                    args.tenant,
                    "--user",
                    args.user,
                    "--ttl",
                    f"{int(args.ttl)}s",
                ],
                "interactiveMode": "IfAvailable",
                "provideClusterInfo": False,
                "installHint": "this kubeconfig logs in with the `hypernetes` command: install hypernetes "
                "or put it on your PATH",
            }
        }
        note = f"kubectl will run `hypernetes login` for user {args.user} of tenant {args.tenant}"
    else:
        assert cluster is not None
        issued = cluster.call(
            "POST",
            "/hypernetes/v1/tokens",
            {"user": args.user, "tenant": args.tenant, "expirationSeconds": int(args.ttl)},
        )
        user = {"token": issued["token"]}
        note = f"token of user {args.user} of tenant {args.tenant} expires {issued['expirationTimestamp']}"
    context: Obj = {"cluster": "hypernetes", "user": name}
    if args.namespace:
        context["namespace"] = args.namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": "hypernetes",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_data).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_private(args.output, text)
        print(f"wrote {args.output}: {note}", file=sys.stderr)
    return 0


def _self_command() -> list[str]:
    """How kubectl should run this program: `hypernetes` when that is on PATH, else this very file."""
    if shutil.which("hypernetes"):
        return ["hypernetes"]
    argv0 = Path(sys.argv[0])
    if argv0.name == "hypernetes" and argv0.exists():
        return [str(argv0.resolve())]
    return [sys.executable, "-m", "hypernetes.cli.main"]


# -- the credential plugin ---------------------------------------------------------------------------


class TokenCache:
    """~/.cache/hypernetes/tokens/<hash>.json (0600, directory 0700): one file per server, tenant
    and user, so several clusters and users do not overwrite each other."""

    def __init__(self, server: str, tenant: str, user: str) -> None:
        self.server, self.tenant, self.user = server.rstrip("/"), tenant, user
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha256("\n".join((self.server, tenant, user)).encode()).hexdigest()[:32]
        self.dir = base / "hypernetes" / "tokens"
        self.path = self.dir / f"{digest}.json"

    def load(self) -> Obj | None:
        try:
            entry = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(entry, dict)
            or (entry.get("server"), entry.get("tenant"), entry.get("user"))
            != (self.server, self.tenant, self.user)
            or not isinstance(entry.get("token"), str)
        ):
            return None
        return entry

    def save(self, token: str, expires: str) -> None:
        for d in (self.dir.parent, self.dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
        write_private(
            self.path,
            json.dumps(
                {
                    "server": self.server,
                    "tenant": self.tenant,
                    "user": self.user,
                    "token": token,
                    "expirationTimestamp": expires,
                }
            ),
        )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _fresh(entry: Obj) -> bool:
    """Whether a cached token has more than REFRESH_MARGIN left (kubectl may take a while)."""
    try:
        expires = dt.datetime.fromisoformat(str(entry.get("expirationTimestamp")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return expires > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=REFRESH_MARGIN)


def _exec_info() -> Obj | None:
    """What kubectl tells its plugin (KUBERNETES_EXEC_INFO), or None when run by hand."""
    raw = os.environ.get("KUBERNETES_EXEC_INFO")
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _plugin_cluster(args: argparse.Namespace) -> Cluster:
    ca_data = None
    if args.ca_data:
        try:
            ca_data = base64.b64decode(args.ca_data, validate=True)
        except ValueError:
            raise CliError("--ca-data is not base64") from None
    return Cluster(args.server, ssl_context(args.ca, ca_data))


def _still_accepted(cluster: Cluster, token: str) -> bool:
    """Whether the server still takes `token`: a password change or `user revoke` may have killed
    it, and kubectl would otherwise be handed the dead token again until it expires."""
    try:
        cluster.call(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            token=token,
            timeout=10,
        )
    except RequestFailed as e:
        return e.status != 401  # unreachable or other trouble: let kubectl report it
    return True


def _login(args: argparse.Namespace) -> int:
    info = _exec_info()
    interactive = bool(((info or {}).get("spec") or {}).get("interactive", True))
    cluster = _plugin_cluster(args)
    cache = TokenCache(args.server, args.tenant, args.user)
    entry = cache.load()
    if entry is not None and not (_fresh(entry) and _still_accepted(cluster, entry["token"])):
        cache.remove()
        entry = None
    if entry is None:
        who = f"user {args.user} of tenant {args.tenant} at {cluster.server}"
        if args.password_stdin:
            password = read_stdin_lines(1)[0]
        elif not interactive:
            raise CliError(
                f"not logged in as {who}, and kubectl runs this plugin without a terminal: "
                f"log in first with `hypernetes login --server {args.server} --tenant "
                f"{args.tenant} --user {args.user} --ca ...` in a terminal (or with "
                "--password-stdin)"
            )
        else:
            password = ask_password(f"Password for {who}: ")
        try:
            issued = _login_call(
                cluster,
                {
                    "tenant": args.tenant,
                    "user": args.user,
                    "password": password,
                    "expirationSeconds": int(args.ttl),
                },
            )
        except RequestFailed as e:
            if e.status == 401:
                raise CliError(f"login failed for {who}: invalid user name, password or tenant") from None
            raise CliError(f"login failed for {who}: {e}") from None
        entry = {"token": str(issued["token"]), "expirationTimestamp": str(issued["expirationTimestamp"])}
        cache.save(entry["token"], entry["expirationTimestamp"])
    if info is None and sys.stdout.isatty():
        # by hand at a terminal: do not paint a bearer token on the screen (and its scrollback)
        print(
            f"logged in as user {args.user} of tenant {args.tenant}; token cached until "
            f"{entry['expirationTimestamp']}",
            file=sys.stderr,
        )
        return 0
    credential = {
        "apiVersion": EXEC_API,
        "kind": "ExecCredential",
        "status": {"token": entry["token"], "expirationTimestamp": entry["expirationTimestamp"]},
    }
    json.dump(credential, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _login_call(cluster: Cluster, body: Obj, patience: float = 30.0) -> Obj:
    """POST /login; a login the server delays (429 with a retry time: someone else is guessing
    this user's password) is sent again when its turn comes, for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return cluster.call("POST", "/hypernetes/v1/login", body)
        except RequestFailed as e:
            if e.status != 429 or not e.retry_after or time.monotonic() + e.retry_after > deadline:
                raise
            time.sleep(e.retry_after)


def _logout(args: argparse.Namespace) -> int:
    cache = TokenCache(args.server, args.tenant, args.user)
    entry = cache.load()
    if entry is None:
        print(f"not logged in as user {args.user} of tenant {args.tenant}", file=sys.stderr)
        return 0
    who = f"user {args.user} of tenant {args.tenant}"
    try:
        _plugin_cluster(args).call("POST", "/hypernetes/v1/logout", {}, token=entry["token"])
    except RequestFailed as e:
        cache.remove()  # the local session ends either way
        if e.status == 401:  # expired or revoked already: nothing left to revoke
            print(f"logged out {who} (the token was no longer valid)", file=sys.stderr)
            return 0
        alive = f"it stays valid until {entry.get('expirationTimestamp')}; forgot it here"
        if e.status == 400:  # not the cluster's own token (Keystone's): only its issuer revokes it
            print(f"logged out {who}; the server cannot revoke this token ({e}): {alive}", file=sys.stderr)
            return 0
        raise CliError(f"the server did not revoke the token of {who} ({e}); {alive}") from None
    cache.remove()
    print(f"logged out {who}", file=sys.stderr)
    return 0
