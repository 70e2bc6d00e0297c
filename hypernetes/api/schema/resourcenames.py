"""Resource names as upstream's pkg/apis/core/helper classifies them (standard, quota, native,
extended, hugepages) and the name checks pkg/apis/core/validation runs on LimitRange and
ResourceQuota keys, with its messages."""

from __future__ import annotations

from hypernetes.api.schema import errors as E
from hypernetes.api.schema.errors import FieldError
from hypernetes.objects.formats import qualified_name

HUGEPAGES = "hugepages-"
REQUESTS_HUGEPAGES = "requests.hugepages-"
REQUESTS = "requests."
NATIVE_PREFIX = "kubernetes.io/"

STANDARD_CONTAINER = frozenset(("cpu", "memory", "ephemeral-storage"))
STANDARD_LIMIT_RANGE_TYPES = frozenset(("Pod", "Container", "PersistentVolumeClaim"))
# standardQuotaResources
STANDARD_QUOTA = frozenset(
    (
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.storage",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "pods",
        "resourcequotas",
        "services",
        "replicationcontrollers",
        "secrets",
        "persistentvolumeclaims",
        "configmaps",
        "services.nodeports",
        "services.loadbalancers",
    )
)
# standardResources: the quota names but requests.storage's plain `storage` too
STANDARD = STANDARD_QUOTA | {"storage"}
INTEGER = frozenset(
    (
        "pods",
        "resourcequotas",
        "services",
        "replicationcontrollers",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    )
)
# what a quota scope may limit (podObjectCountQuotaResources, podComputeQuotaResources)
POD_COUNT = frozenset(("pods",))
POD_COMPUTE = frozenset(("cpu", "memory", "limits.cpu", "limits.memory", "requests.cpu", "requests.memory"))


def is_hugepages(name: str) -> bool:
    return name.startswith(HUGEPAGES)


def is_quota_hugepages(name: str) -> bool:
    return name.startswith(HUGEPAGES) or name.startswith(REQUESTS_HUGEPAGES)


def is_native(name: str) -> bool:
    """Unprefixed names and those in *kubernetes.io/."""
    return "/" not in name or NATIVE_PREFIX in name


def is_extended(name: str) -> bool:
    """IsExtendedResourceName: not native, no "requests." prefix, valid as "requests.<name>"."""
    if is_native(name) or name.startswith(REQUESTS):
        return False
    return not qualified_name(REQUESTS + name)


def is_standard_container(name: str) -> bool:
    return name in STANDARD_CONTAINER or is_hugepages(name)


def is_standard(name: str) -> bool:
    return name in STANDARD or is_quota_hugepages(name)


def is_standard_quota(name: str) -> bool:
    return name in STANDARD_QUOTA or is_quota_hugepages(name)


def is_integer(name: str) -> bool:
    return name in INTEGER or is_extended(name)


def is_overcommit_allowed(name: str) -> bool:
    return is_native(name) and not is_hugepages(name)


def scope_allows(scope: str, name: str) -> bool:
    """IsResourceQuotaScopeValidForResource."""
    if scope in (
        "Terminating",
        "NotTerminating",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
    ):
        return name in POD_COUNT or name in POD_COMPUTE
    if scope == "BestEffort":
        return name in POD_COUNT
    return True


def resource_name(name: str, path: str) -> list[FieldError]:
    """validateResourceName."""
    errs = [E.invalid(path, name, msg) for msg in qualified_name(name)]
    if not errs and "/" not in name and not is_standard(name):
        errs.append(E.invalid(path, name, "must be a standard resource type or fully qualified"))
    return errs


def container_resource_name(name: str, path: str) -> list[FieldError]:
    """validateContainerResourceName."""
    errs = resource_name(name, path)
    if "/" not in name:
        if not is_standard_container(name):
            errs.append(E.invalid(path, name, "must be a standard resource for containers"))
    elif not is_native(name) and not is_extended(name):
        errs.append(E.invalid(path, name, "doesn't follow extended resource name standard"))
    return errs


def quota_resource_name(name: str, path: str) -> list[FieldError]:
    """ValidateResourceQuotaResourceName."""
    errs = resource_name(name, path)
    if "/" not in name and not is_standard_quota(name):
        errs.append(E.invalid(path, name, "must be a standard resource for quota"))
    return errs
