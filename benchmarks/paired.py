"""The paired estimator every speed benchmark uses.

Timing A and then B on a shared machine measures the machine as much as the code: a burst of
other work during B's run makes B look slow. Instead A and B run in short alternating blocks
(A B, B A, A B, ...: the order flips every pair so a steady drift cancels), and each pair gives
one ratio B/A measured seconds apart under the same load. The median of those ratios, with its
spread, is stable on a busy machine where "fastest of N repeats" of long runs is not (measured:
per-repeat ratios 0.11-6.29 under load vs paired medians within a few percent).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def _block(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def paired_ratio(a: Callable[[], object], b: Callable[[], object], *, pairs: int = 9, block: int = 3,
                 warmup: int = 1) -> dict:
    """Median seconds per call of `a` and `b` and the median of the per-pair ratios b/a, with the
    ratios' interquartile range and extremes. `block` calls of each make one timed block."""
    if pairs < 1 or block < 1:
        raise ValueError("paired_ratio needs pairs >= 1 and block >= 1")
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(pairs):
        if i % 2 == 0:
            x = _block(a, block)
            y = _block(b, block)
        else:
            y = _block(b, block)
            x = _block(a, block)
        ta.append(x)
        tb.append(y)
    return {**summarize(ta, tb), "block": block}


def summarize(ta: list[float], tb: list[float]) -> dict:
    """Paired timings (a_i, b_i measured back to back) -> medians and the ratios' spread."""
    ratios = [y / x if x > 0 else float("inf") for x, y in zip(ta, tb)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb), "ratio": statistics.median(ratios),
            "q1": q[0], "q3": q[2], "min": min(ratios), "max": max(ratios), "pairs": len(ratios)}


def fmt_ratio(r: dict) -> str:
    """'0.72 (IQR 0.70-0.75)': the median ratio and its spread, for tables."""
    return f"{r['ratio']:.2f} (IQR {r['q1']:.2f}-{r['q3']:.2f})"
