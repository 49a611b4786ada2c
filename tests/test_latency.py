"""Interleaved timing: every call warmed, then timed in rounds."""

import time

from components.latency import interleaved_seconds


def test_each_call_is_warmed_then_timed_once_per_round():
    order = []
    calls = {
        "slow": lambda: (order.append("slow"), time.sleep(0.01)),
        "fast": lambda: order.append("fast"),
    }
    seconds = interleaved_seconds(calls, runs=4, warmup=2)
    assert order == ["slow", "fast"] * 6  # warm-up rounds, then timed rounds, interleaved
    assert {name: len(values) for name, values in seconds.items()} == {"slow": 4, "fast": 4}
    assert min(seconds["slow"]) >= 0.01 > max(seconds["fast"])
