"""Image pull durations under the kubelet's name, on the process's registry (hypernetes.metrics):
pulls are the process's events whichever store made them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from prometheus_client import Histogram

from hypernetes.metrics import REGISTRY

# upstream's buckets (kubelet_image_pull_duration_seconds) and image size ranges
BUCKETS = (0.5, 1, 5, 10, 20, 30, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
_MB, _GB = 1000**2, 1000**3
SIZES = (
    (10 * _MB, "0-10MB"),
    (100 * _MB, "10MB-100MB"),
    (500 * _MB, "100MB-500MB"),
    (1 * _GB, "500MB-1GB"),
    (5 * _GB, "1GB-5GB"),
    (10 * _GB, "5GB-10GB"),
    (20 * _GB, "10GB-20GB"),
    (30 * _GB, "20GB-30GB"),
    (40 * _GB, "30GB-40GB"),
    (60 * _GB, "40GB-60GB"),
    (100 * _GB, "60GB-100GB"),
)

PULL_SECONDS = Histogram(
    "kubelet_image_pull_duration_seconds",
    "Duration in seconds to pull an image (successful pulls), by the image's size.",
    ["image_size_in_bytes"],
    buckets=BUCKETS,
    registry=REGISTRY,
)


def size_range(size: int) -> str:
    return next((label for top, label in SIZES if size < top), "GT100GB")


class _Sized(Protocol):
    size: int


F = TypeVar("F", bound=Callable[..., Any])


def timed_pull(pull: F) -> F:
    """Observe how long each successful call of `pull` took (it returns the image)."""

    @functools.wraps(pull)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        image: _Sized = pull(*args, **kwargs)
        PULL_SECONDS.labels(size_range(image.size)).observe(time.monotonic() - start)
        return image

    return timed  # type: ignore[return-value]
