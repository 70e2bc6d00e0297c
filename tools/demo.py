"""The README's first command ends here: build a busybox image, import it, run it in a pod VM.

No registry on the internet is reachable from our machines, so the image is built locally from
Debian's static busybox (the same builder the tests use) and imported as an OCI layout.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.imagebuild import OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/busybox:demo"
SCRIPT = (
    'echo; echo "Hello from a container in a pod VM: $(hostname)"; '
    "echo \"kernel: $(uname -sr)   vCPUs: $(nproc)   memory: $(free -m | awk '/Mem/{print $2}') MiB\"; "
    "echo \"PID 1 of this container: $(cat /proc/1/cmdline | tr '\\0' ' ')\"; echo"
)


def main() -> int:
    cli = [str(REPO / ".venv" / "bin" / "hypernetes")]
    with tempfile.TemporaryDirectory() as tmp:
        layout = OciLayout(Path(tmp) / "busybox")
        layout.add(busybox_image(), IMAGE)
        print(f"importing {IMAGE} (busybox from Debian, built as an OCI image)", flush=True)
        subprocess.run([*cli, "image", "import", str(layout.root)], check=True)
    print(f"hypernetes run --cpus 2 --memory 256Mi {IMAGE} -- sh -c ...", flush=True)
    return subprocess.run(
        [*cli, "run", "--name", "demo", "--cpus", "2", "--memory", "256Mi", IMAGE, "--", "sh", "-c", SCRIPT]
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
