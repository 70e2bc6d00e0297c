"""Calling Debian's runsc (gVisor 0.0~20221219) from asyncio.

Facts about this version that shape the callers (checked by hand, see tests/test_gvisor.py):
- A sub-container's stdio is the stdio of `runsc start`; an exec's is that of `runsc exec`.
  runsc hands those fds to the sandbox, which keeps them open after a failed start, so callers
  never wait for EOF alone. runsc's own error messages go to the same stderr, and to `--log`.
- `runsc exec --detach` appends its `--pid-file` flag to the command's argv (broken), so execs
  run attached; `--internal-pid-file` tells that the process started.
- `runsc exec` has no tty flag: with `"terminal": true` in --process it uses its own stdin as
  the terminal (it ignores --console-socket), so the caller hands it a pty slave.
- Exit statuses are shell-style: a death by signal N reads as 128+N.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import shutil
import signal
from pathlib import Path
from typing import IO, Any

from hypernetes.runtime.interface import ExitStatus

RUNSC = "runsc"
CALL_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1
RUNSC_FAILED = 128  # what runsc itself exits with when it fails


class RunscError(Exception):
    pass


def decode_exit(code: int) -> ExitStatus:
    """runsc's 128+N means signal N; an application's own `exit 130` is indistinguishable."""
    if 128 < code <= 128 + 64:
        return ExitStatus(signal=code - 128)
    return ExitStatus(code=code)


def last_error(log: Path) -> str:
    """The last error runsc wrote to a `--log-format=json` log, or ''."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                if record.get("level") in ("error", "fatal", "warning") and record.get("msg"):
                    message = str(record["msg"])
    return message


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Runsc:
    def __init__(self, state: Path, platform: str = "ptrace", ignore_cgroups: bool = False) -> None:
        self.state = state
        self.global_flags = [
            f"--root={state}",
            f"--platform={platform}",
            # Tenant networks come later; gVisor's netstack still gives each pod a loopback.
            "--network=none",
            # Each container's root gets a writable overlay in sandbox memory; the shared
            # rootfs directory underneath is only ever read.
            "--overlay2=root:memory",
        ]
        if ignore_cgroups:
            self.global_flags.append("--ignore-cgroups")

    @staticmethod
    def available() -> bool:
        return shutil.which(RUNSC) is not None

    def argv(self, *args: str, log: Path | None = None) -> list[str]:
        flags = [f"--log={log}", "--log-format=json"] if log is not None else []
        return [RUNSC, *self.global_flags, *flags, *args]

    async def spawn(
        self,
        *args: str,
        log: Path | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        die_with_parent: bool = False,
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv(*args, log=log),
                stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
                stdout=asyncio.subprocess.DEVNULL if stdout is None else stdout,
                stderr=asyncio.subprocess.DEVNULL if stderr is None else stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        except OSError as e:
            raise RunscError(f"cannot run {RUNSC}: {e}") from e

    async def call(self, *args: str, timeout: float | None = CALL_TIMEOUT) -> str:
        """Run a command that does not hand out stdio; its stdout, or RunscError with stderr."""
        proc = await self.spawn(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RunscError(f"runsc {args[0]} did not finish within {timeout}s") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):  # no helper outlives its caller
                proc.kill()
            raise
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()
            raise RunscError(text.splitlines()[-1] if text else f"runsc {args[0]} exited {proc.returncode}")
        return out.decode(errors="replace")

    async def state_of(self, container_id: str) -> str | None:
        """`created`, `running`, `stopped`..., or None if runsc does not know the container."""
        try:
            return str(json.loads(await self.call("state", container_id)).get("status"))
        except (RunscError, ValueError, AttributeError):
            return None

    async def kill(
        self, container_id: str, signum: int, *, pid: int | None = None, all_processes: bool = False
    ) -> None:
        flags = [f"--pid={pid}"] if pid is not None else []
        if all_processes:
            flags.append("--all")
        await self.call("kill", *flags, container_id, str(signum))

    async def delete(self, container_id: str) -> None:
        with contextlib.suppress(RunscError):
            await self.call("delete", "--force", container_id)
