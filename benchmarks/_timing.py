"""Timing helper shared by the benchmarks (run them as scripts: this folder is on sys.path)."""
from __future__ import annotations

import time

import jax


def best_time(fn, *args, repeat=3):
    """Best wall time [s] of ``fn(*args)`` over ``repeat`` runs, after one compile/warm-up run."""
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return min(ts)
