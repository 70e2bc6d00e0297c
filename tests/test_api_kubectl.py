"""The real kubectl (1.27, 1.32, 1.33) against the API server: discovery, CRUD, Status errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.support.apifixtures import KUBECTL_VERSIONS, running_api
from tests.support.apiserver import ApiServerThread


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory)


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  containers:
  - name: web
    image: {image}
    ports: [{{containerPort: 80}}]
"""


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_discovery(api: ApiServerThread, version: str) -> None:
    out = api.kubectl("api-resources", version=version).stdout
    assert "pods" in out and "deployments" in out and "namespaces" in out
    assert "v1.32.0-hypernetes" in api.kubectl("version", version=version).stdout
    ns = api.kubectl("get", "ns", version=version).stdout
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert name in ns


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_run_get_delete(api: ApiServerThread, version: str) -> None:
    name = f"nginx-{version.replace('.', '')}"
    assert f"pod/{name} created" in api.kubectl("run", name, "--image=nginx", version=version).stdout
    pod = json.loads(api.kubectl("get", "pod", name, "-o", "json", version=version).stdout)
    meta = pod["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["labels"] == {"run": name} and meta["generation"] == 1
    assert name in api.kubectl("get", "pods", "-o", "wide", version=version).stdout
    assert name in api.kubectl("get", "pods", "-A", version=version).stdout
    assert f'pod "{name}" deleted' in api.kubectl("delete", "pod", name, version=version).stdout
    gone = api.kubectl("get", "pod", name, version=version, check=False)
    assert gone.returncode == 1
    assert f'Error from server (NotFound): pods "{name}" not found' in gone.stderr


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_apply_twice_with_a_change(api: ApiServerThread, version: str) -> None:
    name = f"web-{version.replace('.', '')}"

    def apply(image: str) -> str:
        manifest = POD.format(name=name, image=image)
        return api.kubectl("apply", "-f", "-", input=manifest, version=version).stdout

    assert f"pod/{name} created" in apply("nginx:1.27")
    assert f"pod/{name} unchanged" in apply("nginx:1.27")
    assert f"pod/{name} configured" in apply("nginx:1.28")
    pod = yaml.safe_load(api.kubectl("get", "pod", name, "-o", "yaml").stdout)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "nginx:1.28"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert pod["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in pod["metadata"]["annotations"]
    api.kubectl("delete", "pod", name)


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_bad_manifest_names_the_field(api: ApiServerThread, version: str) -> None:
    bad = POD.format(name="bad", image="nginx").replace("containerPort: 80", "containerPort: 99999")
    p = api.kubectl("apply", "-f", "-", input=bad, version=version, check=False)
    assert p.returncode == 1
    assert (
        'The Pod "bad" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 99999'
        in p.stderr
    )


def test_create_in_missing_namespace(api: ApiServerThread) -> None:
    p = api.kubectl("run", "x", "--image=nginx", "-n", "nope", check=False)
    assert p.returncode == 1
    assert 'namespaces "nope" not found' in p.stderr


def test_create_twice_is_already_exists(api: ApiServerThread) -> None:
    api.kubectl("create", "-f", "-", input=POD.format(name="dup", image="nginx"))
    p = api.kubectl("create", "-f", "-", input=POD.format(name="dup", image="nginx"), check=False)
    assert p.returncode == 1
    assert "Error from server (AlreadyExists)" in p.stderr and 'pods "dup" already exists' in p.stderr
    api.kubectl("delete", "pod", "dup")


def test_label_annotate_and_selectors(api: ApiServerThread) -> None:
    for i in range(3):
        api.kubectl("run", f"sel-{i}", "--image=nginx", "--labels", f"app=sel,idx=i{i}")
    api.kubectl("label", "pod", "sel-0", "tier=front")
    api.kubectl("annotate", "pod", "sel-1", "note=hello")
    names = api.kubectl("get", "pods", "-l", "app=sel,tier=front", "-o", "name").stdout.split()
    assert names == ["pod/sel-0"]
    names = api.kubectl("get", "pods", "-l", "idx in (i1,i2)", "-o", "name").stdout.split()
    assert names == ["pod/sel-1", "pod/sel-2"]
    names = api.kubectl("get", "pods", "-l", "app=sel,!tier", "-o", "name").stdout.split()
    assert names == ["pod/sel-1", "pod/sel-2"]
    names = api.kubectl(
        "get", "pods", "--field-selector", "metadata.name!=sel-1", "-l", "app=sel", "-o", "name"
    ).stdout.split()
    assert names == ["pod/sel-0", "pod/sel-2"]
    p = api.kubectl("get", "pods", "--field-selector", "spec.bogus=x", check=False)
    assert p.returncode == 1 and "field label not supported: spec.bogus" in p.stderr
    pod = json.loads(api.kubectl("get", "pod", "sel-1", "-o", "json").stdout)
    assert pod["metadata"]["annotations"] == {"note": "hello"}
    assert "deleted" in api.kubectl("delete", "pods", "-l", "app=sel").stdout
    assert api.kubectl("get", "pods", "-l", "app=sel", "-o", "name").stdout == ""


def test_limit_and_continue(api: ApiServerThread) -> None:
    api.kubectl("create", "namespace", "paging")
    for i in range(7):
        api.kubectl("create", "configmap", f"cm-{i}", "-n", "paging", "--from-literal=k=v")
    out = api.kubectl("get", "configmaps", "-n", "paging", "--chunk-size=2", "-o", "name", "-v=6").stdout
    assert out.split() == [f"configmap/cm-{i}" for i in range(7)]


def test_dry_run(api: ApiServerThread) -> None:
    out = api.kubectl("run", "dry", "--image=nginx", "--dry-run=server", "-o", "json").stdout
    assert json.loads(out)["metadata"]["uid"]
    assert api.kubectl("get", "pod", "dry", check=False).returncode == 1


def test_protobuf_generators(api: ApiServerThread) -> None:
    assert "namespace/team-a created" in api.kubectl("create", "namespace", "team-a").stdout
    api.kubectl("create", "configmap", "cfg", "-n", "team-a", "--from-literal=a=1", "--from-literal=b=2")
    api.kubectl("create", "secret", "generic", "sec", "-n", "team-a", "--from-literal=pw=s3cret")
    api.kubectl("create", "serviceaccount", "robot", "-n", "team-a")
    cm = json.loads(api.kubectl("get", "cm", "cfg", "-n", "team-a", "-o", "json").stdout)
    assert cm["data"] == {"a": "1", "b": "2"}
    sec = json.loads(api.kubectl("get", "secret", "sec", "-n", "team-a", "-o", "json").stdout)
    assert sec["data"] == {"pw": "czNjcmV0"} and sec["type"] == "Opaque"
    sa = json.loads(api.kubectl("get", "sa", "robot", "-n", "team-a", "-o", "json").stdout)
    assert sa["metadata"]["namespace"] == "team-a"


def test_namespace_deletion_terminates(api: ApiServerThread) -> None:
    api.kubectl("create", "namespace", "doomed")
    api.kubectl("delete", "namespace", "doomed", "--wait=false")
    ns = json.loads(api.kubectl("get", "ns", "doomed", "-o", "json").stdout)
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    p = api.kubectl("run", "late", "--image=nginx", "-n", "doomed", check=False)
    assert p.returncode == 1 and "because it is being terminated" in p.stderr


def test_wait_for_condition_sees_a_status_update(api: ApiServerThread) -> None:
    api.kubectl("run", "waiter", "--image=nginx")
    waiting = api.kubectl_popen("wait", "--for=condition=Ready", "pod/waiter", "--timeout=30s")
    time.sleep(1.5)
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    api.kubectl("patch", "pod", "waiter", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "pod/waiter condition met" in out
    assert "Running" in api.kubectl("get", "pod", "waiter").stdout


def test_other_everyday_commands(api: ApiServerThread) -> None:
    api.kubectl("create", "namespace", "daily")
    api.kubectl("run", "p1", "--image=nginx", "-n", "daily")
    api.kubectl("create", "deployment", "d1", "--image=nginx", "-n", "daily")
    out = api.kubectl("get", "all", "-n", "daily").stdout
    assert "pod/p1" in out and "deployment.apps/d1" in out
    api.kubectl(
        "patch",
        "pod",
        "p1",
        "-n",
        "daily",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/extra","value":"1"}]',
    )
    assert "extra=1" in api.kubectl("get", "pod", "p1", "-n", "daily", "--show-labels").stdout
    manifest = api.kubectl("get", "pod", "p1", "-n", "daily", "-o", "yaml").stdout
    out = api.kubectl("replace", "--force", "-f", "-", input=manifest).stdout
    assert 'pod "p1" deleted' in out and "pod/p1 replaced" in out
    columns = "custom-columns=N:.metadata.name,I:.spec.containers[0].image"
    cols = api.kubectl("get", "pods", "-n", "daily", "-o", columns, "--sort-by=.metadata.name").stdout
    assert cols.split() == ["N", "I", "p1", "nginx"]
    assert "deleted" in api.kubectl("delete", "all", "--all", "-n", "daily").stdout
