"""hypernetes/objects is a leaf (DESIGN.md): every room may import it, it imports no room."""

from __future__ import annotations

import ast
from pathlib import Path

import hypernetes.objects

PACKAGE = Path(hypernetes.objects.__file__).parent


def test_the_object_model_imports_no_room() -> None:
    offending = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                if name.split(".")[0] == "hypernetes" and not name.startswith("hypernetes.objects"):
                    offending.append(f"{path.name}: {name}")
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                offending.append(f"{path.name}: a relative import")
    assert offending == []
    assert len(list(PACKAGE.glob("*.py"))) >= 5  # the check saw the package
