"""Reading objects that validation may not have checked yet: a value of the wrong type reads as
empty, so defaults and printers never raise on a malformed body (validation reports it)."""

from __future__ import annotations

from typing import Any

from hypernetes.objects import Obj as JSON


def as_dict(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def dicts(v: Any) -> list[JSON]:
    """The objects of a list, skipping members of another type."""
    return [x for x in as_list(v) if isinstance(x, dict)]
