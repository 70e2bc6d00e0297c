"""filecache.py: values kept across processes while their files stay the same, and what
`hypernetes run` must not load (its start-up is part of every pod it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypernetes.runtime import filecache


def test_a_value_is_kept_until_one_of_its_files_changes(tmp_path: Path) -> None:
    where, a, b = tmp_path / "cache.json", tmp_path / "a", tmp_path / "b"
    a.write_text("one")
    b.write_text("two")
    calls: list[str] = []

    def compute() -> str:
        calls.append("x")
        return f"{a.read_text()}+{b.read_text()}"

    assert filecache.cached("k", [a, b], compute, where) == "one+two"
    assert filecache.cached("k", [a, b], compute, where) == "one+two"
    assert len(calls) == 1  # the second answer came from the file, as in a new process
    assert filecache.cached("other", [a, b], compute, where) == "one+two"  # kinds do not mix
    assert len(calls) == 2
    mtime = b.stat().st_mtime_ns
    b.write_text("TWO")
    os.utime(b, ns=(mtime, mtime))  # same size and mtime: the ctime still tells
    assert filecache.cached("k", [a, b], compute, where) == "one+TWO"
    assert len(calls) == 3


def test_a_cache_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    where, a = tmp_path / "cache.json", tmp_path / "a"
    a.write_text("x")
    filecache.cached("k", [a], lambda: "good", where)
    entries = json.loads(where.read_text())
    where.write_text(json.dumps({key: "planted" for key in entries}))
    assert filecache.cached("k", [a], lambda: "good", where) == "planted"  # ours: trusted
    where.chmod(0o666)
    assert filecache.cached("k", [a], lambda: "good", where) == "good"
    where.write_text(json.dumps({key: "planted" for key in entries}))
    os.chown(where, 12345, 12345)  # another user's (the tests run as root)
    where.chmod(0o644)
    assert filecache.cached("k", [a], lambda: "good", where) == "good"
    link = tmp_path / "link.json"
    link.symlink_to(where)
    assert filecache.cached("k", [a], lambda: "fresh", link) == "fresh"  # not followed


def test_hypernetes_run_does_not_load_what_it_does_not_use() -> None:
    """What `hypernetes run` imports before it starts a VM: the CLI, the hypervm runtime and its
    templates. aiohttp (the HTTP server/client of `up`, 100+ ms of start-up) is not among them."""
    code = (
        "import sys, hypernetes.cli.main, hypernetes.runtime.hypervm, hypernetes.runtime.templates; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'kubernetes')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
