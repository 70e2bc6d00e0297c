"""A packaged application installed the way platform teams install one, on `hypernetes up` with real
VMs: the operator installs its CRD, then a tenant admin applies the application with kubectl's
built-in kustomize (`kubectl apply -k`), changes the overlay and applies again, and removes it with
`kubectl delete -k`; the same manifests then go through the official Python client's
`utils.create_from_yaml`. The application (tests/data/shop) holds a Deployment, a StatefulSet with a
claim template and its headless Service, a Service, an Ingress, a ConfigMap and a Secret from
generators, a ServiceAccount with a Role and RoleBinding, an HPA, a PDB, and an object of the CRD.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, as_user, make_user, running_cluster

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "shop"
NS = "shop-prod"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("packaged-app") / "data") as c:
        yield c


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, busybox_ref: str) -> Path:
    """The application's tree with its image pointed at the test registry, as an overlay's
    `images:` would point it at a team's own registry."""
    tree = tmp_path_factory.mktemp("app") / "shop"
    shutil.copytree(APP, tree)
    name, tag = busybox_ref.rsplit(":", 1)
    overlay = tree / "overlays/production/kustomization.yaml"
    k = yaml.safe_load(overlay.read_text())
    k["images"] = [{"name": "busybox", "newName": name, "newTag": tag}]
    overlay.write_text(yaml.safe_dump(k))
    return tree


def _json(cluster: Cluster, token: str, *args: str) -> Any:
    return json.loads(as_user(cluster, token, *args, "-o", "json").stdout)


def _ready(pod: dict[str, Any]) -> bool:
    """Running and its readiness probe passed: the app has done what it does on start."""
    conditions = pod["status"].get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return bool(pod["status"].get("phase") == "Running" and ready)


def _running(cluster: Cluster, token: str, selector: str, count: int) -> list[str]:
    pods = _json(cluster, token, "get", "pods", "-n", NS, "-l", selector)["items"]
    names = sorted(p["metadata"]["name"] for p in pods if _ready(p))
    return names if len(names) == count and len(pods) == count else []


def test_kustomize_apply_change_and_delete(cluster: Cluster, app: Path) -> None:
    try:
        _kustomize_apply_change_and_delete(cluster, app)
    except AssertionError as e:  # what the tenant's namespace held when it failed
        seen = cluster.kubectl(
            "get", "pods,deploy,rs,sts,hpa,pdb,events", "-n", NS, "-o", "wide", check=False
        )
        raise AssertionError(f"{e}\n--- {NS} ---\n{seen.stdout}{seen.stderr}") from None


def _kustomize_apply_change_and_delete(cluster: Cluster, app: Path) -> None:
    cluster.kubectl("apply", "-k", str(app / "crds"))
    cluster.wait_for(
        "the CRD established",
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in cluster.get("crd", "backups.shop.example.com")["status"].get("conditions", [])
        ),
    )
    ann = make_user(cluster, "shop", "ann", "admin")
    as_user(cluster, ann, "create", "namespace", NS)
    overlay = app / "overlays/production"
    as_user(cluster, ann, "apply", "-k", str(overlay), "-n", NS)

    # every piece is there and working, as the tenant sees it
    web = cluster.wait_for("two web pods running", lambda: _running(cluster, ann, "app=web", 2), 600)
    db = cluster.wait_for("two db pods running", lambda: _running(cluster, ann, "app=db", 2), 600)
    assert db == ["prod-db-0", "prod-db-1"]
    claims = _json(cluster, ann, "get", "pvc", "-n", NS)["items"]
    assert sorted((c["metadata"]["name"], c["status"]["phase"]) for c in claims) == [
        ("data-prod-db-0", "Bound"),
        ("data-prod-db-1", "Bound"),
    ]
    owner = as_user(cluster, ann, "exec", "-n", NS, "prod-db-1", "--", "cat", "/data/owner").stdout
    assert owner.strip() == "prod-db-1 not-a-real-password"
    page = as_user(
        cluster, ann, "exec", "-n", NS, web[0], "--", "sh", "-c", "timeout 10 wget -qO- 127.0.0.1:8080"
    ).stdout
    assert page.strip() == "hello from production"
    as_user(cluster, ann, "rollout", "status", "statefulset/prod-db", "-n", NS, "--timeout=120s")
    as_user(cluster, ann, "rollout", "status", "deployment/prod-web", "-n", NS, "--timeout=120s")

    backup = _json(cluster, ann, "get", "backup", "prod-nightly", "-n", NS)
    assert backup["spec"] == {"schedule": "0 3 * * *", "target": "db", "keep": 30}
    # the CRD's printer columns (no Age: upstream adds it only to a CRD that names no columns)
    table = as_user(cluster, ann, "get", "backups", "-n", NS).stdout.split("\n")
    assert [table[0].split(), table[1].split()] == [
        ["NAME", "SCHEDULE", "TARGET"],
        ["prod-nightly", "0", "3", "*", "*", "*", "db"],
    ]
    hpa = _json(cluster, ann, "get", "hpa", "prod-web", "-n", NS)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "prod-web" and hpa["spec"]["maxReplicas"] == 3
    pdb: dict[str, Any] = {}

    def one_disruption_allowed() -> bool:
        pdb.update(_json(cluster, ann, "get", "pdb", "prod-web", "-n", NS).get("status") or {})
        return pdb.get("disruptionsAllowed") == 1

    try:
        cluster.wait_for("the PDB to allow one disruption", one_disruption_allowed)
    except AssertionError as e:
        raise AssertionError(f"{e}\nthe PDB's status: {pdb}") from None
    ingress = _json(cluster, ann, "get", "ingress", "prod-web", "-n", NS)
    assert ingress["spec"]["rules"][0]["host"] == "shop.example.com"

    # the Role gives the web service account what it grants and nothing more
    token = as_user(cluster, ann, "create", "token", "prod-web", "-n", NS).stdout.strip()
    can = cluster.kubectl(f"--token={token}", "auth", "can-i", "list", "configmaps", "-n", NS, check=False)
    cannot = cluster.kubectl(f"--token={token}", "auth", "can-i", "get", "secrets", "-n", NS, check=False)
    assert can.stdout.strip() == "yes" and cannot.stdout.split()[0] == "no", (can.stdout, cannot.stdout)

    # an overlay change: another greeting (a new generated ConfigMap, so the Deployment rolls) and
    # backups kept for a fortnight
    k = overlay / "kustomization.yaml"
    k.write_text(
        k.read_text().replace("hello from production", "hello again").replace("value: 30", "value: 14")
    )
    as_user(cluster, ann, "apply", "-k", str(overlay), "-n", NS)
    as_user(cluster, ann, "rollout", "status", "deployment/prod-web", "-n", NS, "--timeout=300s")
    web = cluster.wait_for("the rolled web pods", lambda: _running(cluster, ann, "app=web", 2), 600)
    page = as_user(
        cluster, ann, "exec", "-n", NS, web[0], "--", "sh", "-c", "timeout 10 wget -qO- 127.0.0.1:8080"
    ).stdout
    assert page.strip() == "hello again"
    assert _json(cluster, ann, "get", "backup", "prod-nightly", "-n", NS)["spec"]["keep"] == 14

    # and gone again; the StatefulSet's claims stay, as upstream keeps them
    as_user(cluster, ann, "delete", "-k", str(overlay), "-n", NS, "--wait=true", "--timeout=300s")
    cluster.wait_for(
        "the app's pods gone", lambda: not _json(cluster, ann, "get", "pods", "-n", NS)["items"], 300
    )
    left = {
        o["kind"]
        for o in _json(
            cluster, ann, "get", "all,cm,secret,role,rolebinding,pdb,hpa,ingress,backups", "-n", NS
        )["items"]
    }
    assert left <= {"ConfigMap", "Secret"}, left  # kube-root-ca.crt and the default account's
    claims = _json(cluster, ann, "get", "pvc", "-n", NS)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-prod-db-0", "data-prod-db-1"]


