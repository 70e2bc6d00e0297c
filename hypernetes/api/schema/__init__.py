"""What the API serves, kind by kind: names, scope, verbs, field schema, defaults, validation,
patch merge keys, Table columns and OpenAPI. The HTTP layer (`hypernetes/api/server*.py`)
is generic and asks this package everything kind-specific.

Contract (implemented in the modules of this package; the server relies on these names):

    @dataclass(frozen=True)
    class Kind:
        group: str            # "" for core
        version: str          # "v1"
        kind: str             # "Pod"
        plural: str           # "pods"
        singular: str         # "pod"
        namespaced: bool
        short_names: tuple[str, ...]
        categories: tuple[str, ...]      # ("all",) for pods, services, deployments...
        subresources: tuple[str, ...]    # ("status", "binding", "log", "exec") ...
        verbs: tuple[str, ...]
        @property api_version -> "v1" | "apps/v1"

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
"""
