"""Fast BF-IO step solver: marginal-score greedy plus best-improvement local search.

Adding a task with lookahead ``w`` to worker ``g`` changes the predicted
imbalance by exactly

    delta(i, g) = sum_h d_h * (G * relu(w[i, h] - m[h, g]) - w[i, h])

where ``m[h, g] = max_g' L[h, g'] - L[h, g]`` is the worker's margin below the
current maximum (DESIGN.md section 2; BalanceRoute's F-score). The greedy places
the pair with the lowest delta, one at a time. It is exact for one placement but
blind to how several placements interact through the maximum, so a local search
then tries every exchange of two placed tasks, every replacement of a placed task
by a waiting one and every relocation to a worker with a free slot, scoring each
with the exact objective, and applies the best improving move until none is left.

The kernel is written once for numpy and CuPy: pass CuPy arrays and it runs on
the GPU (selection indices come back to the host, a few scalars per round).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from dataclasses import dataclass

import numpy as np

from barrierlb._xp import array_namespace, to_numpy
from barrierlb.problem import imbalance_of_loads


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
        after the greedy and after the local search (the predicted imbalance
        when ``peak_weight`` is 1).
    moves : int
        Local-search moves applied.
    engine : str
        What ran the greedy constructions and the local search: ``"compiled"``
        (the numba kernels) or ``"array"`` (numpy or CuPy array code; also the
        enumerations of small problems).
    """

    task_index: np.ndarray
    worker: np.ndarray
    greedy_objective: float
    objective: float
    moves: int
    engine: str = "array"


def solve_fast(projected_load, pool_work, free_slots, weights, *, alive=None, forced=None,
               work_conserving: bool = True, local_search: bool = True, max_moves: int | None = None,
               max_candidates: int = 32, peak_weight: float = 1.0, engine: str | None = None) -> FastResult:
    """Place waiting tasks to minimize the predicted imbalance, fast.

    Small problems are solved exactly by enumeration: every placement when the
    pool has at most 16 tasks, and every vector of per-worker counts when the
    tasks are alike (the backends' usual case: new tasks costed at the mean
    measured cost), within the limits below. Otherwise greedy constructions
    are tried, each polished by local search, and the best placement is returned:

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
        Tasks that must be placed (bounded waiting), first in arrival order.
    work_conserving : bool
        Place ``min(N, sum(free_slots))`` tasks; otherwise only tasks whose
        placement lowers the predicted imbalance.
    local_search : bool
        Improve each greedy placement by local search.
    max_moves : int, optional
        Cap on local-search moves per construction (default 16).
    max_candidates : int
        Waiting tasks considered for replacement moves (the best by greedy score).
    peak_weight : float
        Weight of the peak term relative to the paper's objective (1).
    engine : str, optional
        ``"compiled"``: the greedy constructions and the local search run as
        numba-compiled loops (host arrays; ``pip install "barrierlb[fast]"``);
        ``"array"``: as numpy or CuPy array operations. Both make the same
        decisions (:mod:`barrierlb.solvers._compiled`). Default: compiled for
        numpy arrays when numba is installed and either the greedy's work
        (waiting tasks x open workers x (steps + placements)) is at least
        ``COMPILED_MIN_SIZE`` or the kernels are already loaded in this process;
        else array. The result says which ran.

    Returns
    -------
    FastResult
    """
    if engine not in (None,) + ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or None, got {engine!r}")
    problem = _Problem(projected_load, pool_work, free_slots, weights, alive, forced, work_conserving,
                       peak_weight)
    best = None
    if work_conserving and problem.xp is np:
        best = _enumerate(problem)
        # Enumerations report no moves; water-filled counts that used up their moves get
        # compared with the greedy constructions below.
        if best is not None and best.moves < LEVEL_MOVES:
            return best
    pairs_raised_peak = False
    all_placed = work_conserving and 1 < problem.to_place == problem.n_pool
    # Identical tasks, all placed: every construction is the same water-filling. An empty
    # cluster filling up: every placement raises the peak, so the pairs construction rescores
    # everything after each one and never beat the LPT rule (the same objective on the 50
    # cold-start instances of benchmarks/decision.py, in a fifth of the time).
    empty = not bool(problem.loads[:, problem.alive_x].any())
    constructions = ("largest",) if all_placed and (problem.identical or empty) else ("pairs", "slots", "largest")
    # Resolved here, not above: small problems end in the enumerations without importing numba.
    kernels = _kernels_for(engine, problem.xp,
                           problem.n_pool * int((problem.free > 0).sum()) * (problem.n_rows + problem.to_place))
    for construction in constructions:
        if construction == "slots" and not (work_conserving and 1 < problem.to_place == int(problem.free.sum())
                                            and problem.to_place <= 16 and pairs_raised_peak):
            continue
        if construction == "largest" and not (all_placed and (pairs_raised_peak or len(constructions) == 1)):
            continue
        search = _Search(problem)
        search.greedy(construction, kernels)
        greedy_objective = search.objective()
        moves = 0
        # One placement: the greedy's lowest-score pair is already optimal.
        if local_search and len(search.placed_task) > 1:
            budget = 16 if max_moves is None else max_moves
            if kernels is None:
                moves = _local_search(problem.xp, search.loads, problem.work, problem.d, problem.total,
                                      search.placed_task, search.placed_worker, search.unplaced, search.free_left,
                                      problem.forced, problem.alive, problem.peak_cost, search.score,
                                      max_moves=budget, max_candidates=max_candidates)
            else:
                moves = search.local_search_compiled(kernels, budget, max_candidates)
        objective = search.objective() if moves else greedy_objective
        if construction == "pairs":
            pairs_raised_peak = bool((search.peak > search.initial_peak).any())
        if best is None or objective < best.objective - 1e-9 * abs(best.objective):
            best = FastResult(task_index=np.asarray(search.placed_task, dtype=np.int64),
                              worker=np.asarray(search.placed_worker, dtype=np.int64),
                              greedy_objective=greedy_objective, objective=objective, moves=moves,
                              engine="array" if kernels is None else "compiled")
    return best


