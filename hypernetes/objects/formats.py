"""Name formats of Kubernetes objects and labels (apimachinery's util/validation), with upstream's
messages: DNS labels and subdomains, qualified names (label and annotation keys), label values.
Each function returns the reasons a string is not of its format ([] when it is)."""

from __future__ import annotations

import re

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_SUBDOMAIN_RE = re.compile(_SUBDOMAIN)
_DNS1035 = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_RE = re.compile(_DNS1035)
_QNAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile(_QNAME)
_LABEL_VALUE = rf"(({_QNAME}))?"


def regex_msg(what: str, examples: tuple[str, ...], regex: str) -> str:
    ex = ",  or ".join(f"'{e}'" for e in examples)
    return f"{what} (e.g. {ex}, regex used for validation is '{regex}')"


def dns1123_label(v: str) -> list[str]:
    errs = []
    if len(v) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_RE.fullmatch(v):
        errs.append(
            regex_msg(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character",
                ("my-name", "123-abc"),
                _LABEL,
            )
        )
    return errs


def dns1123_subdomain(v: str) -> list[str]:
    errs = []
    if len(v) > 253:
        errs.append("must be no more than 253 characters")
    if not _SUBDOMAIN_RE.fullmatch(v):
        errs.append(
            regex_msg(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric "
                "character",
                ("example.com",),
                _SUBDOMAIN,
            )
        )
    return errs


def dns1035_label(v: str) -> list[str]:
    errs = []
    if len(v) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_RE.fullmatch(v):
        errs.append(
            regex_msg(
                "a DNS-1035 label must consist of lower case alphanumeric characters or "
                "'-', start with an alphabetic character, and end with an alphanumeric "
                "character",
                ("my-name", "abc-123"),
                _DNS1035,
            )
        )
    return errs


def qualified_name(v: str) -> list[str]:
    """Label and annotation keys: `[prefix/]name`."""
    prefix, slash, name = v.rpartition("/")
    errs = []
    if slash:
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + e for e in dns1123_subdomain(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errs.append("name part must be no more than 63 characters")
        if not _QNAME_RE.fullmatch(name):
            errs.append(
                regex_msg(
                    "name part must consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character",
                    ("MyName", "my.name", "123-abc"),
                    _QNAME,
                )
            )
    if v.count("/") > 1:
        errs = [
            regex_msg(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character",
                ("MyName", "my.name", "123-abc"),
                _QNAME,
            )
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    return errs


def label_value(v: str) -> list[str]:
    errs = []
    if len(v) > 63:
        errs.append("must be no more than 63 characters")
    if v and not _QNAME_RE.fullmatch(v):
        errs.append(
            regex_msg(
                "a valid label must be an empty string or consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character",
                ("MyValue", "my_value", "12345"),
                _LABEL_VALUE,
            )
        )
    return errs
