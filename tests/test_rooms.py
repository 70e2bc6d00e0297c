"""DESIGN.md's rooms: each imports only the rooms below it (`cli` may import any), so a runtime never
reaches up into the node agent or the API server, and the node never into the authorizer."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# top to bottom, as DESIGN.md lists them; everything else in hypernetes/ (objects, apiclient,
# metrics, logfmt, ...) is a leaf every room may use
ROOMS = ("cli", "api", "auth", "store", "scheduler", "controllers", "node", "runtime", "network", "volumes")


def upward_imports(package: Path) -> list[str]:
    rank = {room: i for i, room in enumerate(ROOMS)}
    found = []
    for path in sorted(package.rglob("*.py")):
        room = path.relative_to(package).parts[0]
        if room not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if (
                    parts[0] == package.name
                    and len(parts) > 1
                    and rank.get(parts[1], len(ROOMS)) < rank[room]
                ):
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno} imports {module}")
    return found


def test_each_room_imports_only_the_rooms_below_it() -> None:
    assert upward_imports(REPO / "hypernetes") == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "hypernetes"
    for room in ("runtime", "node", "objects"):
        (pkg / room).mkdir(parents=True)
    (pkg / "runtime" / "a.py").write_text(
        "from hypernetes.objects import Obj\nimport hypernetes.node.agent\n"
    )
    (pkg / "node" / "b.py").write_text("from hypernetes.runtime import a\n")
    assert upward_imports(pkg) == ["hypernetes/runtime/a.py:2 imports hypernetes.node.agent"]
