"""Label and field selectors (`labelSelector=`, `fieldSelector=` query parameters).

Grammar as upstream: requirements joined by commas (AND). Labels support `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` and `!k`; fields support `=`, `==` and `!=` on the fields a
kind's registry entry declares selectable (upstream's field label conversion), anything else is
a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hypernetes.api import registry
from hypernetes.api.status import bad_request
from hypernetes.objects import Obj


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as upstream
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*(.*?)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _value(v: str, text: str) -> str:
    if not _VALUE_RE.match(v) or len(v) > 63:
        raise bad_request(f'unable to parse requirement: invalid label value: "{v}" in "{text}"')
    return v


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for part in _split_top(text):
        if not part.strip():
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        if m := _SET_RE.match(part):
            values = frozenset(_value(v.strip(), text) for v in m.group(4).split(","))
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _EQ_RE.match(part):
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, frozenset([_value(m.group(4), text)])))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
        else:
            raise bad_request(f"unable to parse requirement: {part!r} in label selector {text!r}")
    return LabelSelector(tuple(reqs))


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
            raise bad_request(f'field label not supported: {field}')
        reqs.append(FieldRequirement(field, op == "!=", value, getter))
    return FieldSelector(tuple(reqs))


@dataclass(frozen=True)
class Selectors:
    labels: LabelSelector
    fields: FieldSelector
    # the authorizer's limit on what this caller may see (a tenant's namespaces, a node's pods)
    scope: Callable[[Obj], bool] | None = None

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return (self.labels.matches(meta.get("labels")) and self.fields.matches(obj)
                and (self.scope is None or self.scope(obj)))

    @property
    def empty(self) -> bool:
        return self.labels.empty and self.fields.empty and self.scope is None
