"""The suite's own rules: on CI a skipped test fails unless it is marked allow_skip_on_ci; no test
module imports another (what tests share lives in tests/support/)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.guests import MAX_LOAD_STRETCH, boot_timeout

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import pytest

def test_unmarked():
    pytest.skip("a tool is missing")

@pytest.mark.allow_skip_on_ci("this one may")
def test_marked():
    pytest.skip("allowed")

def test_passes():
    pass
"""


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.conftest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(tmp_path / "test_probe.py"),
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_on_ci_an_unmarked_skip_fails(tmp_path: Path) -> None:
    proc = _run(tmp_path, "1")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 skipped" in proc.stdout
    assert "test_unmarked - skipped on CI" in proc.stdout


def test_off_ci_skips_stay_skips(tmp_path: Path) -> None:
    proc = _run(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout


# -- no test module is a library: what tests share lives in tests/support/ ------------------------


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (a function's local import counts too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def names_of_test_modules(root: Path) -> set[str]:
    """Dotted names of the test modules (and conftest.py, which pytest loads itself) under `root`."""
    return {
        ".".join(p.relative_to(root.parent).with_suffix("").parts)
        for p in root.glob("**/*.py")
        if p.name.startswith("test_") or p.name == "conftest.py"
    }


def imports_of_test_modules(repo: Path) -> dict[str, list[str]]:
    """file -> the test modules it imports, for every Python file of tests/, tools/ and bench/."""
    tests = names_of_test_modules(repo / "tests")
    offences: dict[str, list[str]] = {}
    for directory in ("tests", "tools", "bench"):
        for path in sorted((repo / directory).glob("**/*.py")):
            bad = sorted(m for m in imported_modules(path) if m in tests)
            if bad:
                offences[str(path.relative_to(repo))] = bad
    return offences


def test_no_test_module_imports_another() -> None:
    """A test module that is also a library couples unrelated tests (importing one runs its
    fixtures' module code; renaming a test breaks another) and hides the harness: shared code
    goes in tests/support/, fixtures in conftest.py or a support module."""
    assert imports_of_test_modules(REPO) == {}


def test_tools_and_bench_import_no_tests() -> None:
    """What users run (tools/) never imports test code."""
    offenders = {
        str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m.split(".")[0] == "tests")
        for p in sorted((REPO / "tools").glob("**/*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_policy_sees_an_offence(tmp_path: Path) -> None:
    """The check finds a test module imported the ways a test can do it."""
    (tmp_path / "tests" / "support").mkdir(parents=True)
    (tmp_path / "tools").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("X = 1\n")
    (tmp_path / "tests" / "conftest.py").write_text("")
    (tmp_path / "tests" / "test_b.py").write_text("from tests.test_a import X\n")
    (tmp_path / "tests" / "support" / "ok.py").write_text("from tests.support import other\n")
    (tmp_path / "tools" / "t.py").write_text("def f():\n    import tests.conftest\n")
    (tmp_path / "bench" / "b.py").write_text("from tests import test_a\n")
    assert imports_of_test_modules(tmp_path) == {
        "bench/b.py": ["tests.test_a"],
        "tests/test_b.py": ["tests.test_a"],
        "tools/t.py": ["tests.conftest"],
    }


# -- guest boots get a deadline that grows with the machine's load --------------------------------


@pytest.mark.parametrize(
    ("loadavg", "expected"),
    [
        ((0.3, 0.1, 0.0), 60.0),  # idle: the base figure
        ((8.0, 2.0, 1.0), 240.0),  # a burst just started: 4 runnable tasks per CPU
        ((1.0, 6.0, 3.0), 180.0),  # a burst just ended: the 5-minute average still counts
        ((100.0, 100.0, 100.0), 60.0 * MAX_LOAD_STRETCH),  # a wedged guest must still fail
    ],
)
def test_boot_timeout_grows_with_load(
    monkeypatch: pytest.MonkeyPatch, loadavg: tuple[float, float, float], expected: float
) -> None:
    """Under TCG a boot is CPU-bound: with four runnable tasks per CPU it takes four times as long
    (the Debian kernel's boot test failed under load with a fixed deadline). A load cannot be
    made to order on a shared machine, so the load average is given."""
    monkeypatch.setattr(os, "getloadavg", lambda: loadavg)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert boot_timeout(60) == expected
