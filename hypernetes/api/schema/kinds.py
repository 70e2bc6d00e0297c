"""The kinds the API serves: names, scope, verbs, subresources, and their schema definition."""

from __future__ import annotations

from dataclasses import dataclass

_CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    group: str  # "" for core
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = _CRUD
    definition: str = ""  # the OpenAPI definition name, e.g. "io.k8s.api.core.v1.Pod"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def list_definition(self) -> str:
        return self.definition + "List"


def _k(
    group: str,
    kind: str,
    plural: str,
    namespaced: bool = True,
    *,
    short: tuple[str, ...] = (),
    cats: tuple[str, ...] = (),
    subs: tuple[str, ...] = (),
    verbs: tuple[str, ...] = _CRUD,
) -> Kind:
    if group == "hypernetes.io":
        return Kind(group, "v1", kind, plural, kind.lower(), namespaced, short, cats, subs, verbs,
                    f"io.hypernetes.v1.{kind}")
    pkg = {"": "core", "apps": "apps", "batch": "batch", "coordination.k8s.io": "coordination",
           "authentication.k8s.io": "authentication", "authorization.k8s.io": "authorization",
           "storage.k8s.io": "storage"}[group]
    return Kind(
        group,
        "v1",
        kind,
        plural,
        kind.lower(),
        namespaced,
        short,
        cats,
        subs,
        verbs,
        f"io.k8s.api.{pkg}.v1.{kind}",
    )


KINDS: tuple[Kind, ...] = (
    # namespaces have no deletecollection upstream; status and finalize drive their deletion
    _k(
        "",
        "Namespace",
        "namespaces",
        False,
        short=("ns",),
        subs=("status", "finalize"),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _k(
        "", "Pod", "pods", short=("po",), cats=("all",), subs=("status", "binding", "log", "exec", "eviction")
    ),
    _k("", "Node", "nodes", False, short=("no",), subs=("status",)),
    _k("", "Event", "events", short=("ev",)),
    _k("", "Service", "services", short=("svc",), cats=("all",), subs=("status",)),
    _k("", "Endpoints", "endpoints", short=("ep",)),
    _k("", "ConfigMap", "configmaps", short=("cm",)),
    _k("", "Secret", "secrets"),
    _k("", "ServiceAccount", "serviceaccounts", short=("sa",), subs=("token",)),
    _k("", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), subs=("status",)),
    _k("", "PersistentVolume", "persistentvolumes", False, short=("pv",), subs=("status",)),
    _k("storage.k8s.io", "StorageClass", "storageclasses", False, short=("sc",)),
    _k("coordination.k8s.io", "Lease", "leases"),
    _k("apps", "Deployment", "deployments", short=("deploy",), cats=("all",), subs=("status", "scale")),
    _k("apps", "ReplicaSet", "replicasets", short=("rs",), cats=("all",), subs=("status", "scale")),
    _k("batch", "Job", "jobs", cats=("all",), subs=("status",)),
    _k("hypernetes.io", "Tenant", "tenants", False, subs=("status",)),
    _k("hypernetes.io", "User", "users", False),
    _k("hypernetes.io", "Network", "networks", False, short=("net",), subs=("status",)),
    _k("hypernetes.io", "IPAllocation", "ipallocations", False, short=("ipa",)),
    # reviews: created, answered, never stored
    _k("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", False, verbs=("create",)),
    Kind(
        "authentication.k8s.io",
        "v1beta1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        False,
        verbs=("create",),
        definition="io.k8s.api.authentication.v1beta1.SelfSubjectReview",
    ),
    _k(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        False,
        verbs=("create",),
    ),
    _k("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False, verbs=("create",)),
)
REVIEW_KINDS = frozenset(k for k in KINDS if k.verbs == ("create",))

_BY_PLURAL = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_NAME = {(k.api_version, k.kind): k for k in KINDS}


def kind_for(group: str, version: str, plural: str) -> Kind | None:
    return _BY_PLURAL.get((group, version, plural))


def kind_by_name(api_version: str, kind: str) -> Kind | None:
    return _BY_NAME.get((api_version, kind))


def group_versions() -> list[str]:
    """ "v1", "apps/v1", ... in serving order."""
    return list(dict.fromkeys(k.api_version for k in KINDS))
