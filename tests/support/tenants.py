"""A multi-tenant world for isolation tests: tenants, users of every role, their namespaces with
one object of every tenant kind, nodes with pods bound to them, and per-caller clients (the
official Python client, raw HTTP, the real kubectl).

    world = TenantWorld.build(ApiServerThread(tmp, tenancy=True).start())
    world.py("globex-admin").verb(KIND["pods"], "get", "acme-a")   # (403, Status) through CoreV1Api
    world.http("globex-admin").get("/api/v1/pods")                 # raw httpx
    world.kubectl("globex-admin", "get", "pods", "-A")              # the real kubectl, --token=
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import kubernetes.client as kc

from hypernetes.api.audit import AuditLog
from hypernetes.objects import Obj as JSON
from tests.support.apiserver import ApiServerThread
from tests.support.waiting import wait_for

IMAGE = "registry.invalid/busybox:1"
MERGE = {"Content-Type": "application/merge-patch+json"}
USERS_PATH = "/apis/hypernetes.io/v1/users"
TENANTS_PATH = "/apis/hypernetes.io/v1/tenants"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}

# tenant -> its users (name -> role); the namespaces each tenant's admin creates
USERS: dict[str, dict[str, str]] = {
    "acme": {"acme-admin": "admin", "acme-member": "member", "acme-viewer": "viewer"},
    "globex": {"globex-admin": "admin", "globex-member": "member"},
}
NAMESPACES: dict[str, tuple[str, ...]] = {"acme": ("acme-a", "acme-b"), "globex": ("globex-a",)}


@dataclass(frozen=True)
class Kind:
    """A namespaced tenant kind as the official client names it."""

    resource: str  # plural, as in URLs
    group_version: str  # "v1", "apps/v1"
    kind: str
    api: str  # kubernetes.client class, e.g. CoreV1Api
    snake: str  # method suffix, e.g. "config_map" in read_namespaced_config_map

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{self.resource}" + (f"/{name}" if name else "")

    def body(self, name: str, namespace: str, labels: dict[str, str] | None = None) -> JSON:
        """A minimal valid object of this kind."""
        meta: JSON = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        obj: JSON = {"apiVersion": self.group_version, "kind": self.kind, "metadata": meta}
        pod_spec: JSON = {"containers": [{"name": "c", "image": IMAGE}]}
        template: JSON = {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
        match self.kind:
            case "Pod":
                obj["spec"] = pod_spec
            case "Service":
                obj["spec"] = {"selector": {"app": name}, "ports": [{"port": 80}]}
            case "ConfigMap":
                obj["data"] = {"k": "v"}
            case "Secret":
                obj["stringData"] = {"password": f"secret-of-{namespace}"}
            case "Deployment" | "ReplicaSet":
                selector = {"matchLabels": {"app": name}}
                obj["spec"] = {"replicas": 0, "selector": selector, "template": template}
            case "StatefulSet":
                selector = {"matchLabels": {"app": name}}
                obj["spec"] = {"replicas": 0, "serviceName": name, "selector": selector, "template": template}
            case "ReplicationController":
                obj["spec"] = {"replicas": 0, "selector": {"app": name}, "template": template}
            case "Job":
                obj["spec"] = {"template": {**template, "spec": {**pod_spec, "restartPolicy": "Never"}}}
            case "Event":
                obj.update(
                    involvedObject={"kind": "Pod", "name": "web", "namespace": namespace},
                    reason="Probe",
                    message="hello",
                    type="Normal",
                )
            case "Lease":
                obj["spec"] = {"holderIdentity": name}
            case "PersistentVolumeClaim":
                requests = {"storage": "1Gi"}
                obj["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": requests}}
        return obj


KINDS: tuple[Kind, ...] = (
    Kind("pods", "v1", "Pod", "CoreV1Api", "pod"),
    Kind("services", "v1", "Service", "CoreV1Api", "service"),
    Kind("endpoints", "v1", "Endpoints", "CoreV1Api", "endpoints"),
    Kind("configmaps", "v1", "ConfigMap", "CoreV1Api", "config_map"),
    Kind("secrets", "v1", "Secret", "CoreV1Api", "secret"),
    Kind("serviceaccounts", "v1", "ServiceAccount", "CoreV1Api", "service_account"),
    Kind("persistentvolumeclaims", "v1", "PersistentVolumeClaim", "CoreV1Api", "persistent_volume_claim"),
    Kind("deployments", "apps/v1", "Deployment", "AppsV1Api", "deployment"),
    Kind("replicasets", "apps/v1", "ReplicaSet", "AppsV1Api", "replica_set"),
    Kind("statefulsets", "apps/v1", "StatefulSet", "AppsV1Api", "stateful_set"),
    Kind("replicationcontrollers", "v1", "ReplicationController", "CoreV1Api", "replication_controller"),
    Kind("jobs", "batch/v1", "Job", "BatchV1Api", "job"),
    Kind("events", "v1", "Event", "CoreV1Api", "event"),
    Kind("leases", "coordination.k8s.io/v1", "Lease", "CoordinationV1Api", "lease"),
)
KIND = {k.resource: k for k in KINDS}
OBJECT = "web"  # the name of the object of every kind in every tenant namespace
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


# -- answers -------------------------------------------------------------------------------------


def status_of(call: Callable[[], Any], *, stream: bool = False) -> tuple[int, JSON]:
    """Run an official-client call made with `_preload_content=False`: (HTTP status, JSON body).
    A `stream` (a watch) that was accepted is closed unread: its body is {}."""
    try:
        resp = call()
    except kc.ApiException as e:
        return int(e.status), _json(e.body)
    if stream:
        resp.close()
        return int(resp.status), {}
    try:
        return int(resp.status), _json(resp.data)
    finally:
        resp.release_conn()


def _json(data: Any) -> JSON:
    try:
        out = json.loads(data or b"{}")
    except ValueError:
        return {"raw": data}
    return out if isinstance(out, dict) else {"value": out}


def assert_forbidden(code: int, body: JSON, who: str = "") -> None:
    """403 as a Status (naming the caller, if given) that carries nothing of any object."""
    assert code == 403, f"expected 403, got {code}: {body}"
    assert (body.get("kind"), body.get("reason"), body.get("code")) == ("Status", "Forbidden", 403), body
    if who:
        assert who in body.get("message", ""), body
    assert "items" not in body and "spec" not in body and "secret-of-" not in json.dumps(body), body


def assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, f"{r.status_code}: {r.text}"
    body = r.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401), body


def kubectl_forbidden(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0, f"kubectl succeeded: {proc.stdout}"
    assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr, proc.stderr


def dry(path: str) -> str:
    return path + "?dryRun=All"


def user_object(name: str, tenant: str, role: str, **spec: Any) -> JSON:
    return {
        "apiVersion": "hypernetes.io/v1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {"tenant": tenant, "role": role, **spec},
    }


def pod_with(name: str, namespace: str, memory: str | None = None, status: JSON | None = None) -> JSON:
    pod = KIND["pods"].body(name, namespace)
    if memory:
        pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": memory}}
    if status is not None:
        pod["status"] = status
    return pod


def qualified(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def named(name: str) -> Callable[[JSON], bool]:
    return lambda o: (o.get("metadata") or {}).get("name") == name


# -- tokens --------------------------------------------------------------------------------------


def jwt_parts(token: str) -> tuple[JSON, JSON, str]:
    """(header, payload, signature) of a compact JWT."""
    h, p, s = token.split(".")
    return _unb64(h), _unb64(p), s


def _unb64(text: str) -> JSON:
    return dict(json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def reencode(token: str, mutate: Callable[[JSON, JSON], None], sig: str | None = None) -> str:
    """`token` with its header and payload changed by `mutate`, re-encoded, with its own signature
    (or `sig`)."""
    header, payload, s = jwt_parts(token)
    mutate(header, payload)
    h, p = (b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload))
    return f"{h}.{p}.{s if sig is None else sig}"


# -- watches -------------------------------------------------------------------------------------


def watch_lines(resp: Any, until: Callable[[JSON], bool], timeout: float = 10.0) -> Iterator[JSON]:
    """Events of a raw watch response (urllib3, `_preload_content=False`) until one satisfies
    `until` (included) or the server ends the watch."""
    deadline = time.monotonic() + timeout
    buf = b""
    for chunk in resp.stream(1024, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                ev = json.loads(line)
                yield ev
                if until(ev):
                    return
        if time.monotonic() > deadline:
            raise AssertionError("watch: the awaited event did not arrive")


def raw_watch(resp: Any, act: Callable[[], None], is_sentinel: Callable[[JSON], bool]) -> list[JSON]:
    """The events of watch `resp` (already started, so its start revision is fixed) around `act()`,
    up to the first whose object `is_sentinel`."""
    try:
        act()
        return list(watch_lines(resp, lambda ev: is_sentinel(ev["object"])))
    finally:
        resp.close()


class LineReader:
    """The lines a process prints, read in a thread, so a test can wait for one with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next_line(self, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
        """The first line from now on that satisfies `pred`; every line read is kept in `lines`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout}s; read: {self.lines}") from None
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"the process ended; read: {self.lines}; stderr: {err}")
            self.lines.append(line)
            if pred(line):
                return line

    def stop(self) -> str:
        """End the process; what it printed on stderr."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._thread.join(5)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return err


# -- callers -------------------------------------------------------------------------------------


class PyCaller:
    """The official Python client with one caller's bearer token."""

    def __init__(self, api: ApiServerThread, token: str) -> None:
        cfg = kc.Configuration()
        cfg.host = api.url
        cfg.ssl_ca_cert = str(api.ca.ca_cert)
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        self.client: Any = kc.ApiClient(cfg)
        # bodies are plain dicts: typed as Any, so that what the server receives is what a test wrote
        self.core: Any = kc.CoreV1Api(self.client)
        self.apps: Any = kc.AppsV1Api(self.client)
        self.custom: Any = kc.CustomObjectsApi(self.client)
        self._apis: dict[str, Any] = {}

    def api(self, name: str) -> Any:
        if name not in self._apis:
            self._apis[name] = getattr(kc, name)(self.client)
        return self._apis[name]

    def verb(
        self,
        kind: Kind,
        verb: str,
        namespace: str | None,
        name: str = OBJECT,
        *,
        body: JSON | None = None,
        dry_run: bool = False,
    ) -> tuple[int, JSON]:
        """`verb` on `kind` through its typed API (read_namespaced_pod, ...): (status, body).
        `namespace` None: across all namespaces (list and watch)."""
        s = kind.snake

        def method(prefix: str, suffix: str = "") -> Any:
            return getattr(self.api(kind.api), f"{prefix}{s}{suffix}")

        opts: JSON = {"_preload_content": False}
        if dry_run:
            opts["dry_run"] = "All"
        new = body or kind.body(name, namespace or "", {"probe": "1"})
        patch = body or {"metadata": {"labels": {"probe": "patched"}}}
        many: Callable[..., Any] = (
            (lambda **kw: method("list_namespaced_")(namespace, **kw))
            if namespace
            else (lambda **kw: method("list_", "_for_all_namespaces")(**kw))
        )
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: method("read_namespaced_")(name, namespace, **opts),
            "list": lambda: many(**opts),
            "watch": lambda: many(watch=True, timeout_seconds=1, **opts),
            "create": lambda: method("create_namespaced_")(namespace, new, **opts),
            "update": lambda: method("replace_namespaced_")(name, namespace, new, **opts),
            "patch": lambda: method("patch_namespaced_")(name, namespace, patch, **opts),
            "delete": lambda: method("delete_namespaced_")(name, namespace, **opts),
            "deletecollection": lambda: method("delete_collection_namespaced_")(namespace, **opts),
        }
        return status_of(calls[verb], stream=verb == "watch")

    def close(self) -> None:
        self.client.close()


