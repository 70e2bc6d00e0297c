"""ServiceAccount: an identity for pods; its token subresource issues bound tokens."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)
from hypernetes.objects import Obj as JSON

COLUMNS = (
    NAME,
    Column(
        "Secrets",
        "string",
        "",
        "Secrets is a list of the secrets in the same namespace that pods "
        "running using this ServiceAccount are allowed to use.",
    ),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), len(_l(obj.get("secrets"))), age_of(obj, ctx)]


KIND = kind(
    CORE,
    "ServiceAccount",
    "serviceaccounts",
    short=("sa",),
    subs=("token",),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
)
