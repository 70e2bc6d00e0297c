"""Name conflicts between the CRDs of one group, as upstream's naming controller decides them:
the older CRD (by creation, then name) keeps its names; a newer one claiming a plural, singular,
short name, kind or list kind already in use is not served and gets NamesAccepted=False with the
reason (PluralConflict, SingularConflict, ShortNamesConflict, KindConflict, ListKindConflict)."""

from __future__ import annotations

from collections.abc import Iterable

from hypernetes.objects import Obj


def _d(v: object) -> Obj:
    return v if isinstance(v, dict) else {}


def conflicts(crds: Iterable[Obj]) -> dict[str, tuple[str, str]]:
    """CRD name -> (reason, message) for every CRD whose names are not accepted."""
    order = sorted(
        crds,
        key=lambda c: (
            str(_d(c.get("metadata")).get("creationTimestamp") or ""),
            str(_d(c.get("metadata")).get("name")),
        ),
    )
    resources: dict[str, set[str]] = {}  # group -> plurals, singulars and short names in use
    plurals: dict[str, set[str]] = {}
    kinds: dict[str, set[str]] = {}  # group -> kinds and list kinds in use
    out: dict[str, tuple[str, str]] = {}
    for crd in order:
        spec, names = _d(crd.get("spec")), _d(_d(crd.get("spec")).get("names"))
        group = str(spec.get("group") or "")
        used, used_plurals, used_kinds = (
            resources.setdefault(group, set()),
            plurals.setdefault(group, set()),
            kinds.setdefault(group, set()),
        )
        plural, singular = str(names.get("plural") or ""), str(names.get("singular") or "")
        short = [str(s) for s in names.get("shortNames") or []]
        kind, list_kind = str(names.get("kind") or ""), str(names.get("listKind") or "")
        problem: tuple[str, str] | None = None
        if plural in used:
            problem = ("PluralConflict", f'"{plural}" is already in use')
        elif singular and (singular in used_plurals or singular in used):
            problem = ("SingularConflict", f'"{singular}" is already in use')
        elif any(s in used for s in short):
            problem = ("ShortNamesConflict", f'"{next(s for s in short if s in used)}" is already in use')
        elif kind in used_kinds:
            problem = ("KindConflict", f'"{kind}" is already in use')
        elif list_kind and list_kind in used_kinds:
            problem = ("ListKindConflict", f'"{list_kind}" is already in use')
        if problem is not None:
            out[str(_d(crd.get("metadata")).get("name"))] = problem
            continue
        used.update(x for x in (plural, singular, *short) if x)
        used_plurals.add(plural)
        used_kinds.update(x for x in (kind, list_kind) if x)
    return out
