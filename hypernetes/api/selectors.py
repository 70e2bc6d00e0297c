"""Label and field selectors (`labelSelector=`, `fieldSelector=` query parameters).

Grammar as upstream: requirements joined by commas (AND). Labels support `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` and `!k`; fields support `=`, `==` and `!=` on the fields a
kind's registry entry declares selectable (upstream's field label conversion), anything else is
a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypernetes.api import registry
from hypernetes.api.status import bad_request
from hypernetes.objects import Obj
from hypernetes.objects.selectors import Selector, SelectorError, parse_selector


def parse_label_selector(text: str | None) -> Selector:
    """The `labelSelector=` parameter, read by the object model's parser (upstream's
    labels.Parse); a 400 with upstream's message if it does not parse."""
    try:
        return parse_selector(text)
    except SelectorError as e:
        raise bad_request(str(e)) from None


# -- fields ------------------------------------------------------------------------------------


def _path(*keys: str) -> Callable[[Obj], Any]:
    def get(obj: Obj) -> Any:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(k)
        return cur

    return get


_COMMON = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace")}


def _as_field(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    getter: Callable[[Obj], Any]

    def matches(self, obj: Obj) -> bool:
        return (_as_field(self.getter(obj)) == self.value) != self.negate


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Obj) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def exact_name(self) -> str | None:
        """The name when the selector pins `metadata.name=` (lets a list become a get)."""
        for r in self.requirements:
            if r.field == "metadata.name" and not r.negate:
                return r.value
        return None


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_field_selector(text: str | None, group: str, kind: str) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    entry = registry.kind_in_group(group, kind)
    declared = entry.field_selectors if entry is not None else {}
    fields = {**_COMMON, **{label: _path(*path.split(".")) for label, path in declared.items()}}
    reqs: list[FieldRequirement] = []
    for part in re.split(r"(?<!\\),", text):
        m = re.match(r"^\s*([^=!\s]+)\s*(==|!=|=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.group(1), m.group(2), _unescape(m.group(3).strip())
        getter = fields.get(field)
        if getter is None:
            raise bad_request(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, op == "!=", value, getter))
    return FieldSelector(tuple(reqs))


@dataclass(frozen=True)
class Selectors:
    labels: Selector
    fields: FieldSelector
    # the authorizer's limit on what this caller may see (a tenant's namespaces, a node's pods)
    scope: Callable[[Obj], bool] | None = None

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return (
            self.labels.matches(meta.get("labels"))
            and self.fields.matches(obj)
            and (self.scope is None or self.scope(obj))
        )

    @property
    def empty(self) -> bool:
        return self.labels.empty and self.fields.empty and self.scope is None