ENGINES = ("compiled", "array")
_KERNELS = []          # the compiled-kernels module once imported, or None without numba


def compiled_kernels():
    """The numba-compiled kernels (:mod:`barrierlb.solvers._compiled`), or ``None`` without numba.

    Imported on first use: numba takes about half a second to import and compiles
    the kernels (or loads them from its cache) on their first call.
    """
    if not _KERNELS:
        try:
            from barrierlb.solvers import _compiled
        except ImportError:
            _compiled = None
        _KERNELS.append(_compiled)
    return _KERNELS[0]


#: Below this size of the greedy's work, waiting tasks x open workers x (steps + placements)
#: (the scores it computes and the argmin passes of one per placement), the default engine is
#: the array code until the kernels are loaded anyway: they save 0.1 to 0.2 ms a decision there
#: (measured on the simulator's decisions), which a long run recovers from numba's import and
#: kernel loading (about a second) but a short-lived process with only small problems, such as
#: an MPI rank placing a few blocks, does not.
COMPILED_MIN_SIZE = 1 << 12


def _kernels_for(engine, xp, size: int):
    loaded = bool(_KERNELS) and _KERNELS[0] is not None
    if engine == "array" or (engine is None and size < COMPILED_MIN_SIZE and not loaded):
        return None
    kernels = compiled_kernels() if xp is np else None
    if engine == "compiled":
        if xp is not np:
            raise ValueError("engine='compiled' runs on host (numpy) arrays; use engine='array' for CuPy arrays")
        if kernels is None:
            raise ImportError("engine='compiled' needs numba: pip install \"barrierlb[fast]\"")
    return kernels


#: Tiny problems (a pool of at most 16 tasks, at most 4,096 placements, and placements x
#: workers x steps within 65,536 numbers) are solved by enumerating every placement:
#: exact, and faster than the heuristic's fixed costs. Alike tasks enumerate count vectors
#: instead, within the same limits, whatever the pool size (16 alike tasks on 4 workers:
#: 969 vectors, 0.09 ms against the heuristic's 0.25 ms). Larger pools keep the heuristic,
#: whose worst-fit tie-break matters for long-run balance in the LLM simulations.
ENUMERATION_LIMIT = 65_536
ENUMERATION_POOL = 16
ENUMERATION_PLACEMENTS = 4_096


