"""Property: whatever a layer contains, unpacking never creates, changes or links anything
outside the rootfs. Layers are random sequences of files, dirs, symlinks (to `/`, `..`, the
sentinel "host" directory, ...) and hard links over a tiny path alphabet, so collisions are frequent."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernetes.runtime.images import ImageError
from hypernetes.runtime.images.unpack import LayerApplier
from tools import imagebuild as ib
from tools.imagebuild import LayerBuilder

COMPONENTS = st.sampled_from(["a", "b", "..", ".", "l", ".wh.a", ".wh..wh..opq"])
PATHS = st.lists(COMPONENTS, min_size=1, max_size=4).map("/".join)
# Escapes aim at a sentinel directory, never at the real host's paths: a bug must not hurt.
TARGETS = st.sampled_from(["..", "../..", "../../host", "../../../host", "a", "l/a", "HOST", "HOST/f"])
ENTRY = st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), PATHS, TARGETS, PATHS)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size, st_.st_nlink)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ENTRY, max_size=8), min_size=1, max_size=3))
def test_nothing_escapes_the_rootfs(layers: list[list[tuple[str, str, str, str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        host = base / "host"
        host.mkdir()
        (host / "f").write_text("host file")
        work = base / "work"
        work.mkdir()
        before = snapshot(host)
        blobs = []
        for i, entries in enumerate(layers):
            b = LayerBuilder()
            for kind, path, target, other in entries:
                target = target.replace("HOST", str(host))
                if kind == "file":
                    b.file(path, "x")
                elif kind == "dir":
                    b.dir(path)
                elif kind == "symlink":
                    b.symlink(path, target)
                else:
                    b.hardlink(path, other)
            blob = base / f"layer{i}"
            blob.write_bytes(b.tar())
            blobs.append(blob)
        try:
            with LayerApplier(work / "rootfs") as applier:
                for blob in blobs:
                    applier.apply(blob, ib.digest_of(blob.read_bytes()))
        except ImageError:
            pass
        assert snapshot(host) == before
        assert (host / "f").read_text() == "host file"
        outside = {k for k in snapshot(base) if not k.startswith("work/rootfs/")}
        layers_ = {f"layer{i}" for i in range(len(blobs))}
        assert outside == {"host", "host/f", "work", "work/rootfs", *layers_}
