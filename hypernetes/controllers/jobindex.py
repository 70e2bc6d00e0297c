"""Indexed jobs (completionMode: Indexed): every index 0..completions-1 must succeed once;
pods carry their index in an annotation and label, a hostname `<job>-<index>` and the
JOB_COMPLETION_INDEX environment variable; status.completedIndexes lists the done ones as
ranges ("0-2,5")."""

from __future__ import annotations

import copy

from hypernetes.controllers import meta as m
from hypernetes.objects import Obj

INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def indexed(job: Obj) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def parse_ranges(text: str | None) -> set[int]:
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def format_ranges(indexes: set[int]) -> str:
    runs: list[tuple[int, int]] = []
    for i in sorted(indexes):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def pod_index(pod: Obj) -> int | None:
    meta = m.meta(pod)
    raw = (meta.get("annotations") or {}).get(INDEX_KEY, (meta.get("labels") or {}).get(INDEX_KEY))
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def template_for(job: Obj, index: int) -> Obj:
    """The job's pod template for one index."""
    t = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    tmeta = t.setdefault("metadata", {})
    tmeta["annotations"] = {**(tmeta.get("annotations") or {}), INDEX_KEY: str(index)}
    tmeta["labels"] = {**(tmeta.get("labels") or {}), INDEX_KEY: str(index)}
    spec = t.setdefault("spec", {})
    spec.setdefault("hostname", f"{m.name(job)}-{index}")
    env_var = {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
    }
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in c.get("env") or []):
            c["env"] = [*(c.get("env") or []), env_var]
    return t
