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

from dataclasses import dataclass

import numpy as np

from barrierlb._xp import array_namespace, to_numpy


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
        Predicted imbalance after the greedy and after the local search.
    moves : int
        Local-search moves applied.
    """

    task_index: np.ndarray
    worker: np.ndarray
    greedy_objective: float
    objective: float
    moves: int


def solve_fast(projected_load, pool_work, free_slots, weights, *, alive=None, forced=None,
               work_conserving: bool = True, local_search: bool = True, max_moves: int | None = None,
               max_candidates: int = 32) -> FastResult:
    """Place waiting tasks to minimize the predicted imbalance, fast.

    Two greedy constructions are tried, each polished by local search, and the
    better placement is returned:

    - *pairs*: the (task, worker) pair of lowest marginal score first, which
      fills the deepest holes with the largest tasks that fit;
    - *slots* (only when every free slot will be filled): the open worker with
      the least room first, each taking its best task, so that workers near the
      peak get the small tasks they can absorb.

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
        Cap on local-search moves per construction (default ``4 K + 16``).
    max_candidates : int
        Waiting tasks considered for replacement moves (the best by greedy score).

    Returns
    -------
    FastResult
    """
    problem = _Problem(projected_load, pool_work, free_slots, weights, alive, forced, work_conserving)
    best = None
    for construction in ("pairs", "slots"):
        if construction == "slots" and not (work_conserving and problem.to_place == int(problem.free.sum()) > 1
                                            and best_raised):
            break
        search = _Search(problem)
        search.place_forced()
        search.greedy(construction)
        greedy_objective = search.objective()
        moves = 0
        if local_search and search.placed_task:
            moves = _local_search(problem.xp, search.loads, problem.work, problem.d, problem.total,
                                  search.placed_task, search.placed_worker, search.unplaced, search.free_left,
                                  problem.forced, problem.alive, problem.n_alive, search.score,
                                  max_moves=4 * len(search.placed_task) + 16 if max_moves is None else max_moves,
                                  max_candidates=max_candidates)
        objective = search.objective() if moves else greedy_objective
        best_raised = bool((search.peak > search.initial_peak).any()) if best is None else best_raised
        if best is None or objective < best.objective - 1e-9 * abs(best.objective):
            best = FastResult(task_index=np.asarray(search.placed_task, dtype=np.int64),
                              worker=np.asarray(search.placed_worker, dtype=np.int64),
                              greedy_objective=greedy_objective, objective=objective, moves=moves)
    return best


class _Problem:
    """Inputs of the fast solver, converted once and shared by every construction."""

    def __init__(self, projected_load, pool_work, free_slots, weights, alive, forced, work_conserving):
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
        self.total = self.work @ self.d                                  # W_i, shape (N,)
        self.peak_work = self.work.max(axis=1) if self.n_rows else xp.zeros(self.n_pool)


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
        p = self.p
        if not p.n_alive:
            return 0.0
        alive_loads = self.loads[:, p.alive_x]
        return float(p.d @ (p.n_alive * alive_loads.max(axis=1) - alive_loads.sum(axis=1)))

    def deltas(self, rows, cols):
        """Change of the objective for placing task ``rows[r]`` on worker ``cols[c]``, shape (R, C).

        A task that fits under the worker's smallest margin at every step scores
        exactly ``-W_i``; only the pairs that overflow somewhere need the
        ``(pairs, H+1)`` computation.
        """
        p, xp = self.p, self.p.xp
        margin = self.peak[:, None] - self.loads[:, cols]                 # (H+1, C)
        out = xp.broadcast_to(-p.total[rows][:, None], (rows.shape[0], cols.shape[0])).copy()
        overflow = p.peak_work[rows][:, None] > margin.min(axis=0)[None, :]
        r, c = xp.nonzero(overflow)
        if r.size:
            excess = p.work[rows[r]] - margin.T[c]                         # (pairs, H+1)
            xp.maximum(excess, 0.0, out=excess)
            out[r, c] += p.n_alive * (excess @ p.d)
        return out

    def place(self, i: int, g: int) -> bool:
        """Place task ``i`` on worker ``g``; returns whether the peak rose."""
        xp = self.p.xp
        self.loads[:, g] += self.p.work[i]
        new_peak = xp.maximum(self.peak, self.loads[:, g])
        raised = bool((new_peak > self.peak).any())
        self.peak = new_peak
        self.placed_task.append(i)
        self.placed_worker.append(g)
        self.unplaced[i] = False
        self.free_left[g] -= 1
        return raised

    def place_forced(self) -> None:
        """Forced tasks first, oldest first, each to its best worker."""
        xp = self.p.xp
        for i in np.flatnonzero(self.p.forced)[: self.p.to_place].tolist():
            cols = np.flatnonzero(self.free_left > 0)
            row = to_numpy(self.deltas(xp.asarray([i]), xp.asarray(cols)))[0]
            self.place(i, int(cols[int(np.argmin(row))]))

    def greedy(self, construction: str) -> None:
        p, xp = self.p, self.p.xp
        cols = np.flatnonzero(self.free_left > 0)
        if len(self.placed_task) >= p.to_place or not cols.size:
            return
        cols_x = xp.asarray(cols)
        # Scores of every (task, open worker) pair, refreshed by column unless the peak
        # rose, which changes every margin.
        score = self.deltas(xp.arange(p.n_pool), cols_x)
        score[xp.asarray(~self.unplaced)] = xp.inf
        self.score = score
        n_cols = cols.size
        while len(self.placed_task) < p.to_place:
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
            score[i, :] = xp.inf
            if self.free_left[g] == 0:
                score[:, j] = xp.inf
            open_j = np.flatnonzero(self.free_left[cols] > 0)
            if not open_j.size or len(self.placed_task) >= p.to_place:
                break
            live_rows = xp.asarray(np.flatnonzero(self.unplaced))
            if raised:
                open_jx = xp.asarray(open_j)
                score[live_rows[:, None], open_jx[None, :]] = self.deltas(live_rows, cols_x[open_jx])
            elif self.free_left[g] > 0:
                score[live_rows, j] = self.deltas(live_rows, xp.asarray([g]))[:, 0]


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


def _argtop3(xp, masked):
    part = xp.argpartition(-masked, 2, axis=1)[:, :3]
    values = xp.take_along_axis(masked, part, axis=1)
    order = xp.argsort(-values, axis=1, kind="stable")
    return xp.take_along_axis(part, order, axis=1)


def _local_search(xp, loads, work, d, total, placed_task, placed_worker, unplaced, free_left, forced_host,
                  alive_host, n_alive, score, *, max_moves, max_candidates):
    """Best-improvement local search; updates the lists and ``loads`` in place, returns moves."""
    moves = 0
    tol = 1e-9
    while moves < max_moves:
        task = np.asarray(placed_task, dtype=np.int64)
        worker = np.asarray(placed_worker, dtype=np.int64)
        task_x, worker_x = xp.asarray(task), xp.asarray(worker)
        values, index = _top3(xp, loads, alive_host)
        peak = values[:, 0]
        w_placed = work[task_x]                                     # (K, H+1)
        col = loads[:, worker_x].T                                  # (K, H+1)
        best = (0.0, None)

        # Exchanges and relocations keep the total work, so they can only help by lowering
        # the peak, which needs a worker that holds the peak at some step: the first task
        # of such a move must sit on a peak worker.
        on_peak = np.isin(worker, to_numpy(index[:, 0]))
        movers = np.flatnonzero(on_peak)
        if movers.size:
            mover_x = xp.asarray(movers)
            w_mover, col_mover, worker_mover = w_placed[mover_x], col[mover_x], worker_x[mover_x]
            ga = worker_mover[:, None, None]

            # Exchange: task a (on ga) and task b (on gb) swap workers.
            if len(task) > 1:
                gb = worker_x[None, :, None]
                excl = _excl(xp, values, index, ga, gb)
                new_a = col_mover[:, None, :] - w_mover[:, None, :] + w_placed[None, :, :]
                new_b = col[None, :, :] - w_placed[None, :, :] + w_mover[:, None, :]
                new_peak = xp.maximum(excl, xp.maximum(new_a, new_b))
                gain = n_alive * ((new_peak - peak) @ d)
                gain = xp.where(worker_mover[:, None] == worker_x[None, :], xp.inf, gain)
                flat = int(xp.argmin(gain))
                value = float(gain.ravel()[flat])
                if value < best[0] - tol:
                    a, b = divmod(flat, len(task))
                    best = (value, ("exchange", int(movers[a]), b))

            # Relocation: task a moves to a worker with a free slot.
            open_cols = np.flatnonzero(free_left > 0)
            if open_cols.size:
                open_x = xp.asarray(open_cols)
                excl = _excl(xp, values, index, ga, open_x[None, :, None])
                new_a = col_mover[:, None, :] - w_mover[:, None, :]
                new_b = loads[:, open_x].T[None, :, :] + w_mover[:, None, :]
                new_peak = xp.maximum(excl, xp.maximum(new_a, new_b))
                gain = n_alive * ((new_peak - peak) @ d)
                gain = xp.where(worker_mover[:, None] == open_x[None, :], xp.inf, gain)
                flat = int(xp.argmin(gain))
                value = float(gain.ravel()[flat])
                if value < best[0] - tol:
                    a, j = divmod(flat, open_cols.size)
                    best = (value, ("relocate", int(movers[a]), int(open_cols[j])))

        # Replacement: a waiting task takes a placed (not forced) task's slot. Off the peak
        # workers the peak can only rise, so only a larger waiting task can help there.
        waiting = np.flatnonzero(unplaced)
        replaceable = ~forced_host[task]
        if waiting.size and replaceable.any():
            if waiting.size > max_candidates:
                rank = to_numpy(score[xp.asarray(waiting)].min(axis=1)) if score is not None \
                    else -to_numpy(total[xp.asarray(waiting)])
                waiting = waiting[np.argsort(rank, kind="stable")[:max_candidates]]
            total_host = to_numpy(total)
            useful = replaceable[:, None] & (on_peak[:, None] | (total_host[waiting][None, :] > total_host[task][:, None]))
            a_idx, u_idx = np.nonzero(useful)
            if a_idx.size:
                a_x, u_x = xp.asarray(a_idx), xp.asarray(waiting[u_idx])
                g_a = worker_x[a_x][:, None]
                excl = xp.where(index[:, 0][None, :] == g_a, values[:, 1][None, :], values[:, 0][None, :])
                new_a = col[a_x] - w_placed[a_x] + work[u_x]
                gain = n_alive * ((xp.maximum(excl, new_a) - peak) @ d) - (total[u_x] - total[task_x][a_x])
                k = int(xp.argmin(gain))
                value = float(gain[k])
                if value < best[0] - tol:
                    best = (value, ("replace", int(a_idx[k]), int(waiting[u_idx[k]])))

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


def _excl(xp, values, index, first, second):
    """Max over alive workers except ``first``/``second`` (broadcast shapes (..., 1)) per step.

    Returns an array broadcast to ``first``/``second``'s leading shape by ``H + 1``.
    """
    i1, i2 = index[:, 0], index[:, 1]
    hit1 = (i1 == first) | (i1 == second)
    hit2 = (i2 == first) | (i2 == second)
    return xp.where(hit1, xp.where(hit2, values[:, 2], values[:, 1]),
                    values[:, 0] + xp.zeros(hit1.shape))
