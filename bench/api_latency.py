"""API server latency: single-object requests at a fixed rate and watch fan-out to 100 watchers.
Prints one JSON object per result. `python bench/api_latency.py [--store memory|sqlite]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.apiload import main

if __name__ == "__main__":
    main()
