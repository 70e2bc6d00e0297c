"""The kinds a server's CustomResourceDefinitions define: one registry entry (`Kind`) per served
version, built from the CRD as apiextensions-apiserver builds its storage: names and scope, the
status and scale subresources, the schema's pruning, defaulting and validation as the entry's
strategy, the printer columns. `CustomKinds` is the table one API server looks kinds up in
(registry/apiextensions/served.py); `update` swaps it whole, so a request sees one version of it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from hypernetes.api.customresources import columns, naming
from hypernetes.api.customresources import schema as crschema
from hypernetes.api.registry.kind import CRUD, Errs, Kind
from hypernetes.api.schema.errors import FieldError
from hypernetes.api.schema.schemas import FREE_FORM
from hypernetes.api.status import ApiError
from hypernetes.objects import Obj as JSON

# the registry entry's `definition`: free-form for the generic schema walk (structural.py), as the
# CRD's own schema is applied by the entry's hooks; the OpenAPI name is Served.definition
FREE = "io.k8s.apimachinery.pkg.runtime.RawExtension"
assert FREE in FREE_FORM


def _d(v: object) -> JSON:
    return v if isinstance(v, dict) else {}


def openapi_token(group: str) -> str:
    """ "stable.example.com" -> "StableExampleCom", as upstream's operation ids spell a CRD group."""
    return "".join(p[:1].upper() + p[1:] for p in group.replace("-", ".").split(".") if p)


def definition_name(group: str, version: str, kind: str) -> str:
    """Upstream's OpenAPI name of a custom kind: the group reversed ("com.example.stable.v1.CronTab")."""
    return ".".join([*reversed(group.split(".")), version, kind])


@dataclass(frozen=True, eq=False)
class Served:
    """One served version of a CRD: its entry and what the entry's hooks and the scale
    subresource, OpenAPI and the cleanup need beyond it."""

    kind: Kind
    crd_name: str
    schema: JSON
    scale: JSON | None
    definition: str
    deprecated: str | None = None
    versioned: bool = False  # the CRD has several versions: objects may be stored in another


# the request's fieldValidation (requests.py sets it): Strict refuses unknown fields, as upstream;
# Warn (the server's default) and Ignore prune them
FIELD_VALIDATION: ContextVar[str] = ContextVar("field_validation", default="Warn")
# what Warn found, for the response's Warning headers
FIELD_WARNINGS: ContextVar[list[str] | None] = ContextVar("field_warnings", default=None)


def strict(obj: JSON, schema: JSON, kind: str, version: str) -> None:
    found: list[str] = []
    crschema.unknown(schema, obj, "", found, root=True)
    if found:
        fields = ", ".join(f'unknown field "{p.lstrip(".")}"' for p in found)
        raise ApiError(
            400,
            "BadRequest",
            f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}',
        )


def _terminating(obj: JSON) -> None:
    raise ApiError(
        405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating"
    )


