"""What the API server knows about one kind, in one place: the registry entry.

Upstream keeps this in `pkg/registry/<group>/<kind>/strategy.go` (PrepareForCreate, Validate,
ValidateUpdate, PrepareForUpdate) plus the printers and the OpenAPI of the kind; here one frozen
`Kind` per kind holds all of it, and the generic parts of the server (discovery, OpenAPI, Table,
defaults, validation, CRUD) read nothing else. Shared pieces (pod spec rules, object metadata,
common printer columns) live in `hypernetes.api.schema` and entries call them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypernetes.api.schema import formats
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.printers import Column, Context
from hypernetes.objects import Obj as JSON

if TYPE_CHECKING:
    from hypernetes.store.interface import Store

Errs = list[FieldError]

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

Defaults = Callable[[JSON], None]
Validate = Callable[[JSON, Errs], None]
# (new, old, subresource or None, errs): the update rules, immutability first of all
ValidateUpdate = Callable[[JSON, JSON, "str | None", Errs], None]
PrepareUpdate = Callable[[JSON, JSON], None]
Row = Callable[[JSON, Context], list[Any]]
# upstream's BeginCreate: allocate what the create hands out (a Service's clusterIP) with the
# store's own create-if-absent, just before the object is stored; the returned function is told
# whether it was stored, to release the allocation if not. None: nothing to allocate.
Finish = Callable[[bool], Awaitable[None]]
BeginCreate = Callable[["Store", JSON], Awaitable["Finish | None"]]
RowConditions = Callable[[JSON], list[JSON]]


def no_defaults(obj: JSON) -> None:
    """An entry's `defaults` when upstream defaults nothing beyond apiVersion and kind."""


def schema_only(obj: JSON, errs: Errs) -> None:
    """An entry's `validate` when the schema walk and the metadata rules are the whole check."""


@dataclass(frozen=True)
class Printer:
    """`kubectl get` columns (priority 1: only with -o wide) and the cells of one object."""

    columns: tuple[Column, ...]
    row: Row
    conditions: RowConditions | None = None  # rows[].conditions (upstream: pods only)


@dataclass(frozen=True)
class Group:
    """An API group as the registry serves it: its name, the token of its OpenAPI operation ids
    and tags ("Core", "Apps"), and where its kinds' OpenAPI definitions are named."""

    name: str  # "" for core
    token: str
    definition_prefix: str  # "io.k8s.api.apps" -> io.k8s.api.apps.v1.Deployment

    def definition(self, version: str, kind: str) -> str:
        return f"{self.definition_prefix}.{version}.{kind}"


# eq=False: an entry is a singleton, compared and hashed by identity (its hooks are functions)
@dataclass(frozen=True, eq=False)
class Kind:
    group: str  # "" for core
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # names in registry/subresources.py
    verbs: tuple[str, ...] = CRUD
    definition: str = ""  # the OpenAPI definition, e.g. "io.k8s.api.core.v1.Pod"
    openapi_token: str = ""  # "Core", "Apps": operation ids (listCoreV1NamespacedPod) and tags
    # what upstream's strategy does; None means "not decided" and fails tests/test_api_registry.py
    defaults: Defaults | None = None
    validate: Validate | None = None
    validate_update: ValidateUpdate | None = None  # None: no rules beyond metadata's
    prepare_create: Defaults | None = None  # upstream's PrepareForCreate: what a create forces
    prepare_update: PrepareUpdate | None = None  # upstream's PrepareForUpdate, before validation
    begin_create: BeginCreate | None = None  # allocations made in the create (not on dry run)
    name_format: Callable[[str], list[str]] = formats.dns1123_subdomain
    printer: Printer | None = None
    # where the kind holds a pod spec: "spec" (a Pod), "spec.template.spec" (a workload's
    # template). Tenant admission holds every one to the tenant's pod policy: auth sits below
    # api, so the server hands it these (registry.POD_SPECS) when it builds it (api/tenancy.py).
    pod_spec: str | None = None
    # fieldSelector labels beyond metadata.name and metadata.namespace -> the dotted path of
    # the value they select on (upstream's GetAttrs and field label conversion)
    field_selectors: Mapping[str, str] = field(default_factory=dict)
    # OpenAPI definitions this kind brings (kinds upstream does not define: hypernetes.io)
    definitions: Mapping[str, JSON] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def list_definition(self) -> str:
        return self.definition + "List"

    @property
    def creates_only(self) -> bool:
        """A review: created, answered in the response, never stored."""
        return self.verbs == ("create",)


def kind(
    group: Group,
    name: str,
    plural: str,
    *,
    namespaced: bool = True,
    version: str = "v1",
    short: tuple[str, ...] = (),
    cats: tuple[str, ...] = (),
    subs: tuple[str, ...] = (),
    verbs: tuple[str, ...] = CRUD,
    **strategy: Any,
) -> Kind:
    """An entry of `group`: names and OpenAPI definition derived as upstream derives them."""
    return Kind(
        group.name,
        version,
        name,
        plural,
        name.lower(),
        namespaced,
        short,
        cats,
        subs,
        verbs,
        group.definition(version, name),
        group.token,
        **strategy,
    )
