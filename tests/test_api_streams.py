"""pods/log, pods/exec (WebSocket v5/v4 channels), pods/binding, graceful pod deletion and the
scale subresource, with the real kubectl and Python client. The node agent is not written yet:
a small in-test PodProxy plays its part (echo, cat, exit codes, stderr, tty resize)."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.apifixtures import running_api
from tests.support.apiserver import ApiServerThread, kubectl_path
from tests.support.listening import forwarded_port
from tests.support.podproxy import ScriptedProxy


@pytest.fixture(scope="module")
def proxy() -> ScriptedProxy:
    return ScriptedProxy()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, proxy: ScriptedProxy) -> Iterator[ApiServerThread]:
    for server in running_api(tmp_path_factory, pod_proxy=proxy):
        server.kubectl("run", "box", "--image=busybox")
        yield server


@pytest.mark.parametrize("version", ["1.27", "1.29", "1.30", "1.32", "1.33"])
def test_exec_echo_and_exit_code(api: ApiServerThread, version: str) -> None:
    assert api.kubectl("exec", "box", "--", "echo", "hi", "there", version=version).stdout == "hi there\n"
    p = api.kubectl("exec", "box", "--", "fail", "3", version=version, check=False)
    assert p.returncode == 3
    assert "going down" in p.stderr and "command terminated with exit code 3" in p.stderr
    p = api.kubectl("exec", "box", "--", "nothing", version=version, check=False)
    assert p.returncode != 0 and "executable file not found: nothing" in p.stderr


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_exec_stdin(api: ApiServerThread, version: str) -> None:
    big = "".join(f"line {i}\n" for i in range(20000))  # 200 kB: more than one frame each way
    p = api.kubectl("exec", "-i", "box", "--", "cat", input=big, version=version)
    assert p.stdout == big
    p = api.kubectl("exec", "-i", "box", "--", "cat", input="abc\ndef\n", version=version)
    assert p.stdout == "abc\ndef\n"


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_exec_tty_resize(api: ApiServerThread, proxy: ScriptedProxy, version: str) -> None:
    # kubectl sends its terminal size (channel 4, or SPDY's resize stream) when stdin is a
    # terminal; `script` gives it one
    cmd = api.kubectl_cmdline("exec", "-it", "box", "--", "size", version=version)
    proc = subprocess.run(
        ["script", "-qec", f"stty cols 91 rows 17; {cmd}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env=api.kubectl_env(version),
    )
    assert "91x17 tty=True" in proc.stdout, proc.stdout + proc.stderr
    assert (91, 17) in proxy.resizes


def test_exec_over_spdy_when_websockets_are_off(api: ApiServerThread) -> None:
    env = {**api.kubectl_env(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    p = subprocess.run(
        [str(kubectl_path("1.33")), "exec", "-i", "box", "--", "cat"],
        input="spdy\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout == "spdy\n", p.stderr


def test_logs(api: ApiServerThread) -> None:
    assert api.kubectl("logs", "box").stdout == "".join(f"line {i} of box\n" for i in range(5))
    assert api.kubectl("logs", "box", "--tail=2").stdout == "line 3 of box\nline 4 of box\n"
    assert api.kubectl("logs", "-f", "box").stdout.endswith("followed\n")


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_python_client_exec_and_logs(api: ApiServerThread) -> None:
    # the client's websocket leaves its socket to the garbage collector: collect it here
    from kubernetes import client as kc
    from kubernetes.stream import stream

    v1 = kc.CoreV1Api(api.python_client())
    out = stream(
        v1.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["echo", "py"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out == "py\n"
    assert v1.read_namespaced_pod_log("box", "default", tail_lines=1) == "line 4 of box\n"
    del out
    gc.collect()


def test_binding_and_graceful_delete(api: ApiServerThread) -> None:
    from kubernetes import client as kc

    v1 = kc.CoreV1Api(api.python_client())
    api.kubectl("run", "bound", "--image=busybox")
    body = kc.V1Binding(
        metadata=kc.V1ObjectMeta(name="bound"),
        target=kc.V1ObjectReference(api_version="v1", kind="Node", name="node-1"),
    )
    # the client cannot decode the Status the server answers (as upstream): read it raw
    resp = v1.create_namespaced_pod_binding("bound", "default", body, _preload_content=False)
    assert resp.status == 201 and json.loads(resp.read())["status"] == "Success"
    resp.release_conn()
    assert v1.read_namespaced_pod("bound", "default").spec.node_name == "node-1"
    with pytest.raises(kc.ApiException) as err:
        v1.create_namespaced_pod_binding("bound", "default", body)
    assert err.value.status == 409
    # a scheduled pod waits for its node agent: deletionTimestamp, then gone on a delete with grace 0
    api.kubectl("delete", "pod", "bound", "--wait=false")
    pod = json.loads(api.kubectl("get", "pod", "bound", "-o", "json").stdout)
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    waiter = api.kubectl_popen("delete", "pod", "bound", "--timeout=30s")
    time.sleep(1.0)
    assert waiter.poll() is None  # kubectl waits for the pod to go
    v1.delete_namespaced_pod("bound", "default", grace_period_seconds=0)  # the node agent's confirmation
    _, err_ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err_
    assert api.kubectl("get", "pod", "bound", check=False).returncode == 1


def test_scale_subresource(api: ApiServerThread) -> None:
    api.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=1")
    assert "deployment.apps/web scaled" in api.kubectl("scale", "deployment", "web", "--replicas=4").stdout
    dep = json.loads(api.kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 4 and dep["metadata"]["generation"] == 2


@pytest.mark.parametrize("version", ["1.27", "1.32", "1.33"])
def test_kubectl_port_forward(api: ApiServerThread, version: str) -> None:
    status = {"status": {"phase": "Running"}}  # kubectl refuses to forward to a pod not running
    api.kubectl("patch", "pod", "box", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    proc = api.kubectl_popen("port-forward", "pod/box", ":80", version=version)  # any free local port
    try:
        local = forwarded_port(proc, 80)
        for _ in range(2):  # two connections through one session
            with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                conn.sendall(b"hello pod\n" * 1000)
                got = b""
                while len(got) < 10000:
                    chunk = conn.recv(65536)
                    assert chunk, got[-100:]
                    got += chunk
                assert got == b"HELLO POD\n" * 1000
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_python_client_port_forward(api: ApiServerThread) -> None:
    from kubernetes import client as kc
    from kubernetes.stream import portforward

    v1 = kc.CoreV1Api(api.python_client())
    pf = portforward(v1.connect_get_namespaced_pod_portforward, "box", "default", ports="80")
    sock = pf.socket(80)
    sock.setblocking(True)
    sock.sendall(b"abc")
    assert sock.recv(3) == b"ABC"
    sock.close()
    pf.close()
    del pf, sock
    gc.collect()


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_kubectl_attach(api: ApiServerThread, version: str) -> None:
    status = {"status": {"phase": "Running"}}
    api.kubectl("patch", "pod", "box", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    out = api.kubectl("attach", "box", version=version, timeout=30).stdout
    assert "attached" in out


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_exec_is_cancelled_when_the_client_leaves(
    api: ApiServerThread, proxy: ScriptedProxy, version: str
) -> None:
    proc = api.kubectl_popen("exec", "box", "--", "hang", version, version=version)
    time.sleep(1.5)
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while version not in proxy.cancelled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert version in proxy.cancelled
