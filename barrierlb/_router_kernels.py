"""The router's compiled kernel for one waiting request (:func:`barrierlb.router._place_one`).

One numba call gives what the one-request decision hands the solver's greedy:
the running requests' projected load per rank at every kept step and each kept
step's peak over the alive ranks (:func:`one_request_arrays`), and another the
waiting request's lookahead (:func:`waiting_lookahead`). The first does
the arithmetic of :func:`barrierlb.projection.running_projection` in the same
order (slots row-major into per-rank buckets of kept rows covered, a reverse
cumulative sum over the buckets, ``max(base + slope * h, 0)``), so the sums,
and the placements, are the same as the full decision's (the tests compare them).

:func:`place_one` is the whole decision in one call: the running requests'
bounded survival predictions (:func:`survival_remaining`), those arrays, the
solver's compiled greedy on them and the objective; the router takes it for
every one-request decision (the predictions come in from the predictor for
other predictors). :func:`admit_one` goes one step further for a request that
arrives to an empty pool (:meth:`barrierlb.router.DecodeRouter.admit`): the free
slots counted, the online controller's pass over the slots, :func:`place_one` and
the slot written, in one call.

Imported on first use, as the solver's kernels are, so that ``import
barrierlb.router`` does not load numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from barrierlb._lifetime_kernel import observe_slots
from barrierlb.solvers import greedy_kernel
from barrierlb.solvers._compiled import weighted_sums

#: The fast solver's own compiled greedy (its public entry), called from :func:`place_one`.
greedy = greedy_kernel()


@njit(cache=True, nogil=True)
def one_request_arrays(slot_id, slot_work, slot_growth, remaining, by_slot, rows, stride, kept, alive, every_rank,
                       capacity, active_count):
    """The arguments of the solver's greedy for one waiting request, but its lookahead
    (:func:`waiting_lookahead`).

    ``remaining`` holds the running requests' predicted remaining steps, per slot
    (``by_slot``: shape ``(G * S,)``, read where a slot is occupied) or per
    occupied slot in row-major order; ``kept``: the kept steps as floats.
    Returns ``loads (R, G), peak (R,), free (G,)``
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
    free = np.zeros(n_workers, dtype=np.int64)
    n_alive = 0
    n_free = 0
    for g in range(n_workers):
        if alive[g]:
            n_alive += 1
            free[g] = capacity[g] - active_count[g]
            if free[g] != 0:
                n_free += 1
    return (loads, peak, free, np.ones(1, dtype=np.bool_), np.zeros(1, dtype=np.bool_),
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


# ------------------------------------------------ one decision in one call (the proxy's usual one)
@njit(cache=True, nogil=True)
def _first_above(values, lo, hi, x):
    """The first index in ``[lo, hi)`` of sorted ``values`` whose value is above ``x`` (``hi``: none),
    as ``searchsorted(..., "right")``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _quantile_above(values, start, end, threshold, quantile):
    """``(q-quantile of values[start:end] - threshold over the entries above threshold, how many)``;
    ``inf`` when none is (``values[start:end]`` sorted)."""
    lo = _first_above(values, start, end, threshold)
    alive = end - lo
    if alive <= 0:
        return np.inf, 0
    return values[min(lo + int(np.floor(quantile * alive)), end - 1)] - threshold, alive


@njit(cache=True, nogil=True)
def survival_remaining(model, prompt, generated, cap):
    """:class:`~barrierlb.predictors.SurvivalPredictor`'s ``remaining`` of one request of ``prompt``
    tokens that has generated ``generated``, bounded by its ``max_tokens`` ``cap`` as the router's
    bounded predictor bounds it (``min(predicted, max(cap - generated, 1))``; ``cap`` inf: no bound).

    ``model`` is the predictor's arrays (:meth:`barrierlb.router._Bounded.survival_arrays`):
    ``(sorted outputs, grouped outputs, group ends, prompt edges, group shift, quantile,
    min_samples)``. The same arithmetic as ``SurvivalPredictor._conditional``
    (``searchsorted(..., "right")``): the pooled quantile, or the request's prompt group's where
    that group has ``min_samples`` outputs above ``generated``."""
    sorted_outputs, grouped, group_end, edges, shift, quantile, min_samples = model
    a = float(generated)
    n = sorted_outputs.size
    predicted = np.inf
    if n >= min_samples:
        predicted, _ = _quantile_above(sorted_outputs, 0, n, a, quantile)
        if grouped.size:
            group = _first_above(edges, 0, edges.size, prompt)      # the edges at or below the prompt
            start = group_end[group - 1] if group > 0 else 0
            own, alive = _quantile_above(grouped, start, group_end[group], a + group * shift, quantile)
            if alive >= min_samples:
                predicted = own
    return min(predicted, max(cap - a, 1.0))


@njit(cache=True, nogil=True)
def waiting_lookahead(kept, pool_work, pool_growth, steps, survival, model, pool_prompt, pool_cap):
    """The waiting request's lookahead ``work (1, R)`` over the kept steps: ``max(work + growth * h, 0)``
    while ``h < steps``; with ``survival`` its steps are the bounded survival prediction at 0 tokens
    (:func:`survival_remaining` of ``model``), else ``steps`` as given."""
    if survival:
        steps = survival_remaining(model, pool_prompt, 0, pool_cap)
    work = np.zeros((1, kept.size))
    for j in range(kept.size):
        h = kept[j]
        if h < steps:
            work[0, j] = max(pool_work + pool_growth * h, 0.0)
    return work


@njit(cache=True, nogil=True)
def place_one(slot_id, slot_work, slot_growth, slot_age, slot_prompt, slot_cap, remaining, mode, model, rows, stride,
              kept, d, alive, every_rank, work, capacity, active_count, peak_weight, tie_break, spread):
    """The one-request decision in one call: returns ``(rank, objective)`` (rank -1: no free slot).

    The running requests' remaining steps come from ``remaining`` per slot
    (``mode`` 0: shape ``(G * S,)``, the ledger's stored predictions), per
    occupied slot in row-major order (``mode`` 1: a predictor's answers) or
    from the bounded survival prediction at each slot's prompt, age and cap
    (``mode`` 2: :func:`survival_remaining` of ``model``). Then :func:`one_request_arrays`' arrays,
    the solver's compiled greedy on them with the waiting request's lookahead
    ``work`` and its weighted sum (the solver's own
    :func:`~barrierlb.solvers._compiled.weighted_sums`), and :func:`imbalance_objective`.
    """
    n_workers, n_slots = slot_id.shape
    if mode == 2:
        given = np.empty(n_workers * n_slots)
        for g in range(n_workers):
            for s in range(n_slots):
                if slot_id[g, s] >= 0:
                    given[g * n_slots + s] = survival_remaining(model, slot_prompt[g, s], slot_age[g, s],
                                                                slot_cap[g, s])
        by_slot = True
    else:
        given = remaining
        by_slot = mode == 0
    top = 0.0
    for j in range(work.shape[1]):
        if j == 0 or work[0, j] > top:
            top = work[0, j]
    loads, peak, free, unplaced, must, score, placed, n_alive = one_request_arrays(
        slot_id, slot_work, slot_growth, given, by_slot, rows, stride, kept, alive, every_rank, capacity, active_count)
    if score.shape[1] == 0:
        return -1, 0.0
    peak_work = np.full(1, top)
    placed_task = placed[:1]
    placed_worker = placed[1:]
    total = weighted_sums(work, d)
    greedy(loads, peak, work, peak_work, d, total, free, unplaced, must, 1, True, False, float(n_alive * peak_weight),
           tie_break, placed_task, placed_worker, 0, score, spread)
    return placed_worker[0], imbalance_objective(loads, d, alive, every_rank, n_alive)


#: :func:`admit_one`'s outcomes: placed; no free slot (nothing changed); ``hold`` with an alive
#: rank full, so the full decision judges it (the slots already observed).
PLACED, NO_FREE_SLOT, NEEDS_FULL_DECISION = 0, 1, 2


@njit(cache=True, nogil=True)
def admit_one(slot_id, slot_work, slot_growth, slot_age, slot_prompt, slot_remaining, slot_cap, active_count,
              capacity, alive, placed_sums, hold, observe, previous, before, life, end, head, clock, mode, model,
              rows, stride, kept, d, peak_weight, tie_break, spread,
              task_id, task_work, task_growth, task_steps, task_prompt, task_cap):
    """One arriving request, alone in the pool, decided and placed: returns ``(outcome, rank, slot,
    objective, elapsed, n_left)``.

    In the order of the router's :meth:`~barrierlb.router.DecodeRouter.route`: with no free slot on an
    alive rank, :data:`NO_FREE_SLOT` and nothing is changed. Else, with ``observe``, the online
    controller's pass over the slots (:func:`barrierlb._lifetime_kernel.observe_slots` on its copies
    ``previous``, ``before`` and ring buffers ``life``, ``end`` from ``head`` at ``clock``; its
    ``(elapsed, n_left)`` returned for the caller's counters). With ``hold`` and an alive rank full,
    :data:`NEEDS_FULL_DECISION` (the full decision judges a hold then). Else :func:`place_one` on the
    slots (``mode`` 0: the stored predictions ``slot_remaining``; 2: the bounded survival ones) with
    the request's lookahead (:func:`waiting_lookahead`: its ``task_steps``, or with ``mode`` 2 its
    survival prediction under ``task_cap``), and the request written to its
    rank's lowest empty slot as the ledger's ``_place_one`` writes it (``slot_cap`` its ``max_tokens``,
    ``placed_sums`` the ledger's count, work and growth placed so far): :data:`PLACED`.
    """
    n_workers, n_slots = slot_id.shape
    n_free = 0
    every_rank = True
    some_full = False
    for g in range(n_workers):
        if alive[g]:
            free = capacity[g] - active_count[g]
            n_free += free
            if free <= 0:
                some_full = True
        else:
            every_rank = False
    if n_free <= 0:
        return NO_FREE_SLOT, -1, -1, 0.0, 0, 0
    elapsed, n_left = 0, 0
    if observe:
        elapsed, n_left = observe_slots(previous, before, slot_id, slot_age, life, end, head, clock)
    if hold and some_full:
        return NEEDS_FULL_DECISION, -1, -1, 0.0, elapsed, n_left
    survival = mode == 2
    work = waiting_lookahead(kept, task_work, task_growth, task_steps, survival, model, task_prompt,
                             task_cap if survival else 0.0)
    rank, objective = place_one(slot_id, slot_work, slot_growth, slot_age, slot_prompt, slot_cap,
                                slot_remaining.reshape(-1), mode, model, rows, stride, kept, d, alive, every_rank,
                                work, capacity, active_count, peak_weight, tie_break, spread)
    if rank < 0:                                                  # not reached: a free slot was counted
        return NEEDS_FULL_DECISION, -1, -1, 0.0, elapsed, n_left
    slot = 0
    while slot_id[rank, slot] != -1:                              # its lowest empty slot
        slot += 1
    slot_id[rank, slot] = task_id
    slot_work[rank, slot] = task_work
    slot_growth[rank, slot] = task_growth
    slot_remaining[rank, slot] = task_steps
    slot_prompt[rank, slot] = task_prompt
    slot_age[rank, slot] = 0
    slot_cap[rank, slot] = task_cap
    active_count[rank] += 1
    placed_sums[0] += 1.0
    placed_sums[1] += task_work
    placed_sums[2] += task_growth
    return PLACED, rank, slot, objective, elapsed, n_left
