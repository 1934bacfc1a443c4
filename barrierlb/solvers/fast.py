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

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._validate import check_int, check_real
from barrierlb.problem import StepProblem, imbalance_of_loads

#: How a :class:`FastResult` was reached: ``"exact"`` (an enumeration of every
#: work-conserving placement or count vector proved it optimal), ``"water-filling"``
#: (alike tasks, too many count vectors to enumerate) or ``"heuristic"`` (greedy
#: constructions and local search).
PATHS = ("exact", "water-filling", "heuristic")


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
    """

    task_index: np.ndarray
    worker: np.ndarray
    greedy_objective: float
    objective: float
    moves: int
    path: str = "heuristic"


def solve_fast(projected_load: Any, pool_work: Any, free_slots: Any, weights: Any, *, alive: Any = None,
               forced: Any = None, work_conserving: bool = True, local_search: bool = True,
               max_moves: int | None = None, max_candidates: int = 32, peak_weight: float = 1.0) -> FastResult:
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
    work_conserving, local_search, max_moves, max_candidates, peak_weight
        See :func:`solve_problem`.

    Returns
    -------
    FastResult
    """
    problem = StepProblem.from_arrays(projected_load, pool_work, free_slots, alive=alive, weights=weights,
                                      forced=forced, work_conserving=work_conserving)
    return solve_problem(problem, local_search=local_search, max_moves=max_moves, max_candidates=max_candidates,
                         peak_weight=peak_weight)