def build(crd: JSON) -> list[Served]:
    """The served versions of `crd` (none while it is not Established)."""
    spec, meta = _d(crd.get("spec")), _d(crd.get("metadata"))
    conds = _d(crd.get("status")).get("conditions") or []
    if not any(_d(c).get("type") == "Established" and _d(c).get("status") == "True" for c in conds):
        return []
    group, names = str(spec.get("group") or ""), _d(spec.get("names"))
    namespaced = spec.get("scope") == "Namespaced"
    terminating = bool(meta.get("deletionTimestamp"))
    out = []
    for v in spec.get("versions") or []:
        v = _d(v)
        if v.get("served") is not True:
            continue
        version = str(v.get("name"))
        schema = copy.deepcopy(_d(_d(v.get("schema")).get("openAPIV3Schema")))
        subs = _d(v.get("subresources"))
        scale = _d(subs.get("scale")) if "scale" in subs else None

        def defaults(obj: JSON, schema: JSON = schema, version: str = version) -> None:
            mode = FIELD_VALIDATION.get()
            if mode == "Strict":
                strict(obj, schema, str(names.get("kind") or ""), version)
            elif mode == "Warn" and (warnings := FIELD_WARNINGS.get()) is not None:
                found: list[str] = []
                crschema.unknown(schema, obj, "", found, root=True)
                warnings.extend(f'unknown field "{p.lstrip(".")}"' for p in found)
            crschema.prune(schema, obj, root=True)
            crschema.default(schema, obj)

        def validate(obj: JSON, errs: Errs, schema: JSON = schema) -> None:
            found: list[FieldError] = []
            crschema.validate(schema, obj, "", found, root=True)
            errs.extend(found)

        def drop_status(obj: JSON) -> None:
            obj.pop("status", None)  # upstream's PrepareForCreate with a status subresource

        prepare = _terminating if terminating else (drop_status if "status" in subs else None)
        kind = Kind(
            group,
            version,
            str(names.get("kind") or ""),
            str(names.get("plural") or ""),
            str(names.get("singular") or str(names.get("kind") or "").lower()),
            namespaced,
            tuple(str(s) for s in names.get("shortNames") or ()),
            tuple(str(c) for c in names.get("categories") or ()),
            tuple(s for s in ("status", "scale") if s in subs),
            CRUD,
            FREE,
            openapi_token(group),
            defaults=defaults,
            validate=validate,
            prepare_create=prepare,
            printer=columns.printer(v.get("additionalPrinterColumns")),
        )
        warning = None
        if v.get("deprecated") is True:  # upstream's default warning unless the CRD gives one
            warning = v.get("deprecationWarning") or f"{group}/{version} {kind.kind} is deprecated"
        out.append(
            Served(
                kind,
                str(meta.get("name") or ""),
                schema,
                scale,
                definition_name(group, version, kind.kind),
                str(warning) if warning else None,
                len(spec.get("versions") or []) > 1,
            )
        )
    return out


_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Upstream's version order (apimachinery's CompareKubeAwareVersionStrings), as a sort key:
    GA before beta before alpha, higher numbers first, then other names alphabetically."""
    m = _KUBE_VERSION.fullmatch(version)
    if m is None:
        return (3, 0, 0, version)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[level], -major, -minor, "")


@dataclass
class CustomKinds:
    """The custom kinds one API server serves, looked up as the registry looks up built-ins."""

    served: list[Served] = field(default_factory=list)
    generation: int = 0  # bumped on every change: discovery and OpenAPI caches key on it
    _by_plural: dict[tuple[str, str, str], Served] = field(default_factory=dict)
    _by_name: dict[tuple[str, str], Served] = field(default_factory=dict)
    _by_group_kind: dict[tuple[str, str], Served] = field(default_factory=dict)
    _by_entry: dict[int, Served] = field(default_factory=dict)
    _namespaced: frozenset[tuple[str, str]] = frozenset()
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)  # CRD name -> (reason, message)

    def update(self, crds: Iterable[JSON]) -> None:
        crds = list(crds)
        self.rejected = naming.conflicts(crds)
        accepted = [c for c in crds if _d(c.get("metadata")).get("name") not in self.rejected]
        # versions in upstream's priority order: discovery's preferred version is the first
        served = sorted(
            (s for crd in accepted for s in build(crd)),
            key=lambda s: (s.kind.group, version_priority(s.kind.version)),
        )
        self._by_plural = {(s.kind.group, s.kind.version, s.kind.plural): s for s in served}
        self._by_name = {(s.kind.api_version, s.kind.kind): s for s in served}
        self._by_group_kind = {}
        for s in served:
            self._by_group_kind.setdefault((s.kind.group, s.kind.kind), s)
        self._by_entry = {id(s.kind): s for s in served}
        self._namespaced = frozenset((s.kind.group, s.kind.plural) for s in served if s.kind.namespaced)
        self.served = served
        self.generation += 1

    def kinds(self) -> list[Kind]:
        return [s.kind for s in self.served]

    def info(self, kind: Kind) -> Served | None:
        """The CRD version behind `kind`; None for a built-in kind."""
        return self._by_entry.get(id(kind))

    def namespaced(self, group: str, resource: str) -> bool:
        """Whether (group, resource) is a namespaced custom kind (for the tenant authorizer)."""
        return (group, resource) in self._namespaced

    def kind_for(self, group: str, version: str, plural: str) -> Kind | None:
        s = self._by_plural.get((group, version, plural))
        return s.kind if s else None

    def kind_by_name(self, api_version: str, kind: str) -> Kind | None:
        s = self._by_name.get((api_version, kind))
        return s.kind if s else None

    def kind_in_group(self, group: str, kind: str) -> Kind | None:
        s = self._by_group_kind.get((group, kind))
        return s.kind if s else None
