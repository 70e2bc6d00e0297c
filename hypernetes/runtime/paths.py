"""Where the runtime finds what it did not make: the agent binary and the built guest kernel."""

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
