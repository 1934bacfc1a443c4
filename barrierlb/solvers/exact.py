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
the package documentation (docs/solvers.md) for why HiGHS and how long it takes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._validate import check_bool, check_real
from barrierlb.problem import StepProblem

#: Seconds per (task, open worker, step) entry that building the MILP takes at least (measured
#: about 2e-7 on this 2-core machine; a lower bound, so that a model is skipped only when its
#: construction alone would overrun the time limit).
_BUILD_S_PER_ENTRY = 1e-7


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
        Wall time of the whole call, checks and model building included.
    found : bool
        Whether a placement was found (optimal or an incumbent).
    """

    task_index: np.ndarray
    worker: np.ndarray
    optimal: bool
    status: str
    solve_time_s: float
    found: bool


def solve_exact(projected_load: Any, pool_work: Any, free_slots: Any, weights: Any, *, alive: Any = None,
                forced: Any = None, work_conserving: bool = True, time_limit_s: float = 1.0,
                peak_weight: float = 1.0) -> ExactResult:
    """Solve the step problem to proven optimality within ``time_limit_s``.

    Parameters are those of :func:`barrierlb.solvers.solve_fast`, checked once
    by :meth:`StepProblem.from_arrays` (any array library's arrays; the MILP
    runs on the CPU), plus ``time_limit_s``, which bounds the whole call, and
    ``peak_weight``, the weight of the ``G * M[h]`` term (1: the paper's
    objective).

    Returns
    -------
    ExactResult
    """
    started = time.perf_counter()
    problem = StepProblem.from_arrays(projected_load, pool_work, free_slots, alive=alive, weights=weights,
                                      forced=forced, work_conserving=work_conserving)
    return solve_exact_problem(problem, time_limit_s=time_limit_s, peak_weight=peak_weight, started=started)


def solve_exact_problem(problem: StepProblem, *, work_conserving: bool | None = None, time_limit_s: float = 1.0,
                        peak_weight: float = 1.0, started: float | None = None) -> ExactResult:
    """:func:`solve_exact` on a checked :class:`~barrierlb.problem.StepProblem`.

    ``started`` (a ``time.perf_counter()`` value, default now) is when the
    caller's decision began: HiGHS gets what is left of ``time_limit_s`` after
    building the model, and the model is not built at all when nothing is left.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    started = time.perf_counter() if started is None else started
    time_limit_s = check_real("time_limit_s", time_limit_s, minimum=0.0)
    peak_weight = check_real("peak_weight", peak_weight, minimum=0.0)
    work_conserving = (problem.work_conserving if work_conserving is None
                       else check_bool("work_conserving", work_conserving))
    loads, work, d = problem.projected_load, problem.pool_work, problem.weights
    free, alive, forced = problem.free_slots, problem.alive, problem.forced
    n_rows, n_workers = loads.shape
    n_pool = work.shape[0]
    n_alive = int(alive.sum())
    cols = np.flatnonzero(free > 0)
    n_cols = cols.size
    to_place = int(min(n_pool, free.sum()))
    empty = np.zeros(0, dtype=np.int64)
    if to_place == 0 or n_alive == 0:
        return ExactResult(empty, empty, True, "optimal", time.perf_counter() - started, True)
    if n_pool * n_cols * n_rows * _BUILD_S_PER_ENTRY > time_limit_s - (time.perf_counter() - started):
        # Building the model alone would use up the limit (HiGHS only checks its clock
        # once it runs): report the time limit at once, as HiGHS would have.
        return ExactResult(empty, empty, False, "time_limit", time.perf_counter() - started, False)

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

    left = time_limit_s - (time.perf_counter() - started)
    if left <= 0.0:
        return ExactResult(empty, empty, False, "time_limit", time.perf_counter() - started, False)
    # HiGHS checks its clock only between phases and overran its limit by seconds here (2.3 s
    # for 1 s on a busy machine). It runs in a thread (it releases the GIL) that is waited for
    # until the limit: past it the call returns without an incumbent, and the thread ends at
    # HiGHS's own limit, its result unused. Not a daemon: the interpreter waits for it at exit
    # (a daemon thread inside HiGHS at shutdown aborts the process).
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(lower, upper),
                                options={"time_limit": left, "presolve": True, "disp": False}))
        except BaseException as error:        # handed to the caller below, not lost in the thread
            outcome.append(error)

    worker = threading.Thread(target=run, name="barrierlb-highs")
    worker.start()
    worker.join(left)
    elapsed = time.perf_counter() - started
    if not outcome:
        return ExactResult(empty, empty, False, "time_limit", elapsed, False)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    if result.x is None:
        status = "infeasible" if result.status == 2 else "time_limit"
        return ExactResult(empty, empty, False, status, elapsed, False)
    x = result.x[:n_x].reshape(n_pool, n_cols) > 0.5
    task_index, j = np.nonzero(x)
    return ExactResult(task_index.astype(np.int64), cols[j].astype(np.int64), result.status == 0,
                       "optimal" if result.status == 0 else "time_limit", elapsed, True)
