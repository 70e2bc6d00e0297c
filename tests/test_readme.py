"""The README is a test: its cluster walkthrough, typed into a real root shell as a new user would.

Each command of README.md's cluster sections (from "A cluster on one machine" to "Cleaning up")
is read from the README itself and typed into one interactive bash under a pseudo-terminal, in
order, with default flags: `hypernetes up` builds tenant networks in the host's own network
namespace (no --network-netns), with the host's subnets as management networks. The only
rewrites give the run its own data dir, API port and registry port (so that a cluster or
registry of the developer's is never touched); they are listed in `rewrite`. Passwords are typed
at their prompts, and `kubectl exec -it` gets a real terminal.

Afterwards the host must be as it was: no new router namespaces, nftables tables, links or QEMU
processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pexpect  # type: ignore[import-untyped]
import pytest

from tests.support.guests import qemu_processes_under

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PROMPT = re.compile(r"__HN_RC=(\d+)__\$ ")
PASSWORD = "correct horse battery staple 42"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the README's cluster runs as root"),
]


CLUSTER = ("## A cluster on one machine", "## Using the runtime directly")
RUNTIME = ("## Using the runtime directly", "## Docs")


def readme_commands(text: str, sections: tuple[str, str] = CLUSTER) -> list[str]:
    """The shell commands between two README headings, one entry per command as typed:
    continuation lines joined, a here-document kept with its command."""
    section = text[text.index(sections[0]) :]
    section = section[: section.index(sections[1])]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            cmd = lines[i]
            while cmd.endswith("\\"):
                i += 1
                cmd += "\n" + lines[i]
            heredoc = re.search(r"<<(\w+)\s*$", cmd)
            if heredoc:
                while lines[i] != heredoc.group(1):
                    i += 1
                    cmd += "\n" + lines[i]
            commands.append(cmd)
            i += 1
    return commands


@dataclass
class Setup:
    """The API server and the registry take any free port (port 0): `up` writes its port into the
    kubeconfig the README's commands use, tools/registry.py keeps its in REGISTRY_DIR/port."""

    data: Path
    registry_dir: Path
    registry_port: int = 0

    def rewrite(self, cmd: str) -> str:
        """A README command with this run's own data dir and ports; nothing else changes."""
        if not self.registry_port and (self.registry_dir / "port").exists():
            self.registry_port = int((self.registry_dir / "port").read_text())
        cmd = cmd.replace(
            "make registry",
            f"make registry REGISTRY_PORT={self.registry_port} REGISTRY_DIR={self.registry_dir}",
        )
        cmd = cmd.replace("tools/registry.py stop", f"tools/registry.py stop --dir {self.registry_dir}")
        cmd = cmd.replace("hypernetes up ", f"hypernetes up --data-dir {self.data} --port 0 ")
        cmd = cmd.replace("/var/lib/hypernetes/", f"{self.data}/")
        cmd = re.sub(r"^hypernetes (image \w+|kernel \w+|run)(?= |$)", rf"\g<0> --data-dir {self.data}", cmd)
        cmd = cmd.replace("busybox-oci.tar", f"{self.data.parent}/busybox-oci.tar")
        return cmd.replace("127.0.0.1:5000", f"127.0.0.1:{self.registry_port}")


@dataclass
class Shell:
    """One interactive bash on a pseudo-terminal; `run` types a command and waits for its prompt."""

    setup: Setup
    child: pexpect.spawn = field(init=False)
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unset = ("KUBECONFIG", "VIRTUAL_ENV", "HYPERNETES_KERNEL_DIR", "CI", "PYTEST_CURRENT_TEST")
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.update(TERM="dumb", PS1="__HN_RC=$?__$ ", PS2="", PATH=_path_without_venv())
        self.child = pexpect.spawn(
            "bash",
            ["--norc", "--noprofile", "-i"],
            cwd=str(REPO),
            env=env,
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(50, 400),
            timeout=60,
        )
        self.child.expect(PROMPT)

    def type(self, cmd: str) -> None:
        for line in cmd.split("\n"):
            self.child.sendline(line)

    def prompt(self, timeout: float) -> tuple[int, str]:
        self.child.expect(PROMPT, timeout=timeout)
        out = self.child.before or ""
        self.transcript.append(out)
        return int(self.child.match.group(1)), out

    def run(self, readme_cmd: str, *, timeout: float = 120, answers: tuple[str, ...] = ()) -> str:
        """Type the README's command (rewritten), answer each prompt in `answers` (a password),
        and return its output; the command must succeed."""
        cmd = self.setup.rewrite(readme_cmd)
        self.type(cmd)
        for _ in answers:
            self.child.expect(r"[Pp]assword[^\n]*: ", timeout=timeout)
            self.child.sendline(PASSWORD)
        rc, out = self.prompt(timeout)
        assert rc == 0, f"`{cmd}` exited {rc}:\n{out[-4000:]}"
        return out


