"""Compiled kernels of the fast solver: the greedy constructions and the local search.

Each of these places one task or applies one move at a time, the sequential
part of the solver; as array operations they cost more in call overhead than in
arithmetic (tens of microseconds a placement), so they are loops compiled by
numba, the solver's one source for them. Ties go to the lowest index (in
row-major order for the score matrix), so every MPI rank makes the same
decision. Scores are sums over the horizon in step order.

Imported by :func:`barrierlb.solvers.fast.solve_problem` on first use. Arrays:
``loads`` (H+1, G), ``work`` (N, H+1), ``d`` (H+1,), ``total`` (N,) float64,
C-ordered; masks are bool.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_kernel = njit(cache=True, nogil=True)


@_kernel
def weighted_sums(work, d):
    """``total``: each task's lookahead weighted over the horizon, ``W_i = sum_h d_h w[i, h]`` in step
    order (one definition for the solver and the router's one-request call, so both get the same sums)."""
    total = np.empty(work.shape[0])
    for i in range(work.shape[0]):
        value = 0.0
        for h in range(work.shape[1]):
            value += d[h] * work[i, h]
        total[i] = value
    return total


@_kernel
def _score(loads, peak, work, d, total, i, g, peak_cost, tie_break):
    """``sum_h d_h (peak_cost * relu(w[i, h] - m[h, g]) - w[i, h])`` less the tie-break."""
    overflow = 0.0
    room = 0.0
    for h in range(loads.shape[0]):
        margin = peak[h] - loads[h, g]
        room += d[h] * margin
        excess = work[i, h] - margin
        if excess > 0.0:
            overflow += d[h] * excess
    return peak_cost * overflow - total[i] - tie_break * room


@_kernel
def _score_column(loads, peak, work, peak_work, d, total, live, g, j, score, peak_cost, tie_break, rooms):
    """Column ``j`` (worker ``g``) of the score matrix; ``inf`` for tasks no longer eligible.

    A task whose largest step fits under the worker's smallest margin overflows
    nowhere, so its score is ``-W_i`` less the tie-break with no pass over the
    horizon: the same number :func:`_score` gives (its overflow sum is zero).
    ``rooms[j]`` receives the worker's room ``sum_h d_h (peak[h] - L[h, g])``.
    """
    room = 0.0
    least = np.inf
    for h in range(loads.shape[0]):
        margin = peak[h] - loads[h, g]
        room += d[h] * margin
        least = min(least, margin)
    rooms[j] = room
    for i in range(work.shape[0]):
        if not live[i]:
            score[i, j] = np.inf
        elif peak_work[i] <= least:
            score[i, j] = -total[i] - tie_break * room
        else:
            score[i, j] = _score(loads, peak, work, d, total, i, g, peak_cost, tie_break)


@_kernel
def _column_best(score, j):
    """Row of the smallest score in column ``j`` (the first of equal ones)."""
    best = 0
    for i in range(1, score.shape[0]):
        if score[i, j] < score[best, j]:
            best = i
    return best


@_kernel
def _place(loads, peak, work, i, g):
    raised = False
    for h in range(loads.shape[0]):
        loads[h, g] += work[i, h]
        if loads[h, g] > peak[h]:
            peak[h] = loads[h, g]
            raised = True
    return raised


@_kernel
def _commit(loads, peak, work, i, g, placed_task, placed_worker, n_placed, unplaced, free_left):
    """Place task ``i`` on worker ``g`` and record it; returns the new placed count."""
    _place(loads, peak, work, i, g)
    placed_task[n_placed] = i
    placed_worker[n_placed] = g
    unplaced[i] = False
    free_left[g] -= 1
    return n_placed + 1


@_kernel
def _keep_only_forced(live, must, score, stale):
    """From now on only the forced tasks may take a slot: every other row is barred."""
    for i in range(live.size):
        if not must[i]:
            live[i] = False
        if not live[i]:
            score[i, :] = np.inf
    stale[:] = True


@_kernel
def greedy(loads, peak, work, peak_work, d, total, free_left, unplaced, must, to_place, work_conserving, slots_rule,
           peak_cost, tie_break, placed_task, placed_worker, n_placed, score, lexicographic):
    """The ``pairs`` (``slots_rule`` false) or ``slots`` construction; returns the placed count.

    ``score`` (N, C) receives the score matrix over the workers that had a free
    slot at the start (the local search ranks waiting tasks by it); ``loads``,
    ``peak``, ``free_left``, ``unplaced`` and the placement arrays are updated.
    Each column's best row is kept, so a placement rescans only the columns it
    changed; the pair taken is the ``argmin`` of the whole matrix
    (the first in row-major order among equal scores). ``lexicographic``: among
    columns whose best scores are exactly equal, the worker with the most room
    (least horizon-weighted load) first, then row-major order; with
    ``tie_break`` 0 (strict ties) the room never overrides a lower score.
    """
    n_pool = work.shape[0]
    cols = np.flatnonzero(free_left > 0)
    n_cols = cols.size
    live = unplaced.copy()
    best_row = np.zeros(n_cols, dtype=np.int64)
    stale = np.ones(n_cols, dtype=np.bool_)
    rooms = np.zeros(n_cols)
    for j in range(n_cols):
        _score_column(loads, peak, work, peak_work, d, total, live, cols[j], j, score, peak_cost, tie_break, rooms)
    forced_left = 0
    for i in range(n_pool):
        if must[i] and unplaced[i]:
            forced_left += 1
    only_forced = False
    open_cols = n_cols
    while n_placed < to_place:
        if not only_forced and forced_left >= to_place - n_placed:
            only_forced = True
            _keep_only_forced(live, must, score, stale)
        for jj in range(n_cols):
            if stale[jj]:
                best_row[jj] = _column_best(score, jj)
                stale[jj] = False
        if slots_rule:
            j = -1
            least = np.inf
            for jj in range(n_cols):                         # the open worker with the least room
                if free_left[cols[jj]] > 0:
                    room = 0.0
                    for h in range(loads.shape[0]):
                        room += d[h] * (peak[h] - loads[h, cols[jj]])
                    if j < 0 or room < least:
                        j = jj
                        least = room
        else:
            j = 0
            for jj in range(1, n_cols):
                value, current = score[best_row[jj], jj], score[best_row[j], j]
                if value < current:
                    j = jj
                elif value == current:
                    if lexicographic and rooms[jj] != rooms[j] and value != np.inf:
                        if rooms[jj] > rooms[j]:
                            j = jj
                    elif best_row[jj] < best_row[j]:
                        j = jj
        i = best_row[j]
        if not work_conserving and score[i, j] >= 0.0:
            # Nothing left lowers the objective: stop, unless forced tasks are still
            # waiting; they are placed all the same, from now on alone.
            if forced_left == 0:
                break
            if not only_forced:
                only_forced = True
                _keep_only_forced(live, must, score, stale)
                continue
            if score[i, j] == np.inf:
                break
        g = cols[j]
        raised = _place(loads, peak, work, i, g)
        placed_task[n_placed] = i
        placed_worker[n_placed] = g
        n_placed += 1
        unplaced[i] = False
        free_left[g] -= 1
        live[i] = False
        if must[i]:
            forced_left -= 1
        score[i, :] = np.inf
        for jj in range(n_cols):
            if best_row[jj] == i:
                stale[jj] = True
        if free_left[g] == 0:
            score[:, j] = np.inf
            stale[j] = True
            open_cols -= 1
        if open_cols == 0 or n_placed >= to_place:
            break
        if raised:
            for jj in range(n_cols):
                if free_left[cols[jj]] > 0:
                    _score_column(loads, peak, work, peak_work, d, total, live, cols[jj], jj, score, peak_cost,
                                  tie_break, rooms)
                    stale[jj] = True
        elif free_left[g] > 0:
            _score_column(loads, peak, work, peak_work, d, total, live, g, j, score, peak_cost, tie_break, rooms)
            stale[j] = True
    return n_placed


@_kernel
def largest_first(loads, peak, work, d, total, free_left, unplaced, to_place, peak_cost, tie_break,
                  placed_task, placed_worker, n_placed, lexicographic):
    """The ``largest`` construction (LPT): the largest task first, where it raises the objective least.

    ``lexicographic``: among workers of exactly equal overflow, the one with the most room.
    """
    order = _argsort_stable(-total)
    for i in order:
        if n_placed >= to_place:
            break
        if not unplaced[i]:
            continue
        best = -1
        best_value = 0.0
        best_room = 0.0
        for g in range(loads.shape[1]):
            if free_left[g] <= 0:
                continue
            overflow = 0.0
            room = 0.0
            for h in range(loads.shape[0]):
                margin = peak[h] - loads[h, g]
                excess = work[i, h] - margin
                if excess > 0.0:
                    overflow += d[h] * excess
                room += d[h] * margin
            value = peak_cost * overflow - tie_break * room
            if best < 0 or value < best_value or (lexicographic and value == best_value and room > best_room):
                best = g
                best_value = value
                best_room = room
        n_placed = _commit(loads, peak, work, i, best, placed_task, placed_worker, n_placed, unplaced, free_left)
    return n_placed


@_kernel
def _top3(loads, alive, values, index):
    """Largest three alive loads per step and their workers (ties: lower worker)."""
    n_rows, n_workers = loads.shape
    for h in range(n_rows):
        filled = 0
        for g in range(n_workers):
            v = loads[h, g] if alive[g] else -np.inf
            k = filled
            while k > 0 and v > values[h, k - 1]:
                k -= 1
            if k < 3:
                for m in range(min(filled, 2), k, -1):
                    values[h, m] = values[h, m - 1]
                    index[h, m] = index[h, m - 1]
                values[h, k] = v
                index[h, k] = g
                filled = min(filled + 1, 3)
        for k in range(filled, 3):
            values[h, k] = -np.inf
            index[h, k] = -1


@_kernel
def _kth_smallest(values, k):
    """The ``k``-th smallest of ``values`` (0-based), by quickselect on a copy.

    Hand-written: numba's ``np.partition`` and ``np.sort`` each took seconds to compile.
    """
    a = values.copy()
    lo, hi = 0, a.size - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@_kernel
def _argsort_stable(keys):
    """Positions that sort ``keys`` ascending, equal keys in their original order (bottom-up merge sort)."""
    n = keys.size
    order = np.arange(n)
    spare = np.empty(n, dtype=np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if keys[order[j]] < keys[order[i]]:
                    spare[k] = order[j]
                    j += 1
                else:
                    spare[k] = order[i]
                    i += 1
                k += 1
            while i < mid:
                spare[k] = order[i]
                i += 1
                k += 1
            while j < hi:
                spare[k] = order[j]
                j += 1
                k += 1
        order, spare = spare, order
        width *= 2
    return order


@_kernel
def _top(priority, limit):
    """Positions, ascending, of the ``limit`` largest priorities; ties at the cut to the lower position."""
    n = priority.size
    if n <= limit:
        return np.arange(n)
    threshold = _kth_smallest(priority, n - limit)                 # the limit-th largest
    above = 0
    for k in range(n):
        if priority[k] > threshold:
            above += 1
    at_left = limit - above
    keep = np.empty(limit, dtype=np.int64)
    count = 0
    for k in range(n):
        if priority[k] > threshold or (priority[k] == threshold and at_left > 0):
            if priority[k] == threshold:
                at_left -= 1
            keep[count] = k
            count += 1
    return keep


@_kernel
def _others(values, index, h, a, b):
    """The peak at step ``h`` over the workers other than ``a`` and ``b`` ."""
    if index[h, 0] == a or index[h, 0] == b:
        return values[h, 2] if index[h, 1] == a or index[h, 1] == b else values[h, 1]
    return values[h, 0]


@_kernel
def _shift_gain(values, index, peak, d, loads, work, ga, gb, ta, tb, peak_cost):
    """Objective change when task ``ta`` leaves worker ``ga`` for ``gb`` and task ``tb`` comes back
    (an exchange) or nothing does (``tb < 0``, a relocation): column ``ga`` gains ``w[tb] - w[ta]``
    and column ``gb`` loses it."""
    gain = 0.0
    for h in range(loads.shape[0]):
        shift = work[tb, h] - work[ta, h] if tb >= 0 else -work[ta, h]
        new_peak = max(max(_others(values, index, h, ga, gb), loads[h, ga] + shift), loads[h, gb] - shift)
        gain += (new_peak - peak[h]) * d[h]
    return peak_cost * gain


@_kernel
def _best_shift(values, index, peak, d, loads, work, task, worker, first, second, priority, count, exchange,
                peak_cost, max_pairs):
    """The best of the first ``count`` candidate shifts, scored in order of ``priority`` (the top
    ``max_pairs``): task ``first[k]`` leaves its worker for the worker of task ``second[k]`` and that
    task comes back (``exchange``), or it moves to worker ``second[k]`` (a relocation). Returns
    (gain, first, second) of the lowest gain, the earliest scored on ties; (0, -1, -1) if none."""
    if count == 0:
        return 0.0, -1, -1
    best, best_gain = -1, 0.0
    for k in _top(priority[:count], max_pairs):
        a, b = first[k], second[k]
        if exchange:
            gain = _shift_gain(values, index, peak, d, loads, work, worker[a], worker[b], task[a], task[b], peak_cost)
        else:
            gain = _shift_gain(values, index, peak, d, loads, work, worker[a], b, task[a], -1, peak_cost)
        if best < 0 or gain < best_gain:
            best, best_gain = k, gain
    return best_gain, first[best], second[best]


@_kernel
def _best_exchange(values, index, peak, d, loads, work, total, task, worker, movers, room, peak_cost, max_pairs):
    """Exchanges: a task on a peak worker swaps with a lighter one elsewhere. Returns (gain, a, b), a < 0 if none."""
    first = np.empty(movers.size * task.size, dtype=np.int64)
    second = np.empty_like(first)
    priority = np.empty(first.size)
    count = 0
    for m in movers:
        for b in range(task.size):
            if worker[m] != worker[b] and total[task[b]] < total[task[m]]:
                first[count] = m
                second[count] = b
                priority[count] = room[worker[b]]             # partners on the roomiest workers first
                count += 1
    return _best_shift(values, index, peak, d, loads, work, task, worker, first, second, priority, count, True,
                       peak_cost, max_pairs)


@_kernel
def _best_relocation(values, index, peak, d, loads, work, task, worker, movers, room, free_left, peak_cost,
                     max_pairs):
    """Relocations: a task on a peak worker moves to a worker with a free slot. Returns (gain, a, target)."""
    open_cols = np.flatnonzero(free_left > 0)
    first = np.empty(movers.size * open_cols.size, dtype=np.int64)
    second = np.empty_like(first)
    priority = np.empty(first.size)
    count = 0
    for m in movers:
        for target in open_cols:
            if worker[m] != target:
                first[count] = m
                second[count] = target
                priority[count] = room[target]
                count += 1
    return _best_shift(values, index, peak, d, loads, work, task, worker, first, second, priority, count, False,
                       peak_cost, max_pairs)


@_kernel
def _best_replacement(values, index, peak, d, loads, work, total, task, worker, on_peak, unplaced, forced, rank_key,
                      peak_cost, max_candidates, max_pairs):
    """Replacements: a waiting task takes a placed task's slot. Returns (gain, a, incoming)."""
    waiting = np.flatnonzero(unplaced)
    replaceable = False
    for a in range(task.size):
        if not forced[task[a]]:
            replaceable = True
    if waiting.size == 0 or not replaceable:
        return 0.0, -1, -1
    if waiting.size > max_candidates:                        # the best by greedy score (or the largest)
        waiting = waiting[_argsort_stable(rank_key[waiting])[:max_candidates]]
    first = np.empty(task.size * waiting.size, dtype=np.int64)
    second = np.empty_like(first)
    gain_work = np.empty(first.size)
    count = 0
    for a in range(task.size):
        if not forced[task[a]]:
            for u in waiting:
                if on_peak[a] or total[u] > total[task[a]]:
                    first[count] = a
                    second[count] = u
                    gain_work[count] = total[u] - total[task[a]]
                    count += 1
    if count == 0:
        return 0.0, -1, -1
    gain_work = gain_work[:count]
    # Moves that can lower a peak first, then the largest gains in placed work.
    lift = (gain_work.max() - gain_work.min()) + 1.0
    priority = np.empty(count)
    for k in range(count):
        priority[k] = gain_work[k] + (lift if on_peak[first[k]] else 0.0)
    best, best_gain = -1, 0.0
    for k in _top(priority, max_pairs):
        a, u = first[k], second[k]
        g, ta = worker[a], task[a]
        gain = 0.0
        for h in range(loads.shape[0]):
            new_peak = max(_others(values, index, h, g, g), loads[h, g] - work[ta, h] + work[u, h])
            gain += (new_peak - peak[h]) * d[h]
        gain = peak_cost * gain - (total[u] - total[ta])
        if best < 0 or gain < best_gain:
            best, best_gain = k, gain
    return best_gain, first[best], second[best]


@_kernel
def local_search(loads, work, d, total, placed_task, placed_worker, n_placed, unplaced, free_left, forced, alive,
                 peak_cost, score, has_score, max_moves, max_candidates, max_pairs):
    """Best-improvement local search (:meth:`barrierlb.solvers.fast._Search.local_search`); returns the moves.

    Each round scores exchanges, relocations and replacements (at most
    ``max_pairs`` of each, the most promising first) and applies the best
    improving move; ``loads``, the placement arrays, ``unplaced`` and
    ``free_left`` are updated in place.
    """
    tol = 1e-9
    n_rows, n_workers = loads.shape
    values = np.empty((n_rows, 3))
    index = np.empty((n_rows, 3), dtype=np.int64)
    room = np.empty(n_workers)
    task = placed_task[:n_placed]
    worker = placed_worker[:n_placed]
    # Waiting tasks rank by their best greedy score (the matrix is not updated by the moves), or by size.
    rank_key = np.empty(work.shape[0])
    for i in range(work.shape[0]):
        if has_score:
            low = np.inf
            for j in range(score.shape[1]):
                low = min(low, score[i, j])
            rank_key[i] = low
        else:
            rank_key[i] = -total[i]
    moves = 0
    while moves < max_moves:
        _top3(loads, alive, values, index)
        peak = values[:, 0].copy()
        holds_peak = np.zeros(n_workers, dtype=np.bool_)
        for h in range(n_rows):
            holds_peak[index[h, 0]] = True
        on_peak = np.empty(n_placed, dtype=np.bool_)
        for a in range(n_placed):
            on_peak[a] = holds_peak[worker[a]]
        movers = np.flatnonzero(on_peak)
        for g in range(n_workers):
            r = 0.0
            for h in range(n_rows):
                r += d[h] * (peak[h] - loads[h, g])
            room[g] = r
        best_gain, best_kind, best_first, best_second = -tol, -1, 0, 0
        if movers.size:
            gain, a, b = _best_exchange(values, index, peak, d, loads, work, total, task, worker, movers, room,
                                        peak_cost, max_pairs)
            if a >= 0 and gain < best_gain * (1 + tol) - tol:
                best_gain, best_kind, best_first, best_second = gain, 0, a, b
            gain, a, b = _best_relocation(values, index, peak, d, loads, work, task, worker, movers, room, free_left,
                                          peak_cost, max_pairs)
            if a >= 0 and gain < best_gain * (1 + tol) - tol:
                best_gain, best_kind, best_first, best_second = gain, 1, a, b
        gain, a, b = _best_replacement(values, index, peak, d, loads, work, total, task, worker, on_peak, unplaced,
                                       forced, rank_key, peak_cost, max_candidates, max_pairs)
        if a >= 0 and gain < best_gain * (1 + tol) - tol:
            best_gain, best_kind, best_first, best_second = gain, 2, a, b
        if best_kind < 0:
            break
        a, b = best_first, best_second
        if best_kind == 0:
            ta, tb, wa, wb = task[a], task[b], worker[a], worker[b]
            for h in range(n_rows):
                loads[h, wa] += work[tb, h] - work[ta, h]
                loads[h, wb] += work[ta, h] - work[tb, h]
            worker[a] = wb
            worker[b] = wa
        elif best_kind == 1:
            wa = worker[a]
            for h in range(n_rows):
                loads[h, wa] -= work[task[a], h]
                loads[h, b] += work[task[a], h]
            free_left[wa] += 1
            free_left[b] -= 1
            worker[a] = b
        else:
            wa = worker[a]
            for h in range(n_rows):
                loads[h, wa] += work[b, h] - work[task[a], h]
            unplaced[task[a]] = True
            unplaced[b] = False
            task[a] = b
        moves += 1
    return moves


#: Largest capacity, in size units, of :func:`subset_fill`'s table: beyond it sizes are
#: counted in units of the smallest power of two that brings the margin (or ``k`` times the
#: largest fitting task, if less) under it.
FILL_UNITS = 1 << 14


@_kernel
def _shift_or_mark(src, src_top, dst, shift, n_words, top_mask, via_row, e):
    """``dst |= (src << shift)`` over ``n_words`` words (the last masked by ``top_mask``), where
    ``src`` is zero beyond word ``src_top``; every bit new in ``dst`` gets ``via_row[bit] = e``.
    Returns the highest word of the result that the shift reached, -1 if none."""
    word_shift = shift >> 6
    bit_shift = np.uint64(shift & 63)
    back = np.uint64(64) - bit_shift
    high = min(n_words - 1, src_top + word_shift + 1)
    reached = -1
    for w in range(high, word_shift - 1, -1):
        value = src[w - word_shift] << bit_shift if w - word_shift <= src_top else np.uint64(0)
        if bit_shift != 0 and 0 <= w - word_shift - 1 <= src_top:
            value |= src[w - word_shift - 1] >> back
        if w == n_words - 1:
            value &= top_mask
        if value != 0 and reached < 0:
            reached = w
        fresh = value & ~dst[w]
        if fresh != 0:
            dst[w] |= fresh
            while fresh != 0:                                 # each new bit: lowest first
                low = fresh & (~fresh + np.uint64(1))
                via_row[w * 64 + int(np.log2(float(low)))] = e
                fresh ^= low
    return reached


@_kernel
def subset_fill(sizes, capacity, k):
    """Exactly-``k`` subset of largest sum ``<= capacity`` (integer ``sizes``), or of fewer items.

    A table of reachable sums per item count (bit sets), each (count, sum) marked
    with the first item that reached it, so that walking back from the chosen sum
    gives distinct items of decreasing position: among subsets of the best sum,
    the one whose latest item is earliest. Takes the most items ``k' <= k`` for
    which some ``k'``-subset fits, and among those the largest sum. Returns the
    chosen positions (ascending) and their sum; none if no item fits.
    Cost: ``len(sizes) * k * capacity / 64`` word operations.
    """
    n = sizes.size
    k = min(k, n)
    capacity = max(capacity, 0)
    n_words = capacity // 64 + 1
    top_bits = capacity % 64 + 1
    top_mask = np.uint64(0xFFFFFFFFFFFFFFFF) if top_bits == 64 else (np.uint64(1) << np.uint64(top_bits)) - np.uint64(1)
    reach = np.zeros((k + 1, n_words), dtype=np.uint64)
    reach[0, 0] = np.uint64(1)
    top = np.full(k + 1, -1, dtype=np.int64)                 # highest non-zero word per count
    top[0] = 0
    via = np.empty((k + 1, capacity + 1), dtype=np.int32)
    for e in range(n):
        s = sizes[e]
        if s > capacity:
            continue
        for j in range(min(e + 1, k), 0, -1):
            if top[j - 1] >= 0:
                reached = _shift_or_mark(reach[j - 1], top[j - 1], reach[j], s, n_words, top_mask, via[j], e)
                top[j] = max(top[j], reached)
    for count in range(k, 0, -1):
        for w in range(n_words - 1, -1, -1):
            bits = reach[count, w]
            if bits == 0:
                continue
            b = 63
            while not (bits >> np.uint64(b)) & np.uint64(1):
                b -= 1
            total_sum = w * 64 + b
            chosen = np.empty(count, dtype=np.int64)
            left = total_sum
            for j in range(count, 0, -1):
                e = via[j, left]
                chosen[j - 1] = e
                left -= sizes[e]
            return chosen, total_sum
    return np.empty(0, dtype=np.int64), 0


@_kernel
def fill(loads, peak, work, peak_work, d, total, free_left, unplaced, must, to_place, peak_cost, tie_break,
         placed_task, placed_worker, n_placed, lexicographic):
    """The ``fill`` construction of one-step problems; returns the placed count.

    The forced tasks first, each on the open worker where it scores least; then
    the open worker with the most room first, each once, takes as many waiting
    tasks as it has free slots (as many as fit, if fewer) whose summed work is the
    largest under its margin (:func:`subset_fill`, exact for integral work up to
    :data:`FILL_UNITS`, else in power-of-two units with the sizes rounded up, so
    a fill never raises the peak); slots left over go to the ``pairs``
    construction. Work conserving.
    """
    n_pool = work.shape[0]
    n_workers = loads.shape[1]
    for i in range(n_pool):                                   # forced tasks: where they score least
        if n_placed >= to_place:
            break
        if not (must[i] and unplaced[i]):
            continue
        best, best_value, best_room = -1, 0.0, 0.0
        for g in range(n_workers):
            if free_left[g] <= 0:
                continue
            value = _score(loads, peak, work, d, total, i, g, peak_cost, tie_break)
            room = peak[0] - loads[0, g]
            if best < 0 or value < best_value or (lexicographic and value == best_value and room > best_room):
                best, best_value, best_room = g, value, room
        n_placed = _commit(loads, peak, work, i, best, placed_task, placed_worker, n_placed, unplaced, free_left)
    done = free_left <= 0
    while n_placed < to_place:
        g = -1
        most = 0.0
        for gg in range(n_workers):                           # the open worker with the most room
            if not done[gg] and (g < 0 or peak[0] - loads[0, gg] > most):
                g = gg
                most = peak[0] - loads[0, gg]
        if g < 0:
            break
        done[g] = True
        margin = max(most, 0.0)
        k = min(free_left[g], to_place - n_placed)
        eligible = np.empty(n_pool, dtype=np.int64)
        n_eligible = 0
        largest = 0.0
        for i in range(n_pool):
            if unplaced[i] and peak_work[i] <= margin:
                eligible[n_eligible] = i
                n_eligible += 1
                largest = max(largest, work[i, 0])
        if n_eligible == 0:
            continue
        eligible = eligible[:n_eligible]
        # No k of them sum beyond k times the largest: the table need not either.
        reach = min(margin, k * largest)
        unit = 1.0
        while reach / unit > FILL_UNITS:
            unit *= 2.0
        sizes = np.empty(n_eligible, dtype=np.int64)
        for e in range(n_eligible):
            sizes[e] = int(np.ceil(work[eligible[e], 0] / unit))
        capacity = min(int(np.floor(margin / unit)), k * int(np.ceil(largest / unit)))
        chosen, _ = subset_fill(sizes, capacity, k)
        for e in chosen:
            n_placed = _commit(loads, peak, work, eligible[e], g, placed_task, placed_worker, n_placed, unplaced,
                               free_left)
    if n_placed < to_place:
        n_cols = 0
        for g in range(n_workers):
            if free_left[g] > 0:
                n_cols += 1
        if n_cols:
            score = np.empty((n_pool, n_cols))
            n_placed = greedy(loads, peak, work, peak_work, d, total, free_left, unplaced, must, to_place, True,
                              False, peak_cost, tie_break, placed_task, placed_worker, n_placed, score, lexicographic)
    return n_placed
