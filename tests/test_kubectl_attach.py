"""`kubectl attach` to a pod VM's main process (issue 14: it did not work), with the real kubectl
against `hypernetes up` and real VMs: the output from the moment of attaching, stdin into a
container that keeps it open, a clear refusal of stdin into one that does not, and the session's
end when the process exits."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, pod_manifest, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_ref: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("attach") / "data") as c:
        ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"
        c.kubectl("apply", "-f", "-", input=pod_manifest("ticker", busybox_ref, ticker))
        reader = json.loads(
            pod_manifest("reader", busybox_ref, "while read l; do echo got $l; done; echo bye")
        )
        reader["spec"]["containers"][0]["stdin"] = True
        c.kubectl("apply", "-f", "-", input=json.dumps(reader))
        c.kubectl("wait", "--for=condition=Ready", "pod/ticker", "pod/reader", "--timeout=180s")
        yield c


def test_attach_shows_output_from_now_on(cluster: Cluster) -> None:
    cluster.wait_for("a few ticks", lambda: "tick 3" in cluster.kubectl("logs", "ticker").stdout)
    proc = subprocess.Popen(cluster.kubectl_args("attach", "ticker"), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    logged = cluster.kubectl("logs", "ticker").stdout.split("\n")
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 3)), lines
    # the first line seen was written after attaching: the log had more than "tick 0" by then
    assert numbers[0] > 3 and all(line in logged for line in lines)


def attach_and_send(cluster: Cluster, pod: str, line: str) -> str:
    """`kubectl attach -i POD`, send one line, return the first line of output, detach."""
    proc = subprocess.Popen(
        cluster.kubectl_args("attach", "-i", pod),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_attach_i_reaches_the_main_process_stdin(cluster: Cluster) -> None:
    assert attach_and_send(cluster, "reader", "hello") == "got hello"
    # detaching left its stdin open (stdinOnce: false): the next client is read too
    assert attach_and_send(cluster, "reader", "again") == "got again"
    assert "bye" not in cluster.kubectl("logs", "reader").stdout


def test_attach_i_to_a_container_without_stdin_is_refused(cluster: Cluster) -> None:
    refused = cluster.kubectl("attach", "-i", "ticker", input="x\n", check=False, timeout=30)
    assert refused.returncode != 0
    assert "does not keep stdin open" in refused.stderr