def _enumerate(p: "_Problem") -> FastResult | None:
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
                      greedy_objective=float(score[best]), objective=float(score[best]), moves=0)


def _enumerate_counts(p: "_Problem", k: int, cols: np.ndarray, must: np.ndarray) -> FastResult | None:
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
    return _alike_result(p, k, must, counts[best], float(peak[best]), float(peak[best]), 0)


def _alike_result(p: "_Problem", k: int, must: np.ndarray, counts: np.ndarray, first_peak: float, peak: float,
                  moves: int) -> FastResult:
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
                      objective=p.peak_cost * peak - constant, moves=moves)


#: Most (worker, position) candidates the alike-task water-filling sorts.
LEVEL_CANDIDATES = 1 << 17
#: Single-task moves after the water-filling. Loads that change smoothly over the horizon
#: (a persistence predictor's lines) need none; when the budget runs out, the greedy
#: constructions run too and the better placement is kept.
LEVEL_MOVES = 16
#: Water-filling is for loads whose peak sits on few workers over the horizon; with more
#: workers taking the peak at some step the greedy constructions run instead.
LEVEL_PEAK_WORKERS = 4


def _level_counts(p: "_Problem", k: int, cols: np.ndarray, must: np.ndarray) -> FastResult | None:
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
    return _alike_result(p, k, must, counts, first, current, moves)


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
    cols = np.array(cols, dtype=np.int64)
    subsets = np.array(list(itertools.combinations(range(n_pool), k)), dtype=np.int64).reshape(-1, k)
    if must:
        subsets = subsets[np.isin(subsets, must).sum(axis=1) == len(must)]
    choices = cols[np.stack(np.unravel_index(np.arange(cols.size ** k), (cols.size,) * k), axis=1)]
    per_worker = np.stack([(choices == g).sum(axis=1) for g in cols], axis=1)
    choices = choices[(per_worker <= np.array(free)).all(axis=1)]
    tasks = np.repeat(subsets, len(choices), axis=0)                     # (M, k)
    workers = np.tile(choices, (len(subsets), 1))                        # (M, k)
    # spread[m, g, i] = 1 when placement m puts pool task i on worker g.
    spread = np.zeros((len(tasks), n_workers, n_pool))
    np.add.at(spread, (np.arange(len(tasks))[:, None], workers, tasks), 1.0)
    spread = spread.reshape(len(tasks) * n_workers, n_pool)
    for array in (tasks, workers, spread):
        array.setflags(write=False)
    return tasks, workers, spread


_SCRATCH = threading.local()


def _scratch(xp, size: int):
    """A reused float64 work array of at least ``size`` numbers (per thread, per array module)."""
    cached = getattr(_SCRATCH, "arrays", None)
    if cached is None:
        cached = _SCRATCH.arrays = {}
    array = cached.get(xp.__name__)
    if array is None or array.size < size:
        array = cached[xp.__name__] = xp.empty(max(size, DENSE_CHUNK))
    return array


#: Largest (tasks x workers x steps) block the greedy scores densely.
DENSE_LIMIT = 1 << 20
#: Numbers per dense block on the host (512 KiB of float64).
DENSE_CHUNK = 1 << 16


