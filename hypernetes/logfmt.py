"""Structured log lines, one per event: logfmt text or JSON, with the fields of the work at hand.

    with log_fields(namespace="shop", pod="web-1"):      # or bind(...) for a task's whole life
        log.info("pulling %s", image)                    # ... pod=web-1 namespace=shop

Fields live in a context variable, so an asyncio task started inside a `log_fields` block (or
after `bind` in its own context) carries them into everything it logs, down to the runtime; a
record's own `extra=` fields win. The common ones are `pod`, `namespace`, `tenant` and `sandbox`
(the pod's sandbox id); controllers add `controller`.

    text: time=2026-12-07T10:11:49.120Z level=info logger=hypernetes.node.agent msg="..." pod=web-1
    json: {"time": "...", "level": "info", "logger": "...", "msg": "...", "pod": "web-1", ...}
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

FORMATS = ("text", "json")
_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "hypernetes_log_fields", default=MappingProxyType({})
)
_RESERVED = frozenset(("time", "level", "logger", "msg", "error"))
# what every LogRecord has: anything else on a record came from `extra=`
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _clean(fields: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if v not in (None, "")}


@contextlib.contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """These fields on every record logged in the block (and by tasks started in it)."""
    token = _FIELDS.set({**_FIELDS.get(), **_clean(fields)})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context for good: for a task's own context (each asyncio task
    runs in a copy, so this reaches neither its parent nor its siblings)."""
    _FIELDS.set({**_FIELDS.get(), **_clean(fields)})


def current_fields() -> dict[str, str]:
    return dict(_FIELDS.get())


def _fields(record: logging.LogRecord) -> dict[str, str]:
    extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}
    return {**_FIELDS.get(), **_clean(extra)}


def _time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _error(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return formatter.formatStack(record.stack_info) if record.stack_info else ""


class TextFormatter(logging.Formatter):
    """logfmt: key=value, values quoted when they hold a space, a quote, an = or nothing."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _fields(record).items():
            pairs[k if k not in _RESERVED else f"field.{k}"] = v
        error = _error(self, record)
        if error:
            pairs["error"] = error
        return " ".join(f"{k}={_quote(v)}" for k, v in pairs.items())


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\\n\t') and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, str] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _fields(record).items():
            out[k if k not in _RESERVED else f"field.{k}"] = v
        error = _error(self, record)
        if error:
            out["error"] = error
        return json.dumps(out, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: str, level: int = logging.INFO) -> None:
    """Log hypernetes' records at `level` and up to stderr in `fmt` (replaces the root's handlers;
    other libraries keep the root's level)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.getLogger("hypernetes").setLevel(level)
