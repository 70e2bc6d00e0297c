"""IntOrString fields that hold a count or a percent (rollingUpdate.maxUnavailable/maxSurge,
a PodDisruptionBudget's minAvailable/maxUnavailable): upstream's ValidatePositiveIntOrPercent and
IsNotMoreThan100Percent, with their messages."""

from __future__ import annotations

from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema.errors import FieldError


def int_or_percent(v: Any, path: str, errs: list[FieldError]) -> bool:
    """True if `v` is a zero value (0 or "0%")."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            errs.append(E.invalid(path, v, "must be greater than or equal to 0"))
        return v == 0
    if isinstance(v, str):
        if not v.endswith("%") or not v[:-1].isdigit():
            errs.append(
                E.invalid(
                    path,
                    v,
                    "a valid percent string must be a numeric string followed by an "
                    "ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                    "'[0-9]+%')",
                )
            )
            return False
        if int(v[:-1]) > 100:
            errs.append(E.invalid(path, v, "must not be greater than 100%"))
        return int(v[:-1]) == 0
    return v is None
