"""What Table printers share, as upstream's printers compute it: the column type, ages
(HumanDuration), the Name and Age columns, selectors and labels as text, the pod template
columns of workloads, the storage cells. Each kind's columns and row are in its registry entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypernetes.api.schema.formats import canonical_quantity
from hypernetes.objects import Obj as JSON
from hypernetes.objects.meta import condition_true as condition_true  # re-exported for the registry
from hypernetes.objects.names import BETA_STORAGE_CLASS_ANNOTATION
from hypernetes.objects.selectors import format_label_selector


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    format: str
    description: str
    priority: int = 0

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Context:
    now: datetime


Row = Callable[[JSON, Context], list[Any]]


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def parse_time(ts: Any) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: "45s", "5m10s", "3h", "2d5h", "3y"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(ts: Any, ctx: Context) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((ctx.now - t).total_seconds())


def age_of(obj: JSON, ctx: Context) -> str:
    return since(_d(obj.get("metadata")).get("creationTimestamp"), ctx)


def name_of(obj: JSON) -> str:
    return str(_d(obj.get("metadata")).get("name", ""))


NAME = Column(
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating "
    "resources, although some resources may allow a client to request the generation of an "
    "appropriate name automatically.",
)
AGE = Column(
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)


# -- conditions, workloads ---------------------------------------------------------------------


def int_or_zero(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def selector_string(sel: Any) -> str:
    """kubectl's SELECTOR column: upstream's metav1.FormatLabelSelector."""
    return format_label_selector(sel)


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: "k=v,..." sorted, or <none>."""
    items = sorted(_d(labels).items())
    return ",".join(f"{k}={v}" for k, v in items) if items else "<none>"


def containers_images(obj: JSON) -> list[str]:
    containers = [
        _d(c) for c in _l(_d(_d(_d(obj.get("spec")).get("template")).get("spec")).get("containers"))
    ]
    return [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
    ]


CONTAINERS = Column("Containers", "string", "", "Names of each container in the template.", 1)
IMAGES = Column("Images", "string", "", "Images referenced by each container in the template.", 1)
SELECTOR = Column("Selector", "string", "", "Label selector for pods.", 1)


# -- storage (PersistentVolume, PersistentVolumeClaim) -----------------------------------------

PV_MORE_INFO = "More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes"


def access_modes(modes: Any) -> str:
    """upstream's GetAccessModesAsString: RWO,ROX,RWX,RWOP in that order, each once."""
    have = set(_l(modes))
    short = (
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    )
    return ",".join(abbr for mode, abbr in short if mode in have)


def storage_string(quantities: Any) -> str:
    """resource.Quantity.String() of quantities["storage"]: canonical, "0" when absent."""
    value = _d(quantities).get("storage")
    if value is None:
        return "0"
    try:
        return canonical_quantity(value)
    except ValueError:
        return str(value)


def storage_class_of(obj: JSON) -> str:
    """GetPersistentVolume(Claim)Class: the beta annotation wins over spec.storageClassName."""
    beta = _d(_d(obj.get("metadata")).get("annotations")).get(BETA_STORAGE_CLASS_ANNOTATION)
    return str(beta if beta is not None else _d(obj.get("spec")).get("storageClassName") or "")


def phase_of(obj: JSON) -> str:
    if _d(obj.get("metadata")).get("deletionTimestamp"):
        return "Terminating"
    return str(_d(obj.get("status")).get("phase") or "")
