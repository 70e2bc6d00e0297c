"""The custom kinds the API server answering this request serves (its CustomResourceDefinitions),
as a context variable: each API server sets it for its requests (several servers may run in one
process, each over its own store), and the registry's lookups consult it after the built-in kinds.
A leaf module: the registry imports it, it imports nothing of the API."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind


class CustomLookup(Protocol):
    def kind_for(self, group: str, version: str, plural: str) -> Kind | None: ...

    def kind_by_name(self, api_version: str, kind: str) -> Kind | None: ...

    def kind_in_group(self, group: str, kind: str) -> Kind | None: ...

    def info(self, kind: Kind) -> object | None:
        """What the CRD says of `kind` beyond its entry; None for a built-in kind."""


SERVED: ContextVar[CustomLookup | None] = ContextVar("custom_kinds", default=None)
