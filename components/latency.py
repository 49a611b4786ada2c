"""Latency of several models measured side by side.

The calls are interleaved, so a change in background load (a shared node, a
build next door) slows every model alike and their ratio stays meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_seconds(
    calls: dict[str, Callable[[], object]], runs: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds per call of each named call, ``runs`` rounds after ``warmup`` untimed ones."""
    for _ in range(warmup):  # traces and warms every call first
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return seconds
