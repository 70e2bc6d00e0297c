"""Named network namespaces, and running code inside one.

setns(CLONE_NEWNET) changes only the calling thread, so `run_in_netns` runs a function in a
short-lived thread that enters the namespace: netlink sockets, tap devices and /proc/sys/net files
opened there belong to that namespace for good, whichever thread uses them later. The process
itself never leaves its own namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    pass


def netns_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    return NETNS_DIR / name


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return netns_path(name).exists()


def _mounted(name: str) -> bool:
    """Whether the name is a namespace bound on its file, not a bare file that a crash between
    iproute2's create and mount (or a copied /run) left behind: namespaces live on nsfs."""
    try:
        return os.stat(netns_path(name)).st_dev == os.stat("/proc/self/ns/net").st_dev
    except FileNotFoundError:
        return False


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def create(name: str) -> bool:
    """Create the namespace unless it exists; True if it was created."""
    if _mounted(name):
        return False
    if exists(name):
        _ip("netns", "delete", name)  # unlinks a bare file too
    _ip("netns", "add", name)
    return True


def delete(name: str) -> None:
    """Remove the name. The namespace itself dies with its last user (an open tap fd keeps it)."""
    if exists(name):
        _ip("netns", "delete", name)


def open_netns(name: str | None) -> int:
    """An fd for the namespace `name`, or for the caller thread's own namespace if None."""
    return os.open("/proc/thread-self/ns/net" if name is None else netns_path(name), os.O_RDONLY)


def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call fn() in a thread inside namespace `name` (None: the process's own) and return its
    result. A thread even for None: pyroute2's synchronous IPRoute refuses to open on a thread
    that runs an asyncio loop ("This event loop is already running"), and callers on the
    host-namespace path must not differ from the netns path the tests take."""
    fd = open_netns(name) if name is not None else -1  # a missing namespace raises in the caller
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            if fd >= 0 and _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {name}: {os.strerror(err)}")
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    try:
        thread = threading.Thread(target=body, name=f"netns-{name or 'self'}", daemon=True)
        thread.start()
        thread.join()
    finally:
        if fd >= 0:
            os.close(fd)
    if error:
        raise error[0]
    return result[0]


def write_sysctl(key: str, value: str, *, optional: bool = False) -> None:
    """Set sysctl `key` ("net/ipv4/ip_forward": slashes, since interface names may hold dots) in
    the calling thread's namespace: /proc/sys/net is resolved per thread, so call this from
    inside `run_in_netns`. `optional`: a missing key (module not built) is not an error."""
    path = Path("/proc/sys") / key
    try:
        path.write_text(value)
    except FileNotFoundError:
        if not optional:
            raise


def local_subnets(name: str | None, exclude_prefix: str) -> list[str]:
    """The IPv4 subnets of the namespace's own interfaces (not loopback, not links named
    `<exclude_prefix>-…`): by default, the management networks pods must never reach."""

    def read() -> list[str]:
        with IPRoute() as ipr:
            names = {link["index"]: link.get("ifname") or "" for link in ipr.get_links()}
            out = []
            for a in ipr.get_addr(family=2):
                ifname = names.get(a["index"], "")
                if ifname == "lo" or ifname.startswith(f"{exclude_prefix}-"):
                    continue
                net = ipaddress.IPv4Interface(f"{a.get('address')}/{a['prefixlen']}").network
                if not net.is_loopback and str(net) not in out:
                    out.append(str(net))
            return out

    return run_in_netns(name, read)
