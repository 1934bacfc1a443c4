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
def observe_slots(previous, before, ids, age, life, end, head, clock):
    """Compare the slots ``(ids, age)`` with the last call's ``(previous, before)``, then copy them there,
    and append the lifetimes of the tasks that left to the ring buffers ``life`` and ``end``.

    Returns ``(elapsed, n_left)``: the steps run since the last call (the
    largest age gain of a task seen both times, at least 0; with none, the
    oldest task that arrived since, at least 1) and how many tasks left. Their
    lifetimes (their last age plus ``max(elapsed, 1)``), row-major, go to the
    buffers from position ``head`` on, wrapping, each ending at step
    ``clock + elapsed`` (a burst of more than the buffers hold keeps the latest, the
    oldest of them then at ``(head + n_left) % size``, where the caller's next ``head`` is).
    """
    n_workers, n_slots = ids.shape
    stayed_any = False
    gain = 0
    arrived = 0
    left = np.empty(n_workers * n_slots, dtype=np.int64)      # the last ages of the tasks that left
    n_left = 0
    for g in range(n_workers):                                # one pass, copying as it goes
        for s in range(n_slots):
            p = previous[g, s]
            i = ids[g, s]
            a = age[g, s]
            if p == i and p >= 0:
                stayed_any = True
                if a - before[g, s] > gain:
                    gain = a - before[g, s]
            else:
                if p >= 0:
                    left[n_left] = before[g, s]
                    n_left += 1
                if i >= 0 and a > arrived:
                    arrived = a
            previous[g, s] = i
            before[g, s] = a
    elapsed = gain if stayed_any else max(arrived, 1)
    window = life.size
    extra = max(elapsed, 1)
    for k in range(max(n_left - window, 0), n_left):          # the latest `window` of them
        position = (head + k) % window
        life[position] = left[k] + extra
        end[position] = clock + elapsed
    return elapsed, n_left
