"""Migration with a price: move a placed task only when the time it saves exceeds what the move costs.

Tasks are sticky by default (:class:`~barrierlb.state.ClusterState` offers no
way to move one except :meth:`~barrierlb.state.ClusterState.apply_moves`, which
takes the :class:`MovePlan` this module returns). Where state *can* move at a
cost (expert weights, a KV cache), :func:`plan_moves` decides, move by move,
whether a move pays for itself over the horizon:

    saving_s = seconds_per_unit * sum_h d_h * (Imbalance_before[h] - Imbalance_after[h])
    cost_s   = bytes / bandwidth[source, destination]  (+ stall_s, paid once per plan)

with ``Imbalance[h] = G * max_g L[h, g] - sum_g L[h, g]`` the predicted imbalance
(the BF-IO objective, docs/solvers.md). With the step-time model ``c + t_unit * max_g L_g`` and a
move that conserves the total load, one unit of imbalance costs
``seconds_per_unit = t_unit / G`` seconds, so ``saving_s`` is the barrier time the
move saves over the horizon. A move is taken only when ``saving_s > cost_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from barrierlb._validate import check_array, check_int, check_real


@dataclass(frozen=True)
class MovePlan:
    """Moves of placed tasks, in the order they were decided.

    Attributes
    ----------
    task_ids : ndarray of int64, shape (K,)
        The moved tasks (the caller's ids, or positions in its arrays).
    task_index : ndarray of int64, shape (K,)
        Positions of the moved tasks in the arrays the plan was made from.
    source, destination : ndarray of int64, shape (K,)
        Worker each task leaves and worker it goes to.
    saving_s : ndarray of float64, shape (K,)
        Predicted barrier time each move saves over the horizon, given the moves before it.
    cost_s : ndarray of float64, shape (K,)
        Each move's price: its bytes over the link's bandwidth, plus the plan's stall on the first one.
    bytes : ndarray of float64, shape (K,)
        Bytes each move ships.
    """

    task_ids: np.ndarray
    task_index: np.ndarray
    source: np.ndarray
    destination: np.ndarray
    saving_s: np.ndarray
    cost_s: np.ndarray
    bytes: np.ndarray

    @property
    def moves(self) -> int:
        """Number of moves."""
        return int(self.task_index.size)

    @property
    def bytes_moved(self) -> float:
        """Bytes all moves ship together."""
        return float(self.bytes.sum())


def imbalance_time_s(load, seconds_per_unit: float, *, weights=None) -> float:
    """Predicted barrier time lost to imbalance: ``seconds_per_unit * sum_h d_h (G max_g L - sum_g L)``.

    Parameters
    ----------
    load : array-like, shape (R, G)
        Predicted load per horizon row and worker.
    seconds_per_unit : float
        Seconds one unit of imbalance costs (``t_unit / G`` for the step time ``c + t_unit * max L``).
    weights : array-like, shape (R,), optional
        Horizon weights ``d_h`` (default 1 each: every row is one step).

    Examples
    --------
    >>> imbalance_time_s([[3.0, 1.0]], 0.5)     # G * max - sum = 2 * 3 - 4 = 2 units
    1.0
    """
    load = check_array("load", load, ndim=2)
    seconds_per_unit = check_real("seconds_per_unit", seconds_per_unit, minimum=0.0)
    weights = _weights(weights, load.shape[0])
    per_row = load.shape[1] * load.max(axis=1, initial=0.0) - load.sum(axis=1)
    return float(seconds_per_unit * (weights * per_row).sum())


def plan_moves(task_worker, task_load, task_bytes, free_slots, *, seconds_per_unit: float,
               bandwidth_bytes_per_s, stall_s: float = 0.0, base_load=None, weights=None,
               max_moves: int | None = None, max_bytes: float | None = None, movable=None,
               task_ids=None, exchanges: bool = True, max_sources: int = 2) -> MovePlan:
    """Decide which placed tasks to move: greedily, the change whose saving most exceeds its cost.

    Each round scores every single move (a task to a worker with a free slot)
    and, with ``exchanges``, every exchange of two tasks between their workers
    (two moves, needing no free slot), by its predicted saving over the horizon
    minus its cost; it takes the best one if that is positive and updates the
    loads. It stops when nothing pays, or at the budget (``max_moves``,
    ``max_bytes``). Only changes that take load off a worker at the peak of
    some horizon row can save anything, so only those are scored: off the
    ``max_sources`` workers at the peak in the rows of most weight (with one
    row, the one peak worker). Every move
    in the plan saved more than it cost when it was taken, given the moves
    before it (an exchange's saving is split over its two moves: each its own
    cost plus half the surplus). The inputs are not modified.

    Parameters
    ----------
    task_worker : array-like of int, shape (N,)
        Worker each task is placed on now.
    task_load : array-like, shape (N, R)
        Each task's predicted load in each horizon row.
    task_bytes : array-like, shape (N,), (N, G) or scalar
        Bytes moving each task ships, or moving task ``i`` to worker ``g`` ships
        (zero where the destination already holds the task's state).
    free_slots : array-like of int, shape (G,)
        Free slots per worker now (zero for a worker that must not receive).
    seconds_per_unit : float
        Seconds one unit of predicted imbalance costs (see the module docstring).
    bandwidth_bytes_per_s : float or array-like, shape (G, G)
        Link bandwidth, one for all pairs or per (source, destination).
    stall_s : float
        Synchronous pause a plan that moves anything costs, charged to its first move.
    base_load : array-like, shape (R, G), optional
        Load of what does not move (default none).
    weights : array-like, shape (R,), optional
        Horizon weights ``d_h`` (default 1 each).
    max_moves : int, optional
        Budget: at most this many moves (an exchange is two).
    max_bytes : float, optional
        Budget: at most this many bytes in all.
    movable : array-like of bool, shape (N,), optional
        Which tasks may move (default all).
    task_ids : array-like of int, shape (N,), optional
        Ids to report in the plan (default positions).
    exchanges : bool
        Also consider exchanging two tasks (default on).
    max_sources : int
        Workers tried as the source of a change per round (default 2).

    Returns
    -------
    MovePlan

    Examples
    --------
    >>> plan = plan_moves([0, 0], [[2.0], [2.0]], 10.0, [1, 1], seconds_per_unit=1.0,
    ...                   bandwidth_bytes_per_s=5.0)
    >>> plan.moves, plan.destination.tolist(), plan.saving_s.tolist(), plan.cost_s.tolist()
    (1, [1], [4.0], [2.0])
    """
    task_load = check_array("task_load", task_load, ndim=2, nonnegative=True)
    n_tasks, rows = task_load.shape
    free = check_array("free_slots", free_slots, ndim=1, nonnegative=True, dtype=np.int64).copy()
    n_workers = free.size
    if n_workers < 1:
        raise ValueError("free_slots must have one entry per worker, got none")
    worker = check_array("task_worker", task_worker, shape=(n_tasks,), nonnegative=True, dtype=np.int64).copy()
    if n_tasks and worker.max() >= n_workers:
        raise ValueError(f"task_worker names worker {worker.max()}, but there are {n_workers} workers")
    size = check_array("task_bytes", task_bytes, nonnegative=True)
    if size.ndim < 2:
        size = np.broadcast_to(size, (n_tasks,))[:, None]
    size = check_array("task_bytes", np.broadcast_to(size, (n_tasks, n_workers)), shape=(n_tasks, n_workers))
    bandwidth = np.broadcast_to(check_array("bandwidth_bytes_per_s", bandwidth_bytes_per_s), (n_workers, n_workers))
    if (bandwidth <= 0).any():
        raise ValueError(f"bandwidth_bytes_per_s must be positive, got {bandwidth.min()}")
    seconds_per_unit = check_real("seconds_per_unit", seconds_per_unit, minimum=0.0)
    stall_s = check_real("stall_s", stall_s, minimum=0.0)
    weights = _weights(weights, rows)
    load = np.zeros((rows, n_workers)) if base_load is None else \
        check_array("base_load", base_load, shape=(rows, n_workers), nonnegative=True).copy()
    np.add.at(load.T, worker, task_load)
    movable = np.ones(n_tasks, dtype=bool) if movable is None else \
        check_array("movable", movable, shape=(n_tasks,), dtype=bool)
    ids = np.arange(n_tasks, dtype=np.int64) if task_ids is None else \
        check_array("task_ids", task_ids, shape=(n_tasks,), dtype=np.int64)
    budget_moves = n_tasks if max_moves is None else check_int("max_moves", max_moves, minimum=0)
    budget_bytes = np.inf if max_bytes is None else check_real("max_bytes", max_bytes, minimum=0.0)
    max_sources = check_int("max_sources", max_sources, minimum=1)
    if not isinstance(exchanges, bool):
        raise TypeError(f"exchanges must be true or false, got {exchanges!r}")
    cost = size / bandwidth[worker]                        # (N, G): task i from its worker to g
    taken = []
    scorer = _Scorer(task_load, weights, seconds_per_unit * n_workers, max_sources)
    while len(taken) < budget_moves:
        stall = stall_s if not taken else 0.0
        best = scorer.best(load, worker, size, cost, stall, free, movable, budget_bytes,
                           exchanges and budget_moves - len(taken) >= 2)
        if best is None:
            break
        saving, changes = best
        total_cost = sum(cost[i, g] for i, g in changes) + stall
        for n, (i, destination) in enumerate(changes):
            source = int(worker[i])
            move_cost = cost[i, destination] + (stall if n == 0 else 0.0)
            surplus = (saving - total_cost) / len(changes)             # each move: its cost plus an equal share
            taken.append((i, source, destination, move_cost + surplus, move_cost, float(size[i, destination])))
            load[:, source] -= task_load[i]
            load[:, destination] += task_load[i]
            free[source] += 1
            free[destination] -= 1
            budget_bytes -= size[i, destination]
        moved = [i for i, _ in changes]
        worker[moved] = [destination for _, destination in changes]
        cost[moved] = size[moved] / bandwidth[worker[moved]]     # moving on again leaves from the new worker
    columns = list(zip(*taken)) if taken else [()] * 6
    index = np.array(columns[0], dtype=np.int64)
    return MovePlan(task_ids=ids[index], task_index=index, source=np.array(columns[1], dtype=np.int64),
                    destination=np.array(columns[2], dtype=np.int64), saving_s=np.array(columns[3], dtype=float),
                    cost_s=np.array(columns[4], dtype=float), bytes=np.array(columns[5], dtype=float))


class _Scorer:
    """Scores candidate moves and exchanges against the current loads (one round of :func:`plan_moves`)."""

    def __init__(self, task_load, weights, unit, max_sources):
        self.max_sources = max_sources
        self.task_load = task_load
        self.weights = weights
        self.unit = unit                                   # seconds per unit of peak load, per row weight

    def best(self, load, worker, size, cost, stall, free, movable, budget_bytes, exchanges):
        """(saving, [(task, destination), ...]) of the change with the largest positive net saving, or None.

        Ties go to single moves, then to the lowest task position, then the lowest destination.
        """
        rows, n_workers = load.shape
        peak = load.max(axis=1)
        self.order = np.argsort(-load, axis=1, kind="stable")[:, :3]
        self.top = np.take_along_axis(load, self.order, axis=1)
        if n_workers < 3:
            self.order = np.pad(self.order, ((0, 0), (0, 3 - n_workers)), constant_values=-1)
            self.top = np.pad(self.top, ((0, 0), (0, 3 - n_workers)))
        best, best_net = None, 0.0
        others = np.flatnonzero(movable)
        # Only load taken off a peak can save anything: try the workers at the peak of the most weight.
        at_peak = np.bincount(np.argmax(load, axis=1), weights=self.weights, minlength=n_workers)
        sources = np.argsort(-at_peak, kind="stable")[:self.max_sources]
        for source in sources[at_peak[sources] > 0].tolist():
            tasks = np.flatnonzero(movable & (worker == source))
            if tasks.size == 0:
                continue
            w = self.task_load[tasks]                                               # (n, R)
            destinations = np.arange(n_workers)
            # Single moves: task k to worker g.
            new_peak = self._peak(load[:, source][None, None, :] - w[:, None, :],
                                  load.T[None, :, :] + w[:, None, :], source, destinations[None, :])
            saving = self.unit * ((peak - new_peak) * self.weights).sum(axis=2)      # (n, G)
            net = saving - cost[tasks] - stall
            net[(size[tasks] > budget_bytes) | (free <= 0)[None, :]] = -np.inf
            net[:, source] = -np.inf
            k, g = np.unravel_index(int(np.argmax(net)), net.shape)
            if net[k, g] > best_net:
                best, best_net = (float(saving[k, g]), [(int(tasks[k]), int(g))]), float(net[k, g])
            if not exchanges:
                continue
            # Exchanges: task k (on source) with task j (on another worker b).
            partners = others[worker[others] != source]
            if partners.size == 0:
                continue
            b = worker[partners]
            delta = w[:, None, :] - self.task_load[partners][None, :, :]             # (n, m, R) load source sheds
            new_peak = self._peak(load[:, source][None, None, :] - delta, load.T[b][None, :, :] + delta,
                                  source, b[None, :])
            saving = self.unit * ((peak - new_peak) * self.weights).sum(axis=2)      # (n, m)
            pair_cost = cost[tasks][:, b] + cost[partners, source][None, :] + stall
            pair_bytes = size[tasks][:, b] + size[partners, source][None, :]
            net = np.where(pair_bytes <= budget_bytes, saving - pair_cost, -np.inf)
            k, j = np.unravel_index(int(np.argmax(net)), net.shape)
            if net[k, j] > best_net:
                best = (float(saving[k, j]), [(int(tasks[k]), int(b[j])), (int(partners[j]), source)])
                best_net = float(net[k, j])
        return best

    def _peak(self, source_load, destination_load, source, destination):
        """New peak per row when ``source`` and ``destination`` take these loads, shape (..., R).

        ``source_load`` and ``destination_load`` broadcast to (n, m, R); ``destination`` to (1, m).
        """
        excluded = (self.order[None, None] == source) | (self.order[None, None] == destination[..., None, None])
        first = np.argmax(~excluded, axis=-1)                                       # (1, m, R)
        rest = np.take_along_axis(np.broadcast_to(self.top, excluded.shape), first[..., None], axis=-1)[..., 0]
        rest = np.where(excluded.all(axis=-1), 0.0, rest)
        return np.maximum(np.maximum(source_load, destination_load), rest)


def _weights(weights, rows: int) -> np.ndarray:
    if weights is None:
        return np.ones(rows)
    return check_array("weights", weights, shape=(rows,), nonnegative=True)


__all__ = ["MovePlan", "imbalance_time_s", "plan_moves"]
