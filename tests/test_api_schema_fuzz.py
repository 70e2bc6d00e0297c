"""Whatever a client sends, the schema functions answer with errors, never exceptions (an
exception would be a 500)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernetes.api import schema

FIELDS = [
    "metadata",
    "spec",
    "status",
    "containers",
    "name",
    "image",
    "ports",
    "containerPort",
    "env",
    "volumes",
    "resources",
    "limits",
    "requests",
    "selector",
    "template",
    "matchLabels",
    "labels",
    "strategy",
    "rollingUpdate",
    "subsets",
    "addresses",
    "data",
    "type",
    "conditions",
    "initContainers",
    "containerStatuses",
    "state",
    "waiting",
    "terminated",
    "restartCount",
    "phase",
    "valueFrom",
    "readinessProbe",
    "httpGet",
    "tolerations",
    "x",
    "$patch",
    "$setElementOrder/containers",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.floats(allow_nan=False)
    | st.sampled_from(
        ["", "a", "web", "nginx", "100m", "1Gi", "TCP", "Always", "None", "2026-11-25T11:54:50Z", "-", "A_b"]
    )
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4),
    max_leaves=25,
)
objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5)
kinds = st.sampled_from(schema.KINDS)


@settings(max_examples=300, deadline=None)
@given(kinds, objects, st.none() | objects)
def test_validate_and_defaults_never_raise(kind: schema.Kind, obj: dict[str, Any], old: Any) -> None:
    schema.validate(kind, obj, old)
    schema.apply_defaults(kind, obj)
    once = json.dumps(obj, sort_keys=True)
    schema.apply_defaults(kind, obj)
    assert json.dumps(obj, sort_keys=True) == once
    errs = schema.validate(kind, obj, old)
    assert all(e.type and e.message for e in errs)
    table = schema.table(kind, [obj], True)
    assert len(table["rows"][0]["cells"]) == len(table["columnDefinitions"])


@settings(max_examples=300, deadline=None)
@given(
    kinds,
    objects,
    values,
    st.sampled_from(
        [
            "application/strategic-merge-patch+json",
            "application/merge-patch+json",
            "application/json-patch+json",
        ]
    ),
)
def test_patches_raise_only_patch_errors(
    kind: schema.Kind, obj: dict[str, Any], patch: Any, ctype: str
) -> None:
    try:
        out = schema.apply_patch(kind, obj, json.dumps(patch).encode(), ctype)
    except schema.PatchError:
        return
    assert isinstance(out, dict)
