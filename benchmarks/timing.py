"""Timing shared by the benchmarks: functions measured side by side, alternating, after a warm-up."""

from __future__ import annotations

import statistics
import time


def median_times(fns, reps, warmup):
    """Run the functions alternately; return each one's median wall time."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for rep in range(reps):  # alternate, reversing the order every other rep to cancel order effects
        order = list(zip(fns, times))
        for fn, bucket in order if rep % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
