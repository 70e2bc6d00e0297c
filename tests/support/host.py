"""What this host lets a test do."""

from __future__ import annotations

import os


def is_root() -> bool:
    return os.geteuid() == 0
