"""Round-based BF-IO placement for fleet-scale problems: many placements per scored block.

The fast solver (:mod:`barrierlb.solvers.fast`) places one task per step of its
greedy, which on a GPU costs several dependent kernel launches per placement.
This solver instead scores the whole ``(tasks, workers, steps)`` block once per
*round* and places many tasks from it (a conflict-resolving batched greedy):

1. Score every waiting task on every open worker by the exact marginal change
   of the objective (the fast solver's score, DESIGN.md section 2)::

       delta(i, g) = peak_cost * sum_h d_h relu(w[i, h] - m[h, g]) - W_i - tie * room_g

   with ``m[h, g] = peak[h] - L[h, g]`` the worker's margin, ``W_i = d @ w[i]``,
   ``room_g = d @ m[:, g]`` and ``tie = 1e-6 / sum(d)`` (prefer the roomiest
   worker among equal scores). A task *fits* on a worker when its weighted
   excess is zero: it raises the predicted peak nowhere, so its delta is
   exactly ``-W_i`` whatever else is placed elsewhere.
2. Rank the tasks by their best delta (forced tasks first, ties by pool
   index). If the best task does not fit anywhere, place it alone on its best
   worker (one exact greedy step: it raises the peak, which changes every
   margin) and start a new round.
3. Otherwise take the leading tasks that fit, at most as many as are still to
   be placed, and propose them to free slots in worst-fit order (the k-th task
   to the k-th slot of a list that takes every open worker's first free slot,
   roomiest worker first, then every second slot, and so on); a task that does
   not fit on that slot's worker proposes to its own best worker instead.
   Each worker accepts, in rank order, the longest run of its proposals that
   fits its free slots and, summed step by step, its margin. The accepted
   placements raise no peak, so the objective falls by exactly their ``W_i``.
   The first-ranked task is always accepted, so every round places a task.

Rounds repeat until ``min(N, sum(free_slots))`` tasks are placed (or, without
work conservation, until no placement lowers the objective). There is no local
search: on the fleet decision points of ``benchmarks/decision.py --fleet`` its
objective came within 0.005% of the fast solver's (docs/gpu.md).

The kernel is written once against the array API standard: the namespace comes
from :func:`array_api_compat.array_namespace`, every array it creates is on the
inputs' device, and it uses no ``inf`` sentinel (CuPy's ``min``/``argmin`` have
mishandled infinities) and no in-place integer-array assignment. It runs
unchanged on numpy, on ``array-api-strict`` (the CPU check that nothing leaves
the device) and on CuPy, where the per-round host work is a few scalars.
``array-api-compat`` is imported when the solver is called
(``pip install "barrierlb[gpu]"``, or the ``dev`` extra).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from barrierlb._validate import INT64_MAX, check_bool

#: How the placements of :func:`solve_batched` are made (its result's ``path``).
PATH = "batched-greedy"

#: Default most numbers in one scored ``(tasks, workers, steps)`` block (128 MiB of float64);
#: larger blocks are scored in chunks of tasks.
BLOCK_NUMBERS = 1 << 24


@dataclass(frozen=True)
class BatchedResult:
    """Placement from :func:`solve_batched`.

    Attributes
    ----------
    task_index : array of int64, shape (K,)
        Pool positions of the placed tasks, in placement order (round by round,
        by rank within a round); an array of the inputs' namespace and device.
    worker : array of int64, shape (K,)
        Worker of each placed task (same namespace and device).
    objective : float
        ``sum_h d_h (peak_weight * G * max_g Lhat - sum_g Lhat)`` over the alive
        workers after the placement (the predicted imbalance when
        ``peak_weight`` is 1).
    rounds : int
        Scored blocks; ``single_rounds`` of them placed one peak-raising task.
    path : str
        ``"batched-greedy"``: the only way this solver places.
    """

    task_index: Any
    worker: Any
    objective: float
    rounds: int
    single_rounds: int
    path: str = PATH


def _namespace(*arrays):
    try:
        import array_api_compat
    except ImportError:
        raise ImportError('solve_batched needs array-api-compat: pip install "barrierlb[gpu]"') from None
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as error:
        raise TypeError(f"solve_batched takes arrays of one array-API namespace: {error}") from None
    return xp, array_api_compat.device(arrays[0])


def _check_shapes(projected_load, pool_work, free_slots, weights, alive, forced):
    if projected_load.ndim != 2 or projected_load.shape[0] < 1 or projected_load.shape[1] < 1:
        raise ValueError(f"projected_load must have shape (H + 1, G) with G >= 1, got {projected_load.shape}")
    rows, n_workers = projected_load.shape
    if pool_work.ndim != 2 or pool_work.shape[1] != rows:
        raise ValueError(f"pool_work must have shape (N, {rows}), got {pool_work.shape}")
    for name, array, shape in (("free_slots", free_slots, (n_workers,)), ("weights", weights, (rows,)),
                               ("alive", alive, (n_workers,)), ("forced", forced, (pool_work.shape[0],))):
        if array is not None and tuple(array.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(array.shape)}")


def _check_dtypes(xp, **arrays):
    """Refuse what a cast would silently change: fractional slots, numbers as flags."""
    kinds = {"free_slots": ("integral", "an integer"), "alive": ("bool", "a boolean"),
             "forced": ("bool", "a boolean")}
    for name, array in arrays.items():
        if array is None:
            continue
        kind, words = kinds.get(name, (("real floating", "integral"), "a real"))
        if not xp.isdtype(array.dtype, kind):
            raise TypeError(f"{name} must have {words} dtype, got {array.dtype}")


def solve_batched(projected_load, pool_work, free_slots, weights, *, alive=None, forced=None,
                  work_conserving: bool = True, peak_weight: float = 1.0,
                  block_numbers: int = BLOCK_NUMBERS) -> BatchedResult:
    """Place waiting tasks round by round, each round scored as one block (module docstring).

    Parameters
    ----------
    projected_load : array, shape (H + 1, G), float
        Load of the placed tasks per step ahead and worker (non-negative).
    pool_work : array, shape (N, H + 1), float
        Lookahead of each waiting task, in arrival order (non-negative).
    free_slots : array, shape (G,), int
        Free slots per worker.
    weights : array, shape (H + 1,), float
        Horizon weights ``d_h`` (non-negative).
    alive : array of bool, shape (G,), optional
        Dead workers get no task and do not count in the objective.
    forced : array of bool, shape (N,), optional
        Tasks that must be placed (bounded waiting): ranked before all others.
    work_conserving : bool
        Place ``min(N, sum(free_slots))`` tasks; otherwise only while a
        placement lowers the objective.
    peak_weight : float
        Weight of the ``G * max`` term (1: the paper's objective).
    block_numbers : int
        Most numbers scored at once; the block is cut into chunks of tasks.

    Every array argument must come from one array-API namespace and device
    (numpy, CuPy, ``array_api_strict``); the inputs are not modified.

    Returns
    -------
    BatchedResult

    Examples
    --------
    >>> import numpy as np
    >>> result = solve_batched(np.array([[4.0, 1.0, 0.0]]), np.array([[3.0], [1.0]]), np.array([0, 1, 1]),
    ...                        np.ones(1))
    >>> result.worker.tolist(), result.objective    # 3 and 1 fill the two holes under the peak of 4
    ([2, 1], 3.0)
    """
    xp, device = _namespace(*(a for a in (projected_load, pool_work, free_slots, weights, alive, forced)
                               if a is not None))
    # CuPy makes new arrays on the current device whatever ``device=`` says (array-api-compat
    # passes it over), so the inputs' device is made current; other devices are no context managers.
    with device if hasattr(device, "__enter__") else contextlib.nullcontext():
        return _solve(xp, device, projected_load, pool_work, free_slots, weights, alive, forced,
                      work_conserving, peak_weight, block_numbers)


def _solve(xp, device, projected_load, pool_work, free_slots, weights, alive, forced, work_conserving,
           peak_weight, block_numbers) -> BatchedResult:
    _check_shapes(projected_load, pool_work, free_slots, weights, alive, forced)
    if isinstance(block_numbers, bool) or not isinstance(block_numbers, int) or block_numbers < 1:
        raise ValueError(f"block_numbers must be a positive integer, got {block_numbers!r}")
    work_conserving = check_bool("work_conserving", work_conserving)
    if isinstance(peak_weight, bool) or not isinstance(peak_weight, (int, float)) or not peak_weight >= 0:
        raise ValueError(f"peak_weight must be a non-negative number, got {peak_weight!r}")
    _check_dtypes(xp, projected_load=projected_load, pool_work=pool_work, free_slots=free_slots, weights=weights,
                  alive=alive, forced=forced)
    f64, i64 = xp.float64, xp.int64
    loads = xp.astype(projected_load, f64)
    work = xp.astype(pool_work, f64)
    d = xp.astype(weights, f64)
    for name, array in (("projected_load", loads), ("pool_work", work), ("weights", d)):
        if array.size and not float(xp.min(array)) >= 0.0:
            raise ValueError(f"{name} must be non-negative and not NaN, got a minimum of {float(xp.min(array))}")
    n_rows, n_workers = loads.shape
    n_pool = work.shape[0]
    alive = xp.ones(n_workers, dtype=xp.bool, device=device) if alive is None else xp.astype(alive, xp.bool)
    forced = xp.zeros(n_pool, dtype=xp.bool, device=device) if forced is None else xp.astype(forced, xp.bool)
    free = xp.where(alive, xp.astype(free_slots, i64), 0)
    if n_workers and int(xp.min(free)) < 0:
        raise ValueError(f"free_slots must be non-negative, got a minimum of {int(xp.min(free))}")
    most = INT64_MAX // max(n_pool, n_workers, 1)        # the rounds count placements in int64
    if n_workers and int(xp.max(free)) > most:
        raise ValueError(f"free_slots must be <= {most:,} per worker with {n_pool} waiting tasks and "
                         f"{n_workers} workers (counted in int64), got {int(xp.max(free)):,}")
    n_alive = int(xp.sum(xp.astype(alive, i64)))
    peak_cost = n_alive * float(peak_weight)
    total = work @ d                                                          # W_i, (N,)
    tie = 1e-6 / max(float(xp.sum(d)), 1e-12)
    positive = d > 0.0
    # Loads are non-negative, so 0 stands in for the dead workers in the peak (no -inf).
    alive_loads = xp.where(alive[None, :], loads, 0.0)
    peak = xp.max(alive_loads, axis=1)                                        # (H+1,)
    sum_term = float(d @ xp.sum(alive_loads, axis=1))
    to_place = min(n_pool, int(xp.sum(free)))

    # Only open workers' columns can change, and a worker that fills up never reopens.
    open_idx = xp.nonzero(free > 0)[0]
    open_loads = xp.take(loads, open_idx, axis=1)                           # (H+1, C)
    open_free = xp.take(free, open_idx)
    waiting = xp.arange(n_pool, dtype=i64, device=device)                    # unplaced pool positions
    placed_tasks, placed_workers = [], []
    n_placed = rounds = single_rounds = 0
    placed_total = 0.0
    while n_placed < to_place and open_idx.shape[0] and waiting.shape[0]:
        n_open, n_wait = open_idx.shape[0], waiting.shape[0]
        margin = peak[:, None] - open_loads                                  # (H+1, C)
        room = d @ margin                                                    # (C,)
        w = xp.take(work, waiting, axis=0)                                   # (U, H+1)
        excess = _weighted_excess(xp, w, margin, d, block_numbers)           # (U, C)
        w_total = xp.take(total, waiting)
        score = peak_cost * excess - w_total[:, None] - tie * room[None, :]
        best_score = xp.min(score, axis=1)
        columns = xp.arange(n_open, dtype=i64, device=device)
        # Ties to the lowest worker position, explicitly (not left to a device's argmin).
        best = xp.min(xp.where(score == best_score[:, None], columns[None, :], n_open), axis=1)
        fits_best = xp.sum(xp.where(columns[None, :] == best[:, None], excess, 0.0), axis=1) == 0.0
        is_forced = xp.take(forced, waiting)
        eligible = None if work_conserving else is_forced | (best_score < 0.0)
        # Rank: forced first, then best score; two stable sorts keep pool order among ties.
        order = xp.argsort(best_score, stable=True)
        order = xp.take(order, xp.argsort(xp.astype(~xp.take(is_forced, order), i64), stable=True))
        first = int(order[0])
        if eligible is not None and not bool(eligible[first]):
            break                                                            # nothing lowers the objective
        rounds += 1
        if bool(fits_best[first]):
            ranked, accepted, column = _fitting_round(xp, device, order, fits_best, eligible, best, excess, w,
                                                      margin, room, open_free, positive, to_place - n_placed)
        else:
            # The best placement raises the peak, which changes every margin: place it alone.
            single_rounds += 1
            ranked = order[:1]
            accepted = xp.ones(1, dtype=xp.bool, device=device)
            column = xp.take(best, ranked)
        accepted_task = ranked[accepted]                                     # positions in ``waiting``
        accepted_column = column[accepted]
        placed_tasks.append(xp.take(waiting, accepted_task))
        placed_workers.append(xp.take(open_idx, accepted_column))
        n_placed += int(accepted_task.shape[0])
        placed_total += float(xp.sum(xp.take(w_total, accepted_task)))
        onehot = xp.astype(accepted_column[:, None] == columns[None, :], f64)   # (A, C)
        open_loads = open_loads + xp.take(w, accepted_task, axis=0).T @ onehot
        open_free = open_free - xp.astype(xp.sum(onehot, axis=0), i64)
        peak = xp.maximum(peak, xp.max(open_loads, axis=1))
        # Back from rank order to pool order through the inverse permutation (no scatter).
        by_rank = xp.concat([accepted, xp.zeros(n_wait - accepted.shape[0], dtype=xp.bool, device=device)])
        waiting = waiting[~xp.take(by_rank, xp.argsort(order, stable=True))]
        still_open = xp.nonzero(open_free > 0)[0]
        open_idx = xp.take(open_idx, still_open)
        open_loads = xp.take(open_loads, still_open, axis=1)
        open_free = xp.take(open_free, still_open)
    empty = xp.zeros(0, dtype=i64, device=device)
    return BatchedResult(task_index=xp.concat(placed_tasks) if placed_tasks else empty,
                         worker=xp.concat(placed_workers) if placed_workers else empty,
                         objective=peak_cost * float(d @ peak) - sum_term - placed_total, rounds=rounds,
                         single_rounds=single_rounds)


def _weighted_excess(xp, w, margin, d, block_numbers):
    """``E[i, c] = sum_h d_h relu(w[i, h] - margin[h, c])``, shape (U, C), in chunks of tasks."""
    n_wait, (n_rows, n_open) = w.shape[0], margin.shape
    step = max(1, block_numbers // max(n_open * n_rows, 1))
    margin_t = margin.T[None, :, :]                                         # (1, C, H+1)
    parts = [xp.maximum(w[lo:min(lo + step, n_wait), :][:, None, :] - margin_t, 0.0) @ d
             for lo in range(0, n_wait, step)]
    return xp.concat(parts, axis=0) if parts else xp.zeros((0, n_open), dtype=xp.float64)


def _fitting_round(xp, device, order, fits_best, eligible, best, excess, w, margin, room, open_free, positive,
                   remaining):
    """Step 3 of the module docstring: the leading fitting tasks, proposed to worst-fit slots.

    Returns ``ranked`` (pool positions in ``w``'s rows, in rank order), which of them
    are ``accepted`` and the open-worker ``column`` each proposed to.
    """
    i64 = xp.int64
    n_open = excess.shape[1]
    fits_ranked = xp.take(fits_best, order)
    if eligible is not None:
        fits_ranked = fits_ranked & xp.take(eligible, order)
    lead = int(xp.sum(xp.astype(xp.cumulative_sum(xp.astype(~fits_ranked, i64)) == 0, i64)))
    count = min(lead, remaining)
    ranked = order[:count]
    # Free slots level by level (every open worker's first slot, then every second...),
    # the roomiest worker first within a level: the k-th task takes the k-th slot.
    by_room = xp.argsort(-room, stable=True)
    free_by_room = xp.take(open_free, by_room)
    levels = min(int(xp.max(open_free)), count)
    level = xp.arange(levels, dtype=i64, device=device)
    grid = xp.reshape(xp.broadcast_to(by_room[None, :], (levels, n_open)), (-1,))
    slots = grid[xp.reshape(level[:, None] < free_by_room[None, :], (-1,))][:count]
    pair_fits = xp.take(xp.reshape(excess, (-1,)), ranked * n_open + slots) == 0.0
    column = xp.where(pair_fits, slots, xp.take(best, ranked))
    # Group the proposals by worker, rank order kept within a group.
    by_worker = xp.argsort(column, stable=True)
    grouped = xp.take(column, by_worker)
    position = xp.arange(count, dtype=i64, device=device)
    start = xp.searchsorted(grouped, grouped)                               # first position of the group
    rank_in_group = position - start
    work = xp.take(w, xp.take(ranked, by_worker), axis=0)                   # (count, H+1)
    running = xp.cumulative_sum(work, axis=0, include_initial=True)
    together = xp.take(running, position + 1, axis=0) - xp.take(running, start, axis=0)
    # A group's first task fits on its own (as scored); its sum is its work, not a difference.
    together = xp.where((rank_in_group == 0)[:, None], work, together)
    fits = xp.all((together <= xp.take(margin, grouped, axis=1).T) | ~positive[None, :], axis=1)
    ok = fits & (rank_in_group < xp.take(open_free, grouped))
    accepted = xp.take(ok, xp.argsort(by_worker, stable=True))              # back to rank order
    return ranked, accepted, column
