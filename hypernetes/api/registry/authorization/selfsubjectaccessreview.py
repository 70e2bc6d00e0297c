"""SelfSubjectAccessReview: whether the caller may do one thing (`kubectl auth can-i`); created,
answered, never stored (api/reviews.py)."""

from __future__ import annotations

from hypernetes.api.registry.groups import AUTHORIZATION
from hypernetes.api.registry.kind import kind, no_defaults, schema_only

KIND = kind(
    AUTHORIZATION,
    "SelfSubjectAccessReview",
    "selfsubjectaccessreviews",
    namespaced=False,
    verbs=("create",),
    defaults=no_defaults,
    validate=schema_only,
)
