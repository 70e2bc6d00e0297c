"""`hypernetes run`: a one-off pod VM without a control plane, like `docker run`.

Streams the container's output and exits with its exit code (128+N when killed by signal N);
125 when the pod could not be made, 126 when the command could not be started, 127 when it was
not found (the `docker run` conventions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import signal
import sys
import termios
import tty
from typing import Any

from hypernetes.cli.common import add_data_dir, data_dir, fail, image_store, kernel_registry
from hypernetes.runtime.interface import (
    ContainerSpec,
    PodRuntimeError,
    PodSpec,
    Process,
    Runtime,
    StartFailed,
    Stream,
)
from hypernetes.runtime.sizing import positive_bytes, positive_millicpu

EXIT_POD_FAILED = 125
EXIT_START_FAILED = 126
EXIT_NOT_FOUND = 127


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a one-off pod VM (like docker run)",
        description="Run IMAGE in a one-off pod sandbox and stream its output; exits with the "
        "container's exit code (128+N for signal N).",
    )
    p.add_argument("--runtime", choices=("hypervm", "gvisor"), default="hypervm")
    p.add_argument("--kernel", help="registered guest kernel name (hypervm; default: ours)")
    p.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default=None,
        help="hypervm accelerator (default: KVM only if a probe guest boots)",
    )
    p.add_argument(
        "--no-templates",
        action="store_true",
        help="hypervm: boot the VM cold instead of cloning a template VM",
    )
    p.add_argument("--cpus", help="CPU limit, e.g. 2 or 500m (VM vCPUs = ceil)")
    p.add_argument("--memory", help="memory limit, e.g. 256Mi, 1G, or as docker: 512m (MiB), 1g (GiB)")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an env var")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user: name, uid, or uid:gid")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--name", help="pod name (default: random)")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and args (after --)")
    add_data_dir(p)
    p.set_defaults(handler=handle)


def make_runtime(args: argparse.Namespace) -> Runtime:
    root = data_dir(args) / "runtime"
    if args.runtime == "gvisor":
        from hypernetes.runtime.gvisor import GVisor

        return GVisor(root, image_store(args), die_with_parent=args.command_name == "run")
    from hypernetes.runtime.hypervm import HyperVM

    # A one-off `run` takes its VM down with it; `up` leaves VMs for the next agent to adopt.
    one_off = args.command_name == "run"
    from hypernetes.runtime.templates import TemplateStore, template_root

    templates = None if getattr(args, "no_templates", False) else TemplateStore(template_root())
    # A node (up, node join) builds its start shapes' templates when it starts; the default
    # pod's with a NIC where pods get one (tenant networks need root; nodehost decides the rest)
    nic = os.geteuid() == 0 and not getattr(args, "no_network", False)
    return HyperVM(
        root,
        image_store(args),
        kernel_registry(args),
        accel=args.accel,
        die_with_parent=one_off,
        templates=templates,
        template_scope=getattr(args, "template_scope", "namespace"),
        prepare_templates=None if one_off else nic,
    )


# `run` takes docker's `--memory` units too: one lowercase letter, binary (512m is 512 MiB)
_DOCKER_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def cli_memory(text: str) -> int:
    """`--memory` in bytes: docker's `<n>b|k|m|g`, else a Kubernetes quantity (256Mi, 1G)."""
    t = text.strip()
    if t[-1:] in _DOCKER_UNITS and t[:-1].isdigit():
        return int(t[:-1]) * _DOCKER_UNITS[t[-1]]
    return positive_bytes(t)


def container_spec(args: argparse.Namespace) -> ContainerSpec:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    env = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not key:
            raise ValueError(f"invalid -e {item!r}: expected KEY=VALUE")
        env.append((key, value if sep else os.environ.get(key, "")))
    return ContainerSpec(
        name="main",
        image=args.image,
        command=(args.entrypoint, *command) if args.entrypoint else None,
        args=tuple(command) if command and not args.entrypoint else None,
        env=tuple(env),
        working_dir=args.workdir,
        user=args.user,
        tty=args.tty,
        stdin=args.interactive,
        cpu_limit_millis=positive_millicpu(args.cpus) if args.cpus else None,
        memory_limit=cli_memory(args.memory) if args.memory else None,
    )


def handle(args: argparse.Namespace) -> int:
    try:
        spec = container_spec(args)
    except ValueError as e:
        return fail(str(e), EXIT_POD_FAILED)
    try:
        runtime = make_runtime(args)
    except (OSError, PodRuntimeError) as e:
        return fail(str(e), EXIT_POD_FAILED)
    name = args.name or f"run-{secrets.token_hex(4)}"
    pod = PodSpec(id=name, name=name, containers=(spec,), kernel=args.kernel, termination_grace_seconds=10)
    return asyncio.run(_run(runtime, pod, spec))


async def _run(runtime: Runtime, pod: PodSpec, spec: ContainerSpec) -> int:
    try:
        await runtime.create_sandbox(pod)
        proc = await runtime.start_container(pod.id, spec.name, attach=True)
        assert proc is not None
        return await _attach(proc, spec)
    except StartFailed as e:
        return fail(str(e), EXIT_NOT_FOUND if e.errno == errno.ENOENT else EXIT_START_FAILED)
    except PodRuntimeError as e:
        return fail(str(e), EXIT_POD_FAILED)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(runtime.remove_sandbox(pod.id))
        if (templates := getattr(runtime, "templates", None)) is not None:
            await templates.wait_built()  # outlives this run: the next one clones it


async def _attach(proc: Process, spec: ContainerSpec) -> int:
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(_pump_output(proc))]
    background: set[asyncio.Future[None]] = set()

    def spawn(coro: Any) -> None:
        fut = asyncio.ensure_future(coro)
        background.add(fut)
        fut.add_done_callback(background.discard)

    def spawn_signal(signum: int) -> None:
        spawn(proc.signal(signum))

    restore: list[Any] = []
    if spec.tty and sys.stdin.isatty():
        restore = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
        size = shutil.get_terminal_size()
        await proc.resize(size.lines, size.columns)

        def on_winch() -> None:
            s = shutil.get_terminal_size()
            spawn(proc.resize(s.lines, s.columns))

        loop.add_signal_handler(signal.SIGWINCH, on_winch)
    else:
        # Without a terminal, docker run proxies signals to the container.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, spawn_signal, signum)
    if spec.stdin:
        tasks.append(asyncio.create_task(_pump_stdin(proc)))
    try:
        status = await proc.wait()
        await tasks[0]
    finally:
        for task in tasks[1:]:
            task.cancel()
        if restore:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, restore)
    if status.code is None and status.signal is None:
        return fail("the pod VM ended before the container did", EXIT_POD_FAILED)
    return status.shell_code


async def _pump_output(proc: Process) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    async for stream, data in proc.output():
        target = out if stream is Stream.STDOUT else err
        target.write(data)
        target.flush()


async def _pump_stdin(proc: Process) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while data := await reader.read(32768):
            await proc.write_stdin(data)
        await proc.close_stdin()
    except (BrokenPipeError, ConnectionError):
        pass
