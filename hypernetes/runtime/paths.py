"""Where the runtime finds what it did not make (the agent binary and the built guest kernel), and
how it makes the files that hold a tenant's data: owner-only, whatever the process's umask."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent.parent


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/hypernetes")
    return Path.home() / ".local" / "share" / "hypernetes"


def agent_binary() -> Path:
    """$HYPERNETES_AGENT, else the checkout's guest/build/hn-agent, else the installed one."""
    env = os.environ.get("HYPERNETES_AGENT")
    if env:
        return Path(env)
    for candidate in (_REPO / "guest" / "build" / "hn-agent", Path("/usr/lib/hypernetes/hn-agent")):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("guest agent not built: run `make guest` (guest/build/hn-agent)")


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Make `path` (and missing parents) a directory only its owner can enter; an existing one
    is tightened too (data dirs made by older versions were 0755)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """Open (creating) a file readable by its owner only; an existing file is tightened too.
    Returns the fd (close-on-exec)."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd
