"""Event (core/v1): what happened to an object, as kubectl describe and get events show it."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import (
    NAME,
    Column,
    Context,
    int_or_zero,
    name_of,
    since,
)
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    ns = _d(obj.get("metadata")).get("namespace")
    io = _d(obj.get("involvedObject"))
    ions = io.get("namespace")
    if ions and ns and ions != ns:
        errs.append(E.invalid("involvedObject.namespace", ions, "does not match event.namespace"))


COLUMNS = (
    Column(
        "Last Seen", "string", "", "The time at which the most recent occurrence of this event was recorded."
    ),
    Column(
        "Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future"
    ),
    Column(
        "Reason",
        "string",
        "",
        "This should be a short, machine understandable string that gives the "
        "reason for the transition into the object's current status.",
    ),
    Column("Object", "string", "", "The object that this event is about."),
    Column(
        "Subobject",
        "string",
        "",
        "If referring to a piece of an object instead of an entire object, "
        "this string should contain a valid JSON/Go field access statement.",
        1,
    ),
    Column("Source", "string", "", "The component reporting this event.", 1),
    Column("Message", "string", "", "A human-readable description of the status of this operation."),
    Column("First Seen", "string", "", "The time at which the event was first recorded.", 1),
    Column("Count", "string", "", "The number of times this event has occurred.", 1),
    Column("Name", "string", "name", NAME.description, 1),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    first = (
        since(obj.get("firstTimestamp"), ctx)
        if obj.get("firstTimestamp")
        else since(obj.get("eventTime"), ctx)
    )
    last = since(obj.get("lastTimestamp"), ctx) if obj.get("lastTimestamp") else first
    count = int_or_zero(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), ctx)
        count = int_or_zero(series.get("count"))
    elif count == 0:
        count = 1
    io = _d(obj.get("involvedObject"))
    kind = str(io.get("kind", "")).lower()
    target = f"{kind}/{io['name']}" if io.get("name") else kind
    src = _d(obj.get("source"))
    component = src.get("component") or obj.get("reportingComponent") or ""
    instance = src.get("host") or obj.get("reportingInstance") or ""
    source = f"{component}, {instance}" if instance else component
    return [
        last,
        obj.get("type", ""),
        obj.get("reason", ""),
        target,
        io.get("fieldPath", ""),
        source,
        str(obj.get("message", "")).strip(),
        first,
        count,
        name_of(obj),
    ]


KIND = kind(
    CORE,
    "Event",
    "events",
    short=("ev",),
    defaults=no_defaults,
    validate=_validate,
    field_selectors={
        "involvedObject.kind": "involvedObject.kind",
        "involvedObject.namespace": "involvedObject.namespace",
        "involvedObject.name": "involvedObject.name",
        "involvedObject.uid": "involvedObject.uid",
        "involvedObject.apiVersion": "involvedObject.apiVersion",
        "involvedObject.resourceVersion": "involvedObject.resourceVersion",
        "involvedObject.fieldPath": "involvedObject.fieldPath",
        "reason": "reason",
        "reportingComponent": "reportingComponent",
        "type": "type",
        "source": "source.component",
    },
    printer=Printer(COLUMNS, _row),
)
