"""Statistics of a latency run: percentiles, deadline misses, ratios between backends. Pure numpy, no timing.

Percentiles use the nearest-rank definition (the smallest sample with at least q% of samples at or below it),
so every reported percentile is a latency that was actually observed, and p99.9 of fewer than 1000 samples is
simply the maximum (not an interpolation that pretends to know the tail).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

PERCENTILES = (50, 90, 99, 99.9)


def pkey(q: float) -> str:
    """50 -> 'p50_us', 99.9 -> 'p99.9_us'."""
    return f"p{q:g}_us"


def percentile(sorted_ns: np.ndarray, q: float) -> float:
    """Nearest-rank percentile of ascending samples."""
    n = len(sorted_ns)
    rank = max(1, math.ceil(Fraction(str(q)) * n / 100))  # exact: 99.9% of 1000 is rank 999, not 1000
    return float(sorted_ns[min(rank, n) - 1])


def summarize(ns, per_tick: int = 1) -> dict:
    """Per-call durations in ns -> {n, p50_us, p90_us, p99_us, p99.9_us, max_us, min_us, mean_us, std_us,
    steps_per_s}. per_tick: stream-steps done in one timed call (multi-stream mode), for steps_per_s."""
    a = np.sort(np.asarray(ns, dtype=np.int64))
    if len(a) == 0:
        raise ValueError("no samples to summarise")
    us = a / 1e3
    out = {"n": int(len(a))}
    for q in PERCENTILES:
        out[pkey(q)] = percentile(us, q)
    mean = float(us.mean())
    out.update(
        max_us=float(us[-1]),
        min_us=float(us[0]),
        mean_us=mean,
        std_us=float(us.std()),
        # back-to-back capacity: how many steps per second this backend sustains on one core
        steps_per_s=per_tick * 1e6 / mean if mean > 0 else math.inf,
    )
    return out


def deadline_stats(release_ns, start_ns, end_ns, period_ns: int) -> dict:
    """Paced run: tick i is released at release_ns[i] and must finish by release_ns[i] + period.

    A miss is a tick that finished after its deadline. Lateness = end - deadline (negative = slack).
    Release jitter = how late the loop started the tick (sleep overshoot, or an earlier overrun).
    """
    release = np.asarray(release_ns, np.int64)
    start = np.asarray(start_ns, np.int64)
    end = np.asarray(end_ns, np.int64)
    late = end - (release + int(period_ns))  # (n,) ns, > 0 = missed
    jitter = np.sort(start - release) / 1e3
    n = len(late)
    misses = int((late > 0).sum())
    return {
        "period_us": period_ns / 1e3,
        "ticks": n,
        "misses": misses,
        "miss_rate": misses / n if n else 0.0,
        "worst_lateness_us": max(0.0, float(late.max()) / 1e3) if n else 0.0,
        "min_slack_us": float(-late.max()) / 1e3 if n else 0.0,
        "release_jitter_p99_us": percentile(jitter, 99) if n else 0.0,
        "release_jitter_max_us": float(jitter[-1]) if n else 0.0,
    }


def ratios(stats: dict[str, dict], metric: str = "p50_us", baseline: str = "native") -> dict[str, dict]:
    """{key: {metric: value}} -> {key: {'vs_fastest': value / min, 'vs_<baseline>': value / baseline}}.

    vs_<baseline> is None when the baseline was not measured. Ratios > 1 mean slower.
    """
    vals = {k: s[metric] for k, s in stats.items() if s and s.get(metric) is not None}
    if not vals:
        return {}
    best = min(vals.values())
    base = vals.get(baseline)
    return {
        k: {
            "vs_fastest": v / best if best > 0 else None,
            f"vs_{baseline}": (v / base if base else None),
        }
        for k, v in vals.items()
    }
