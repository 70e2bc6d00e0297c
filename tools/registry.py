#!/usr/bin/env python3
"""A local OCI registry for the README's cluster walkthrough, offline.

`start` runs Debian's `docker-registry` on 127.0.0.1:PORT (plain HTTP, loopback only) in the
background and pushes `busybox:1`, an image built here from Debian's static busybox (no registry on
the internet is needed); `stop` stops it. Both are idempotent. The cluster refuses to pull from
loopback on a tenant's behalf unless the operator allows it: `hypernetes up --allow-registry
127.0.0.1:PORT` (see docs/images.md).

    tools/registry.py start [--port 5000] [--dir /var/lib/hypernetes-registry]
    tools/registry.py stop  [--dir ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.imagebuild import BUSYBOX, ImageSpec, Layer, LayerBuilder, OciLayout, busybox_base  # noqa: E402
from tools.listening import listening_ports  # noqa: E402

REGISTRY_BIN = "/usr/bin/docker-registry"
IMAGE = "busybox:1"


def busybox_full() -> ImageSpec:
    """busybox with every applet it has (wget, hostname, df, ...), as the Docker Hub image."""
    listed = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    links = LayerBuilder()
    for applet in listed.stdout.split():
        if applet != "busybox":
            links.symlink(f"bin/{applet}", "/bin/busybox")
    return ImageSpec(
        [Layer(busybox_base()), Layer(links.tar())],
        cmd=["sh"],
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )


def _config(directory: Path, port: int) -> str:
    # JSON is YAML: the registry reads it as its config file
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(directory / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(16).hex()},
        }
    )


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "registry.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # a zombie (no init reaping in a container) is gone; a reused pid is not our registry
    fields = stat.rsplit(")", 1)[1].split()
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    return pid if fields[0] != "Z" and "registry" in comm else None


def start(directory: Path, port: int) -> int:
    """Port 0: any free port, the one it got kept in DIR/port (a second start reuses it)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _pid(directory) is not None:
        with contextlib.suppress(OSError, ValueError):  # kept since port 0 was supported
            port = int((directory / "port").read_text())
    else:
        if port and _answers(port):
            print(f"registry: something else already serves 127.0.0.1:{port}", file=sys.stderr)
            return 1
        (directory / "config.yml").write_text(_config(directory, port))
        with open(directory / "registry.log", "ab") as log:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(directory / "config.yml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # outlives `make`
        (directory / "registry.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 20
        while not port and proc.poll() is None and time.monotonic() < deadline:
            port = next(iter(listening_ports(proc.pid)), 0)
            time.sleep(0.05)
        (directory / "port").write_text(str(port))
        while not (port and _answers(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"registry: did not start, see {directory / 'registry.log'}", file=sys.stderr)
                stop(directory)
                return 1
            time.sleep(0.1)
    with tempfile.TemporaryDirectory() as tmp:
        layout = OciLayout(Path(tmp) / "busybox")
        layout.add(busybox_full(), "t")
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout.root}:t",
                f"docker://127.0.0.1:{port}/{IMAGE}",
            ],
            check=True,
        )
    print(f"registry: 127.0.0.1:{port}/{IMAGE} is ready (data in {directory}; stop: tools/registry.py stop)")
    return 0


def stop(directory: Path) -> int:
    pid = _pid(directory)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _pid(directory) is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    (directory / "registry.pid").unlink(missing_ok=True)
    (directory / "port").unlink(missing_ok=True)
    return 0


def main() -> int:
    default_dir = (
        Path("/var/lib/hypernetes-registry")
        if os.geteuid() == 0
        else Path.home() / ".local/share/hypernetes-registry"
    )
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("--port", type=int, default=5000, help="default 5000; 0: any free port")
    p.add_argument("--dir", type=Path, default=default_dir)
    args = p.parse_args()
    return start(args.dir, args.port) if args.action == "start" else stop(args.dir)


if __name__ == "__main__":
    sys.exit(main())
