"""The compiled pass of :meth:`barrierlb.predictors.LifetimeObserver.observe` over a ledger's slots.

Plain ``bfio``'s online controller observes the slots at every decision; as
array code that was about ten whole-array operations per decision (some 20 us
for 2,048 slots, more than a serving proxy's whole one-request decision). One
loop does the same comparisons in the same row-major order, so the lifetimes
recorded, and the decisions tuned on them, are the same.

Imported on first use, as the solver's kernels are, so that ``import
barrierlb`` does not load numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def observe_slots(previous, before, ids, age):
    """Compare the slots ``(ids, age)`` with the last call's ``(previous, before)``, then copy them there.

    Returns ``(elapsed, lifetimes)``: the steps run since the last call (the
    largest age gain of a task seen both times, at least 0; with none, the
    oldest task that arrived since, at least 1) and, row-major, the lifetimes
    of the tasks that left (their last age plus ``max(elapsed, 1)``).
    """
    n_workers, n_slots = ids.shape
    stayed_any = False
    gain = 0
    arrived = 0
    n_left = 0
    for g in range(n_workers):
        for s in range(n_slots):
            p = previous[g, s]
            i = ids[g, s]
            if p == i and p >= 0:
                stayed_any = True
                if age[g, s] - before[g, s] > gain:
                    gain = age[g, s] - before[g, s]
            else:
                if p >= 0:
                    n_left += 1
                if i >= 0 and age[g, s] > arrived:
                    arrived = age[g, s]
    elapsed = gain if stayed_any else max(arrived, 1)
    step = max(elapsed, 1)
    lifetimes = np.empty(n_left, dtype=np.int64)
    k = 0
    for g in range(n_workers):
        for s in range(n_slots):
            p = previous[g, s]
            if p >= 0 and p != ids[g, s]:
                lifetimes[k] = before[g, s] + step
                k += 1
            previous[g, s] = ids[g, s]
            before[g, s] = age[g, s]
    return elapsed, lifetimes
