"""Which resources are the namespaced kinds of CustomResourceDefinitions, for the authorizer:
the API server serving a request sets `NAMESPACED_CUSTOM` (several servers may share a process,
each with its own CRDs); the tenant rules then treat those kinds as a tenant's own workloads."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

# (group, resource) -> whether it is a namespaced custom resource of the serving API server
NAMESPACED_CUSTOM: ContextVar[Callable[[str, str], bool] | None] = ContextVar(
    "namespaced_custom", default=None
)


def namespaced_custom(group: str, resource: str) -> bool:
    check = NAMESPACED_CUSTOM.get()
    return check is not None and check(group, resource)