def solve_problem(problem: StepProblem, *, work_conserving: bool | None = None, local_search: bool = True,
                  max_moves: int | None = None, max_candidates: int = 32, peak_weight: float = 1.0) -> FastResult:
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
    - *slots* (only when at most 16 free slots will all be filled): the open worker with
      the least room first, each taking its best task, so that workers near the
      peak get the small tasks they can absorb;
    - *largest* (only when every waiting task is placed, as when a cluster fills
      up): the largest task first, each where it raises the peak least, the LPT
      rule for the makespan, which is all that is left to optimize then.

    The second and third run only when the first raised the peak.

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
    """
    if not isinstance(problem, StepProblem):
        raise TypeError(f"problem must be a StepProblem, got {type(problem).__name__}")
    work_conserving = problem.work_conserving if work_conserving is None else bool(work_conserving)
    budget = 16 if max_moves is None else check_int("max_moves", max_moves, minimum=0)
    max_candidates = check_int("max_candidates", max_candidates, minimum=1)
    p = _Problem(problem, work_conserving, check_real("peak_weight", peak_weight, minimum=0.0))
    best = None
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
    constructions = ("largest",) if all_placed and (p.identical or empty) else ("pairs", "slots", "largest")
    for construction in constructions:
        if construction == "slots" and not (work_conserving and 1 < p.to_place == int(p.free.sum())
                                            and p.to_place <= 16 and pairs_raised_peak):
            continue
        if construction == "largest" and not (all_placed and (pairs_raised_peak or len(constructions) == 1)):
            continue
        search = _Search(p)
        search.greedy(construction)
        greedy_objective = search.objective()
        moves = 0
        # One placement: the greedy's lowest-score pair is already optimal.
        if local_search and len(search.placed_task) > 1:
            moves = search.local_search(budget, max_candidates)
        objective = search.objective() if moves else greedy_objective
        if construction == "pairs":
            pairs_raised_peak = bool((search.peak > search.initial_peak).any())
        if best is None or objective < best.objective - 1e-9 * abs(best.objective):
            best = FastResult(task_index=np.asarray(search.placed_task, dtype=np.int64),
                              worker=np.asarray(search.placed_worker, dtype=np.int64),
                              greedy_objective=greedy_objective, objective=objective, moves=moves)
    assert best is not None          # every problem runs at least one construction
    return best


def _kernels() -> Any:
    """The numba-compiled greedy and local search (:mod:`barrierlb.solvers._compiled`).

    Imported on first use, so that ``import barrierlb`` and the enumerations of
    small problems do not load numba (about half a second; the kernels compile
    once per installation and load from numba's cache afterwards)."""
    try:
        from barrierlb.solvers import _compiled
    except ImportError as error:                   # numba is a dependency: a broken install
        raise ImportError(f"the fast solver needs numba, a dependency of barrierlb ({error}); "
                          "pip install numba") from error
    return _compiled


#: Tiny problems (a pool of at most 16 tasks, at most 4,096 placements, and placements x
#: workers x steps within 65,536 numbers) are solved by enumerating every placement:
#: exact, and faster than the heuristic's fixed costs. Alike tasks enumerate count vectors
#: instead, within the same limits, whatever the pool size (16 alike tasks on 4 workers:
#: 969 vectors, 0.09 ms against the heuristic's 0.25 ms). Larger pools keep the heuristic,
#: whose worst-fit tie-break matters for long-run balance in the LLM simulations.
ENUMERATION_LIMIT = 65_536
ENUMERATION_POOL = 16
ENUMERATION_PLACEMENTS = 4_096


def _enumerate(p: _Problem) -> FastResult | None:
    """Score every work-conserving placement at once and return the best (ties: first).

    Returns ``None`` when the problem is too large to enumerate.
    """
    k = p.to_place
    cols = np.flatnonzero(p.free > 0)
    if k < 2 or not cols.size:                                    # one placement: the greedy is exact
        return None
    must = np.flatnonzero(p.forced)[:k]
    if p.identical:
        return _enumerate_counts(p, k, cols, must) or _level_counts(p, k, cols, must)
    count = math.comb(p.n_pool, k) * cols.size ** k
    if p.n_pool > ENUMERATION_POOL or count > ENUMERATION_PLACEMENTS \
            or count * cols.size * p.n_rows > ENUMERATION_LIMIT:
        return None
    tasks, workers, spread = _placements(p.n_pool, k, p.n_workers, tuple(cols.tolist()),
                                         tuple(p.free[cols].tolist()), tuple(must.tolist()))
    loads = p.loads.T[None] + (spread @ p.work).reshape(len(tasks), p.n_workers, p.n_rows)   # (M, G, H+1)
    alive = loads if p.n_alive == p.n_workers else loads[:, p.alive, :]
    score = (p.peak_cost * alive.max(axis=1) - alive.sum(axis=1)) @ p.d
    best = int(np.argmin(score))
    return FastResult(task_index=tasks[best].copy(), worker=workers[best].copy(),
                      greedy_objective=float(score[best]), objective=float(score[best]), moves=0, path="exact")


def _enumerate_counts(p: _Problem, k: int, cols: np.ndarray, must: np.ndarray) -> FastResult | None:
    """Alike tasks: only how many each worker gets matters, so score every vector of counts
    (far fewer than placements: 35 instead of 256 for 4 tasks on 4 workers). The tasks
    placed are the forced ones, then the earliest."""
    counts = _counts(k, p.n_workers, tuple(cols.tolist()), tuple(p.free[cols].tolist()))
    if counts is None or counts.size * p.n_rows > ENUMERATION_LIMIT:
        return None
    # Every count vector places the same total, so the sum term is the same for all: the
    # peak term alone ranks them.
    w = p.work[0]
    peak = None                                                  # (M, H+1): max over alive workers
    for g in np.flatnonzero(p.alive).tolist():                   # a loop over few workers beats a
        column = counts[:, g:g + 1] * w + p.loads[:, g]         # reduction over a middle axis 6x
        peak = column if peak is None else np.maximum(peak, column, out=peak)
    peak = peak @ p.d
    best = int(np.argmin(peak))
    return _alike_result(p, k, must, counts[best], float(peak[best]), float(peak[best]), 0, "exact")


def _alike_result(p: _Problem, k: int, must: np.ndarray, counts: np.ndarray, first_peak: float, peak: float,
                  moves: int, path: str) -> FastResult:
    """Placement of ``k`` alike tasks by per-worker counts: the forced tasks, then the earliest.

    ``first_peak`` and ``peak`` are ``sum_h d_h max_g`` before and after any moves; every
    count vector places the same total, so the objective is the peak term less a constant.
    """
    alive_loads = p.loads if p.n_alive == p.n_workers else p.loads[:, p.alive]
    constant = float(p.d @ (alive_loads.sum(axis=1) + k * p.work[0]))
    if must.size:
        rest = np.flatnonzero(~np.isin(np.arange(p.n_pool), must))
        tasks = np.sort(np.concatenate([must, rest[: k - must.size]]))
    else:
        tasks = np.arange(k)
    workers = np.repeat(np.arange(p.n_workers), np.asarray(counts).astype(np.int64))
    return FastResult(task_index=tasks, worker=workers, greedy_objective=p.peak_cost * first_peak - constant,
                      objective=p.peak_cost * peak - constant, moves=moves, path=path)


#: Most (worker, position) candidates the alike-task water-filling sorts.
LEVEL_CANDIDATES = 1 << 17
#: Single-task moves after the water-filling. Loads that change smoothly over the horizon
#: (a persistence predictor's lines) need none; when the budget runs out, the greedy
#: constructions run too and the better placement is kept.
LEVEL_MOVES = 16
#: Water-filling is for loads whose peak sits on few workers over the horizon; with more
#: workers taking the peak at some step the greedy constructions run instead.
LEVEL_PEAK_WORKERS = 4
#: Largest (sources x targets x steps) block of single-task moves the water-filling scores.
DENSE_LIMIT = 1 << 20


def _level_counts(p: _Problem, k: int, cols: np.ndarray, must: np.ndarray) -> FastResult | None:
    """Alike tasks, too many count vectors to enumerate: water-fill, then move single tasks.

    The j-th task on worker g starts at the weighted level ``s_g + j * u`` (``s``:
    the worker's horizon-weighted load, ``u``: the task's); the ``k`` lowest
    starts give the counts, as placing tasks one by one on the lowest worker
    would. Then, while it lowers the objective, one task moves off a worker that
    holds the peak at some step to the worker where it raises the peak least
    (every row scored exactly). ``None`` when there are too many candidates.
    """
    w = p.work[0]
    d_sum = float(p.d.sum()) or 1.0
    level = (p.d @ p.loads) / d_sum
    u = float(p.d @ w) / d_sum
    cap = np.minimum(p.free[cols], k)
    if int(cap.sum()) > LEVEL_CANDIDATES:
        return None
    owner = np.repeat(cols, cap)
    position = np.arange(owner.size) - np.repeat(np.cumsum(cap) - cap, cap)
    start = level[owner] + position * u
    chosen = np.argsort(start, kind="stable")[:k]          # ties: lower worker, then lower position
    counts = np.bincount(owner[chosen], minlength=p.n_workers).astype(np.float64)
    alive = np.flatnonzero(p.alive)
    loads = p.loads[:, alive]
    free = p.free[alive].astype(np.float64)

    def peak_sum(c):
        return float(p.d @ (loads + np.outer(w, c)).max(axis=1))

    c = counts[alive]
    if np.unique((loads + np.outer(w, c)).argmax(axis=1)).size > LEVEL_PEAK_WORKERS:
        return None          # the peak jumps between workers from step to step: the greedy does better
    current = first = peak_sum(c)
    moves = 0
    every = np.ones(alive.size, dtype=bool)
    while moves < LEVEL_MOVES:
        columns = loads + np.outer(w, c)                                     # (H+1, A)
        values, index = _top3(np, columns, every)
        sources = np.unique(index[:, 0])
        sources = sources[c[sources] > 0]
        targets = np.flatnonzero(c < free)
        if not sources.size or not targets.size or sources.size * targets.size * p.n_rows > DENSE_LIMIT:
            break
        rest = _peak_without(np, values, index, sources[:, None, None], targets[None, :, None])  # (S, B, H+1)
        moved = np.maximum(np.maximum(rest, (columns[:, sources] - w[:, None]).T[:, None, :]),
                           (columns[:, targets] + w[:, None]).T[None, :, :])
        value = moved @ p.d                                                  # (S, B)
        value[sources[:, None] == targets[None, :]] = np.inf
        flat = int(np.argmin(value))
        if not value.flat[flat] < current - 1e-12 * abs(current):
            break
        current = float(value.flat[flat])
        src, dst = divmod(flat, targets.size)
        c[sources[src]] -= 1
        c[targets[dst]] += 1
        moves += 1
    counts = np.zeros(p.n_workers)
    counts[alive] = c
    return _alike_result(p, k, must, counts, first, current, moves, "water-filling")


@functools.lru_cache(maxsize=32)
def _counts(k: int, n_workers: int, cols: tuple, free: tuple):
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



class _Problem:
    """Host arrays of a checked problem, shared by every construction."""

    def __init__(self, problem: StepProblem, work_conserving: bool, peak_weight: float):
        self.loads = np.ascontiguousarray(problem.projected_load)
        self.work = np.ascontiguousarray(problem.pool_work)
        self.d = np.ascontiguousarray(problem.weights)
        self.n_rows, self.n_workers = self.loads.shape
        self.n_pool = self.work.shape[0]
        self.alive = problem.alive
        self.free = problem.free_slots.copy()
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
        """``W_i = sum_h d_h w[i, h]``, shape (N,)."""
        return np.ascontiguousarray(self.work @ self.d)

    @functools.cached_property
    def peak_work(self) -> np.ndarray:
        """Largest step of each task's lookahead (the greedy's fits-everywhere test), shape (N,)."""
        return np.ascontiguousarray(self.work.max(axis=1)) if self.n_rows else np.zeros(self.n_pool)

    @functools.cached_property
    def tie_break(self) -> float:
        return 1e-6 / max(float(self.d.sum()), 1e-12)


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
        if construction == "largest":
            n = kernels.largest_first(self.loads, self.peak, p.work, p.d, p.total, self.free_left, self.unplaced,
                                      p.to_place, float(p.peak_cost), float(p.tie_break), tasks, workers, 0)
        else:
            must = np.zeros(p.n_pool, dtype=bool)
            must[np.flatnonzero(p.forced)[: p.to_place]] = True
            self.score = np.empty((p.n_pool, n_cols))
            n = kernels.greedy(self.loads, self.peak, p.work, p.peak_work, p.d, p.total, self.free_left,
                               self.unplaced, must, p.to_place, p.work_conserving, construction == "slots",
                               float(p.peak_cost), float(p.tie_break), tasks, workers, 0, self.score)
        self.placed_task = tasks[:n].tolist()
        self.placed_worker = workers[:n].tolist()

    def local_search(self, max_moves: int, max_candidates: int, max_pairs: int = 1024) -> int:
        """Best-improvement local search on this construction; returns the moves applied.

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
        moves = _kernels().local_search(self.loads, p.work, p.d, p.total, tasks, workers, tasks.size, self.unplaced,
                                        self.free_left, p.forced, p.alive, float(p.peak_cost), score, has_score,
                                        max_moves, max_candidates, max_pairs)
        self.placed_task = tasks.tolist()
        self.placed_worker = workers.tolist()
        return int(moves)


def _top3(xp, loads, alive_host):
    """Largest three alive loads per step and their workers, shape (H+1, 3) each."""
    n_rows, n_workers = loads.shape
    masked = xp.where(xp.asarray(alive_host)[None, :], loads, -xp.inf)
    if n_workers < 3:
        pad = xp.full((n_rows, 3 - n_workers), -xp.inf)
        masked = xp.concatenate([masked, pad], axis=1)
    top = xp.argsort(-masked, axis=1, kind="stable")[:, :3] if masked.shape[1] <= 64 else \
        _argtop3(xp, masked)
    values = xp.take_along_axis(masked, top, axis=1)
    top = xp.where(top >= n_workers, -1, top)
    return values, top


def _peak_without(xp, values, index, a, b):
    """The peak at each step over the workers other than ``a`` and ``b``, from :func:`_top3`'s
    ``values`` and ``index`` (``a`` and ``b`` broadcast against the step axis, which comes last)."""
    hit1 = (index[:, 0] == a) | (index[:, 0] == b)
    hit2 = (index[:, 1] == a) | (index[:, 1] == b)
    return xp.where(hit1, xp.where(hit2, values[:, 2], values[:, 1]), values[:, 0])


def _argtop3(xp, masked):
    """Workers of the three largest values per row, ties to the lower index (as a stable sort)."""
    # Dead workers' -inf becomes the lowest finite number, so that only the workers
    # already taken are -inf and argmax never takes one twice.
    rest = xp.maximum(masked, -np.finfo(np.float64).max)
    rows = xp.arange(masked.shape[0])
    top = xp.empty((masked.shape[0], 3), dtype=xp.int64)
    for k in range(3):
        top[:, k] = xp.argmax(rest, axis=1)
        rest[rows, top[:, k]] = -xp.inf
    return top