def _path_without_venv() -> str:
    # a new user's shell: the venv is activated by the README's own `. .venv/bin/activate`
    venv = str(REPO / ".venv" / "bin")
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv)


# -- the host, before and after ----------------------------------------------------------------


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return set(out.split("\n")) - {""}


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _host_state() -> dict[str, set[str]]:
    return {"network namespaces": _netns(), "nftables tables": _nft_tables(), "links": _links()}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path / "data", tmp_path / "registry")
    before = _host_state()
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        yield s
    finally:
        _force_cleanup(s, before)
        # `up` turns on forwarding, as a kubelet host needs; the test host gets its value back
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        (REPO / "alice.kubeconfig").unlink(missing_ok=True)


def _force_cleanup(s: Setup, before: dict[str, set[str]]) -> None:
    """After a failure, leave nothing behind: the cluster, its VMs, the registry, its plumbing."""
    for pid in qemu_processes_under(s.data) + _pids_with(str(s.data)) + _pids_with(str(s.registry_dir)):
        with _ignore_gone():
            os.kill(pid, signal.SIGKILL)
    for ns in _netns() - before["network namespaces"]:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    for table in _nft_tables() - before["nftables tables"]:
        subprocess.run(["nft", "delete", *table.split()], check=False)
    for link in _links() - before["links"]:
        subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)