@dataclass
class TenantWorld:
    api: ApiServerThread
    tokens: dict[str, str] = field(default_factory=dict)  # caller name -> bearer token
    users: dict[str, JSON] = field(default_factory=dict)  # user name -> User object
    baseline: dict[str, str] = field(default_factory=dict)  # a snapshot the tests compare with
    _py: dict[str, PyCaller] = field(default_factory=dict)
    _http: dict[str, httpx.Client] = field(default_factory=dict)

    def token(self, who: str) -> str:
        return self.api.token if who == "operator" else self.tokens[who]

    def py(self, who: str) -> PyCaller:
        """The official client as `who` (a user name, "node-a", "operator", ...)."""
        if who not in self._py:
            self._py[who] = PyCaller(self.api, self.token(who))
        return self._py[who]

    def http(self, who: str | None = None, token: str | None = None) -> httpx.Client:
        """Raw HTTP as `who` (or with `token`; neither: no Authorization header)."""
        tok = token if token is not None else (self.token(who) if who else None)
        key = f"{who}:{tok}"
        if key not in self._http:
            headers = {"Authorization": f"Bearer {tok}"} if tok else {}
            self._http[key] = httpx.Client(
                base_url=self.api.url, verify=str(self.api.ca.ca_cert), headers=headers, timeout=30
            )
        return self._http[key]

    def kubectl(
        self, who: str, *args: str, version: str = "1.32", input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The real kubectl as `who` (`--token=` overrides the admin kubeconfig's token)."""
        return self.api.kubectl(
            f"--token={self.token(who)}", *args, version=version, input=input, check=False, timeout=timeout
        )

    def kubectl_popen(self, who: str, *args: str, version: str = "1.32") -> subprocess.Popen[str]:
        return self.api.kubectl_popen(f"--token={self.token(who)}", *args, version=version)

    def works(self, token: str) -> bool:
        """Is `token` accepted (a whoami succeeds)? A refusal must be a 401 Status."""
        r = self.http(token=token).post(WHOAMI, json=REVIEW)
        if r.status_code != 201:
            assert_unauthorized(r)
        return r.status_code == 201

    def close(self) -> None:
        for p in self._py.values():
            p.close()
        for h in self._http.values():
            h.close()

    # -- the operator's view and actions -------------------------------------------------------

    def op(self, method: str, path: str, body: JSON | None = None, **kw: Any) -> JSON:
        """An operator request that must succeed; its JSON answer."""
        r = self.http("operator").request(method, path, json=body, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return dict(r.json())

    def names(self, who: str, path: str, **params: Any) -> set[str]:
        """`ns/name` (or `name`) of every item a list at `path` shows `who`."""
        r = self.http(who).get(path, params=params)
        assert r.status_code == 200, f"GET {path} as {who}: {r.status_code} {r.text}"
        return {qualified(o) for o in r.json()["items"]}

    def owned(self, tenant: str) -> set[str]:
        """The namespaces `tenant` owns, by their labels."""
        return {
            o["metadata"]["name"]
            for o in self.op("GET", "/api/v1/namespaces")["items"]
            if (o["metadata"].get("labels") or {}).get("hypernetes.io/tenant") == tenant
        }

    def visible(self, kind: Kind, tenant: str) -> set[str]:
        """The objects of `kind` that lie in `tenant`'s namespaces: all that its users may see."""
        mine = self.owned(tenant)
        return {n for n in self.names("operator", kind.path(None)) if n.split("/")[0] in mine}

    def snapshot(self) -> dict[str, str]:
        """The resourceVersion of every object of a tenant kind, namespace, tenant and user."""
        paths = [k.path(None) for k in KINDS] + ["/api/v1/namespaces", TENANTS_PATH, USERS_PATH]
        return {
            f"{path}:{qualified(o)}": o["metadata"]["resourceVersion"]
            for path in paths
            for o in self.op("GET", path)["items"]
        }

    def audit(self) -> list[JSON]:
        """The entries of the server's audit trail (tmp/audit.log and its per-tenant files)."""
        return AuditLog.read(self.api.workdir / "audit.log")

    def create_tenant(self, name: str, spec: JSON | None = None) -> JSON:
        return self.op(
            "POST",
            TENANTS_PATH,
            {
                "apiVersion": "hypernetes.io/v1",
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": spec or {},
            },
        )

    def create_user(self, name: str, tenant: str, role: str) -> str:
        """Create User `name` (as the operator) and return a token for it that already works."""
        self.users[name] = self.op("POST", USERS_PATH, user_object(name, tenant, role))
        self.tokens[name] = self.user_token(name)
        return self.tokens[name]

    def user_token(self, name: str, ttl: float = 3600) -> str:
        """A fresh token for user `name`, once the server recognises it (its user directory
        follows the store through a watch)."""
        user = self.op("GET", f"{USERS_PATH}/{name}")
        assert self.api.tenancy is not None
        token = self.api.tenancy.issuer.issue_user(user, ttl).token
        wait_for(
            lambda: self.http(token=token).post(WHOAMI, json=REVIEW).status_code == 201,
            interval=0.02,
            what=f"token of {name} accepted",
        )
        return token

    def node_token(self, node: str) -> str:
        assert self.api.tenancy is not None
        self.tokens[node] = self.api.tenancy.issuer.issue_node(node).token
        return self.tokens[node]

    def set_password(self, user: str, password: str) -> None:
        """(As the operator; every token of `user` issued until now dies.)"""
        self.op("PUT", f"/hypernetes/v1/users/{user}/password", {"password": password})

    def login(self, tenant: str, user: str, password: str) -> httpx.Response:
        return self.http().post(
            "/hypernetes/v1/login", json={"tenant": tenant, "user": user, "password": password}
        )

    def create_namespace(self, admin: str, namespace: str, tenant: str) -> None:
        r = self.http(admin).post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
        assert r.status_code == 201, r.text
        assert self.api.tenancy is not None
        d = self.api.tenancy.directory
        wait_for(
            lambda: d.namespace_owner(namespace) == tenant,
            interval=0.02,
            what=f"{namespace} owned by {tenant}",
        )

    def fresh_tenant(self, name: str, spec: JSON | None = None, namespaces: tuple[str, ...] = ("a",)) -> str:
        """A new tenant `name` with an admin user `NAME-admin` who creates namespaces `NAME-SUFFIX`;
        the admin's user name."""
        self.create_tenant(name, spec)
        admin = f"{name}-admin"
        self.create_user(admin, name, "admin")
        for suffix in namespaces:
            self.create_namespace(admin, f"{name}-{suffix}", name)
        return admin

    def create_sa(self, who: str, namespace: str, name: str, role: str | None) -> JSON:
        """A service account made by `who`, with `role` in its hypernetes.io/role annotation."""
        meta: JSON = {"name": name}
        if role is not None:
            meta["annotations"] = {"hypernetes.io/role": role}
        r = self.http(who).post(KIND["serviceaccounts"].path(namespace), json={"metadata": meta})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def sa_token(self, who: str, namespace: str, sa: str, pod: JSON | None = None) -> str:
        """A TokenRequest by `who` for account `sa` (bound to `pod`, if given)."""
        spec: JSON = {"expirationSeconds": 600}
        if pod is not None:
            spec["boundObjectRef"] = {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"
        r = self.http(who).post(path, json={"spec": spec})
        assert r.status_code == 201, r.text
        return str(r.json()["status"]["token"])

    def bound_pod(
        self, who: str, namespace: str, name: str, node: str, *, configmap: str = "", secret: str = ""
    ) -> JSON:
        """A pod created by `who` and bound to `node` by the operator (as the scheduler binds)."""
        pod = KIND["pods"].body(name, namespace)
        spec = pod["spec"]
        if configmap:
            spec["containers"][0]["envFrom"] = [{"configMapRef": {"name": configmap}}]
        if secret:
            spec["volumes"] = [{"name": "s", "secret": {"secretName": secret}}]
            spec["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]
        r = self.http(who).post(KIND["pods"].path(namespace), json=pod)
        assert r.status_code == 201, r.text
        self.op(
            "POST",
            KIND["pods"].path(namespace, name) + "/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
        )
        return self.op("GET", KIND["pods"].path(namespace, name))

    # -- the world -----------------------------------------------------------------------------

    @classmethod
    def build(cls, api: ApiServerThread) -> TenantWorld:
        """Tenants acme and globex, their users and namespaces, one object of every kind in each;
        nodes node-a (running acme's on-node-a, which uses used-cm and used-secret) and node-b
        (running globex's on-node-b), their Leases and node tokens."""
        w = cls(api)
        for tenant, users in USERS.items():
            w.create_tenant(tenant, {"displayName": tenant.title()})
            for name, role in users.items():
                w.create_user(name, tenant, role)
        for tenant, namespaces in NAMESPACES.items():
            for ns in namespaces:
                w.create_namespace(f"{tenant}-admin", ns, tenant)
                # the account pods run as (upstream's service-account controller makes it)
                w.op("POST", KIND["serviceaccounts"].path(ns), {"metadata": {"name": "default"}})
                for kind in KINDS:
                    body = kind.body(OBJECT, ns, {"app": OBJECT, "hypernetes.io/tenant": tenant})
                    r = w.http(f"{tenant}-member").post(kind.path(ns), json=body)
                    assert r.status_code == 201, f"{kind.resource} in {ns}: {r.text}"
        for node in ("node-a", "node-b"):
            w.op("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
            w.op(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": node},
                },
            )
            w.node_token(node)
        for resource, name in (
            ("configmaps", "used-cm"),
            ("configmaps", "unused-cm"),
            ("secrets", "used-secret"),
            ("secrets", "unused-secret"),
        ):
            k = KIND[resource]
            r = w.http("acme-member").post(k.path("acme-a"), json=k.body(name, "acme-a"))
            assert r.status_code == 201, r.text
        w.bound_pod("acme-member", "acme-a", "on-node-a", "node-a", configmap="used-cm", secret="used-secret")
        w.bound_pod("globex-member", "globex-a", "on-node-b", "node-b")
        w.baseline = w.snapshot()
        return w