class _Problem:
    """Inputs of the fast solver, converted once and shared by every construction."""

    def __init__(self, projected_load, pool_work, free_slots, weights, alive, forced, work_conserving,
                 peak_weight=1.0):
        xp = array_namespace(projected_load, pool_work)
        self.xp = xp
        self.loads = xp.asarray(projected_load, dtype=xp.float64)
        self.work = xp.asarray(pool_work, dtype=xp.float64)
        self.d = xp.asarray(weights, dtype=xp.float64)
        self.n_rows, self.n_workers = self.loads.shape
        self.n_pool = self.work.shape[0]
        self.alive = (np.ones(self.n_workers, dtype=bool) if alive is None
                      else np.asarray(to_numpy(alive), dtype=bool))
        self.free = np.array(to_numpy(free_slots), dtype=np.int64, copy=True)
        self.free[~self.alive] = 0
        self.forced = (np.zeros(self.n_pool, dtype=bool) if forced is None
                       else np.asarray(to_numpy(forced), dtype=bool))
        self.work_conserving = work_conserving
        self.n_alive = int(self.alive.sum())
        self.alive_x = xp.asarray(self.alive)
        self.to_place = int(min(self.n_pool, self.free.sum()))
        self.identical = bool(self.n_pool > 1 and (self.work == self.work[:1]).all())
        self.peak_weight = peak_weight
        self.peak_cost = self.n_alive * peak_weight

    # Only the greedy needs these; the enumerations of small problems never do.
    @functools.cached_property
    def total(self):
        """``W_i = sum_h d_h w[i, h]``, shape (N,)."""
        return self.work @ self.d

    @functools.cached_property
    def peak_work(self):
        return self.work.max(axis=1) if self.n_rows else self.xp.zeros(self.n_pool)

    @functools.cached_property
    def max_peak_work(self):
        return self.peak_work.max() if self.n_pool else 0.0

    @functools.cached_property
    def host_arrays(self):
        """``work``, ``d`` and ``total`` as C-ordered float64 host arrays (the compiled kernels' inputs)."""
        return tuple(np.ascontiguousarray(a, dtype=np.float64) for a in (self.work, self.d, self.total))

    @functools.cached_property
    def host_peak_work(self):
        """:attr:`peak_work` on the host (the compiled greedy's fits-everywhere test)."""
        return np.ascontiguousarray(to_numpy(self.peak_work), dtype=np.float64)

    @functools.cached_property
    def tie_break(self) -> float:
        return 1e-6 / max(float(self.d.sum()), 1e-12)


