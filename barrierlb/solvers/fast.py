"""Fast BF-IO step solver: exact enumeration of small problems, else greedy plus local search.

Adding a task with lookahead ``w`` to worker ``g`` changes the predicted
imbalance by exactly

    delta(i, g) = sum_h d_h * (G * relu(w[i, h] - m[h, g]) - w[i, h])

where ``m[h, g] = max_g' L[h, g'] - L[h, g]`` is the worker's margin below the
current maximum (BalanceRoute's F-score). The greedy places the pair with the
lowest delta, one at a time. It is exact for one placement but blind to how
several placements interact through the maximum, so a local search then tries
every exchange of two placed tasks, every replacement of a placed task by a
waiting one and every relocation to a worker with a free slot, scoring each
with the exact objective, and applies the best improving move until none is left.

One source per step: the enumerations and the alike-task water-filling are
array code (whole blocks of placements scored at once); the greedy
constructions and the local search, which place one task or apply one move at a
time, are numba-compiled loops (:mod:`barrierlb.solvers._compiled`). Inputs
of any array library are converted to host numpy arrays once, by
:class:`~barrierlb.problem.StepProblem`, which also checks them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._numba import compiled
from barrierlb._validate import check_bool, check_int, check_real
from barrierlb.problem import StepProblem, imbalance_of_loads
from barrierlb.solvers import enumeration
from barrierlb.solvers.enumeration import LEVEL_MOVES

#: How a :class:`FastResult` was reached: ``"exact"`` (an enumeration of every
#: work-conserving placement or count vector proved it optimal), ``"water-filling"``
#: (alike tasks, too many count vectors to enumerate) or ``"heuristic"`` (greedy
#: constructions and local search).
PATHS = ("exact", "water-filling", "heuristic")

#: The ``fill`` construction runs on one-step problems (H = 0) whose pool size times the
#: tasks to place is at most this: its subset-sum tables cost about that many times
#: ``FILL_UNITS / 64`` word operations (:func:`barrierlb.solvers._compiled.subset_fill`).
FILL_LIMIT = 1 << 15


@dataclass(frozen=True)
class FastResult:
    """Placement from :func:`solve_fast`.

    Attributes
    ----------
    task_index : ndarray of int64, shape (K,)
        Pool positions of the placed tasks, in placement order.
    worker : ndarray of int64, shape (K,)
        Worker of each placed task.
    greedy_objective, objective : float
        The minimized objective ``sum_h d_h (peak_weight * G * max - sum)``
        before and after the local search or moves (the predicted imbalance
        when ``peak_weight`` is 1).
    moves : int
        Local-search moves applied.
    path : str
        What produced the placement, one of :data:`PATHS`.
    construction : str or None
        For ``path="heuristic"``, the greedy construction whose placement
        (after its local search) was kept: ``"pairs"``, ``"fill"``, ``"slots"``
        or ``"largest"`` (see :func:`solve_problem`); else ``None``.
    deadline_cut : bool
        The ``deadline_ms`` of :func:`solve_problem` ended the search early: the
        placement is the best found by then (complete and feasible).
    """

    task_index: np.ndarray
    worker: np.ndarray
    greedy_objective: float
    objective: float
    moves: int
    path: str = "heuristic"
    construction: str | None = None
    deadline_cut: bool = False


def solve_fast(projected_load: Any, pool_work: Any, free_slots: Any, weights: Any, *, alive: Any = None,
               forced: Any = None, work_conserving: bool = True, local_search: bool = True,
               max_moves: int | None = None, max_candidates: int = 32, peak_weight: float = 1.0,
               spread: bool = True, deadline_ms: float | None = None, share: bool = False) -> FastResult:
    """Place waiting tasks to minimize the predicted imbalance, fast.

    The arrays are checked once (:meth:`StepProblem.from_arrays`: shapes,
    finite non-negative work, integral slots) and then solved by
    :func:`solve_problem`.

    Parameters
    ----------
    projected_load : array, shape (H + 1, G), float
        Load of the placed tasks per step ahead and worker.
    pool_work : array, shape (N, H + 1), float
        Lookahead of each waiting task, in arrival order.
    free_slots : array, shape (G,), int
        Free slots per worker.
    weights : array, shape (H + 1,), float
        Horizon weights ``d_h``.
    alive : array of bool, shape (G,), optional
        Dead workers get no task and do not count in the imbalance.
    forced : array of bool, shape (N,), optional
        Tasks that must be placed (bounded waiting), first in arrival order,
        also when ``work_conserving`` is false.
    work_conserving, local_search, max_moves, max_candidates, peak_weight, spread, deadline_ms, share
        See :func:`solve_problem`.

    Returns
    -------
    FastResult
    """
    problem = StepProblem.from_arrays(projected_load, pool_work, free_slots, alive=alive, weights=weights,
                                      forced=forced, work_conserving=work_conserving)
    return solve_problem(problem, local_search=local_search, max_moves=max_moves, max_candidates=max_candidates,
                         peak_weight=peak_weight, spread=spread, deadline_ms=deadline_ms, share=share)


def solve_problem(problem: StepProblem, *, work_conserving: bool | None = None, local_search: bool = True,
                  max_moves: int | None = None, max_candidates: int = 32, peak_weight: float = 1.0,
                  spread: bool = True, strict_ties: bool = False, deadline_ms: float | None = None,
                  started: float | None = None, share: bool = False) -> FastResult:
    """Solve a checked :class:`~barrierlb.problem.StepProblem` with the fast solver.

    Small problems are solved exactly by enumeration (``path="exact"``): every
    placement when the pool has at most 16 tasks, and every vector of
    per-worker counts when the tasks are alike (the backends' usual case: new
    tasks costed at the mean measured cost), within the limits below; alike
    tasks beyond them are water-filled (``"water-filling"``). Otherwise greedy
    constructions are tried, each polished by local search, and the best
    placement is returned (``"heuristic"``):

    - *pairs*: the (task, worker) pair of lowest marginal score first, which
      fills the deepest holes with the largest tasks that fit;
    - *fill* (one-step problems, H = 0, when the pool size times the placements
      is at most :data:`FILL_LIMIT`): the open worker with the most room first
      takes as many tasks as it has free slots whose summed work is the largest
      that fits under its margin, an exact subset sum
      (:func:`barrierlb.solvers._compiled.subset_fill`), so that no placement
      raises the peak where all of a worker's slots can be filled without; kept
      only when its objective is lower than the pairs construction's;
    - *slots* (only when at most 16 free slots will all be filled): the open worker with
      the least room first, each taking its best task, so that workers near the
      peak get the small tasks they can absorb;
    - *largest* (only when every waiting task is placed, as when a cluster fills
      up): the largest task first, each where it raises the peak least, the LPT
      rule for the makespan, which is all that is left to optimize then.

    *slots* and *largest* run only when *pairs* raised the peak.

    Parameters
    ----------
    problem : StepProblem
    work_conserving : bool, optional
        Place ``min(N, sum(free_slots))`` tasks; otherwise only the forced
        tasks and those whose placement lowers the objective. Default: the
        problem's own flag.
    local_search : bool
        Improve each greedy placement by local search.
    max_moves : int, optional
        Cap on local-search moves per construction (default 16).
    max_candidates : int
        Waiting tasks considered for replacement moves (the best by greedy score).
    peak_weight : float
        Weight of the peak term relative to the paper's objective (1).
    spread : bool
        Break ties of the objective toward even loads (default on), by a
        lexicographic comparison that no difference of the objective can lose
        to: the enumerations take, among placements of exactly the least
        objective, the least ``sum_h d_h sum_g L**2``
        (:func:`~barrierlb.problem.spread_of_loads`) instead of the first in
        table order; the greedy constructions take, among pairs of exactly
        equal score, the worker with the most room (least horizon-weighted
        load). The greedy's score keeps its room term scaled by
        ``1e-6 / sum(d)`` unless ``strict_ties``.
    strict_ties : bool
        With ``spread``: the greedy's score is the exact marginal objective
        alone and the room decides only exact ties (default off: measured
        worse in the long run on the BurstGPT sample, docs/solvers.md).
    deadline_ms : float, optional
        Wall-time budget from ``started`` (default: this call's start). The
        local search checks it before each move and further constructions are
        skipped once it has passed; the best complete placement found so far is
        returned with ``deadline_cut`` set. The first greedy construction always
        completes (its cost is bounded by the pool and the free slots).
    started : float, optional
        ``time.perf_counter()`` at which the deadline's clock started.
    share : bool
        When a work-conserving decision places fewer tasks than there are free
        slots (``k < sum f``), a worker with ``f_g`` free slots takes at most
        ``ceil(k f_g / sum f)`` of them (default off): the free slots stay
        spread over the workers by count, so that no worker fills all of its
        slots with small tasks while others stay empty, which a one-step
        objective does not see (BF-IO's H = 0 default, docs/solvers.md).
    """
    started = time.perf_counter() if started is None else started
    if not isinstance(problem, StepProblem):
        raise TypeError(f"problem must be a StepProblem, got {type(problem).__name__}")
    work_conserving = (problem.work_conserving if work_conserving is None
                       else check_bool("work_conserving", work_conserving))
    local_search = check_bool("local_search", local_search)
    budget = 16 if max_moves is None else check_int("max_moves", max_moves, minimum=0)
    max_candidates = check_int("max_candidates", max_candidates, minimum=1)
    p = _Problem(problem, work_conserving, check_real("peak_weight", peak_weight, minimum=0.0),
                 check_bool("spread", spread), check_bool("strict_ties", strict_ties), check_bool("share", share))
    deadline = None
    if deadline_ms is not None:
        deadline = started + check_real("deadline_ms", deadline_ms, minimum=0.0) / 1e3
    best = None
    cut = False
    if work_conserving:
        best = _enumerate(p)
        # Water-filled counts that used up their moves get compared with the constructions below.
        if best is not None and best.moves < LEVEL_MOVES:
            return best
    pairs_raised_peak = False
    all_placed = work_conserving and 1 < p.to_place == p.n_pool
    # Identical tasks, all placed: every construction is the same water-filling. An empty
    # cluster filling up: every placement raises the peak, so the pairs construction rescores
    # everything after each one and never beat the LPT rule (the same objective on the 50
    # cold-start instances of benchmarks/decision.py, in a fifth of the time).
    empty = not bool(p.loads[:, p.alive].any())
    constructions: tuple[str, ...] = ("pairs", "slots", "largest")
    if all_placed and (p.identical or empty):
        constructions = ("largest",)
    elif work_conserving and p.n_rows == 1 and 1 < p.to_place and p.n_pool * p.to_place <= FILL_LIMIT:
        constructions = ("pairs", "fill", "slots", "largest")
    for construction in constructions:
        if construction == "slots" and not (work_conserving and 1 < p.to_place == int(p.free.sum())
                                            and p.to_place <= 16 and pairs_raised_peak):
            continue
        if construction == "largest" and not (all_placed and (pairs_raised_peak or len(constructions) == 1)):
            continue
        if best is not None and deadline is not None and time.perf_counter() >= deadline:
            cut = True
            break
        search = _Search(p)
        search.greedy(construction)
        greedy_objective = search.objective()
        moves = 0
        # One placement: the greedy's lowest-score pair is already optimal.
        if local_search and len(search.placed_task) > 1:
            moves, stopped = search.local_search(budget, max_candidates, deadline=deadline)
            cut = cut or stopped
        objective = search.objective() if moves else greedy_objective
        if construction == "pairs":
            pairs_raised_peak = bool((search.peak > search.initial_peak).any())
        if best is None or objective < best.objective - 1e-9 * abs(best.objective):
            best = FastResult(task_index=np.asarray(search.placed_task, dtype=np.int64),
                              worker=np.asarray(search.placed_worker, dtype=np.int64),
                              greedy_objective=greedy_objective, objective=objective, moves=moves,
                              construction=construction)
    assert best is not None          # every problem runs at least one construction
    if cut:
        best = dataclasses.replace(best, deadline_cut=True)
    return best


def _kernels() -> Any:
    """The numba-compiled greedy and local search (:mod:`barrierlb.solvers._compiled`), imported on
    first use (:func:`barrierlb._numba.compiled`), so that the enumerations of small problems do
    not load numba."""
    return compiled("solvers._compiled")


def greedy_tie_break(weights: np.ndarray, *, strict_ties: bool) -> float:
    """The greedy's room term (its ``tie_break`` argument) for horizon weights ``weights``:
    ``1e-6 / sum(weights)``, or 0 with strict ties (``spread`` and ``strict_ties`` both on)."""
    return 0.0 if strict_ties else 1e-6 / max(float(weights.sum()), 1e-12)


def greedy_kernel() -> Any:
    """The compiled greedy construction itself (``_compiled.greedy``), for a caller that builds
    its arguments without a :class:`StepProblem` and must place exactly as :func:`solve_fast`'s
    greedy would: the router's one-request decision. Its arguments are documented on the
    kernel; nothing is checked, so a caller passes arrays of the kernel's dtypes and shapes."""
    return _kernels().greedy


def _enumerate(p: _Problem) -> FastResult | None:
    """The array code's answer for small problems and alike tasks (:mod:`.enumeration`), or
    ``None`` when neither applies."""
    k = p.to_place
    if k < 2 or not (p.free > 0).any():                      # one placement: the greedy is exact
        return None
    must = np.flatnonzero(p.forced)[:k]
    if not p.identical:
        found = enumeration.best_placement(p.loads, p.work, p.d, p.free, p.alive, must, peak_cost=p.peak_cost,
                                           spread=p.spread)
        if found is None:
            return None
        tasks, workers, objective = found
        return FastResult(task_index=np.asarray(tasks, dtype=np.int64), worker=np.asarray(workers, dtype=np.int64),
                          greedy_objective=objective, objective=objective, moves=0, path="exact")
    counted = enumeration.best_counts(p.loads, p.work[0], p.d, p.free, p.alive, k, spread=p.spread)
    if counted is not None:
        return _alike_result(p, k, must, counted[0], counted[1], counted[1], 0, "exact")
    filled = enumeration.water_fill(p.loads, p.work[0], p.d, p.free, p.alive, k)
    if filled is None:
        return None
    return _alike_result(p, k, must, *filled, "water-filling")


def _alike_result(p: _Problem, k: int, must: np.ndarray, counts: np.ndarray, first_peak: float, peak: float,
                  moves: int, path: str) -> FastResult:
    """Placement of ``k`` alike tasks by per-worker counts: the forced tasks, then the earliest.

    ``first_peak`` and ``peak`` are ``sum_h d_h max_g`` before and after any moves; every
    count vector places the same total, so the objective is the peak term less a constant.
    """
    alive_loads = p.loads if p.n_alive == p.n_workers else p.loads[:, p.alive]
    constant = float(p.d @ (alive_loads.sum(axis=1) + k * p.work[0]))
    tasks, workers = enumeration.alike_tasks(p.n_pool, k, must, counts)
    return FastResult(task_index=tasks, worker=workers, greedy_objective=p.peak_cost * first_peak - constant,
                      objective=p.peak_cost * peak - constant, moves=moves, path=path)


class _Problem:
    """Host arrays of a checked problem, shared by every construction."""

    def __init__(self, problem: StepProblem, work_conserving: bool, peak_weight: float, spread: bool = True,
                 strict_ties: bool = False, share: bool = False):
        self.spread = spread
        self.strict_ties = spread and strict_ties
        self.loads = np.ascontiguousarray(problem.projected_load)
        self.work = np.ascontiguousarray(problem.pool_work)
        self.d = np.ascontiguousarray(problem.weights)
        self.n_rows, self.n_workers = self.loads.shape
        self.n_pool = self.work.shape[0]
        self.alive = problem.alive
        self.free = problem.free_slots.copy()
        placing = int(min(self.n_pool, self.free.sum())) if work_conserving else 0
        if share and 0 < placing < int(self.free.sum()):
            # At most ceil(k f_g / sum f) of the k placements on a worker with f_g free slots.
            self.free = np.minimum(self.free, -(-placing * self.free // int(self.free.sum())))
        self.forced = problem.forced
        self.work_conserving = work_conserving
        self.n_alive = int(self.alive.sum())
        self.to_place = int(min(self.n_pool, self.free.sum()))
        self.identical = bool(self.n_pool > 1 and (self.work == self.work[:1]).all())
        self.peak_weight = peak_weight
        self.peak_cost = self.n_alive * peak_weight

    # Only the greedy needs these; the enumerations of small problems never do.
    @functools.cached_property
    def total(self) -> np.ndarray:
        """``W_i = sum_h d_h w[i, h]``, shape (N,), in step order (``_compiled.weighted_sums``)."""
        return _kernels().weighted_sums(self.work, self.d)

    @functools.cached_property
    def peak_work(self) -> np.ndarray:
        """Largest step of each task's lookahead (the greedy's fits-everywhere test), shape (N,)."""
        return np.ascontiguousarray(self.work.max(axis=1)) if self.n_rows else np.zeros(self.n_pool)

    @functools.cached_property
    def tie_break(self) -> float:
        """The scaled room term of ``spread=False``; with ``spread`` ties are lexicographic instead."""
        return greedy_tie_break(self.d, strict_ties=self.strict_ties)


class _Search:
    """One greedy construction: loads, peak and the placement so far."""

    def __init__(self, problem: _Problem):
        self.p = problem
        self.loads = problem.loads.copy()
        self.free_left = problem.free.copy()
        self.placed_task: list[int] = []
        self.placed_worker: list[int] = []
        self.unplaced = np.ones(problem.n_pool, dtype=bool)
        self.score: np.ndarray | None = None
        if problem.n_alive:
            self.peak = np.where(problem.alive[None, :], self.loads, -np.inf).max(axis=1)
        else:
            self.peak = np.zeros(problem.n_rows)
        self.initial_peak = self.peak.copy()

    def objective(self) -> float:
        return float(imbalance_of_loads(self.loads, self.p.alive, self.p.d, peak_weight=self.p.peak_weight))

    def greedy(self, construction: str) -> None:
        """Run one construction: ``"pairs"``, ``"slots"`` or ``"largest"`` (see :func:`solve_problem`)."""
        p = self.p
        n_cols = int((self.free_left > 0).sum())
        if p.to_place == 0 or not n_cols:
            return
        kernels = _kernels()
        tasks = np.empty(p.to_place, dtype=np.int64)
        workers = np.empty(p.to_place, dtype=np.int64)
        if construction == "fill":
            must = np.zeros(p.n_pool, dtype=bool)
            must[np.flatnonzero(p.forced)[: p.to_place]] = True
            n = kernels.fill(self.loads, self.peak, p.work, p.peak_work, p.d, p.total, self.free_left, self.unplaced,
                             must, p.to_place, float(p.peak_cost), float(p.tie_break), tasks, workers, 0, p.spread)
        elif construction == "largest":
            n = kernels.largest_first(self.loads, self.peak, p.work, p.d, p.total, self.free_left, self.unplaced,
                                      p.to_place, float(p.peak_cost), float(p.tie_break), tasks, workers, 0,
                                      p.spread)
        else:
            must = np.zeros(p.n_pool, dtype=bool)
            must[np.flatnonzero(p.forced)[: p.to_place]] = True
            self.score = np.empty((p.n_pool, n_cols))
            n = kernels.greedy(self.loads, self.peak, p.work, p.peak_work, p.d, p.total, self.free_left,
                               self.unplaced, must, p.to_place, p.work_conserving, construction == "slots",
                               float(p.peak_cost), float(p.tie_break), tasks, workers, 0, self.score, p.spread)
        self.placed_task = tasks[:n].tolist()
        self.placed_worker = workers[:n].tolist()

    def local_search(self, max_moves: int, max_candidates: int, max_pairs: int = 1024,
                     deadline: float | None = None) -> tuple[int, bool]:
        """Best-improvement local search on this construction; returns the moves applied and
        whether ``deadline`` (a ``time.perf_counter()`` value) stopped it.

        Each round scores every candidate move exactly (as the change of the
        objective) and applies the best one: exchange (placed tasks on two
        workers swap), relocate (a placed task moves to a worker with a free
        slot) and replace (a waiting task takes a placed one's slot). At most
        ``max_pairs`` pairs of each kind are scored per round, the most
        promising first. Exchanges and relocations keep the total work, so they
        can only help by lowering the peak, which needs a task on a worker
        holding the peak at some step.
        """
        p = self.p
        tasks = np.array(self.placed_task, dtype=np.int64)
        workers = np.array(self.placed_worker, dtype=np.int64)
        has_score = self.score is not None
        score = self.score if self.score is not None else np.empty((0, 0))
        kernels = _kernels()

        def run(n_moves):
            return int(kernels.local_search(self.loads, p.work, p.d, p.total, tasks, workers, tasks.size,
                                            self.unplaced, self.free_left, p.forced, p.alive, float(p.peak_cost),
                                            score, has_score, n_moves, max_candidates, max_pairs))

        stopped = False
        if deadline is None:
            moves = run(max_moves)
        else:                       # one move a call, the clock read between moves
            moves = 0
            while moves < max_moves:
                if time.perf_counter() >= deadline:
                    stopped = True
                    break
                if not run(1):
                    break
                moves += 1
        self.placed_task = tasks.tolist()
        self.placed_worker = workers.tolist()
        return moves, stopped
