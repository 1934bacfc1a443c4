"""Array code of the fast solver: small problems scored whole, alike tasks water-filled.

These kernels score many placements at once, the part of the solver that is
genuinely array work, and are written against the array API standard: the
numeric arrays (``loads``, ``work``, ``weights``) may come from numpy, CuPy or
any array-API library, on any device, and results come back in that namespace
on that device; inputs are never modified. Control data that fixes the shapes
of the enumeration (free slots, which workers are alive, forced tasks) is host
numpy, and so are the cached placement tables built from it. Ties go to the
first placement in table order, so every namespace places alike.

Shapes: ``loads`` (H + 1, G) float64, ``work`` (N, H + 1) float64, ``weights``
(H + 1,) float64; ``free_slots`` (G,) int, ``alive`` (G,) bool on the host.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from barrierlb._xp import array_namespace, device_of, to_host

#: Tiny problems (a pool of at most 16 tasks, at most 4,096 placements, and placements x
#: workers x steps within 65,536 numbers) are solved by enumerating every placement:
#: exact, and faster than the heuristic's fixed costs. Alike tasks enumerate count vectors
#: instead, within the same limits, whatever the pool size (16 alike tasks on 4 workers:
#: 969 vectors). Larger pools keep the heuristic, whose worst-fit tie-break matters for
#: long-run balance in the LLM simulations.
ENUMERATION_LIMIT = 65_536
ENUMERATION_POOL = 16
ENUMERATION_PLACEMENTS = 4_096

#: Most (worker, position) candidates the alike-task water-filling sorts.
LEVEL_CANDIDATES = 1 << 17
#: Single-task moves after the water-filling. Loads that change smoothly over the horizon
#: (a persistence predictor's lines) need none; when the budget runs out, the caller runs
#: the greedy constructions too and keeps the better placement.
LEVEL_MOVES = 16
#: Water-filling is for loads whose peak sits on few workers over the horizon; with more
#: workers taking the peak at some step the greedy constructions do better.
LEVEL_PEAK_WORKERS = 4
#: Largest (sources x targets x steps) block of single-task moves the water-filling scores.
DENSE_LIMIT = 1 << 20
#: Stand-in for "no load" (dead or missing workers) in the top-three tables: loads are
#: non-negative, and a finite number avoids CuPy's mishandled infinities in min/argmin.
_NO_LOAD = -1.0


def best_placement(loads: Any, work: Any, weights: Any, free_slots: np.ndarray, alive: np.ndarray,
                   must: np.ndarray, *, peak_cost: float, spread: bool = False) -> tuple[Any, Any, float] | None:
    """The best work-conserving placement, every one scored at once (ties: the first).

    ``spread``: among placements of exactly the least objective, the one whose
    loads are most even (least ``sum_h d_h sum_g L**2``, :func:`_least_tied`) first.

    Places ``k = min(N, sum(free_slots))`` tasks, the ``must`` pool positions
    among them. Returns ``(task_index, worker, objective)``, two int64 arrays of
    shape (k,) in the inputs' namespace and the objective
    ``sum_h d_h (peak_cost * max - sum)`` over alive workers, or ``None`` when
    the problem is beyond the enumeration limits (or needs no enumeration).
    """
    xp = array_namespace(loads, work, weights)
    n_rows, n_workers = loads.shape
    n_pool = work.shape[0]
    k = int(min(n_pool, int(free_slots.sum())))
    cols = np.flatnonzero(free_slots > 0)
    if k < 2 or not cols.size or n_pool > ENUMERATION_POOL:
        return None
    count = math.comb(n_pool, k) * cols.size ** k
    if count > ENUMERATION_PLACEMENTS or count * cols.size * n_rows > ENUMERATION_LIMIT:
        return None
    tasks, workers, table = _placements(n_pool, k, n_workers, tuple(cols.tolist()),
                                         tuple(free_slots[cols].tolist()), tuple(must.tolist()))
    device = device_of(loads)
    added = xp.reshape(xp.asarray(table, device=device) @ work, (tasks.shape[0], n_workers, n_rows))
    every = xp.permute_dims(loads, (1, 0))[None, ...] + added                       # (M, G, H+1)
    if not alive.all():
        every = xp.take(every, xp.asarray(np.flatnonzero(alive), device=device), axis=1)
    score = (peak_cost * xp.max(every, axis=1) - xp.sum(every, axis=1)) @ weights
    best = _least_tied(xp, score, (xp.sum(every * every, axis=1) @ weights) if spread else None)
    return (xp.asarray(tasks[best], device=device), xp.asarray(workers[best], device=device),
            float(score[best]))


def best_counts(loads: Any, task_work: Any, weights: Any, free_slots: np.ndarray, alive: np.ndarray,
                k: int, *, spread: bool = False) -> tuple[np.ndarray, float] | None:
    """Alike tasks (lookahead ``task_work``, shape (H + 1,)): the best vector of per-worker counts.

    Every vector of ``k`` placements within the free slots is scored (far fewer
    than placements: 35 instead of 256 for 4 tasks on 4 workers). Every vector
    places the same total, so the peak term ``sum_h d_h max_g`` alone ranks
    them. Returns ``(counts, peak)`` (host float counts, shape (G,)) or
    ``None`` beyond the limits.
    """
    xp = array_namespace(loads, task_work, weights)
    n_rows, n_workers = loads.shape
    cols = np.flatnonzero(free_slots > 0)
    table = _counts(k, n_workers, tuple(cols.tolist()), tuple(free_slots[cols].tolist()))
    if table is None or table.size * n_rows > ENUMERATION_LIMIT:
        return None
    counts = xp.asarray(table, device=device_of(loads))
    peak = None                                                  # (M, H+1): max over alive workers
    squares = 0.0
    for g in np.flatnonzero(alive).tolist():                     # a loop over few workers beats a
        column = counts[:, g:g + 1] * task_work + loads[:, g]    # reduction over a middle axis 6x
        peak = column if peak is None else xp.maximum(peak, column)
        if spread:
            squares = squares + column * column
    assert peak is not None                                      # a worker with a free slot is alive
    total = peak @ weights
    best = _least_tied(xp, total, (squares @ weights) if spread else None)
    return table[best], float(total[best])


def water_fill(loads: Any, task_work: Any, weights: Any, free_slots: np.ndarray, alive: np.ndarray,
               k: int) -> tuple[np.ndarray, float, float, int] | None:
    """Alike tasks, too many count vectors to enumerate: water-fill, then move single tasks.

    The j-th task on worker g starts at the weighted level ``s_g + j * u``
    (``s``: the worker's horizon-weighted load, ``u``: the task's); the ``k``
    lowest starts give the counts, as placing tasks one by one on the lowest
    worker would (ties: lower worker, then lower position). Then, while it
    lowers the objective, one task moves off a worker that holds the peak at
    some step to the worker where it raises the peak least (every move of a
    round scored in one array operation). Returns ``(counts, first_peak,
    peak, moves)`` with host float counts of shape (G,) and ``sum_h d_h max_g``
    before and after the moves, or ``None`` when there are too many
    candidates or the peak jumps between more than :data:`LEVEL_PEAK_WORKERS`
    workers.
    """
    xp = array_namespace(loads, task_work, weights)
    device = device_of(loads)
    n_workers = loads.shape[1]
    cols = np.flatnonzero(free_slots > 0)
    d_sum = float(xp.sum(weights)) or 1.0
    level = (weights @ loads) / d_sum
    u = float(weights @ task_work) / d_sum
    cap = np.minimum(free_slots[cols], k)
    if int(cap.sum()) > LEVEL_CANDIDATES:
        return None
    owner = np.repeat(cols, cap)
    position = np.arange(owner.size) - np.repeat(np.cumsum(cap) - cap, cap)
    owner_x = xp.asarray(owner, device=device)
    start = xp.take(level, owner_x) + xp.asarray(position, dtype=xp.float64, device=device) * u
    chosen = xp.argsort(start, stable=True)[:k]
    counts = np.bincount(owner[to_host(chosen)], minlength=n_workers).astype(np.float64)
    alive_index = np.flatnonzero(alive)
    alive_x = xp.asarray(alive_index, device=device)
    work_column = task_work[:, None]
    alive_loads = xp.take(loads, alive_x, axis=1)
    free = xp.asarray(free_slots[alive_index], dtype=xp.float64, device=device)
    c = xp.asarray(counts[alive_index], device=device)

    def peak_sum(columns):
        return float(weights @ xp.max(columns, axis=1))

    columns = alive_loads + work_column * c[None, :]
    if xp.unique_values(xp.argmax(columns, axis=1)).shape[0] > LEVEL_PEAK_WORKERS:
        return None          # the peak jumps between workers from step to step: the greedy does better
    current = first = peak_sum(columns)
    moves = 0
    while moves < LEVEL_MOVES:
        values, index = top3(columns)
        sources = xp.unique_values(index[:, 0])
        sources = sources[xp.take(c, sources) > 0]
        targets = xp.nonzero(c < free)[0]
        n_sources, n_targets = int(sources.shape[0]), int(targets.shape[0])
        if not n_sources or not n_targets or n_sources * n_targets * columns.shape[0] > DENSE_LIMIT:
            break
        rest = peak_without(values, index, sources[:, None, None], targets[None, :, None])   # (S, B, H+1)
        leaving = xp.permute_dims(xp.take(columns, sources, axis=1) - work_column, (1, 0))[:, None, :]
        arriving = xp.permute_dims(xp.take(columns, targets, axis=1) + work_column, (1, 0))[None, :, :]
        value = xp.maximum(xp.maximum(rest, leaving), arriving) @ weights                   # (S, B)
        value = xp.where(sources[:, None] == targets[None, :], xp.inf, value)
        flat = int(xp.argmin(xp.reshape(value, (-1,))))
        src, dst = divmod(flat, n_targets)
        best = float(value[src, dst])
        if not best < current - 1e-12 * abs(current):
            break
        current = best
        slots = xp.arange(c.shape[0], device=device)
        c = c + xp.astype(slots == targets[dst], xp.float64) - xp.astype(slots == sources[src], xp.float64)
        columns = alive_loads + work_column * c[None, :]
        moves += 1
    counts[alive_index] = to_host(c)
    return counts, first, current, moves


def _least_tied(xp: Any, score: Any, second: Any) -> int:
    """Position of the least ``score``; among exactly equal ones the least ``second`` (``None``:
    the first), then the first.

    Lexicographic, so the second term can never override the first: a placement
    of a higher score is never chosen, however small the difference. Ties are
    equality of the computed numbers. Every placement's score is the same
    expression summed in the same order, so placements whose per-step loads are
    the same numbers (integral work such as tokens is exact in float64 up to
    2**53) tie exactly; where rounding separates two truly equal scores the
    lower one is kept and loads are merely not spread.
    """
    best = int(xp.argmin(score))
    if second is None:
        return best
    tied = score == score[best]
    return int(xp.argmin(xp.where(tied, second, xp.asarray(xp.inf, dtype=second.dtype, device=device_of(second)))))


def top3(loads: Any) -> tuple[Any, Any]:
    """Largest three loads per step and their workers (ties: lower worker), shapes (H+1, 3).

    Fewer than three workers: the missing entries are ``-1`` (load and worker).
    """
    xp = array_namespace(loads)
    n_rows, n_workers = loads.shape
    masked = loads
    if n_workers < 3:
        pad = xp.full((n_rows, 3 - n_workers), _NO_LOAD, dtype=loads.dtype, device=device_of(loads))
        masked = xp.concat([loads, pad], axis=1)
    if masked.shape[1] <= 64:
        top = xp.argsort(-masked, axis=1, stable=True)[:, :3]
    else:
        # Three argmax passes (ties: the first, as the stable sort), each taken worker
        # pushed below every real load.
        columns = xp.arange(masked.shape[1], device=device_of(loads))[None, :]
        rest, picks = masked, []
        for _ in range(3):
            pick = xp.argmax(rest, axis=1)
            picks.append(pick)
            rest = xp.where(columns == pick[:, None], 2 * _NO_LOAD, rest)
        top = xp.stack(picks, axis=1)
    values = xp.take_along_axis(masked, top, axis=1)
    return values, xp.where(top >= n_workers, -1, top)


def peak_without(values: Any, index: Any, a: Any, b: Any) -> Any:
    """The peak at each step over the workers other than ``a`` and ``b``, from :func:`top3`'s
    ``values`` and ``index`` (``a`` and ``b`` broadcast against the step axis, which comes last)."""
    xp = array_namespace(values, index)
    hit1 = (index[:, 0] == a) | (index[:, 0] == b)
    hit2 = (index[:, 1] == a) | (index[:, 1] == b)
    return xp.where(hit1, xp.where(hit2, values[:, 2], values[:, 1]), values[:, 0])


def alike_tasks(n_pool: int, k: int, must: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions and workers of ``k`` alike tasks placed by per-worker ``counts``: the
    forced tasks (``must``), then the earliest (host int64 arrays, shape (k,))."""
    if must.size:
        rest = np.flatnonzero(~np.isin(np.arange(n_pool), must))
        tasks = np.sort(np.concatenate([must, rest[: k - must.size]]))
    else:
        tasks = np.arange(k)
    workers = np.repeat(np.arange(counts.size), np.asarray(counts).astype(np.int64))
    return tasks.astype(np.int64), workers.astype(np.int64)


