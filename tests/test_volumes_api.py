"""Persistent volumes at the API, without controllers: the default StorageClass, claim admission
(default class, protection finalizers, a created status dropped), validation of claims, volumes
and classes (what the local driver cannot do is refused, with field paths), the Table columns
kubectl prints, storage quotas (create and expansion, with the refusal's wording), and who may
see or change which volume: tenants only their own PVs (no name probing), nodes theirs.

A real multi-tenant server (tenancy=True), the real kubectl and raw HTTP; docs/volumes.md."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hypernetes.objects import Obj
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenants import MERGE, TenantWorld, assert_forbidden, kubectl_forbidden

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

PVS = "/api/v1/persistentvolumes"
CLASSES = "/apis/storage.k8s.io/v1/storageclasses"
NOT_OURS = "not supported by hypernetes"


def claims_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/persistentvolumeclaims" + (f"/{name}" if name else "")


def claim(name: str, size: str = "1Gi", **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }
    body["spec"].update(spec)
    return body


def local_pv(name: str, node: str, tenant: str | None = None, size: str = "1Gi", **spec: Any) -> Obj:
    meta: Obj = {"name": name}
    if tenant:
        meta["labels"] = {"hypernetes.io/tenant": tenant}
    body: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": meta,
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "csi": {"driver": "local.hypernetes.io", "volumeHandle": name, "fsType": "ext4"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    body["spec"].update(spec)
    return body


def storage_class(name: str, **fields: Any) -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "local.hypernetes.io",
        **fields,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("volumes-api")), tenancy=True).start()
    w = TenantWorld(api)
    for tenant in ("acme", "globex"):
        w.fresh_tenant(tenant)  # admin NAME-admin, namespace NAME-a
    w.create_user("acme-viewer", "acme", "viewer")
    try:
        yield w
    finally:
        w.close()
        api.stop()


def table(stdout: str) -> list[dict[str, str]]:
    """kubectl's table as dicts, cut at the header's column starts (headers may hold spaces)."""
    lines = stdout.rstrip("\n").splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[1:]:
        cells = [
            line[a:b].strip() if b else line[a:].strip()
            for a, b in zip(starts, [*starts[1:], None], strict=True)
        ]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def header(stdout: str) -> list[str]:
    return re.split(r"\s{2,}", stdout.splitlines()[0].strip())


def fake_bind(w: TenantWorld, ns: str, name: str, volume: str, capacity: str) -> None:
    """What the volume controller does when it binds (there is none here): volumeName, then status."""
    w.op("PATCH", claims_path(ns, name), {"spec": {"volumeName": volume}}, headers=MERGE)
    status = {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": capacity}}
    w.op("PATCH", claims_path(ns, name) + "/status", {"status": status}, headers=MERGE)


def error_causes(r: Any) -> list[tuple[str, str]]:
    causes = (r.json().get("details") or {}).get("causes") or []
    return [(c.get("field", ""), c.get("message", "")) for c in causes]


# == the default class and admission ==============================================================


def test_default_storage_class_made_at_start(world: TenantWorld) -> None:
    out = world.kubectl("acme-viewer", "get", "storageclasses")  # every user may read classes
    assert out.returncode == 0, out.stderr
    assert header(out.stdout) == [
        "NAME",
        "PROVISIONER",
        "RECLAIMPOLICY",
        "VOLUMEBINDINGMODE",
        "ALLOWVOLUMEEXPANSION",
        "AGE",
    ]
    row = table(out.stdout)[0]
    assert row | {"AGE": ""} == {
        "NAME": "local (default)",
        "PROVISIONER": "local.hypernetes.io",
        "RECLAIMPOLICY": "Delete",
        "VOLUMEBINDINGMODE": "Immediate",
        "ALLOWVOLUMEEXPANSION": "true",
        "AGE": "",
    }
    sc = world.op("GET", f"{CLASSES}/local")
    assert sc["parameters"] == {"fsType": "ext4", "format": "raw"}
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert sc["allowVolumeExpansion"] is True
    # operators' only
    mine = json.dumps(storage_class("mine"))
    kubectl_forbidden(world.kubectl("acme-admin", "create", "-f", "-", input=mine))
    kubectl_forbidden(world.kubectl("acme-admin", "delete", "storageclass", "local"))


def test_claim_gets_default_class_finalizer_and_no_status(world: TenantWorld) -> None:
    forged = claim("forged", "1024Mi")
    forged["status"] = {"phase": "Bound", "capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce"]}
    r = world.http("acme-admin").post(claims_path("acme-a"), json=forged)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["spec"]["storageClassName"] == "local"
    assert made["spec"]["volumeMode"] == "Filesystem"
    assert made["spec"]["resources"]["requests"]["storage"] == "1Gi"  # canonical, as upstream stores it
    assert made["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert made["status"] == {"phase": "Pending"}
    # an explicit "" means no class; the beta annotation is a class too: neither is defaulted
    r = world.http("acme-admin").post(claims_path("acme-a"), json=claim("classless", storageClassName=""))
    assert r.status_code == 201 and r.json()["spec"]["storageClassName"] == ""
    beta = claim("beta")
    beta["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": "local"}
    r = world.http("acme-admin").post(claims_path("acme-a"), json=beta)
    assert r.status_code == 201 and "storageClassName" not in r.json()["spec"]
    # operators' namespaces get the default class too
    assert world.op("POST", claims_path("default"), claim("ops"))["spec"]["storageClassName"] == "local"


def class_of(obj: Obj) -> str:
    return str(obj["spec"].get("storageClassName"))


def test_newest_default_class_wins(world: TenantWorld) -> None:
    fast = storage_class("fast", allowVolumeExpansion=True)
    fast["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    world.op("POST", CLASSES, fast)
    try:
        out = world.kubectl("operator", "get", "sc", "-o", "name")
        assert out.stdout.split() == ["storageclass.storage.k8s.io/fast", "storageclass.storage.k8s.io/local"]
        names = {r["NAME"] for r in table(world.kubectl("operator", "get", "sc").stdout)}
        assert names == {"fast (default)", "local (default)"}
        assert class_of(world.op("POST", claims_path("default"), claim("gets-fast"))) == "fast"
    finally:
        world.op("DELETE", f"{CLASSES}/fast")
    assert class_of(world.op("POST", claims_path("default"), claim("gets-local"))) == "local"


def test_volume_gets_protection_and_no_status(world: TenantWorld) -> None:
    pv = local_pv("protected", "n1")
    pv["status"] = {"phase": "Bound"}
    made = world.op("POST", PVS, pv)
    assert made["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    assert made["status"]["phase"] == "Pending"
    assert made["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # upstream's default for static PVs
    assert made["spec"]["volumeMode"] == "Filesystem"


# == validation ===================================================================================

PV = local_pv("v", "n1")
PVC = claim("c")
SC = storage_class("s")


def _with(body: Obj, path: str, value: Any) -> Obj:
    out = copy.deepcopy(body)
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


# (id, where to post, body, field, what the message says)
INVALID: list[tuple[str, str, Obj, str, str]] = [
    ("rwx", "pvc", _with(PVC, "spec.accessModes", ["ReadWriteMany"]), "spec.accessModes", NOT_OURS),
    (
        "rwop",
        "pvc",
        _with(PVC, "spec.accessModes", ["ReadWriteOncePod"]),
        "spec.accessModes",
        "attached read-write to one pod VM at a time",
    ),
    (
        "mode-typo",
        "pvc",
        _with(PVC, "spec.accessModes", ["ReadWriteSometimes"]),
        "spec.accessModes",
        'supported values: "ReadOnlyMany"',
    ),
    ("no-modes", "pvc", _with(PVC, "spec.accessModes", None), "spec.accessModes", "Required value"),
    (
        "no-storage",
        "pvc",
        _with(PVC, "spec.resources", {"requests": {}}),
        "spec.resources[storage]",
        "Required value",
    ),
    (
        "zero",
        "pvc",
        _with(PVC, "spec.resources.requests.storage", "0"),
        "spec.resources[storage]",
        "must be greater than zero",
    ),
    (
        "data-source",
        "pvc",
        _with(PVC, "spec.dataSource", {"kind": "PersistentVolumeClaim", "name": "x"}),
        "spec.dataSource",
        NOT_OURS,
    ),
    (
        "attributes-class",
        "pvc",
        _with(PVC, "spec.volumeAttributesClassName", "gold"),
        "spec.volumeAttributesClassName",
        NOT_OURS,
    ),
    (
        "volume-mode",
        "pvc",
        _with(PVC, "spec.volumeMode", "Raw"),
        "spec.volumeMode",
        'Unsupported value: "Raw"',
    ),
    (
        "nfs",
        "pv",
        _with(_with(PV, "spec.csi", None), "spec.nfs", {"server": "x", "path": "/"}),
        "spec.nfs",
        NOT_OURS,
    ),
    ("host-path", "pv", _with(PV, "spec.hostPath", {"path": "/etc"}), "spec.hostPath", NOT_OURS),
    ("no-source", "pv", _with(PV, "spec.csi", None), "spec", "must specify a volume type"),
    (
        "other-driver",
        "pv",
        _with(PV, "spec.csi.driver", "ebs.csi.aws.com"),
        "spec.csi.driver",
        '"local.hypernetes.io"',
    ),
    ("xfs", "pv", _with(PV, "spec.csi.fsType", "xfs"), "spec.csi.fsType", NOT_OURS),
    (
        "format",
        "pv",
        _with(PV, "spec.csi.volumeAttributes", {"format": "vmdk"}),
        "spec.csi.volumeAttributes[format]",
        'Unsupported value: "vmdk"',
    ),
    (
        "handle",
        "pv",
        _with(PV, "spec.csi.volumeHandle", "../../etc/passwd"),
        "spec.csi.volumeHandle",
        "names a file",
    ),
    (
        "secrets",
        "pv",
        _with(PV, "spec.csi.nodePublishSecretRef", {"name": "s", "namespace": "x"}),
        "spec.csi.nodePublishSecretRef",
        NOT_OURS,
    ),
    ("no-node", "pv", _with(PV, "spec.nodeAffinity", None), "spec.nodeAffinity", "lives on one node"),
    (
        "recycle",
        "pv",
        _with(PV, "spec.persistentVolumeReclaimPolicy", "Recycle"),
        "spec.persistentVolumeReclaimPolicy",
        NOT_OURS,
    ),
    ("no-capacity", "pv", _with(PV, "spec.capacity", None), "spec.capacity", "Required value"),
    ("pv-rwx", "pv", _with(PV, "spec.accessModes", ["ReadWriteMany"]), "spec.accessModes", NOT_OURS),
    ("mount-options", "pv", _with(PV, "spec.mountOptions", ["noatime"]), "spec.mountOptions", NOT_OURS),
    (
        "wait-for-consumer",
        "sc",
        _with(SC, "volumeBindingMode", "WaitForFirstConsumer"),
        "volumeBindingMode",
        NOT_OURS,
    ),
    (
        "sc-recycle",
        "sc",
        _with(SC, "reclaimPolicy", "Recycle"),
        "reclaimPolicy",
        'Unsupported value: "Recycle"',
    ),
    (
        "parameter",
        "sc",
        _with(SC, "parameters", {"iops": "100"}),
        "parameters[iops]",
        'supported values: "fsType", "format"',
    ),
    (
        "sc-fstype",
        "sc",
        _with(SC, "parameters", {"fsType": "btrfs"}),
        "parameters[fsType]",
        'Unsupported value: "btrfs"',
    ),
    (
        "topologies",
        "sc",
        _with(SC, "allowedTopologies", [{"matchLabelExpressions": []}]),
        "allowedTopologies",
        NOT_OURS,
    ),
]


@pytest.mark.parametrize(
    ("where", "body", "field", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_is_refused_with_its_field(
    world: TenantWorld, where: str, body: Obj, field: str, text: str
) -> None:
    path = {"pvc": claims_path("default"), "pv": PVS, "sc": CLASSES}[where]
    r = world.http("operator").post(path + "?dryRun=All", json=body)
    assert r.status_code == 422, r.text
    assert any(f == field and text in msg for f, msg in error_causes(r)), r.json()


def test_kubectl_says_why_rwx_is_refused(world: TenantWorld) -> None:
    body = _with(PVC, "spec.accessModes", ["ReadWriteMany"])
    out = world.kubectl("acme-admin", "apply", "-n", "acme-a", "-f", "-", input=json.dumps(body))
    assert out.returncode != 0
    assert (
        'The PersistentVolumeClaim "c" is invalid: spec.accessModes: Unsupported value: '
        f'"ReadWriteMany": {NOT_OURS}'
    ) in out.stderr, out.stderr


def grow(size: str) -> Obj:
    return {"spec": {"resources": {"requests": {"storage": size}}}}


def test_claim_spec_is_immutable_but_a_bound_claim_grows(world: TenantWorld) -> None:
    h = world.http("acme-admin")
    assert h.post(claims_path("acme-a"), json=claim("fixed")).status_code == 201
    # unbound: requests may not change either
    r = h.patch(claims_path("acme-a", "fixed"), json=grow("2Gi"), headers=MERGE)
    assert r.status_code == 422 and error_causes(r)[0][0] == "spec.resources", r.text
    assert "spec is immutable after creation except resources.requests" in r.text
    r = h.patch(
        claims_path("acme-a", "fixed"), json={"spec": {"accessModes": ["ReadOnlyMany"]}}, headers=MERGE
    )
    assert r.status_code == 422 and [f for f, _ in error_causes(r)] == ["spec.accessModes"], r.text
    fake_bind(world, "acme-a", "fixed", "pv-fixed", "1Gi")
    r = h.patch(claims_path("acme-a", "fixed"), json=grow("2Gi"), headers=MERGE)
    assert r.status_code == 200, r.text
    out = world.kubectl(
        "acme-admin",
        "patch",
        "pvc",
        "fixed",
        "-n",
        "acme-a",
        "-p",
        '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}',
    )
    assert out.returncode != 0
    assert (
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value" in out.stderr
    ), out.stderr
    r = h.patch(claims_path("acme-a", "fixed"), json={"spec": {"volumeName": "another"}}, headers=MERGE)
    assert r.status_code == 422 and [f for f, _ in error_causes(r)] == ["spec.volumeName"], r.text


def test_growth_needs_a_class_that_allows_it(world: TenantWorld) -> None:
    world.op("POST", CLASSES, storage_class("fixed-size", allowVolumeExpansion=False))
    h = world.http("acme-admin")
    small = claim("small", storageClassName="fixed-size")
    assert h.post(claims_path("acme-a"), json=small).status_code == 201
    fake_bind(world, "acme-a", "small", "pv-small", "1Gi")
    r = h.patch(claims_path("acme-a", "small"), json=grow("2Gi"), headers=MERGE)
    assert r.status_code == 403, r.text
    assert r.json()["message"] == (
        'persistentvolumeclaims "small" is forbidden: only dynamically provisioned pvc can be resized and '
        "the storageclass that provisions the pvc must support resize"
    )


def test_class_and_volume_updates(world: TenantWorld) -> None:
    op = world.http("operator")
    r = op.patch(f"{CLASSES}/local", json={"parameters": {"format": "qcow2"}}, headers=MERGE)
    assert r.status_code == 422 and "updates to parameters are forbidden." in r.text
    r = op.patch(f"{CLASSES}/local", json={"volumeBindingMode": None}, headers=MERGE)
    assert r.status_code == 200  # defaulted back to Immediate: no change
    world.op("POST", PVS, local_pv("moving", "n1"))
    r = op.patch(f"{PVS}/moving", json={"spec": {"csi": {"volumeHandle": "other"}}}, headers=MERGE)
    assert r.status_code == 422 and "spec.persistentvolumesource is immutable after creation" in r.text
    affinity = local_pv("x", "n2")["spec"]["nodeAffinity"]
    r = op.patch(f"{PVS}/moving", json={"spec": {"nodeAffinity": affinity}}, headers=MERGE)
    assert r.status_code == 422 and [f for f, _ in error_causes(r)] == ["spec.nodeAffinity"]
    changes = {"persistentVolumeReclaimPolicy": "Delete", "capacity": {"storage": "2Gi"}}
    r = op.patch(f"{PVS}/moving", json={"spec": changes}, headers=MERGE)
    assert r.status_code == 200, r.text


# == tables =======================================================================================

PVC_HEADER = [
    "NAME",
    "STATUS",
    "VOLUME",
    "CAPACITY",
    "ACCESS MODES",
    "STORAGECLASS",
    "VOLUMEATTRIBUTESCLASS",
    "AGE",
    "VOLUMEMODE",
]
PV_HEADER = [
    "NAME",
    "CAPACITY",
    "ACCESS MODES",
    "RECLAIM POLICY",
    "STATUS",
    "CLAIM",
    "STORAGECLASS",
    "VOLUMEATTRIBUTESCLASS",
    "REASON",
    "AGE",
    "VOLUMEMODE",
]


def test_claim_and_volume_tables_as_upstream(world: TenantWorld) -> None:
    world.op("POST", "/api/v1/namespaces", {"metadata": {"name": "tables"}})
    world.op("POST", claims_path("tables"), claim("pending", "2Gi", volumeMode="Block"))
    both = ["ReadWriteOnce", "ReadOnlyMany"]
    world.op("POST", claims_path("tables"), claim("bound", "1536Mi", accessModes=both))
    world.op(
        "POST",
        PVS,
        local_pv(
            "table-pv",
            "n1",
            size="1536Mi",
            accessModes=both[::-1],
            persistentVolumeReclaimPolicy="Delete",
            claimRef={"namespace": "tables", "name": "bound"},
        ),
    )
    failed = {"phase": "Failed", "reason": "VolumeFailedDelete"}
    world.op("PATCH", f"{PVS}/table-pv/status", {"status": failed}, headers=MERGE)
    fake_bind(world, "tables", "bound", "table-pv", "1536Mi")
    out = world.kubectl("operator", "get", "pvc", "-n", "tables", "-o", "wide")
    assert header(out.stdout) == PVC_HEADER
    rows = {r["NAME"]: r for r in table(out.stdout)}
    assert rows["pending"] | {"AGE": ""} == {
        "NAME": "pending",
        "STATUS": "Pending",
        "VOLUME": "",
        "CAPACITY": "",
        "ACCESS MODES": "",
        "STORAGECLASS": "local",
        "VOLUMEATTRIBUTESCLASS": "<unset>",
        "AGE": "",
        "VOLUMEMODE": "Block",
    }
    assert rows["bound"] | {"AGE": ""} == {
        "NAME": "bound",
        "STATUS": "Bound",
        "VOLUME": "table-pv",
        "CAPACITY": "1536Mi",
        "ACCESS MODES": "RWO",
        "STORAGECLASS": "local",
        "VOLUMEATTRIBUTESCLASS": "<unset>",
        "AGE": "",
        "VOLUMEMODE": "Filesystem",
    }
    assert re.fullmatch(r"\d+s", rows["bound"]["AGE"])
    assert header(world.kubectl("operator", "get", "pvc", "-n", "tables").stdout) == PVC_HEADER[:-1]
    out = world.kubectl("operator", "get", "pv", "table-pv", "-o", "wide")
    assert header(out.stdout) == PV_HEADER
    row = table(out.stdout)[0]
    assert row | {"AGE": ""} == {
        "NAME": "table-pv",
        "CAPACITY": "1536Mi",
        "ACCESS MODES": "RWO,ROX",
        "RECLAIM POLICY": "Delete",
        "STATUS": "Failed",
        "CLAIM": "tables/bound",
        "STORAGECLASS": "manual",
        "VOLUMEATTRIBUTESCLASS": "<unset>",
        "REASON": "VolumeFailedDelete",
        "AGE": "",
        "VOLUMEMODE": "Filesystem",
    }
    # deleting: the protection finalizers hold both (no controller here), shown as Terminating
    world.kubectl("operator", "delete", "pvc", "pending", "-n", "tables", "--wait=false")
    world.kubectl("operator", "delete", "pv", "table-pv", "--wait=false")
    assert (
        table(world.kubectl("operator", "get", "pvc", "pending", "-n", "tables").stdout)[0]["STATUS"]
        == "Terminating"
    )
    assert table(world.kubectl("operator", "get", "pv", "table-pv").stdout)[0]["STATUS"] == "Terminating"


# == quotas =======================================================================================


def test_storage_quota_on_create_and_growth(world: TenantWorld) -> None:
    admin = world.fresh_tenant("initech", {"quota": {"storage": "3Gi", "persistentvolumeclaims": "2"}})
    big = world.kubectl(admin, "apply", "-n", "initech-a", "-f", "-", input=json.dumps(claim("big", "5Gi")))
    assert big.returncode != 0
    assert (
        'Error from server (Forbidden): error when creating "STDIN": persistentvolumeclaims "big" is '
        'forbidden: exceeded quota of tenant "initech": storage: requested 5Gi, used 0, limited 3Gi '
        "(over by 2Gi)"
    ) in big.stderr, big.stderr
    h = world.http(admin)
    assert h.post(claims_path("initech-a"), json=claim("one", "1Gi")).status_code == 201
    assert h.post(claims_path("initech-a"), json=claim("two", "1Gi")).status_code == 201
    r = h.post(claims_path("initech-a"), json=claim("three", "512Mi"))
    assert r.status_code == 403
    assert r.json()["message"].endswith(
        'exceeded quota of tenant "initech": persistentvolumeclaims: requested 1, used 2, limited 2 '
        "(over by 1)"
    )
    fake_bind(world, "initech-a", "one", "pv-one", "1Gi")
    fake_bind(world, "initech-a", "two", "pv-two", "1Gi")
    assert h.patch(claims_path("initech-a", "one"), json=grow("2Gi"), headers=MERGE).status_code == 200  # 3Gi
    out = world.kubectl(
        admin,
        "patch",
        "pvc",
        "two",
        "-n",
        "initech-a",
        "-p",
        '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}',
    )
    assert out.returncode != 0
    assert (
        'persistentvolumeclaims "two" is forbidden: exceeded quota of tenant "initech": storage: '
        "requested 2Gi, used 3Gi, limited 3Gi (over by 2Gi)"
    ) in out.stderr, out.stderr
    # an operator's write into the tenant's namespace counts against the tenant too
    r = world.http("operator").post(claims_path("initech-a"), json=claim("by-operator"))
    assert r.status_code == 403 and "persistentvolumeclaims: requested 1, used 2" in r.json()["message"]


def test_parallel_claims_never_pass_the_quota(world: TenantWorld) -> None:
    admin = world.fresh_tenant("racer", {"quota": {"storage": "3Gi"}})
    h = world.http(admin)

    def create(i: int) -> int:
        return h.post(claims_path("racer-a"), json=claim(f"c{i}", "1Gi")).status_code

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(create, range(8))) == [201] * 3 + [403] * 5


# == who sees which volume ========================================================================


@pytest.fixture(scope="module")
def volumes(world: TenantWorld) -> None:
    """acme-disk (acme's, on node-1) and globex-disk (globex's, on node-2, bound to globex-a/gclaim, which a
    pod on node-1 uses)."""
    world.op("POST", PVS, local_pv("acme-disk", "node-1", "acme"))
    world.op(
        "POST",
        PVS,
        local_pv("globex-disk", "node-2", "globex", claimRef={"namespace": "globex-a", "name": "gclaim"}),
    )
    for node in ("node-1", "node-2"):
        world.op("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        world.node_token(node)
    assert world.http("globex-admin").post(claims_path("globex-a"), json=claim("gclaim")).status_code == 201
    assert world.http("globex-admin").post(claims_path("globex-a"), json=claim("unused")).status_code == 201
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "uses-gclaim"},
        "spec": {
            "containers": [{"name": "c", "image": "registry.invalid/busybox:1"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "gclaim"}}],
        },
    }
    assert world.http("globex-admin").post("/api/v1/namespaces/globex-a/pods", json=pod).status_code == 201
    world.op(
        "POST",
        "/api/v1/namespaces/globex-a/pods/uses-gclaim/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "uses-gclaim"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
        },
    )


def names(world: TenantWorld, who: str, path: str = PVS) -> set[str]:
    r = world.http(who).get(path)
    assert r.status_code == 200, r.text
    return {o["metadata"]["name"] for o in r.json()["items"]}


@pytest.mark.usefixtures("volumes")
def test_tenants_see_only_their_volumes(world: TenantWorld) -> None:
    assert names(world, "acme-viewer") == {"acme-disk"}
    assert names(world, "globex-admin") == {"globex-disk"}
    assert "acme-disk" in names(world, "operator")
    out = world.kubectl("globex-admin", "get", "pv", "-o", "name")
    assert out.returncode == 0 and out.stdout.split() == ["persistentvolume/globex-disk"], out.stderr
    assert world.http("acme-viewer").get(f"{PVS}/acme-disk").status_code == 200
    # a watch sends the current state first: filtered the same way
    with world.http("globex-admin").stream("GET", PVS, params={"watch": "true", "timeoutSeconds": "1"}) as r:
        assert r.status_code == 200
        seen = {json.loads(line)["object"]["metadata"]["name"] for line in r.iter_lines() if line.strip()}
    assert seen == {"globex-disk"}


@pytest.mark.usefixtures("volumes")
def test_other_tenants_volume_names_cannot_be_probed(world: TenantWorld) -> None:
    g = world.http("globex-admin")
    foreign, absent = g.get(f"{PVS}/acme-disk"), g.get(f"{PVS}/no-such-disk")
    assert_forbidden(foreign.status_code, foreign.json(), "globex-admin")
    assert_forbidden(absent.status_code, absent.json(), "globex-admin")
    said = (
        foreign.json()["message"].replace("acme-disk", "X"),
        absent.json()["message"].replace("no-such-disk", "X"),
    )
    assert said[0] == said[1]
    for r in (
        g.get(f"{PVS}/acme-disk/status"),
        g.get(PVS, params={"fieldSelector": "metadata.name=acme-disk"}),
    ):
        assert r.status_code == 403 or r.json()["items"] == [], r.text
    # a claim naming another tenant's volume is admitted like one naming no volume at all
    for name, volume in (("probe-foreign", "acme-disk"), ("probe-absent", "no-such-disk")):
        r = g.post(claims_path("globex-a"), json=claim(name, volumeName=volume))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == {"phase": "Pending"}


@pytest.mark.usefixtures("volumes")
def test_tenants_never_write_volumes(world: TenantWorld) -> None:
    g = world.http("globex-admin")
    for r in (
        g.post(PVS, json=local_pv("mine", "node-2", "globex")),
        g.patch(f"{PVS}/globex-disk", json={"spec": {"claimRef": None}}, headers=MERGE),
        g.patch(f"{PVS}/globex-disk/status", json={"status": {"phase": "Available"}}, headers=MERGE),
        g.delete(f"{PVS}/globex-disk"),
        g.delete(f"{PVS}/acme-disk"),
        g.patch(
            f"{PVS}/acme-disk",
            json={"metadata": {"labels": {"hypernetes.io/tenant": "globex"}}},
            headers=MERGE,
        ),
    ):
        assert_forbidden(r.status_code, r.json(), "globex-admin")
    kubectl_forbidden(world.kubectl("globex-admin", "label", "pv", "acme-disk", "a=b"))
    assert world.op("GET", f"{PVS}/acme-disk")["metadata"]["labels"] == {"hypernetes.io/tenant": "acme"}


BOTH_FINALIZERS = ["kubernetes.io/pv-protection", "local.hypernetes.io/backing-file"]


@pytest.mark.usefixtures("volumes")
def test_node_reads_and_changes_only_its_volumes(world: TenantWorld) -> None:
    n1 = world.http("node-1")
    assert names(world, "node-1") == {"acme-disk"}  # lists: the PVs on the node
    assert n1.get(f"{PVS}/acme-disk").status_code == 200
    assert n1.get(f"{PVS}/globex-disk").status_code == 200  # bound to a claim a pod on node-1 uses
    assert world.http("node-2").get(f"{PVS}/acme-disk").status_code == 403
    # finalizers: only removed; nothing else changes
    world.op("PATCH", f"{PVS}/acme-disk", {"metadata": {"finalizers": BOTH_FINALIZERS}}, headers=MERGE)
    for patch in (
        {"metadata": {"labels": {"hypernetes.io/tenant": "globex"}}},
        {"metadata": {"finalizers": [*BOTH_FINALIZERS, "evil/keep"]}},
        {"metadata": {"finalizers": ["local.hypernetes.io/backing-file"]}},  # pv-protection
        {"spec": {"claimRef": {"namespace": "globex-a", "name": "x"}}},
    ):
        r = n1.patch(f"{PVS}/acme-disk", json=patch, headers=MERGE)
        assert r.status_code == 403, r.text
        assert "may only remove the local.hypernetes.io/backing-file finalizer" in r.text, r.text
    r = n1.patch(
        f"{PVS}/acme-disk", json={"metadata": {"finalizers": ["kubernetes.io/pv-protection"]}}, headers=MERGE
    )
    assert r.status_code == 200, r.text
    assert (
        world.http("node-2")
        .patch(f"{PVS}/acme-disk", json={"metadata": {"finalizers": None}}, headers=MERGE)
        .status_code
        == 403
    )
    unfinalize = {"metadata": {"finalizers": None}}
    assert n1.patch(f"{PVS}/globex-disk", json=unfinalize, headers=MERGE).status_code == 403
    assert n1.post(PVS, json=local_pv("node-made", "node-1")).status_code == 403
    # claim status: only of claims its pods use
    status = {"status": {"capacity": {"storage": "1Gi"}}}
    gclaim = claims_path("globex-a", "gclaim") + "/status"
    unused = claims_path("globex-a", "unused") + "/status"
    assert n1.patch(gclaim, json=status, headers=MERGE).status_code == 200
    assert n1.patch(unused, json=status, headers=MERGE).status_code == 403
    assert world.http("node-2").patch(gclaim, json=status, headers=MERGE).status_code == 403
    assert (
        n1.patch(
            claims_path("globex-a", "gclaim"), json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE
        ).status_code
        == 403
    )
