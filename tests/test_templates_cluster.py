"""Templates through the control plane, on `hypernetes up` with real VMs: a pod whose template
cannot be restored still starts (booted cold), and its events say so, as the issue asks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, phase, pod_manifest, running_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def templates_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cluster's own templates: this test breaks them, and other tests' pods must not care."""
    root = tmp_path / "templates"
    monkeypatch.setenv("HYPERNETES_TEMPLATE_DIR", str(root))
    return root


@pytest.fixture
def cluster(tmp_path: Path, templates_dir: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "data") as c:
        yield c


def _built(root: Path) -> list[Path]:
    """The complete templates, once no build is under way."""
    if not root.is_dir() or any(d.name.startswith(".build-") for d in root.iterdir()):
        return []
    return [d for d in root.iterdir() if (d / "state").is_file() and (d / "meta.json").is_file()]


def test_a_failed_restore_boots_cold_with_a_warning_event(
    cluster: Cluster, templates_dir: Path, busybox_ref: str
) -> None:
    loop = "while true; do sleep 1; done"
    cluster.kubectl("apply", "-f", "-", input=pod_manifest("first", busybox_ref, loop))
    cluster.wait_for("first running", lambda: phase(cluster, "first") == "Running", 300)
    built = cluster.wait_for("the shape's template built", lambda: _built(templates_dir), 300)
    for template in built:  # a saved device state QEMU refuses
        state = template / "state"
        state.write_bytes(state.read_bytes()[:200])

    cluster.kubectl("apply", "-f", "-", input=pod_manifest("second", busybox_ref, loop))
    cluster.wait_for("second running", lambda: phase(cluster, "second") == "Running", 300)
    events = cluster.get("events", "--field-selector", "involvedObject.name=second")["items"]
    warnings = [(e["type"], e["reason"], e["message"]) for e in events if e["type"] == "Warning"]
    assert len(warnings) == 1 and warnings[0][1] == "TemplateRestoreFailed", warnings
    message = warnings[0][2]
    assert "booted cold" in message and any(t.name[:12] in message for t in built), message
    assert cluster.kubectl("exec", "second", "--", "echo", "alive").stdout == "alive\n"
