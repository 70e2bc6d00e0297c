"""SelfSubjectReview: who the server takes the caller for (`kubectl auth whoami`); created,
answered, never stored (api/reviews.py). Served as v1 and, for older kubectl, v1beta1."""

from __future__ import annotations

from hypernetes.api.registry.groups import AUTHENTICATION
from hypernetes.api.registry.kind import kind, no_defaults, schema_only

KIND = kind(
    AUTHENTICATION,
    "SelfSubjectReview",
    "selfsubjectreviews",
    namespaced=False,
    verbs=("create",),
    defaults=no_defaults,
    validate=schema_only,
)
KIND_V1BETA1 = kind(
    AUTHENTICATION,
    "SelfSubjectReview",
    "selfsubjectreviews",
    namespaced=False,
    version="v1beta1",
    verbs=("create",),
    defaults=no_defaults,
    validate=schema_only,
)
