"""The router's compiled kernel for one waiting request (:func:`barrierlb.router._place_one`).

One numba call gives what the one-request decision hands the solver's greedy:
the running requests' projected load per rank at every kept step, each kept
step's peak over the alive ranks, and the waiting request's lookahead. It does
the arithmetic of :func:`barrierlb.projection.running_projection` in the same
order (slots row-major into per-rank buckets of kept rows covered, a reverse
cumulative sum over the buckets, ``max(base + slope * h, 0)``), so the sums,
and the placements, are the same as the full decision's (the tests compare them).

Imported on first use, as the solver's kernels are, so that ``import
barrierlb.router`` does not load numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def one_request_arrays(slot_id, slot_work, slot_growth, remaining, by_slot, rows, stride, kept, alive, every_rank,
                       pool_work, pool_growth, pool_steps, capacity, active_count):
    """The arguments of the solver's greedy for one waiting request.

    ``remaining`` holds the running requests' predicted remaining steps, per slot
    (``by_slot``: shape ``(G * S,)``, read where a slot is occupied) or per
    occupied slot in row-major order; ``kept``: the kept steps as floats.
    Returns ``loads (R, G), peak (R,), work (1, R), peak_work (1,), free (G,)``
    (free slots, zero on a dead rank), the greedy's ``unplaced``, ``must``,
    ``score`` and ``placed`` (task, rank) arrays, and the alive ranks.
    """
    n_workers, n_slots = slot_id.shape
    n_kept = kept.size
    base = np.zeros((n_workers, n_kept + 1))
    slope = np.zeros((n_workers, n_kept + 1))
    k = 0
    for g in range(n_workers):
        for s in range(n_slots):
            if slot_id[g, s] < 0:
                continue
            left = remaining[g * n_slots + s] if by_slot else remaining[k]
            k += 1
            # count = clip(ceil(left), 1, rows); span = ceil(count / stride)
            count = min(max(np.ceil(left), 1.0), float(rows))
            span = -(-int(count) // stride)
            base[g, span] += slot_work[g, s]
            slope[g, span] += slot_growth[g, s]
    loads = np.empty((n_kept, n_workers))
    peak = np.full(n_kept, -np.inf)
    for g in range(n_workers):
        b = 0.0
        c = 0.0
        for j in range(n_kept, 0, -1):
            b = base[g, j] if j == n_kept else b + base[g, j]
            c = slope[g, j] if j == n_kept else c + slope[g, j]
            value = max(b + c * kept[j - 1], 0.0)
            loads[j - 1, g] = value
            if (every_rank or alive[g]) and value > peak[j - 1]:
                peak[j - 1] = value
    work = np.zeros((1, n_kept))
    top = np.zeros(1)
    for j in range(n_kept):
        h = kept[j]
        if h < pool_steps:
            work[0, j] = max(pool_work + pool_growth * h, 0.0)
        if j == 0 or work[0, j] > top[0]:
            top[0] = work[0, j]
    free = np.zeros(n_workers, dtype=np.int64)
    n_alive = 0
    n_free = 0
    for g in range(n_workers):
        if alive[g]:
            n_alive += 1
            free[g] = capacity[g] - active_count[g]
            if free[g] != 0:
                n_free += 1
    return (loads, peak, work, top, free, np.ones(1, dtype=np.bool_), np.zeros(1, dtype=np.bool_),
            np.empty((1, n_free)), np.zeros(2, dtype=np.int64), n_alive)


@njit(cache=True, nogil=True)
def imbalance_objective(loads, d, alive, every_rank, n_alive):
    """``d @ (n_alive * max - sum)`` of the alive ranks' loads (R, G), as ``imbalance_of_loads`` gives it."""
    if n_alive == 0:
        return 0.0
    total = 0.0
    for j in range(loads.shape[0]):
        top = -np.inf
        added = 0.0
        for g in range(loads.shape[1]):
            if every_rank or alive[g]:
                added += loads[j, g]
                if loads[j, g] > top:
                    top = loads[j, g]
        total += d[j] * (n_alive * top - added)
    return total


@njit(cache=True, nogil=True)
def running_and_waiting(slot_id, slot_prompt, slot_age, pool_id, pool_prompt):
    """Ids, prompts and generated tokens of the running requests (slots row-major) and then the waiting
    one (0 generated): what the router's predictor is asked for one decision."""
    n_workers, n_slots = slot_id.shape
    m = 0
    for g in range(n_workers):
        for s in range(n_slots):
            if slot_id[g, s] >= 0:
                m += 1
    ids = np.empty(m + 1, dtype=slot_id.dtype)
    prompt = np.empty(m + 1, dtype=slot_prompt.dtype)
    age = np.empty(m + 1, dtype=slot_age.dtype)
    k = 0
    for g in range(n_workers):
        for s in range(n_slots):
            if slot_id[g, s] >= 0:
                ids[k] = slot_id[g, s]
                prompt[k] = slot_prompt[g, s]
                age[k] = slot_age[g, s]
                k += 1
    ids[m] = pool_id[0]
    prompt[m] = pool_prompt[0]
    age[m] = 0
    return ids, prompt, age
