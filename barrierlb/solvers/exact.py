"""Exact BF-IO step solver: the step problem as a mixed-integer program (HiGHS).

Variables ``x[i, g]`` (binary, task ``i`` on worker ``g``; only workers with a
free slot get columns) and ``M[h]`` (the predicted maximum load at step ``h``):

    minimize   sum_h d_h * G * M[h]  -  sum_{i,g} W_i x[i, g]     (+ constant)
    s.t.       M[h] - sum_i w[i, h] x[i, g] >= P[h, g]   for alive g with free slots
               M[h] >= max_g P[h, g]                     (bound, all alive g)
               sum_g x[i, g] <= 1   (== 1 for forced tasks)
               sum_i x[i, g] <= f_g
               sum_{i,g} x[i, g] == min(N, sum_g f_g)  (work conserving)

with ``W_i = sum_h d_h w[i, h]``. scipy's ``milp`` drives HiGHS; see
``docs/solvers.md`` for why HiGHS and how long it takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from barrierlb._xp import to_numpy


@dataclass(frozen=True)
class ExactResult:
    """Outcome of :func:`solve_exact`.

    Attributes
    ----------
    task_index, worker : ndarray of int64, shape (K,)
        The best placement found (empty if none was found in time).
    optimal : bool
        True when HiGHS proved the placement optimal.
    status : str
        ``"optimal"``, ``"time_limit"`` (with or without an incumbent) or ``"infeasible"``.
    solve_time_s : float
    """

    task_index: np.ndarray
    worker: np.ndarray
    optimal: bool
    status: str
    solve_time_s: float
    found: bool


def solve_exact(projected_load, pool_work, free_slots, weights, *, alive=None, forced=None,
                work_conserving: bool = True, time_limit_s: float = 1.0, peak_weight: float = 1.0) -> ExactResult:
    """Solve the step problem to proven optimality within ``time_limit_s``.

    Parameters are those of :func:`barrierlb.solvers.solve_fast` (numpy or CuPy
    arrays; the MILP itself runs on the CPU), including ``peak_weight``, the
    weight of the ``G * M[h]`` term (1: the paper's objective).

    Returns
    -------
    ExactResult
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    started = time.perf_counter()
    loads = np.asarray(to_numpy(projected_load), dtype=np.float64)
    work = np.asarray(to_numpy(pool_work), dtype=np.float64)
    d = np.asarray(to_numpy(weights), dtype=np.float64)
    free = np.array(to_numpy(free_slots), dtype=np.int64)
    n_rows, n_workers = loads.shape
    n_pool = work.shape[0]
    alive = np.ones(n_workers, dtype=bool) if alive is None else np.asarray(to_numpy(alive), dtype=bool)
    forced = np.zeros(n_pool, dtype=bool) if forced is None else np.asarray(to_numpy(forced), dtype=bool)
    free[~alive] = 0
    n_alive = int(alive.sum())
    cols = np.flatnonzero(free > 0)
    n_cols = cols.size
    to_place = int(min(n_pool, free.sum()))
    empty = np.zeros(0, dtype=np.int64)
    if to_place == 0 or n_alive == 0:
        return ExactResult(empty, empty, True, "optimal", time.perf_counter() - started, True)

    n_x = n_pool * n_cols                      # x[i, j] at i * n_cols + j
    total = work @ d
    cost = np.concatenate([np.repeat(-total, n_cols), n_alive * peak_weight * d])
    lower = np.concatenate([np.zeros(n_x), loads[:, alive].max(axis=1)])
    upper = np.concatenate([np.ones(n_x), np.full(n_rows, np.inf)])
    integrality = np.concatenate([np.ones(n_x), np.zeros(n_rows)])

    constraints = []
    # Peak rows: M[h] - sum_i w[i, h] x[i, j] >= P[h, cols[j]].
    h_idx, i_idx, j_idx = np.meshgrid(np.arange(n_rows), np.arange(n_pool), np.arange(n_cols), indexing="ij")
    row = (h_idx * n_cols + j_idx).ravel()
    data = -work.T[h_idx, i_idx].ravel()
    keep = data != 0.0
    peak_rows = n_rows * n_cols
    m_rows = np.arange(peak_rows)
    matrix = coo_matrix((np.concatenate([data[keep], np.ones(peak_rows)]),
                         (np.concatenate([row[keep], m_rows]),
                          np.concatenate([(i_idx * n_cols + j_idx).ravel()[keep], n_x + m_rows // n_cols]))),
                        shape=(peak_rows, n_x + n_rows))
    constraints.append(LinearConstraint(matrix, loads[:, cols].ravel(), np.inf))
    # Each task at most once (forced tasks exactly once, oldest first while slots last).
    must = np.zeros(n_pool, dtype=bool)
    must[np.flatnonzero(forced)[:to_place]] = True
    x_ids = np.arange(n_x)
    once = coo_matrix((np.ones(n_x), (x_ids // n_cols, x_ids)), shape=(n_pool, n_x + n_rows))
    constraints.append(LinearConstraint(once, must.astype(float), 1.0))
    # Free slots per worker.
    slots = coo_matrix((np.ones(n_x), (x_ids % n_cols, x_ids)), shape=(n_cols, n_x + n_rows))
    constraints.append(LinearConstraint(slots, 0.0, free[cols].astype(float)))
    # Work conserving: exactly min(N, free) placements.
    count = np.concatenate([np.ones(n_x), np.zeros(n_rows)])[None, :]
    if work_conserving:
        constraints.append(LinearConstraint(count, to_place, to_place))

    result = milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(lower, upper),
                  options={"time_limit": float(time_limit_s), "presolve": True, "disp": False})
    elapsed = time.perf_counter() - started
    if result.x is None:
        status = "infeasible" if result.status == 2 else "time_limit"
        return ExactResult(empty, empty, False, status, elapsed, False)
    x = result.x[:n_x].reshape(n_pool, n_cols) > 0.5
    task_index, j = np.nonzero(x)
    return ExactResult(task_index.astype(np.int64), cols[j].astype(np.int64), result.status == 0,
                       "optimal" if result.status == 0 else "time_limit", elapsed, True)
