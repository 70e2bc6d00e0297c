"""Conversion between a CRD's versions, as upstream's `None` strategy does it: only apiVersion
changes. An object is stored in the version it was written through; reads, watches and updates
through another served version see it in theirs (crud.py asks `converter` for each request)."""

from __future__ import annotations

from collections.abc import Callable

from hypernetes.api.customresources.kinds import Served
from hypernetes.api.registry.apiextensions.served import SERVED
from hypernetes.api.registry.kind import Kind
from hypernetes.objects import Obj


def converter(kind: Kind) -> Callable[[Obj], Obj] | None:
    """How to show an object of `kind` in the version the request addresses; None when there is
    nothing to convert (a built-in kind, or a CRD with one version)."""
    custom = SERVED.get()
    served = custom.info(kind) if custom is not None else None
    if not isinstance(served, Served) or not served.versioned:
        return None
    api_version = kind.api_version

    def convert(obj: Obj) -> Obj:
        if obj.get("apiVersion") in (None, api_version):
            return obj
        return {**obj, "apiVersion": api_version}

    return convert