class _ignore_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def _pids_with(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


# -- the walkthrough ----------------------------------------------------------------------------


def test_readme_commands_are_all_covered() -> None:
    """Every command of the README's walkthroughs is one the tests below know how to check: a
    new README command needs a check here, so the README cannot drift from the test."""
    assert readme_commands(README.read_text(), CLUSTER) == list(WALKTHROUGH)
    assert readme_commands(README.read_text(), RUNTIME) == list(RUNTIME_WALKTHROUGH)


VM = 600  # a command that waits for pod VMs: TCG on a busy 2-core machine is slow


def _make_registry(sh: Shell, cmd: str) -> None:
    assert "busybox:1 is ready" in sh.run(cmd, timeout=900)  # may finish `make setup` first


def _up(sh: Shell, cmd: str) -> None:
    sh.run(cmd)
    sh.child.expect("hypernetes is up", timeout=180)


def _get_nodes(sh: Shell, cmd: str) -> None:
    for _ in range(60):  # the node agent registers a moment after the API answers
        if re.search(r"\sReady\s", sh.run(cmd)):
            return
        time.sleep(1)
    raise AssertionError("the node never became Ready")


def _logs_and_exec(sh: Shell, cmd: str) -> None:
    sh.type(sh.setup.rewrite(cmd))
    sh.child.expect("hi from a VM", timeout=120)
    assert re.search(r"hello\s+1/1\s+Running", sh.child.before or ""), sh.child.before
    sh.child.expect(r"/ # ", timeout=120)  # busybox sh in the VM, on a real terminal
    sh.child.sendline("echo vm-$((6*7)) $(cat /proc/1/comm)")
    sh.child.expect("vm-42", timeout=60)
    sh.child.sendline("exit")
    rc, out = sh.prompt(60)
    assert rc == 0, out


def _web_page(sh: Shell, cmd: str) -> None:
    assert re.search(r"^web-[a-z0-9]+-[a-z0-9]+\s*$", sh.run(cmd, timeout=VM), flags=re.M)


def _alice_pods(sh: Shell, cmd: str) -> None:
    out = sh.run(cmd)
    assert "No resources found" in out and "web-" not in out and "hello" not in out


def _expect(*needles: str, timeout: float = 120, answers: tuple[str, ...] = ()) -> object:
    def check(sh: Shell, cmd: str) -> None:
        out = sh.run(cmd, timeout=timeout, answers=answers)
        for needle in needles:
            assert re.search(needle, out), f"{needle!r} not in the output of `{cmd}`:\n{out[-3000:]}"

    return check


def _host_clean_after_stop(sh: Shell, cmd: str) -> None:
    sh.run(cmd, timeout=120)  # `kill %1; wait`: up has stopped once this returns
    assert not qemu_processes_under(sh.setup.data), "a pod VM outlived its pod"


# README command (verbatim, before rewrites) → its check, in README order
WALKTHROUGH = {
    "make registry": _make_registry,
    ". .venv/bin/activate": _expect(),
    'hypernetes up --allow-registry 127.0.0.1:5000 &      # wait for "hypernetes is up"': _up,
    "export KUBECONFIG=/var/lib/hypernetes/admin.kubeconfig": _expect(),
    "kubectl get nodes -o wide": _get_nodes,
    "kubectl run hello --image=127.0.0.1:5000/busybox:1 -- sh -c 'echo hi from a VM; sleep 3600'": _expect(
        "pod/hello created"
    ),
    "kubectl wait --for=condition=Ready pod/hello --timeout=5m   # pulls the image, boots the VM": _expect(
        "condition met", timeout=VM
    ),
    "kubectl get pods -o wide; kubectl logs hello; kubectl exec -it hello -- sh": _logs_and_exec,
    "kubectl create deployment web --image=127.0.0.1:5000/busybox:1 --replicas=2 -- \\\n"
    "  sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'": _expect(
        "deployment.apps/web created"
    ),
    "kubectl expose deployment web --port=80 --type=NodePort": _expect("service/web exposed"),
    "kubectl rollout status deployment/web --timeout=5m": _expect("successfully rolled out", timeout=VM),
    "kubectl get pods -o wide; kubectl get svc web": _expect(r"web\s+NodePort\s+10\.", r"80:3\d{4}/TCP"),
    "kubectl exec deploy/web -- wget -q -O - http://web/                 # by name, inside the network": _web_page,  # noqa: E501
    "NODE_IP=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[0].address}')": _expect(),
    "NODE_PORT=$(kubectl get svc web -o jsonpath='{.spec.ports[0].nodePort}')": _expect(),
    "curl -s http://$NODE_IP:$NODE_PORT/                                 # from the host": _web_page,
    "kubectl delete pod hello                      # returns once the VM is gone": _expect(
        'pod "hello" deleted', timeout=VM
    ),
    "hypernetes tenant create acme --quota pods=10,vcpus=8,memory=8Gi,namespaces=3": _expect("acme"),
    "hypernetes user create alice --tenant acme --role admin        # asks for a password": _expect(
        "alice", answers=("password", "repeat")
    ),
    "hypernetes kubeconfig --tenant acme --user alice --exec -o alice.kubeconfig": _expect(),
    "KUBECONFIG=alice.kubeconfig kubectl create namespace acme-web  # asks alice's password once": _expect(
        "namespace/acme-web created", answers=("password",)
    ),
    "KUBECONFIG=alice.kubeconfig kubectl auth whoami": _expect(r"alice"),
    "KUBECONFIG=alice.kubeconfig kubectl get pods -A                # only acme's": _alice_pods,
    "kubectl apply -f - <<EOF\n"
    + README.read_text().split("kubectl apply -f - <<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    + "\nEOF": _expect("persistentvolumeclaim/data created", "pod/db created"),
    "kubectl wait --for=condition=Ready pod/db --timeout=5m": _expect("condition met", timeout=VM),
    "kubectl exec db -- sh -c 'echo kept > /data/f && sync && df -h /data'": _expect(r"(?m)/data\r?$"),
    "kubectl get pvc data": _expect(r"data\s+Bound\s+pvc-"),
    "kubectl delete pod db; kubectl delete pvc data": _expect(
        'pod "db" deleted', 'persistentvolumeclaim "data" deleted', timeout=VM
    ),
    "kubectl delete deployment web; kubectl delete svc web": _expect(
        'deployment.apps "web" deleted', 'service "web" deleted'
    ),
    "kubectl wait --for=delete pod -l app=web --timeout=5m  # their VMs are gone": _expect(timeout=VM),
    "hypernetes tenant rm acme --yes": _expect(),
    "kill %1; wait                                 # stops `hypernetes up`": _host_clean_after_stop,
}


def test_the_readme_walkthrough_as_root_with_default_flags(setup: Setup) -> None:
    before = _host_state()
    sh = Shell(setup)
    try:
        for cmd, check in WALKTHROUGH.items():
            check(sh, cmd)  # type: ignore[operator]
        # the deployment's pods are gone once `kubectl delete deployment` returns only eventually:
        # the host is checked after the cluster stopped, when nothing may be left
        assert _host_state() == before, "the README's cluster left host state behind"
    finally:
        sh.child.close(force=True)
        shutil.rmtree(setup.data / "sandboxes", ignore_errors=True)


def _terminal_in_vm(sh: Shell, cmd: str) -> None:
    sh.type(sh.setup.rewrite(cmd))
    sh.child.expect(r"/ # ", timeout=VM)
    sh.child.sendline("echo vm-$((6*7)); exit")
    sh.child.expect("vm-42", timeout=60)
    rc, out = sh.prompt(60)
    assert rc == 0, out


def _debian_kernel(sh: Shell, cmd: str) -> None:
    # Debian's cloud kernel under TCG sometimes never reaches init (environment-notes.md): one
    # more boot, as tests/test_kernels.py gives it
    for attempt in (1, 2):
        sh.type(sh.setup.rewrite(cmd))
        rc, out = sh.prompt(VM)
        if rc == 0:
            assert "-cloud-amd64" in out
            return
        assert attempt == 1 and rc == 125, out


RUNTIME_WALKTHROUGH = {
    ". .venv/bin/activate": _expect(),
    "hypernetes image pull 127.0.0.1:5000/busybox:1      # OCI distribution API; loopback is plain HTTP": _expect(  # noqa: E501
        r"127\.0\.0\.1:\d+/busybox:1"
    ),
    "skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/busybox:1 oci-archive:busybox-oci.tar:busybox:1":  # noqa: E501
    _expect(),
    "hypernetes image import busybox-oci.tar            # OCI layout/archive or `docker save` tarball": _expect(  # noqa: E501
        "docker.io/library/busybox:1"
    ),
    "hypernetes image ls": _expect(r"docker\.io/library/busybox:1\s+[0-9a-f]{12}"),
    "hypernetes run busybox:1 -- sh -c 'echo hello from $(uname -r)'": _expect(
        r"hello from 6\.1", timeout=VM
    ),
    "hypernetes run -it busybox:1 -- sh                 # a terminal in the VM": _terminal_in_vm,
    "hypernetes run --cpus 2 --memory 256Mi -e A=b busybox:1 -- env": _expect(r"(?m)^A=b\r?$", timeout=VM),
    "hypernetes run --runtime gvisor busybox:1 -- echo hi": _expect(r"(?m)^hi\r?$", timeout=VM),
    "hypernetes kernel register debian-cloud /boot/vmlinuz-*-cloud-amd64 --modules /lib/modules/*-cloud-amd64":  # noqa: E501
    _expect(timeout=VM),
    "hypernetes run --kernel debian-cloud busybox:1 -- uname -a": _debian_kernel,
    "tools/registry.py stop": _expect(),
}


def test_the_readme_runtime_commands(setup: Setup) -> None:
    sh = Shell(setup)
    try:
        sh.run(readme_commands(README.read_text())[0], timeout=900)  # `make registry`, as above
        for cmd, check in RUNTIME_WALKTHROUGH.items():
            check(sh, cmd)  # type: ignore[operator]
        assert not qemu_processes_under(setup.data), "`hypernetes run` left a VM behind"
    finally:
        sh.child.close(force=True)
