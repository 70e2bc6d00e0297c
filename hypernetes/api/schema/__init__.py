"""What the API serves, kind by kind: names, scope, verbs, field schema, defaults, validation,
patch merge keys, Table columns and OpenAPI. The HTTP layer (`hypernetes/api/server*.py`)
is generic and asks this package everything kind-specific.

Each kind's own knowledge is its entry in the registry (hypernetes/api/registry: one module per
kind); this package is the generic machinery that reads the entries, the vendored schemas, and
the pieces entries share (pod spec rules and defaults, metadata rules, common printer columns).
KINDS, Kind, kind_for, kind_by_name, group_versions and REVIEW_KINDS are the registry's, served
from here too: resolved on first use, since the registry's entries import this package.

Contract (implemented in the modules of this package; the server relies on these names):

    Kind: the registry entry (hypernetes/api/registry/kind.py): group, version, kind, plural,
        singular, namespaced, short_names, categories, subresources (names described in
        registry/subresources.py), verbs, definition, api_version; and the strategy: defaults,
        validate, validate_update, prepare_create, prepare_update, name_format, printer,
        definitions (OpenAPI of kinds upstream does not define), pod_spec.

    KINDS: tuple[Kind, ...]
    def kind_for(group: str, version: str, plural: str) -> Kind | None
    def kind_by_name(api_version: str, kind: str) -> Kind | None

    @dataclass(frozen=True)
    class FieldError:                  # becomes a Status 422 cause
        type: str                      # "FieldValueRequired", "FieldValueInvalid",
                                       # "FieldValueNotSupported", "FieldValueForbidden", ...
        field: str                     # "spec.containers[0].image"
        message: str

    def validate(kind: Kind, obj: dict, old: dict | None = None) -> list[FieldError]
        # schema check (unknown fields are errors, never dropped), required fields, formats
        # (DNS labels, quantities, ports), immutability on update (old given).
    def apply_defaults(kind: Kind, obj: dict) -> None     # as upstream for the fields we serve
    def apply_patch(kind: Kind, obj: dict, patch: bytes, content_type: str) -> dict
        # application/strategic-merge-patch+json (upstream merge keys),
        # application/merge-patch+json, application/json-patch+json; raises PatchError(msg)
    def table(kind: Kind, objs: list[dict], wide: bool) -> dict     # meta.k8s.io/v1 Table body
    def openapi_v3(kind: Kind) -> dict  and  openapi_v2() -> dict

Implemented as above, plus (all optional for the server):
    validate(..., subresource="status"|"binding"|"scale") skips the spec's update rules.
    FieldError type "FieldValueUnknown" marks fields the schema does not know: kube-apiserver
        answers those with 400 "strict decoding error" under fieldValidation=Strict, warns under
        Warn and drops them under Ignore (drop_unknown_fields(kind, obj)).
    table(kind, objs, wide=True, now=None): pass wide=True always, kubectl hides priority-1
        columns itself (`-o wide` sends the same request). `metadata` is left for the server.
    validate_body(definition, obj): schema check of subresource bodies (Binding, Eviction, Scale).
    openapi_v3(target) takes a Kind or an index path ("api/v1", "apis/apps/v1"; KeyError if not
        served); openapi_v3_index() is GET /openapi/v3; *_bytes() are cached serializations.
Data: data/k8s-v1.32.json (upstream v1.32 schemas, see data/NOTICE and tools/vendor_schemas.py).
"""

from typing import TYPE_CHECKING, Any

from hypernetes.api.schema.defaults import apply_defaults
from hypernetes.api.schema.errors import FieldError, PatchError
from hypernetes.api.schema.openapi import (
    openapi_v2,
    openapi_v2_bytes,
    openapi_v3,
    openapi_v3_bytes,
    openapi_v3_hash,
    openapi_v3_index,
    v3_paths,
)
from hypernetes.api.schema.patch import apply_patch
from hypernetes.api.schema.table import table
from hypernetes.api.schema.validation import drop_unknown_fields, validate, validate_body

if TYPE_CHECKING:
    from hypernetes.api.registry import KINDS, REVIEW_KINDS, Kind, group_versions, kind_by_name, kind_for

_FROM_REGISTRY = frozenset(("KINDS", "REVIEW_KINDS", "Kind", "group_versions", "kind_by_name", "kind_for"))


def __getattr__(name: str) -> Any:
    if name in _FROM_REGISTRY:
        from hypernetes.api import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KINDS",
    "REVIEW_KINDS",
    "FieldError",
    "Kind",
    "PatchError",
    "apply_defaults",
    "apply_patch",
    "drop_unknown_fields",
    "group_versions",
    "kind_by_name",
    "kind_for",
    "openapi_v2",
    "openapi_v2_bytes",
    "openapi_v3",
    "openapi_v3_bytes",
    "openapi_v3_hash",
    "openapi_v3_index",
    "table",
    "v3_paths",
    "validate",
    "validate_body",
]
