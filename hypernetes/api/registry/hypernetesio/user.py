"""User: a tenant's member, admin or viewer (built-in identity). Its rules are tenant
admission's (auth/admission.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
from hypernetes.api.registry.hypernetesio.openapi import (
    PREFIX,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    list_definition as _list,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    object_definition as _obj,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    string as _s,
)
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.schema.access import as_dict as _d
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
    Column("Tenant", "string", "", "The tenant the user belongs to."),
    Column("Role", "string", "", "admin, member or viewer."),
    Column("Disabled", "boolean", "", "A disabled user cannot log in."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [
        name_of(obj),
        spec.get("tenant") or "",
        spec.get("role") or "",
        bool(spec.get("disabled")),
        age_of(obj, ctx),
    ]


DEFINITIONS: dict[str, JSON] = {
    PREFIX + "User": _obj(
        "User",
        "A user of the built-in identity backend: a member of one tenant with "
        "one role. Passwords are set through the CLI and never appear in the object.",
        "UserSpec",
        None,
    ),
    PREFIX + "UserList": _list("User"),
    PREFIX + "UserSpec": {
        "type": "object",
        "required": ["tenant", "role"],
        "description": "Who the user is.",
        "properties": {
            "tenant": _s("The tenant the user belongs to. Immutable."),
            "role": _s(
                "admin (manages the tenant's users and namespaces), member (reads "
                "and writes workloads) or viewer (reads)."
            ),
            "displayName": _s("A human-readable name."),
            "disabled": {
                "type": "boolean",
                "description": "A disabled user cannot log in; its tokens stop working.",
            },
        },
    },
}


KIND = kind(
    HYPERNETES,
    "User",
    "users",
    namespaced=False,
    short=(),
    subs=(),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
    definitions=DEFINITIONS,
)
