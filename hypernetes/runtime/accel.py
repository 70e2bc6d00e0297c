"""Pick the accelerator: KVM only when a probe guest really boots under it, else TCG.

`/dev/kvm` existing proves little: on PVM hosts an ordinary guest crawls and then dies. So the
first VM of each host boot is preceded by a probe (our kernel and agent under KVM, answering
HELLO within PROBE_TIMEOUT); the verdict is cached per host boot (keyed by boot_id) in the
runtime's directory. HYPERNETES_ACCEL=kvm|tcg, or the runtime's `accel` option, overrides.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0
ACCELS = ("kvm", "tcg")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


async def choose_accel(override: str | None, cache: Path, probe: Callable[[], Awaitable[bool]]) -> str:
    choice = override or os.environ.get("HYPERNETES_ACCEL") or "auto"
    if choice in ACCELS:
        return choice
    if choice != "auto":
        raise ValueError(f"unknown accelerator {choice!r}: use kvm, tcg or auto")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("boot_id") == boot_id() and cached.get("accel") in ACCELS:
            return str(cached["accel"])
    except (OSError, ValueError):
        pass
    ok = await probe()
    accel = "kvm" if ok else "tcg"
    log.info("KVM probe guest %s: using %s", "booted" if ok else "did not boot", accel)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # concurrent probes must not share it
    tmp.write_text(json.dumps({"boot_id": boot_id(), "accel": accel}))
    os.replace(tmp, cache)
    return accel
