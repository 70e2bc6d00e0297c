"""v1 LimitRange and ResourceQuota in a tenant's namespaces, on the multi-tenant API server with
the ResourceQuota controller: validation (422 with upstream's paths), LimitRanger defaults and
bounds for containers, pods and claims, quota admission (exceeded, must specify), status.used,
the tenant's own quota still applying, who may write them, and the real kubectl (1.32, 1.33)
for `create quota`, `create pdb`, `get` and `describe quota`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hypernetes.api.registry.core import resourcequota
from hypernetes.api.schema.printers import Context
from hypernetes.objects import Obj
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenantnodes import NodesWorld, module_world
from tests.support.waiting import wait_for

LIMITED, QUOTED = "acme-a", "acme-b"  # a namespace with LimitRanges, one with a ResourceQuota
TENANT_CONFIGMAPS = 4  # the tenant's own count/configmaps


class World(NodesWorld):
    def __init__(self, api: ApiServerThread) -> None:
        super().__init__(api)
        self.admin = self.world.fresh_tenant(
            "acme", {"quota": {"count/configmaps": str(TENANT_CONFIGMAPS)}}, namespaces=("a", "b", "c")
        )
        self.world.create_user("acme-member", "acme", "member")
        self.start_nodes(("serviceaccount", "resourcequota", "cronjob"))
        self.now = datetime.now(UTC)
        self.cluster.ctl.manager["cronjob"].clock = lambda: self.now  # type: ignore[attr-defined]
        self.http = self.world.http(self.admin)
        self.member = self.world.http("acme-member")

    def post(self, ns: str, plural: str, obj: Obj, who: Any = None) -> Any:
        return (who or self.http).post(f"/api/v1/namespaces/{ns}/{plural}", json=obj)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from module_world(tmp_path_factory, World)


def pod(name: str, *containers: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": list(containers) or [{"name": "c", "image": "busybox"}]},
    }


def container(name: str = "c", requests: Obj | None = None, limits: Obj | None = None) -> Obj:
    res: Obj = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "busybox", "resources": res}


def limitrange(name: str, *items: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": name},
        "spec": {"limits": list(items)},
    }


def forbidden(r: Any) -> str:
    assert r.status_code == 403, r.text
    return str(r.json()["message"])


def test_limitrange_validation_and_defaults(w: World) -> None:
    for body, field, text in (
        (
            limitrange("a", {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}),
            "spec.limits[0].min[cpu]",
            "min value 2 is greater than max value 1",
        ),
        (
            limitrange("b", {"type": "Pod", "default": {"cpu": "1"}}),
            "spec.limits[0].default",
            "may not be specified when `type` is 'Pod'",
        ),
        (
            limitrange("c", {"type": "PersistentVolumeClaim", "max": {"cpu": "1"}}),
            "spec.limits[0].limits",
            "either minimum or maximum storage value is required",
        ),
        (
            limitrange("d", {"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}),
            "spec.limits[0].maxLimitRequestRatio[cpu]",
            "ratio 500m is less than 1",
        ),
        (
            limitrange("e", {"type": "Container", "max": {"cpu": "-1"}}),
            "spec.limits[0].max[cpu]",
            "must be greater than or equal to 0",
        ),
        (
            limitrange("f", {"type": "Container"}, {"type": "Container"}),
            "spec.limits[1].type",
            "Duplicate value",
        ),
        # pkg/apis/core/validation: validateLimitRangeTypeName, validateContainerResourceName,
        # validateResourceName and the no-overcommit rule, each with its own message
        (
            limitrange("g", {"type": "container"}),
            "spec.limits[0].type",
            'Invalid value: "container": must be a standard limit type or fully qualified',
        ),
        (
            limitrange("h", {"type": "Container", "max": {"storage": "1Gi"}}),
            "spec.limits[0].max[storage]",
            'Invalid value: "storage": must be a standard resource for containers',
        ),
        (
            limitrange(
                "i", {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"disk": "1"}}
            ),
            "spec.limits[0].max[disk]",
            'Invalid value: "disk": must be a standard resource type or fully qualified',
        ),
        (
            limitrange(
                "j",
                {
                    "type": "Container",
                    "default": {"example.com/gpu": "2"},
                    "defaultRequest": {"example.com/gpu": "1"},
                },
            ),
            "spec.limits[0].defaultRequest[example.com/gpu]",
            "default value 2 must equal to defaultRequest value 1 in example.com/gpu",
        ),
    ):
        r = w.post(LIMITED, "limitranges", body)
        assert r.status_code == 422, r.text
        causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
        assert field in causes and text in causes[field], causes
    # SetDefaults_LimitRangeItem: default limit = max, default request = default limit, else min
    r = w.post(
        LIMITED,
        "limitranges",
        limitrange("dflt", {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}}),
        w.http,
    )
    assert r.status_code == 201, r.text
    item = r.json()["spec"]["limits"][0]
    assert item["default"] == {"cpu": "1"} and item["defaultRequest"] == {"cpu": "1", "memory": "64Mi"}
    w.http.delete(f"/api/v1/namespaces/{LIMITED}/limitranges/dflt")
    # a member reads them but may not write them (upstream's admin role, not edit)
    assert w.post(LIMITED, "limitranges", limitrange("m", {"type": "Container"}), w.member).status_code == 403
    assert w.member.get(f"/api/v1/namespaces/{LIMITED}/limitranges").status_code == 200


def test_limitranger_defaults_and_bounds(w: World) -> None:
    r = w.post(
        LIMITED,
        "limitranges",
        limitrange(
            "compute",
            {
                "type": "Container",
                "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "200m", "memory": "128Mi"},
                "max": {"cpu": "1", "memory": "512Mi"},
                "min": {"cpu": "100m"},
                "maxLimitRequestRatio": {"cpu": "4"},
            },
            {"type": "Pod", "max": {"memory": "1Gi"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}},
        ),
    )
    assert r.status_code == 201, r.text
    r = w.post(LIMITED, "pods", pod("plain"))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "200m", "memory": "128Mi"},
    }
    assert made["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    )
    assert made["status"]["qosClass"] == "Burstable"
    assert forbidden(w.post(LIMITED, "pods", pod("big", container(limits={"cpu": "2"})))) == (
        'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )
    msg = forbidden(w.post(LIMITED, "pods", pod("small", container(requests={"cpu": "50m"}))))
    assert msg == (
        'pods "small" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, '
        "cpu max limit to request ratio per Container is 4, but provided ratio is 10.000000]"
    ), msg
    # utilerrors.NewAggregate says a message once, however many containers break the same bound
    two = [container(f"c{i}", limits={"cpu": "2"}) for i in range(2)]
    assert forbidden(w.post(LIMITED, "pods", pod("twice", *two))) == (
        'pods "twice" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )
    three = [container(f"c{i}", limits={"memory": "400Mi"}) for i in range(3)]
    assert forbidden(w.post(LIMITED, "pods", pod("wide", *three))) == (
        'pods "wide" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 1200Mi'
    )
    # a default that would put a stated request above its limit: 422, as the pod validation
    r = w.post(LIMITED, "pods", pod("skew", container(requests={"memory": "300Mi"})))
    assert r.status_code == 422 and "must be less than or equal to memory limit of 256Mi" in r.text, r.text
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "huge"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    assert forbidden(w.post(LIMITED, "persistentvolumeclaims", claim)) == (
        'persistentvolumeclaims "huge" is forbidden: maximum storage usage per PersistentVolumeClaim '
        "is 10Gi, but request is 20Gi"
    )


def quota(name: str, hard: Obj, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": name},
        "spec": {"hard": hard, **spec},
    }


def test_resourcequota(w: World) -> None:
    for body, field, text in (
        (quota("neg", {"pods": "-1"}), "spec.hard[pods]", "must be greater than or equal to 0"),
        (quota("frac", {"pods": "1.5"}), "spec.hard[pods]", "must be an integer"),
        (
            quota("scope", {"pods": "1"}, scopes=["BestEffort", "NotBestEffort"]),
            "spec.scopes",
            "conflicting scopes",
        ),
        (
            quota("what", {"pods": "1"}, scopes=["Sometimes"]),
            "spec.scopes",
            'Invalid value: ["Sometimes"]: unsupported scope',
        ),
        # ValidateResourceQuotaResourceName: a typo is no silent no-op
        (
            quota("typo", {"request.cpu": "1"}),
            "spec.hard[request.cpu]",
            "must be a standard resource for quota",
        ),
        # podComputeQuotaResources has no ephemeral-storage; the error names the scopes
        (
            quota("eph", {"ephemeral-storage": "1Gi"}, scopes=["NotTerminating"]),
            "spec.scopes",
            'Invalid value: ["NotTerminating"]: unsupported scope applied to resource',
        ),
    ):
        r = w.post(QUOTED, "resourcequotas", body)
        assert r.status_code == 422, r.text
        causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
        assert field in causes and text in causes[field], causes
    # only standard quota names are held to a scope: object counts and extended resources are not
    r = w.post(QUOTED, "resourcequotas", quota("be", {"count/pods": "3", "pods": "3"}, scopes=["BestEffort"]))
    assert r.status_code == 201, r.text
    # ValidateResourceQuotaUpdate: the scopes are fixed
    r = w.http.patch(
        f"/api/v1/namespaces/{QUOTED}/resourcequotas/be",
        json={"spec": {"scopes": ["NotBestEffort"]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text
    found = [(c["field"], c["message"]) for c in r.json()["details"]["causes"]]
    assert ("spec.scopes", 'Invalid value: ["NotBestEffort"]: field is immutable') in found, found
    w.http.delete(f"/api/v1/namespaces/{QUOTED}/resourcequotas/be")
    hard = {"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi", "count/configmaps": "1"}
    assert w.post(QUOTED, "resourcequotas", quota("q", hard), w.member).status_code == 403
    assert w.post(QUOTED, "resourcequotas", quota("q", hard)).status_code == 201
    assert forbidden(w.post(QUOTED, "pods", pod("bare"))) == (
        'pods "bare" is forbidden: failed quota: q: must specify limits.memory for: c; requests.cpu for: c'
    )
    sized = container(requests={"cpu": "400m"}, limits={"memory": "256Mi"})
    for name in ("p1", "p2"):
        assert w.post(QUOTED, "pods", pod(name, sized)).status_code == 201
    assert forbidden(w.post(QUOTED, "pods", pod("p3", sized))) == (
        'pods "p3" is forbidden: exceeded quota: q, requested: pods=1,requests.cpu=400m, '
        "used: pods=2,requests.cpu=800m, limited: pods=2,requests.cpu=1"
    )
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}, "data": {"k": "v"}}
    assert w.post(QUOTED, "configmaps", cm).status_code == 201
    assert forbidden(w.post(QUOTED, "configmaps", {**cm, "metadata": {"name": "two"}})) == (
        'configmaps "two" is forbidden: exceeded quota: q, requested: count/configmaps=1, '
        "used: count/configmaps=1, limited: count/configmaps=1"
    )
    # the controller keeps status.used
    want = {"pods": "2", "requests.cpu": "800m", "limits.memory": "512Mi", "count/configmaps": "1"}
    wait_for(
        lambda: (
            (w.cluster.ctl.get("v1", "resourcequotas", "q", QUOTED) or {}).get("status", {}).get("used")
            == want
        ),
        what=str(want),
    )
    # a namespace quota never loosens the tenant's: 4 config maps for the whole tenant
    for i in range(TENANT_CONFIGMAPS - 1):
        assert w.post("acme-c", "configmaps", {**cm, "metadata": {"name": f"cm{i}"}}).status_code == 201
    msg = forbidden(w.post("acme-c", "configmaps", {**cm, "metadata": {"name": "over"}}))
    assert 'exceeded quota of tenant "acme": count/configmaps' in msg, msg


def test_quantities_are_stored_canonical(w: World) -> None:
    """As the Go types write a Quantity back: "2000m" is "2", "1024Mi" is "1Gi" (and the
    defaults a LimitRange gets are copied from the canonical max)."""
    item = {"type": "Container", "max": {"cpu": "2000m", "memory": "1024Mi"}}
    r = w.post(LIMITED, "limitranges", limitrange("canon", item))
    assert r.status_code == 201, r.text
    w.http.delete(f"/api/v1/namespaces/{LIMITED}/limitranges/canon")
    got = r.json()["spec"]["limits"][0]
    assert got["max"] == got["default"] == got["defaultRequest"] == {"cpu": "2", "memory": "1Gi"}, got
    r = w.post(QUOTED, "resourcequotas", quota("canon", {"requests.cpu": "1500m", "limits.memory": "2048Mi"}))
    assert r.status_code == 201, r.text
    w.http.delete(f"/api/v1/namespaces/{QUOTED}/resourcequotas/canon")
    assert r.json()["spec"]["hard"] == {"requests.cpu": "1500m", "limits.memory": "2Gi"}, r.json()


def test_tables_as_upstream_printers(w: World) -> None:
    """LimitRange has no printer upstream (the default table); printResourceQuota walks
    status.hard, so a quota the controller has not taken up yet shows no cells."""
    r = w.post(LIMITED, "limitranges", limitrange("tbl", {"type": "Container", "max": {"cpu": "1"}}))
    assert r.status_code == 201, r.text
    table = w.http.get(
        f"/api/v1/namespaces/{LIMITED}/limitranges/tbl",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ).json()
    w.http.delete(f"/api/v1/namespaces/{LIMITED}/limitranges/tbl")
    assert [(c["name"], c["type"], c["format"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", "name"),
        ("Created At", "date", ""),
    ]
    assert table["columnDefinitions"][1]["description"] == (
        "CreationTimestamp is a timestamp representing the server time when this object was created."
    )
    assert table["rows"][0]["cells"] == ["tbl", r.json()["metadata"]["creationTimestamp"]]
    pending = quota("pending", {"pods": "2", "limits.cpu": "1"})
    pending["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    pending["status"] = {"hard": {"pods": "2"}, "used": {"pods": "1"}}
    assert resourcequota.KIND.printer is not None
    cells = resourcequota.KIND.printer.row(pending, Context(datetime(2026, 1, 1, 0, 5, tzinfo=UTC)))
    assert cells == ["pending", "5m", "pods: 1/2", ""], cells


def test_cronjob_jobs_pass_the_tenants_admission(w: World) -> None:
    """The controller creates a tenant's Jobs as an operator, but they are held to the namespace's
    quota and the tenant's pod policy as the tenant's own Jobs would be."""
    ns = "acme-d"
    w.world.create_namespace(w.admin, ns, "acme")
    assert w.post(ns, "resourcequotas", quota("jobs", {"count/jobs.batch": "1"})).status_code == 201
    tmpl = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    cj: Obj = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tmpl}}},
    }
    base = f"/apis/batch/v1/namespaces/{ns}/cronjobs"
    host = {**cj, "metadata": {"name": "host"}}
    host["spec"] = {
        **cj["spec"],
        "jobTemplate": {"spec": {"template": {"spec": {**tmpl["spec"], "hostNetwork": True}}}},
    }
    msg = forbidden(w.http.post(base, json=host))
    assert "spec.jobTemplate.spec.template.spec.hostNetwork" in msg, msg
    r = w.http.post(base, json=cj)
    assert r.status_code == 201, r.text
    born = datetime.fromisoformat(r.json()["metadata"]["creationTimestamp"])
    slot = born.replace(second=0) + timedelta(minutes=5 - born.minute % 5)
    ctl = w.cluster.ctl
    for n, when in enumerate((slot, slot + timedelta(minutes=5))):
        w.now = when + timedelta(seconds=1)
        w.cluster.ctl.loop.call_soon_threadsafe(ctl.manager["cronjob"].resync)  # type: ignore[attr-defined]
        if n == 0:
            wait_for(lambda: len(ctl.items("batch/v1", "jobs", ns)) == 1, what="the first job")
    events = lambda: [  # noqa: E731
        e["message"] for e in ctl.items("v1", "events", ns) if e.get("reason") == "FailedCreate"
    ]
    failed = wait_for(events, what="a FailedCreate event")
    assert "exceeded quota: jobs, requested: count/jobs.batch=1" in failed[0], failed
    assert len(ctl.items("batch/v1", "jobs", ns)) == 1


@pytest.mark.parametrize("version", ["1.32", "1.33"])
def test_kubectl(w: World, version: str) -> None:
    if not have_kubectl(version):
        pytest.fail(f"kubectl {version} is not installed")
    ns, tag = "acme-c", version.replace(".", "")
    k = w.world.kubectl
    proc = k(
        w.admin,
        "create",
        "quota",
        f"kq{tag}",
        "-n",
        ns,
        "--hard=pods=10,services=3,limits.cpu=2",
        version=version,
    )
    assert proc.returncode == 0, proc.stderr
    proc = k(
        w.admin,
        "create",
        "pdb",
        f"kp{tag}",
        "-n",
        ns,
        "--selector=app=x",
        "--min-available=50%",
        version=version,
    )
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: (
            (w.cluster.ctl.get("v1", "resourcequotas", f"kq{tag}", ns) or {}).get("status", {}).get("used")
        )
    )
    described = k(w.admin, "describe", "quota", f"kq{tag}", "-n", ns, version=version).stdout
    lines = [line.split() for line in described.splitlines()]
    assert ["Resource", "Used", "Hard"] in lines, described
    assert (
        ["limits.cpu", "0", "2"] in lines and ["pods", "0", "10"] in lines and ["services", "0", "3"] in lines
    ), described
    out = k(w.admin, "get", "quota", f"kq{tag}", "-n", ns, version=version).stdout.splitlines()
    assert out[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"], out
    assert "pods: 0/10, services: 0/3" in out[1] and out[1].rstrip().endswith("limits.cpu: 0/2"), out
    limits = k(w.admin, "get", "limits", "-n", LIMITED, version=version).stdout.splitlines()
    assert limits[0].split() == ["NAME", "CREATED", "AT"], limits
