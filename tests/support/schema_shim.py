"""Fills in names of the schema package's contract that it does not export yet, so the API
layer's tests can run while that package is being written. Real implementations are used
wherever they exist; the stand-ins are deliberately small (no validation, default Table)."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

from hypernetes.api import schema

JSON = dict[str, Any]


@dataclass(frozen=True)
class _FieldError:
    type: str
    field: str
    message: str


class _PatchError(ValueError):
    pass


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            target.pop(k, None)
        elif isinstance(v, list) and isinstance(target.get(k), list) and all(
                isinstance(i, dict) and "name" in i for i in v + target[k]):
            by = {i["name"]: i for i in target[k]}
            for i in v:
                by[i["name"]] = _merge(by.get(i["name"], {}), i)
            target[k] = list(by.values())
        else:
            target[k] = _merge(target.get(k), v)
    return target


def _apply_patch(kind: Any, obj: JSON, patch: bytes, content_type: str) -> JSON:
    try:
        p = json.loads(patch)
    except ValueError as e:
        raise _PatchError(str(e)) from None
    result: JSON = _merge(obj, p)
    return result


def _table(kind: Any, objs: list[JSON], wide: bool) -> JSON:
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
                {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0}],
            "rows": [{"cells": [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]}
                     for o in objs]}


def _openapi_v3(kind: Any) -> JSON:
    base = f"/api/{kind.api_version}" if not kind.group else f"/apis/{kind.api_version}"
    path = f"{base}/namespaces/{{namespace}}/{kind.plural}/{{name}}" if kind.namespaced \
        else f"{base}/{kind.plural}/{{name}}"
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    return {"paths": {path: {"patch": {
        "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "OK"}}}}},
        "components": {"schemas": {kind.definition: {
            "type": "object", "x-kubernetes-group-version-kind": [gvk]}}}}


def _try(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(f"hypernetes.api.schema.{module}"), name)
    except Exception:
        return None


def install() -> None:
    from hypernetes.api.schema import kinds
    fallbacks: dict[str, Any] = {
        "Kind": kinds.Kind, "KINDS": kinds.KINDS, "kind_for": kinds.kind_for,
        "kind_by_name": kinds.kind_by_name,
        "FieldError": _try("errors", "FieldError") or _FieldError,
        "PatchError": _try("errors", "PatchError") or _PatchError,
        "validate": lambda kind, obj, old=None: [],
        "apply_defaults": lambda kind, obj: None,
        "apply_patch": _apply_patch,
        "table": _table, "openapi_v3": _openapi_v3, "openapi_v2": lambda: {"swagger": "2.0", "paths": {}},
    }
    for name, value in fallbacks.items():
        if not hasattr(schema, name):
            setattr(schema, name, value)