@functools.lru_cache(maxsize=32)
def _counts(k: int, n_workers: int, cols: tuple, free: tuple) -> np.ndarray | None:
    """Every vector of per-worker counts summing to ``k`` within the free slots, shape (M, G)
    (read-only), or ``None`` when there are more than the enumeration allows."""
    bound = math.comb(k + len(cols) - 1, k)                       # before the free-slot limits
    if bound > ENUMERATION_PLACEMENTS or bound * n_workers > ENUMERATION_LIMIT:
        return None
    multisets = np.array(list(itertools.combinations_with_replacement(range(len(cols)), k)), dtype=np.int64)
    per_col = np.stack([(multisets == j).sum(axis=1) for j in range(len(cols))], axis=1)
    per_col = per_col[(per_col <= np.array(free)).all(axis=1)]
    if not len(per_col) or len(per_col) > ENUMERATION_PLACEMENTS:
        return None
    counts = np.zeros((len(per_col), n_workers))
    counts[:, list(cols)] = per_col
    counts.setflags(write=False)
    return counts


@functools.lru_cache(maxsize=64)
def _placements(n_pool: int, k: int, n_workers: int, cols: tuple, free: tuple, must: tuple):
    """Every work-conserving placement of ``k`` of ``n_pool`` tasks on ``cols`` (read-only arrays).

    Returns ``tasks`` and ``workers`` of shape (M, k) and ``spread`` of shape
    (M * G, N), the 0/1 matrix whose product with the pool's lookaheads is every
    placement's added load per worker. Cached: a backend meets the same shapes
    step after step.
    """
    columns = np.array(cols, dtype=np.int64)
    subsets = np.array(list(itertools.combinations(range(n_pool), k)), dtype=np.int64).reshape(-1, k)
    if must:
        subsets = subsets[np.isin(subsets, must).sum(axis=1) == len(must)]
    choices = columns[np.stack(np.unravel_index(np.arange(columns.size ** k), (columns.size,) * k), axis=1)]
    per_worker = np.stack([(choices == g).sum(axis=1) for g in columns], axis=1)
    choices = choices[(per_worker <= np.array(free)).all(axis=1)]
    tasks = np.repeat(subsets, len(choices), axis=0)                     # (M, k)
    workers = np.tile(choices, (len(subsets), 1))                        # (M, k)
    # spread[m, g, i] = 1 when placement m puts pool task i on worker g.
    by_worker = np.zeros((len(tasks), n_workers, n_pool))
    np.add.at(by_worker, (np.arange(len(tasks))[:, None], workers, tasks), 1.0)
    spread = by_worker.reshape(len(tasks) * n_workers, n_pool)
    for array in (tasks, workers, spread):
        array.setflags(write=False)
    return tasks, workers, spread