def test_python_client_create_from_yaml(cluster: Cluster, app: Path) -> None:
    """The same manifests through `kubernetes.utils.create_from_yaml` as a tenant user; the CRD's
    object through `CustomObjectsApi`, which is how the client creates custom objects. Workloads at
    zero replicas: the VMs were the first test's subject, the client's wire path is this one's."""
    from kubernetes import client as kc
    from kubernetes import utils

    rendered = subprocess.run(
        [*cluster.kubectl_args("kustomize", str(app / "overlays/production"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    custom = [d for d in docs if d["apiVersion"].startswith("shop.example.com/")]
    builtin = [d for d in docs if d not in custom]
    for d in builtin:
        if d["kind"] in ("Deployment", "StatefulSet"):
            d["spec"]["replicas"] = 0
    ben = make_user(cluster, "shop", "ben", "admin")
    as_user(cluster, ben, "create", "namespace", "shop-py")
    cfg = kc.Configuration()
    cfg.host = f"https://127.0.0.1:{cluster.port}"
    cfg.ssl_ca_cert = str(cluster.data / "pki/ca.crt")
    cfg.api_key = {"authorization": ben}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with kc.ApiClient(cfg) as api:
        created = utils.create_from_yaml(api, yaml_objects=builtin, namespace="shop-py")
        assert len(created) == len(builtin)
        for d in custom:
            kc.CustomObjectsApi(api).create_namespaced_custom_object(
                "shop.example.com", "v1", "shop-py", "backups", d
            )
        kinds = sorted(
            (o["kind"], o["metadata"]["name"])
            for o in _json(
                cluster,
                ben,
                "get",
                "deploy,sts,svc,ingress,hpa,pdb,sa,role,rolebinding,backups",
                "-n",
                "shop-py",
            )["items"]
            if o["metadata"]["name"].startswith("prod-")
        )
        assert kinds == sorted(
            (d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] not in ("ConfigMap", "Secret")
        )
        sts = kc.AppsV1Api(api).read_namespaced_stateful_set("prod-db", "shop-py")
        assert sts.spec.volume_claim_templates[0].metadata.name == "data"
        hpa = kc.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("prod-web", "shop-py")
        assert hpa.spec.metrics[0].resource.target.average_utilization == 80
        role = kc.RbacAuthorizationV1Api(api).read_namespaced_role("prod-config-reader", "shop-py")
        assert role.rules[0].resources == ["configmaps"]
        # another tenant sees none of it
        eve = make_user(cluster, "rival", "eve", "admin")
        denied = as_user(cluster, eve, "get", "backups,roles", "-n", "shop-py", check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
