"""Field errors (which the server turns into the causes of a 422 Status) and patch errors.

A FieldError's message is upstream's error body ("Required value", `Invalid value: "x": why`,
...), so the server's summary reads like kube-apiserver's: `spec.containers[0].image: Required value`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# upstream field.ErrorType strings, plus one of ours for fields the schema does not know
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"
NOT_FOUND = "FieldValueNotFound"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
TYPE_INVALID = "FieldValueTypeInvalid"
# kube-apiserver answers these with 400 "strict decoding error" under fieldValidation=Strict, a
# warning under Warn, and drops them under Ignore: the server picks by this type.
UNKNOWN_FIELD = "FieldValueUnknown"

UNSUPPORTED_BY_US = "not supported by hypernetes"


@dataclass(frozen=True)
class FieldError:
    type: str
    field: str
    message: str


class PatchError(ValueError):
    """A patch that cannot be applied; str(e) is the message for a 400/422 Status."""


def show(value: Any) -> str:
    """A value as upstream prints it in error bodies: strings quoted, others compact."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        return text if len(text) <= 120 else text[:117] + "..."
    return json.dumps(value)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(REQUIRED, field, "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(INVALID, field, f"Invalid value: {show(value)}: {detail}")


def not_supported(
    field: str, value: Any, valid: tuple[str, ...] | list[str] = (), detail: str = ""
) -> FieldError:
    why = detail or "supported values: " + ", ".join(json.dumps(v) for v in valid)
    return FieldError(NOT_SUPPORTED, field, f"Unsupported value: {show(value)}: {why}")


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(FORBIDDEN, field, f"Forbidden: {detail}")


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(DUPLICATE, field, f"Duplicate value: {show(value)}")


def not_found(field: str, value: Any) -> FieldError:
    return FieldError(NOT_FOUND, field, f"Not found: {show(value)}")


def too_long(field: str, limit: int) -> FieldError:
    return FieldError(TOO_LONG, field, f"Too long: may not be more than {limit} bytes")


def type_invalid(field: str, value: Any, want: str) -> FieldError:
    got = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), type(value).__name__)
    return FieldError(
        TYPE_INVALID,
        field,
        f"Invalid value: {show(value)}: {field or 'body'} in body must be of type {want}: {json.dumps(got)}",
    )


def unknown_field(field: str) -> FieldError:
    return FieldError(UNKNOWN_FIELD, field, f'unknown field "{field}"')


def immutable(field: str) -> FieldError:
    return invalid_raw(field, "field is immutable")


def invalid_raw(field: str, detail: str) -> FieldError:
    """An Invalid error whose value is not worth printing (upstream prints it; for whole specs
    that is pages of Go structs)."""
    return FieldError(INVALID, field, f"Invalid value: {detail}")
