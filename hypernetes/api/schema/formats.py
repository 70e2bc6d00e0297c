"""String formats of the Kubernetes API (apimachinery's validation package), with its messages."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal, InvalidOperation

from hypernetes.objects.formats import (  # the name formats live with the object model
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    label_value,
    qualified_name,
)
from hypernetes.objects.formats import regex_msg as _regex_msg

__all__ = ["dns1035_label", "dns1123_label", "dns1123_subdomain", "label_value", "qualified_name"]

_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_IANA_RE = re.compile("[-a-z0-9]+")
_LETTER_RE = re.compile("[a-z]")


def config_key(v: str) -> list[str]:
    errs = []
    if len(v) > 253:
        errs.append("must be no more than 253 characters")
    if not _CONFIG_KEY_RE.fullmatch(v):
        errs.append(
            _regex_msg(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ("key.name", "KEY_NAME", "key-name"),
                "[-._a-zA-Z0-9]+",
            )
        )
    if v in (".", ".."):
        errs.append(f"must not be '{v}'")
    elif v.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def env_var_name(v: str) -> list[str]:
    # RelaxedEnvironmentVariableValidation is on by default in 1.32
    if not v or any(not (32 <= ord(c) <= 126) or c == "=" for c in v):
        return [
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
        ]
    return []


def iana_svc_name(v: str) -> list[str]:
    errs = []
    if len(v) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_RE.fullmatch(v):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in v:
        errs.append("must not contain consecutive hyphens")
    if not _LETTER_RE.search(v):
        errs.append("must contain at least one letter (a-z)")
    if v.startswith("-") or v.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_number(v: int) -> list[str]:
    return [] if 1 <= v <= 65535 else ["must be between 1 and 65535, inclusive"]


def ip_address(v: str) -> list[str]:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


# -- quantities ("100m", "128Mi", "1e3") ------------------------------------------------------

_QUANTITY_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(|[numkMGTPE]|[KMGTPE]i|[eE][+-]?\d+)")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def parse_quantity(v: str | int | float) -> tuple[Decimal, str]:
    """The value and its format ("BinarySI", "DecimalSI", "DecimalExponent"); ValueError if invalid.
    Like upstream, values are rounded up to nano units."""
    if isinstance(v, bool):
        raise ValueError(QUANTITY_MSG)
    if isinstance(v, (int, float)):
        v = repr(v) if isinstance(v, float) else str(v)
        v = v.replace("e+", "e")
    m = _QUANTITY_RE.fullmatch(v.strip() if isinstance(v, str) else v)
    if not m or len(v) > 128:
        raise ValueError(QUANTITY_MSG)
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(QUANTITY_MSG) from None
    suffix = m.group(2)
    if suffix in _BINARY:
        value, fmt = number * (Decimal(2) ** _BINARY[suffix]), "BinarySI"
    elif suffix in _DECIMAL:
        value, fmt = number.scaleb(_DECIMAL[suffix]), "DecimalSI"
    else:
        value, fmt = number.scaleb(int(suffix[1:])), "DecimalExponent"
    nanos = (value * 10**9).to_integral_value(rounding="ROUND_CEILING")
    return nanos.scaleb(-9), fmt


def canonical_quantity(v: str | int | float) -> str:
    """Upstream's canonical string for a quantity: "1024Mi" -> "1Gi", "0.5" -> "500m", 1 -> "1"."""
    value, fmt = parse_quantity(v)
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (-1024 < value < 1024 or value != value.to_integral_value()):
        fmt = "DecimalSI"  # as upstream: small or fractional binary values print in decimal
    sign = "-" if value < 0 else ""
    mag = abs(value)
    if fmt == "BinarySI":
        n, exp = int(mag), 0
        while n % 1024 == 0 and exp < 60:
            n //= 1024
            exp += 10
        suffix = {v: k for k, v in _BINARY.items()}.get(exp, "")
        return f"{sign}{n}{suffix}"
    # decimal: the largest multiple-of-3 exponent that leaves an integer mantissa
    nanos = int(mag.scaleb(9))
    exp = -9
    while nanos % 1000 == 0 and exp < 18:
        nanos //= 1000
        exp += 3
    if fmt == "DecimalExponent":
        return f"{sign}{nanos}" + (f"e{exp}" if exp else "")
    if exp < 0 or exp in (3, 6, 9, 12, 15, 18):
        suffix = {v: k for k, v in _DECIMAL.items()}[exp]
        return f"{sign}{nanos}{suffix}"
    return f"{sign}{nanos}"
