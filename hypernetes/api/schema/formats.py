"""String formats of the Kubernetes API (apimachinery's validation package), with its messages."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal

from hypernetes.objects.formats import (  # the name formats live with the object model
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    label_value,
    qualified_name,
)
from hypernetes.objects.formats import regex_msg as _regex_msg
from hypernetes.objects.quantity import Quantity, canonical_quantity

__all__ = [
    "canonical_quantity",
    "dns1035_label",
    "dns1123_label",
    "dns1123_subdomain",
    "label_value",
    "qualified_name",
]

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


# -- quantities: the object model's (hypernetes.objects.quantity) ------------------------------


def parse_quantity(v: str | int | float) -> tuple[Decimal, str]:
    """The value and its format ("BinarySI", "DecimalSI", "DecimalExponent"); ValueError with
    upstream's message if it is not a quantity."""
    q = Quantity.from_json(v)
    return q.amount, q.format.value