class _Search:
    """One greedy construction: loads, peak and the placement so far."""

    def __init__(self, problem: _Problem):
        xp = problem.xp
        self.p = problem
        self.loads = xp.array(problem.loads, copy=True)
        self.free_left = problem.free.copy()
        self.placed_task: list[int] = []
        self.placed_worker: list[int] = []
        self.unplaced = np.ones(problem.n_pool, dtype=bool)
        self.score = None
        if problem.n_alive:
            self.peak = xp.where(problem.alive_x[None, :], self.loads, -xp.inf).max(axis=1)
        else:
            self.peak = xp.zeros(problem.n_rows)
        self.initial_peak = self.peak

    def objective(self) -> float:
        return imbalance_of_loads(self.loads, self.p.alive_x, self.p.d, peak_weight=self.p.peak_weight)

    def deltas(self, rows, cols):
        """Change of the objective for placing task ``rows[r]`` on worker ``cols[c]``, shape (R, C).

        A task that fits under the worker's smallest margin at every step scores
        exactly ``-W_i``; only the pairs that overflow somewhere need the
        ``(pairs, H+1)`` computation.
        """
        p, xp = self.p, self.p.xp
        margin = self.peak[:, None] - self.loads[:, cols]                 # (H+1, C)
        if p.n_rows == 1:                                                 # H = 0: no step axis
            w = p.work[rows, 0][:, None]
            return (p.peak_cost * p.d[0]) * xp.maximum(w - margin, 0.0) - p.total[rows][:, None] \
                - p.tie_break * (p.d[0] * margin)
        if cols.shape[0] == 1:                                            # one column: dense is cheaper
            return self.column_deltas(int(cols[0]), rows)[:, None]
        overflow = p.peak_work[rows][:, None] > margin.min(axis=0)[None, :]
        if overflow.size * p.n_rows <= DENSE_LIMIT and int(overflow.sum()) * 8 > overflow.size:
            # Many pairs overflow: dense (tasks, workers, steps) passes beat gathering them. On
            # the host they go DENSE_CHUNK numbers at a time: a multi-megabyte temporary per
            # call made glibc return and re-fault the heap's top at every decision (runs
            # measured twice as long, half of it system time).
            n_rows, n_cols = rows.shape[0], cols.shape[0]
            block = n_rows if xp is not np else max(1, DENSE_CHUNK // (n_cols * p.n_rows))
            # Each block is written into one reused C-ordered scratch array: a fresh
            # ``work - margin.T`` took the transposed operand's strides, which kept the
            # product below off BLAS, and cost new pages every pass (2.3x slower measured).
            scratch = _scratch(xp, min(block, n_rows) * n_cols * p.n_rows)
            margin_t = margin.T[None, :, :]
            peak = xp.empty((n_rows, n_cols))
            for lo in range(0, n_rows, block):
                hi = min(lo + block, n_rows)
                excess = scratch[: (hi - lo) * n_cols * p.n_rows].reshape(hi - lo, n_cols, p.n_rows)
                xp.subtract(p.work[rows[lo:hi]][:, None, :], margin_t, out=excess)
                xp.maximum(excess, 0.0, out=excess)
                peak[lo:hi] = excess @ p.d
            return p.peak_cost * peak - p.total[rows][:, None] - p.tie_break * (p.d @ margin)[None, :]
        out = xp.broadcast_to(-p.total[rows][:, None], (rows.shape[0], cols.shape[0])).copy()
        r, c = xp.nonzero(overflow)
        if r.size:
            excess = p.work[rows[r]] - margin.T[c]                         # (pairs, H+1)
            xp.maximum(excess, 0.0, out=excess)
            out[r, c] += p.peak_cost * (excess @ p.d)
        # Among equal scores prefer the worker with the most room: the scarce large tasks
        # go to the deepest holes, which nothing else in the pool can fill.
        out -= p.tie_break * (p.d @ margin)[None, :]
        return out

    def column_deltas(self, g: int, rows=None):
        """:meth:`deltas` of the tasks ``rows`` (default all) for worker ``g`` alone, shape (R,)."""
        p, xp = self.p, self.p.xp
        work, total = (p.work, p.total) if rows is None else (p.work[rows], p.total[rows])
        margin = self.peak - self.loads[:, g]                             # (H+1,)
        room = p.tie_break * float(p.d @ margin)
        # The terms in the order of deltas() (and of the compiled kernels), so that a score
        # is the same number whichever path computed it.
        if p.n_rows == 1:
            return ((p.peak_cost * p.d[0]) * xp.maximum(work[:, 0] - margin[0], 0.0) - total) - room
        if float(p.max_peak_work) <= float(margin.min()):                # every task fits
            return -total - room
        excess = work - margin
        xp.maximum(excess, 0.0, out=excess)
        return (p.peak_cost * (excess @ p.d) - total) - room

    def _largest_first(self) -> None:
        """Every waiting task is placed, so only the peak matters: pack the largest first,
        each where it raises the objective least (LPT for the makespan). Only the next
        task's scores are needed, so no score matrix is kept."""
        p, xp = self.p, self.p.xp
        order = np.argsort(-to_numpy(p.total), kind="stable")
        open_cols = np.flatnonzero(self.free_left > 0)
        for i in order[self.unplaced[order]][: p.to_place - len(self.placed_task)].tolist():
            # deltas() of task i on the open workers less its constant -W_i, inlined: one task
            # at a time through deltas() measured 10% slower (on 32 alike tasks, before those
            # went to the count paths; this loop still runs once per task at a cold start).
            margin = self.peak[:, None] - self.loads[:, open_cols]            # (H+1, C)
            excess = xp.maximum(p.work[i][:, None] - margin, 0.0)
            row = p.peak_cost * (p.d @ excess) - p.tie_break * (p.d @ margin)
            g = int(open_cols[int(xp.argmin(row))])
            self.place(i, g)
            if self.free_left[g] == 0:
                open_cols = open_cols[open_cols != g]
        self.score = None

    def _greedy_compiled(self, construction: str, kernels, n_cols: int) -> None:
        p = self.p
        work, d, total = p.host_arrays
        self.loads = np.ascontiguousarray(self.loads)
        self.peak = self.peak.copy()                     # updated in place; initial_peak stays
        tasks = np.empty(p.to_place, dtype=np.int64)
        workers = np.empty(p.to_place, dtype=np.int64)
        if construction == "largest":
            n = kernels.largest_first(self.loads, self.peak, work, d, total, self.free_left, self.unplaced,
                                      p.to_place, float(p.peak_cost), float(p.tie_break), tasks, workers, 0)
            self.score = None
        else:
            must = np.zeros(p.n_pool, dtype=bool)
            must[np.flatnonzero(p.forced)[: p.to_place]] = True
            self.score = np.empty((p.n_pool, n_cols))
            n = kernels.greedy(self.loads, self.peak, work, p.host_peak_work, d, total, self.free_left,
                               self.unplaced, must, p.to_place, p.work_conserving, construction == "slots",
                               float(p.peak_cost), float(p.tie_break), tasks, workers, 0, self.score)
        self.placed_task = tasks[:n].tolist()
        self.placed_worker = workers[:n].tolist()

    def local_search_compiled(self, kernels, max_moves: int, max_candidates: int, max_pairs: int = 1024) -> int:
        """:func:`_local_search` on this construction, compiled; returns the moves applied."""
        p = self.p
        work, d, total = p.host_arrays
        self.loads = np.ascontiguousarray(self.loads)
        tasks = np.array(self.placed_task, dtype=np.int64)
        workers = np.array(self.placed_worker, dtype=np.int64)
        has_score = self.score is not None
        score = self.score if has_score else np.empty((0, 0))
        moves = kernels.local_search(self.loads, work, d, total, tasks, workers, tasks.size, self.unplaced,
                                     self.free_left, p.forced, p.alive, float(p.peak_cost), score, has_score,
                                     max_moves, max_candidates, max_pairs)
        self.placed_task = tasks.tolist()
        self.placed_worker = workers.tolist()
        return moves

    def place(self, i: int, g: int) -> bool:
        """Place task ``i`` on worker ``g``; returns whether the peak rose."""
        xp = self.p.xp
        column = self.loads[:, g]
        column += self.p.work[i]
        raised = bool((column > self.peak).any())
        if raised:
            self.peak = xp.maximum(self.peak, column)
        self.placed_task.append(i)
        self.placed_worker.append(g)
        self.unplaced[i] = False
        self.free_left[g] -= 1
        return raised

    def greedy(self, construction: str, kernels=None) -> None:
        """Run one construction: ``"pairs"``, ``"slots"`` or ``"largest"`` (see :func:`solve_fast`),
        as array code or, given ``kernels`` (:func:`compiled_kernels`), compiled."""
        p, xp = self.p, self.p.xp
        cols = np.flatnonzero(self.free_left > 0)
        if len(self.placed_task) >= p.to_place or not cols.size:
            return
        if kernels is not None:
            self._greedy_compiled(construction, kernels, cols.size)
            return
        if construction == "largest":
            self._largest_first()
            return
        cols_x = xp.asarray(cols)
        # Scores of every (task, open worker) pair, refreshed by column unless the peak
        # rose, which changes every margin.
        score = self.deltas(xp.arange(p.n_pool), cols_x)
        score[xp.asarray(~self.unplaced)] = xp.inf
        self.score = score
        n_cols = cols.size
        # Forced tasks (bounded waiting) compete like the others, but once the slots left
        # are only enough for them, nothing else may take one.
        must = np.zeros(p.n_pool, dtype=bool)
        must[np.flatnonzero(p.forced)[: p.to_place]] = True
        forced_left = int((must & self.unplaced).sum())
        only_forced = False
        all_rows = xp.arange(p.n_pool)
        live = xp.asarray(self.unplaced.copy())            # rows still eligible, on the device
        barred = xp.where(live, 0.0, xp.inf)               # added to fresh scores of ineligible rows
        open_cols = int((self.free_left[cols] > 0).sum())
        while len(self.placed_task) < p.to_place:
            if not only_forced and forced_left >= p.to_place - len(self.placed_task):
                only_forced = True
                live &= xp.asarray(must)
                score[~live] = xp.inf
                barred[~live] = xp.inf
            if construction == "pairs":
                flat = int(xp.argmin(score))
                i, j = divmod(flat, n_cols)
            else:
                open_j = np.flatnonzero(self.free_left[cols] > 0)
                room = to_numpy(p.d @ (self.peak[:, None] - self.loads[:, cols_x[xp.asarray(open_j)]]))
                j = int(open_j[int(np.argmin(room))])
                i = int(xp.argmin(score[:, j]))
            if not p.work_conserving and float(score[i, j]) >= 0.0:
                break
            g = int(cols[j])
            raised = self.place(i, g)
            live[i] = False
            barred[i] = xp.inf
            forced_left -= int(must[i])
            score[i, :] = xp.inf
            if self.free_left[g] == 0:
                score[:, j] = xp.inf
                open_cols -= 1
            if not open_cols or len(self.placed_task) >= p.to_place:
                break
            if raised:
                open_jx = xp.asarray(np.flatnonzero(self.free_left[cols] > 0))
                score[:, open_jx] = xp.where(live[:, None], self.deltas(all_rows, cols_x[open_jx]), xp.inf)
            elif self.free_left[g] > 0:
                score[:, j] = self.column_deltas(g) + barred


def _top(priority: np.ndarray, limit: int) -> np.ndarray:
    """Indices, ascending, of the ``limit`` largest priorities (all when fewer).

    Ties at the cut go to the lower index, so that the selection is a function of
    the priorities alone (the compiled kernels make the same one)."""
    n = priority.size
    if n <= limit:
        return np.arange(n)
    threshold = np.partition(priority, n - limit)[n - limit]          # the limit-th largest
    above = np.flatnonzero(priority > threshold)
    at = np.flatnonzero(priority == threshold)[: limit - above.size]
    return np.sort(np.concatenate([above, at]))


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


def _local_search(xp, loads, work, d, total, placed_task, placed_worker, unplaced, free_left, forced_host,
                  alive_host, peak_cost, score, *, max_moves, max_candidates, max_pairs=1024):
    """Best-improvement local search; updates the lists and ``loads`` in place, returns moves.

    Each round scores every candidate move exactly (as the change of the
    objective) over lists of (first, second) pairs and applies the best one:

    - exchange: placed tasks ``a`` and ``b`` on different workers swap;
    - relocate: placed task ``a`` moves to a worker with a free slot;
    - replace: a waiting task takes placed task ``a``'s slot (``a`` waits again).

    At most ``max_pairs`` pairs of each kind are scored per round (the most
    promising first), which bounds a round's cost on large problems.

    Exchanges and relocations keep the total work, so they can only help by lowering
    the peak, which needs ``a`` on a worker holding the peak at some step (and, for an
    exchange, ``b`` lighter than ``a``). Off the peak workers a replacement can only
    raise the peak, so only a heavier waiting task can help there.
    """
    moves = 0
    tol = 1e-9
    total_host = to_numpy(total)
    while moves < max_moves:
        task = np.asarray(placed_task, dtype=np.int64)
        worker = np.asarray(placed_worker, dtype=np.int64)
        values, index = _top3(xp, loads, alive_host)
        peak = values[:, 0]
        holds_peak = np.zeros(alive_host.size, dtype=bool)
        holds_peak[to_numpy(index[:, 0])] = True
        on_peak = holds_peak[worker]
        movers = np.flatnonzero(on_peak)
        room = to_numpy(d @ (peak[:, None] - loads))                 # weighted room per worker
        candidates = []          # (gain array, kind, first, second)

        n_workers = loads.shape[1]
        table = []               # peak_without of every pair of workers, built when many pairs need it

        def gain_of(first_worker, second_worker, new_first, new_second):
            """Objective change when two workers' columns become ``new_first``/``new_second``."""
            first_worker, second_worker = xp.asarray(first_worker), xp.asarray(second_worker)
            if n_workers * n_workers <= len(first_worker) and n_workers * n_workers * loads.shape[0] <= DENSE_LIMIT:
                # Many pairs: tabulate every pair of workers once a round, then look pairs up.
                if not table:
                    workers_x = xp.arange(n_workers)
                    table.append(_peak_without(xp, values, index, workers_x[:, None, None], workers_x[None, :, None]))
                others = table[0][first_worker, second_worker]
            else:
                others = _peak_without(xp, values, index, first_worker[:, None], second_worker[:, None])
            new_peak = xp.maximum(others, new_first)
            if new_second is not None:
                new_peak = xp.maximum(new_peak, new_second)
            return peak_cost * ((new_peak - peak) @ d)

        if movers.size:
            # Exchange.
            a_idx, b_idx = np.nonzero((worker[movers][:, None] != worker[None, :])
                                      & (total_host[task][None, :] < total_host[task[movers]][:, None]))
            if a_idx.size:
                a_idx = movers[a_idx]
                # Partners on the workers with the most room first.
                keep = _top(room[worker[b_idx]], max_pairs)
                a_idx, b_idx = a_idx[keep], b_idx[keep]
                ta, tb = xp.asarray(task[a_idx]), xp.asarray(task[b_idx])
                ga, gb = worker[a_idx], worker[b_idx]
                swap = work[tb] - work[ta]
                gain = gain_of(ga, gb, loads[:, xp.asarray(ga)].T + swap, loads[:, xp.asarray(gb)].T - swap)
                candidates.append((gain, "exchange", a_idx, b_idx))
            # Relocation.
            open_cols = np.flatnonzero(free_left > 0)
            if open_cols.size:
                a_idx, j_idx = np.nonzero(worker[movers][:, None] != open_cols[None, :])
                if a_idx.size:
                    keep = _top(room[open_cols[j_idx]], max_pairs)
                    a_idx, j_idx = movers[a_idx[keep]], j_idx[keep]
                    target = open_cols[j_idx]
                    ta = xp.asarray(task[a_idx])
                    ga = worker[a_idx]
                    gain = gain_of(ga, target, loads[:, xp.asarray(ga)].T - work[ta],
                                   loads[:, xp.asarray(target)].T + work[ta])
                    candidates.append((gain, "relocate", a_idx, target))

        # Replacement.
        waiting = np.flatnonzero(unplaced)
        replaceable = ~forced_host[task]
        if waiting.size and replaceable.any():
            if waiting.size > max_candidates:
                rank = to_numpy(score[xp.asarray(waiting)].min(axis=1)) if score is not None \
                    else -total_host[waiting]
                waiting = waiting[np.argsort(rank, kind="stable")[:max_candidates]]
            a_idx, u_idx = np.nonzero(replaceable[:, None] & (on_peak[:, None]
                                      | (total_host[waiting][None, :] > total_host[task][:, None])))
            if a_idx.size:
                # Moves that can lower a peak first, then the largest gains in placed work (the
                # lift puts every peak move above every other while keeping their order by gain).
                gain_work = total_host[waiting[u_idx]] - total_host[task[a_idx]]
                lift = float(gain_work.max() - gain_work.min()) + 1.0
                keep = _top(gain_work + np.where(on_peak[a_idx], lift, 0.0), max_pairs)
                a_idx, u_idx = a_idx[keep], u_idx[keep]
                incoming = waiting[u_idx]
                ta, tu = xp.asarray(task[a_idx]), xp.asarray(incoming)
                ga = worker[a_idx]
                gain = gain_of(ga, ga, loads[:, xp.asarray(ga)].T - work[ta] + work[tu], None) \
                    - (total[tu] - total[ta])
                candidates.append((gain, "replace", a_idx, incoming))

        best = (-tol, None)
        for gain, kind, first, second in candidates:
            k = int(xp.argmin(gain))
            value = float(gain[k])
            if value < best[0] * (1 + tol) - tol:
                best = (value, (kind, int(first[k]), int(second[k])))
        if best[1] is None:
            break
        kind, a, b = best[1]
        if kind == "exchange":
            ta, tb, wa, wb = placed_task[a], placed_task[b], placed_worker[a], placed_worker[b]
            loads[:, wa] += work[tb] - work[ta]
            loads[:, wb] += work[ta] - work[tb]
            placed_worker[a], placed_worker[b] = wb, wa
        elif kind == "relocate":
            wa = placed_worker[a]
            loads[:, wa] -= work[placed_task[a]]
            loads[:, b] += work[placed_task[a]]
            free_left[wa] += 1
            free_left[b] -= 1
            placed_worker[a] = b
        else:
            wa = placed_worker[a]
            loads[:, wa] += work[b] - work[placed_task[a]]
            unplaced[placed_task[a]] = True
            unplaced[b] = False
            placed_task[a] = b
        moves += 1
    return moves
