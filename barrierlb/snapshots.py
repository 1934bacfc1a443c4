"""Decision-point snapshots: clusters caught mid-decode, for tests and benchmarks.

A snapshot fills each worker with running requests drawn from a workload, each
caught at a uniformly random point of its life (load = prompt + tokens generated
so far, remaining = output - generated), leaves the requested number of slots
free and puts a pool of fresh requests in front of it. This is the shape of the
decision a data-parallel decode router faces every step.
"""

from __future__ import annotations

import numpy as np

from barrierlb._validate import check_int
from barrierlb.state import ClusterState, Placement
from barrierlb.workloads import Workload


def decode_snapshot(workload: Workload, n_workers: int, capacity: int, pool: int, free: int, *,
                    seed: int = 0, oracle: bool = True) -> ClusterState:
    """A :class:`ClusterState` at a decode decision point.

    Parameters
    ----------
    workload : Workload
        Where prompt and output lengths are drawn from (with replacement).
    n_workers, capacity : int
        ``G`` workers of ``B`` slots.
    pool : int
        Waiting requests.
    free : int
        Free slots in total, spread at random over workers (``free = G * B``
        gives a cold start).
    oracle : bool
        Predicted remaining steps are the true ones (else unbounded).
    """
    n_workers = check_int("n_workers", n_workers, minimum=1)
    capacity = check_int("capacity", capacity, minimum=1)
    pool = check_int("pool", pool, minimum=0)
    free = check_int("free", free, minimum=0)
    if free > n_workers * capacity:
        raise ValueError(f"free must be <= n_workers * capacity = {n_workers * capacity}, got {free}")
    rng = np.random.default_rng(seed)
    slots = np.full(n_workers, capacity)
    for g in rng.choice(np.repeat(np.arange(n_workers), capacity), size=free, replace=False):
        slots[g] -= 1
    n_active = int(slots.sum())
    pick = rng.integers(0, len(workload), size=n_active + pool)
    prompt = workload.prompt_tokens[pick].astype(np.float64)
    output = workload.output_tokens[pick].astype(np.float64)
    state = ClusterState(n_workers, capacity)
    generated = np.floor(rng.uniform(0, 1, n_active) * output[:n_active])
    steps = (output[:n_active] - generated) if oracle else np.inf
    state.submit_arrays(np.arange(n_active), prompt[:n_active] + generated, growth=1.0, steps=steps,
                        prompt=prompt[:n_active])
    state.place(Placement(np.arange(n_active), np.repeat(np.arange(n_workers), slots), np.arange(n_active)))
    state.submit_arrays(np.arange(n_active, n_active + pool), prompt[n_active:], growth=1.0,
                        steps=output[n_active:] if oracle else np.inf, prompt=prompt[n_active:])
    return state
