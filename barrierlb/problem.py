"""The step problem of BF-IO: arrays in, and the objective that scores a placement.

At a decision point the placed tasks project a load ``P[h, g]`` over the
horizon ``h = 0..H``; the waiting pool holds tasks with lookaheads ``w[i, h]``.
A placement ``task_index -> worker`` yields ``Lhat = P + sum_i x[i, g] w[i]``
and the predicted imbalance

    sum_h d_h * (G * max_g Lhat[h, g] - sum_g Lhat[h, g])

over the ``G`` alive workers (Chen et al., arXiv 2601.17855, section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from barrierlb._validate import INT64_MAX, check_array, check_bool, check_int, check_real
from barrierlb._xp import add_rows_to_columns, array_namespace, device_of, to_host


def horizon_weights(horizon: int, *, gamma: float = 1.0) -> np.ndarray:
    """Weights ``d_h = gamma**h`` for ``h = 0..horizon``.

    ``gamma = 1`` gives the paper's uniform weights; ``gamma < 1`` the geometric
    discount of BalanceRoute.

    Examples
    --------
    >>> horizon_weights(2, gamma=0.5).tolist()
    [1.0, 0.5, 0.25]
    """
    horizon = check_int("horizon", horizon, minimum=0)
    gamma = check_real("gamma", gamma, minimum=0.0, maximum=1.0)
    if gamma == 0.0:
        weights = np.zeros(horizon + 1)
        weights[0] = 1.0
        return weights
    return gamma ** np.arange(horizon + 1, dtype=np.float64)


@dataclass(frozen=True)
class StepProblem:
    """Everything a policy needs at one decision point, as arrays: the solvers' one checked input.

    Every field is checked and normalised on construction (host numpy arrays
    of the dtypes below, matching shapes, finite non-negative work and loads,
    integral non-negative slots, unique non-negative ids, no free slot on a
    dead worker), with a ``ValueError``/``TypeError`` naming the field; arrays
    of other libraries (CuPy, array-API) are copied to the host here, once.

    Attributes
    ----------
    projected_load : ndarray, shape (H + 1, G), float64
        Predicted work of the already placed tasks per step ahead and worker.
    pool_work : ndarray, shape (N, H + 1), float64
        Lookahead of each waiting task, in arrival order.
    pool_ids : ndarray, shape (N,), int64
        Task ids of the waiting tasks.
    free_slots : ndarray, shape (G,), int64
        Free slots per worker; zero for dead workers.
    alive : ndarray, shape (G,), bool
        Which workers take part in the barrier.
    weights : ndarray, shape (H + 1,), float64
        Horizon weights ``d_h``.
    forced : ndarray, shape (N,), bool
        Tasks that have waited too long and must be placed now.
    active_count, active_prompt, active_load : ndarray, shape (G,)
        Running tasks, their prompt tokens and their current work, per worker
        (inputs of the baselines).
    work_conserving : bool
        Place ``min(N, sum(free_slots))`` tasks when true.
    scenarios : int
        Number of sampled futures stacked along the step axis (default 1).
        With ``S`` scenarios the rows are ``S`` blocks of ``H + 1`` steps (or of
        the kept steps, see ``stride``), one per draw of the tasks' remaining
        lengths, and each block's weights are
        divided by ``S``: the objective is the average predicted imbalance over
        the draws (a sample-average approximation of its expectation). The
        solvers need nothing more: every row is one more term of the same sum.
    stride : int
        The rows are every ``stride``-th step of the horizon, each weighted for
        the steps it stands for (:meth:`sampled`); 1 (default): every step.
    """

    projected_load: np.ndarray
    pool_work: np.ndarray
    pool_ids: np.ndarray
    free_slots: np.ndarray
    alive: np.ndarray
    weights: np.ndarray
    forced: np.ndarray
    active_count: np.ndarray
    active_prompt: np.ndarray
    active_load: np.ndarray
    pool_prompt: np.ndarray
    work_conserving: bool = True
    scenarios: int = 1
    stride: int = 1

    def __post_init__(self) -> None:
        """Check and normalise every field (the solvers' one boundary): host float64/int64/bool
        arrays of matching shapes, finite and non-negative work, unique ids, no free slot on a
        dead worker. CuPy and other array-API arrays are copied to the host here."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in _normalised(values).items():
            object.__setattr__(self, name, value)

    @classmethod
    def _built(cls, **values: Any) -> StepProblem:
        """A problem from arrays the library built valid (:meth:`ClusterState.step_problem`,
        :meth:`sampled`): the same fields without the checks' per-decision cost."""
        problem = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(problem, f.name, values[f.name] if f.name in values else f.default)
        return problem

    @property
    def n_workers(self) -> int:
        return int(self.projected_load.shape[1])

    @property
    def horizon(self) -> int:
        """``H``: rows per scenario less one (for a sampled problem, kept rows less one)."""
        return int(self.projected_load.shape[0] // self.scenarios - 1)

    @property
    def n_pool(self) -> int:
        return int(self.pool_work.shape[0])

    @property
    def n_to_place(self) -> int:
        """Tasks a work-conserving placement must place: ``min(N, sum(free))``."""
        return int(min(self.n_pool, int(self.free_slots.sum())))

    def sampled(self, stride: int) -> StepProblem:
        """The same problem with the horizon evaluated every ``stride`` steps.

        Rows ``0, stride, 2 * stride, ...`` are kept and each stands for the
        ``stride`` steps from it, so its weight is the sum of theirs (a left
        Riemann sum of the weighted horizon). The total weight is unchanged and
        the solvers' work shrinks by about ``stride``; ``stride = 1`` returns
        the problem itself.

        Examples
        --------
        >>> problem = StepProblem.from_arrays(np.zeros((5, 2)), np.ones((1, 5)), [1, 0])
        >>> problem.sampled(2).weights.tolist()
        [2.0, 2.0, 1.0]
        """
        stride = check_int("stride", stride, minimum=1)
        if stride == self.stride:
            return self
        if self.stride != 1:
            raise ValueError(f"this problem is already sampled every {self.stride} steps, not {stride}")
        if self.horizon == 0:
            return self
        block = self.horizon + 1
        rows = (np.arange(self.scenarios)[:, None] * block + np.arange(0, block, stride)[None, :]).ravel()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(projected_load=self.projected_load[rows], pool_work=self.pool_work[:, rows],
                      weights=np.add.reduceat(self.weights, rows), stride=stride)
        return StepProblem._built(**values)

    def keeping(self, rows: Any) -> StepProblem:
        """The same problem with only the waiting tasks at ``rows`` (ascending pool positions).

        Examples
        --------
        >>> problem = StepProblem.from_arrays(np.zeros((1, 2)), [[1.0], [2.0], [3.0]], [1, 1])
        >>> problem.keeping([0, 2]).pool_ids.tolist()
        [0, 2]
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows[0] < 0 or rows[-1] >= self.n_pool or (np.diff(rows) <= 0).any())):
            raise ValueError(f"rows must be ascending positions below {self.n_pool}, got {rows.tolist()}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(pool_work=self.pool_work[rows], pool_ids=self.pool_ids[rows], forced=self.forced[rows],
                      pool_prompt=self.pool_prompt[rows])
        return StepProblem._built(**values)

    @classmethod
    def from_arrays(cls, projected_load: Any, pool_work: Any, free_slots: Any, *, alive: Any = None,
                    weights: Any = None, forced: Any = None, pool_ids: Any = None,
                    work_conserving: bool = True) -> StepProblem:
        """Build a checked problem from bare arrays (users, backends, tests, benchmarks).

        Parameters
        ----------
        projected_load : array, shape (H + 1, G)
        pool_work : array, shape (N, H + 1); an empty pool may be given as ``[]``
        free_slots : array of int, shape (G,)
        alive : array of bool, shape (G,), optional
            Default all alive.
        weights : array, shape (H + 1,), optional
            Default all 1.
        forced : array of bool, shape (N,), optional
            Default none.
        pool_ids : array of int, shape (N,), optional
            Default ``0..N-1``.

        Every argument is checked (``ValueError``/``TypeError`` naming it): see
        :class:`StepProblem`.
        """
        projected_load = to_host(projected_load)
        rows = np.shape(projected_load)[0] if np.ndim(projected_load) == 2 else 1
        pool_work = to_host(pool_work)
        if np.size(pool_work) == 0:
            pool_work = np.zeros((0, rows))
        n_workers = np.shape(projected_load)[-1] if np.ndim(projected_load) else 1
        n_pool = np.shape(pool_work)[0] if np.ndim(pool_work) else 1
        free_slots = to_host(free_slots)
        alive = np.ones(n_workers, dtype=bool) if alive is None else to_host(alive)
        return cls(projected_load=projected_load, pool_work=pool_work,
                   pool_ids=np.arange(n_pool, dtype=np.int64) if pool_ids is None else to_host(pool_ids),
                   free_slots=free_slots, alive=alive,
                   weights=np.ones(rows) if weights is None else to_host(weights),
                   forced=np.zeros(n_pool, dtype=bool) if forced is None else to_host(forced),
                   active_count=np.zeros(n_workers, dtype=np.int64), active_prompt=np.zeros(n_workers),
                   active_load=_FROM_LOADS, pool_prompt=_FROM_LOADS, work_conserving=work_conserving)


#: ``active_load`` and ``pool_prompt`` not given: taken from the first step of the loads and work.
_FROM_LOADS: Any = None


def _normalised(values: dict) -> dict:
    """The checks of :class:`StepProblem`, field by field; returns the converted fields."""
    out = dict(values)
    load = check_array("projected_load", to_host(values["projected_load"]), ndim=2, nonnegative=True)
    rows, n_workers = load.shape
    if rows < 1 or n_workers < 1:
        raise ValueError(f"projected_load must have shape (H + 1, G) with G >= 1, got {load.shape}")
    work = check_array("pool_work", to_host(values["pool_work"]), shape=(None, rows), nonnegative=True)
    n_pool = work.shape[0]
    alive = check_array("alive", to_host(values["alive"]), shape=(n_workers,), dtype=bool)
    free = check_array("free_slots", to_host(values["free_slots"]), shape=(n_workers,), nonnegative=True,
                       dtype=np.int64)
    # The solvers count placements in int64: sum(free) and (tasks placed) * free[g] must not wrap.
    most = INT64_MAX // max(n_pool, n_workers, 1)
    if free.size and int(free.max()) > most:
        raise ValueError(f"free_slots must be <= {most:,} per worker with {n_pool} waiting tasks and {n_workers} "
                         f"workers (the solvers count them in int64), got {int(free.max()):,}")
    ids = check_array("pool_ids", to_host(values["pool_ids"]), shape=(n_pool,), nonnegative=True, dtype=np.int64)
    if n_pool > 1 and np.unique(ids).size != n_pool:
        raise ValueError("pool_ids contains duplicate task ids")
    scenarios = check_int("scenarios", values["scenarios"], minimum=1)
    if rows % scenarios:
        raise ValueError(f"scenarios={scenarios} must divide the {rows} rows of projected_load")
    out.update(projected_load=load, pool_work=work, alive=alive, free_slots=np.where(alive, free, 0), pool_ids=ids,
               weights=check_array("weights", to_host(values["weights"]), shape=(rows,), nonnegative=True),
               forced=check_array("forced", to_host(values["forced"]), shape=(n_pool,), dtype=bool),
               active_count=check_array("active_count", to_host(values["active_count"]), shape=(n_workers,),
                                        nonnegative=True, dtype=np.int64),
               active_prompt=check_array("active_prompt", to_host(values["active_prompt"]), shape=(n_workers,),
                                         nonnegative=True),
               active_load=load[0].copy() if values["active_load"] is None else
               check_array("active_load", to_host(values["active_load"]), shape=(n_workers,), nonnegative=True),
               pool_prompt=work[:, 0].copy() if values["pool_prompt"] is None else
               check_array("pool_prompt", to_host(values["pool_prompt"]), shape=(n_pool,), nonnegative=True),
               work_conserving=check_bool("work_conserving", values["work_conserving"]), scenarios=scenarios,
               stride=check_int("stride", values["stride"], minimum=1))
    return out


def loads_after(projected_load: Any, pool_work: Any, task_index: Any, worker: Any) -> Any:
    """Projected load after placing ``pool_work[task_index[k]]`` on ``worker[k]``.

    Array code (any array-API namespace, any device; the inputs are not
    modified). Returns a new array of shape ``(H + 1, G)`` in the inputs'
    namespace, on their device.
    """
    xp = array_namespace(projected_load, pool_work)
    device = device_of(projected_load)
    task_index = xp.asarray(task_index, dtype=xp.int64, device=device)
    worker = xp.asarray(worker, dtype=xp.int64, device=device)
    loads = xp.asarray(projected_load, dtype=xp.float64, device=device)
    if not task_index.shape[0]:
        return xp.asarray(loads, copy=True)
    return add_rows_to_columns(loads, xp.take(xp.asarray(pool_work, dtype=xp.float64), task_index, axis=0), worker)


def imbalance_of_loads(loads: Any, alive: Any, weights: Any, *, peak_weight: float = 1.0) -> Any:
    """``sum_h d_h (peak_weight * G max_g L[h, g] - sum_g L[h, g])`` over alive workers.

    Array code: ``loads`` (H + 1, G) and ``weights`` (H + 1,) of any array-API
    namespace; ``alive`` (G,) bool, host or of that namespace. Returns a 0-d
    array of the namespace (``float()`` of it is the number).
    """
    xp = array_namespace(loads, weights)
    alive_index = np.flatnonzero(to_host(alive))
    if alive_index.size == 0:
        return xp.asarray(0.0, dtype=xp.float64, device=device_of(loads))
    if alive_index.size != loads.shape[1]:
        loads = xp.take(loads, xp.asarray(alive_index, device=device_of(loads)), axis=1)
    per_step = peak_weight * int(alive_index.size) * xp.max(loads, axis=1) - xp.sum(loads, axis=1)
    return weights @ per_step


def spread_of_loads(loads: Any, alive: Any, weights: Any) -> Any:
    """``sum_h d_h sum_g L[h, g]**2`` over alive workers: the tie-break term (lower is more even).

    With the placed work fixed (work conservation) this ranks placements as the
    horizon-weighted variance of the loads does. The solvers use it only between
    placements whose objective is exactly equal (:func:`barrierlb.solvers.fast.solve_problem`,
    ``spread``). Array code, arguments as for :func:`imbalance_of_loads`.
    """
    xp = array_namespace(loads, weights)
    alive_index = np.flatnonzero(to_host(alive))
    if alive_index.size != loads.shape[1]:
        loads = xp.take(loads, xp.asarray(alive_index, device=device_of(loads)), axis=1)
    return weights @ xp.sum(loads * loads, axis=1)


def predicted_imbalance(problem: StepProblem, task_index: Any, worker: Any, *, peak_weight: float = 1.0) -> float:
    """The BF-IO objective of a placement (lower is better).

    Parameters
    ----------
    problem : StepProblem
    task_index : array-like of int, shape (K,)
        Positions in the pool of the placed tasks.
    worker : array-like of int, shape (K,)
        Worker of each placed task.
    peak_weight : float
        Weight of the ``G * max`` term; 1 (default) is the paper's predicted
        imbalance, other values the objective the solvers minimize for
        ``bfio:peak_weight=...``.

    Raises ``ValueError``/``TypeError`` naming the argument for a position or
    worker that is not an integer in range, or a task placed twice.
    """
    task_index = check_array("task_index", to_host(task_index), ndim=1, dtype=np.int64)
    worker = check_array("worker", to_host(worker), shape=(task_index.size,), dtype=np.int64)
    if task_index.size:
        if task_index.min() < 0 or task_index.max() >= problem.n_pool:
            bad = task_index[(task_index < 0) | (task_index >= problem.n_pool)][0]
            raise ValueError(f"task_index {bad} is not a position in the pool of {problem.n_pool} tasks")
        if worker.min() < 0 or worker.max() >= problem.n_workers:
            bad = worker[(worker < 0) | (worker >= problem.n_workers)][0]
            raise ValueError(f"worker {bad} does not exist (n_workers={problem.n_workers})")
        if np.unique(task_index).size != task_index.size:
            raise ValueError("task_index places a task twice")
    loads = loads_after(problem.projected_load, problem.pool_work, task_index, worker)
    return float(imbalance_of_loads(loads, problem.alive, problem.weights, peak_weight=peak_weight))


def projected_peak(problem: StepProblem) -> np.ndarray:
    """``max_g L[h, g]`` over the alive workers at every step of the horizon, shape (H + 1,);
    ``-inf`` where no worker is alive.

    Examples
    --------
    >>> projected_peak(StepProblem.from_arrays([[5.0, 1.0], [2.0, 3.0]], np.zeros((0, 2)), [0, 0])).tolist()
    [5.0, 3.0]
    """
    return np.where(problem.alive[None, :], problem.projected_load, -np.inf).max(axis=1)


def peak_raise(problem: StepProblem, task_index: Any) -> np.ndarray:
    """How much placing each of the tasks at ``task_index`` alone would raise the peak term, per worker.

    ``R[k, g] = sum_h d_h relu(w[i_k, h] - m[h, g])`` with ``m[h, g] = max_g' L[h, g'] - L[h, g]``,
    the worker's margin below the projected maximum before the decision (the
    :mod:`~barrierlb.solvers.fast` greedy's peak term, without the peak weight), for every
    worker, whether or not it has a free slot; ``inf`` on dead workers.

    Examples
    --------
    >>> problem = StepProblem.from_arrays([[5.0, 1.0]], [[3.0]], [1, 0])
    >>> peak_raise(problem, [0]).tolist()       # on the full worker 1 it would fit under the peak
    [[3.0, 0.0]]
    """
    index = np.asarray(task_index, dtype=np.int64)
    loads, alive, d = problem.projected_load, problem.alive, problem.weights
    raised = np.zeros((index.size, problem.n_workers))
    if not alive.any():
        raised[:] = np.inf
        return raised
    margin = projected_peak(problem)[:, None] - loads
    work = problem.pool_work[index]
    for h in range(loads.shape[0]):
        if d[h]:
            raised += d[h] * np.maximum(work[:, h, None] - margin[h][None, :], 0.0)
    raised[:, ~alive] = np.inf
    return raised
