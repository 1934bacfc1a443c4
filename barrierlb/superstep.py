"""The superstep planner: reports in, placements out.

One pure object that every backend (MPI ranks, Dask workers, CUDA streams, the
MoE example) drives the same way, as dask/distributed's worker state machine is
driven by its I/O shell. It does no communication and runs no user code; the
backend feeds it what its workers reported and delivers what it decides.

Each superstep, a backend

1. :meth:`~SuperstepPlanner.submit` s new tasks (with their predicted work, if
   a cost model gives it),
2. :meth:`~SuperstepPlanner.report` s what each worker said: the tasks that
   finished, measured seconds per task, cost-model lookaheads, or the whole
   projected load of a worker that predicts its own tasks (an MPI rank),
3. :meth:`~SuperstepPlanner.lose_worker` s the workers that died (their tasks
   come back to be re-created),
4. calls :meth:`~SuperstepPlanner.plan`, which asks the policy where the
   waiting tasks go, records the placement in the ledger and returns it; the
   backend then builds each placed task on its worker.

The ledger is a :class:`barrierlb.ClusterState`: where each task lives, free
slots, which workers are alive. The planner adds only what a backend's
workers report: predicted work per task (or per worker) and the mean measured
cost that predicts a new task without a cost model. The same inputs give the
same placements, on any machine with the same floating point: replicated MPI
decisions rely on it.

Examples
--------
>>> from barrierlb import make_policy
>>> planner = SuperstepPlanner(2, policy=make_policy("round-robin"), capacity=2)
>>> for task_id in (10, 11, 12):
...     planner.submit(task_id)
>>> decision = planner.plan()
>>> decision.task_ids.tolist(), decision.workers.tolist()
([10, 11, 12], [0, 1, 0])
>>> planner.report(0, finished=[10])
>>> planner.tasks_on(0).tolist(), planner.free_slots.tolist()
([12], [1, 1])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np

from barrierlb._validate import check_array, check_int, check_real
from barrierlb.policies import Decision, Policy, make_policy
from barrierlb.policies.base import in_pool
from barrierlb.predictors import PersistencePredictor
from barrierlb.problem import StepProblem, horizon_weights
from barrierlb.projection import candidate_positions
from barrierlb.state import ClusterState, Placement

__all__ = ["SuperstepPlanner", "as_policy", "run_until_idle"]


def as_policy(policy) -> Policy:
    """A backend's ``policy`` argument: a :class:`Policy`, or a name for :func:`barrierlb.make_policy`."""
    resolved = make_policy(policy) if isinstance(policy, str) else policy
    if not isinstance(resolved, Policy):
        raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
    return resolved


def run_until_idle(balancer, max_steps: int) -> None:
    """A backend's ``run``: ``balancer.step()`` until no task ``waiting`` or ``active``, at most ``max_steps`` times."""
    max_steps = check_int("max_steps", max_steps, minimum=1)
    for _ in range(max_steps):
        if not balancer.waiting and not balancer.active:
            return
        balancer.step()
    if balancer.waiting or balancer.active:
        raise RuntimeError(f"tasks still running after {max_steps} supersteps: {balancer.active} placed, "
                           f"{balancer.waiting} waiting")


class SuperstepPlanner:
    """Ledger and decision of a balanced superstep loop, free of communication.

    Parameters
    ----------
    n_workers : int
        Workers at the start (more can join: :meth:`add_worker`).
    policy : str or Policy
        Decides where waiting tasks go (its ``horizon`` sets the lookahead); a
        name is built with :func:`barrierlb.make_policy`.
    capacity : int, optional
        Most tasks a worker may hold; default unlimited.
    window : int
        Measurements kept per task to predict it from its measured cost.
    """

    def __init__(self, n_workers: int, *, policy: str | Policy, capacity: int | None = None, window: int = 4):
        self.policy = as_policy(policy)
        self.horizon = int(getattr(self.policy, "horizon", 0))
        self.capacity = None if capacity is None else check_int("capacity", capacity, minimum=1)
        self.predictor = PersistencePredictor(window)
        n_workers = check_int("n_workers", n_workers, minimum=1)
        self._slots = self.capacity or 16          # slots per worker in the ledger (grown when unlimited)
        self._ledger = ClusterState(n_workers, self._slots)
        self._finishing: dict[int, None] = {}      # reported finished, leaving the ledger at the next read
        self._row: dict[int, np.ndarray] = {}      # task id -> its latest lookahead, shape (horizon + 1,)
        self._given: set[int] = set()              # waiting tasks whose lookahead was given at submit
        self._modelled: set[int] = set()           # placed tasks whose row comes from a cost model
        self._front: list[int] = []                # waiting tasks to place first (re-created after a loss)
        self._load: dict[int, np.ndarray] = {}     # worker -> projected load it reported this superstep
        self._measured = [0.0, 0]                  # seconds and task-steps measured this superstep

    # ------------------------------------------------------------------ views
    @property
    def ledger(self) -> ClusterState:
        """The :class:`~barrierlb.ClusterState` that records where tasks live (read it, do not change it)."""
        if self._finishing:
            finished, self._finishing = list(self._finishing), {}
            self._ledger.complete(finished)      # one call for every worker's report
            for task_id in finished:
                self._drop(task_id)
        return self._ledger

    @property
    def n_workers(self) -> int:
        return self._ledger.n_workers

    @property
    def alive(self) -> np.ndarray:
        """Which workers are up, shape (G,)."""
        return self._ledger.alive.copy()

    @property
    def free_slots(self) -> np.ndarray:
        """Free slots per worker (zero when dead; the ledger's size when unlimited), shape (G,)."""
        return self.ledger.free_slots

    @property
    def active_count(self) -> np.ndarray:
        """Tasks placed per worker, shape (G,)."""
        return self.ledger.active_count

    @property
    def n_active(self) -> int:
        return self.ledger.n_active

    @property
    def n_waiting(self) -> int:
        return self.ledger.n_waiting

    def waiting_ids(self) -> np.ndarray:
        """Ids of the waiting tasks, in the order the policy sees them."""
        return self._pool_order()[0]

    def worker_of(self, task_id: int) -> int:
        """Worker a placed task lives on (``KeyError`` if it is not placed)."""
        return self.ledger.worker_of(task_id)

    def tasks_on(self, worker: int) -> np.ndarray:
        """Ids of the tasks placed on ``worker``."""
        return self.ledger.tasks_on(worker)

    def lookahead(self, task_id: int) -> np.ndarray:
        """The planner's current prediction of a task's work, shape ``(horizon + 1,)``."""
        if self.predictor.known(task_id) and task_id not in self._modelled:
            return self.predictor.lookahead([task_id], self.horizon)[0]
        return self._row[task_id].copy()

    # ----------------------------------------------------------------- events
    def submit(self, task_id: int, lookahead=None) -> None:
        """Queue a new task; ``lookahead`` (a number or ``horizon + 1`` of them) is its predicted
        work, default the mean measured task cost at the next :meth:`plan`."""
        self.submit_many([task_id], None if lookahead is None else [lookahead])

    def submit_many(self, task_ids, lookaheads=None) -> None:
        """Queue many tasks at once; ``lookaheads`` has shape ``(n, horizon + 1)`` (or ``(n,)``)."""
        ids = check_array("task_ids", np.reshape(task_ids, -1), nonnegative=True, dtype=np.int64)
        if ids.size == 0:
            return
        rows = self.horizon + 1
        if lookaheads is not None:
            try:                    # numbers only: np.asarray(dtype=float64) takes True and "5" as 1.0 and 5.0
                work = check_array("lookaheads", lookaheads)
                given = f"shape {work.shape}"
            except (TypeError, ValueError) as error:
                work, given = np.full(1, -1.0), str(error)      # refused below, with the usual message
            work = np.repeat(work.reshape(-1, 1), rows, axis=1) if work.ndim == 1 else work
            if work.shape != (ids.size, rows) or not np.isfinite(work).all() or (work < 0).any():
                raise ValueError(f"lookaheads must be {ids.size} non-negative finite rows of {rows}, got {given}")
        self.ledger.submit_arrays(ids, 0.0)        # the ledger rejects ids that are waiting or placed
        if lookaheads is not None:
            id_list = ids.tolist()
            self._row.update(zip(id_list, work))
            self._given.update(id_list)

    def report(self, worker: int, *, finished: Iterable[int] = (), costs: Mapping[int, float] | None = None,
               lookahead: Mapping[int, np.ndarray] | None = None, load=None,
               measured: tuple[float, int] | None = None) -> None:
        """What ``worker`` reported after a superstep.

        Parameters
        ----------
        finished : iterable of int
            Its tasks that ended (they leave the ledger).
        costs : mapping task id -> seconds, optional
            Measured cost of each of its tasks this superstep (predicts the
            tasks, and the mean predicts new ones).
        lookahead : mapping task id -> array (horizon + 1,), optional
            A cost model's prediction for its tasks (wins over measurements).
        load : array (horizon + 1,), optional
            Its whole projected load, for a worker that predicts its own tasks
            (an MPI rank); used for this superstep's decision only.
        measured : (seconds, count), optional
            Measured seconds summed over ``count`` task-steps, when the
            per-task costs stay on the worker.

        Every argument is checked before anything is recorded: a ``ValueError``
        or ``TypeError`` naming the problem (a task not on ``worker``, one named
        twice, a cost or lookahead that is negative, not finite or of the wrong
        shape) leaves the planner as it was.
        """
        worker = self._ledger.check_worker(worker)
        rows = self.horizon + 1
        finished = check_array("finished", list(finished), ndim=1, dtype=np.int64).tolist()
        if len(set(finished)) != len(finished):
            raise ValueError(f"finished names a task twice: {sorted(finished)}")
        for task_id in finished:
            if task_id in self._finishing:
                raise ValueError(f"task {task_id} was already reported finished")
        cost_ids = check_array("costs' task ids", list(costs or ()), ndim=1, dtype=np.int64).tolist()
        seconds = check_array("costs", [costs[t] for t in costs] if costs else [], ndim=1, nonnegative=True)
        ahead = {task_id: check_array(f"lookahead of task {task_id}", row, shape=(rows,), nonnegative=True)
                 for task_id, row in (lookahead or {}).items()}
        check_array("lookahead's task ids", list(ahead), ndim=1, dtype=np.int64)
        if load is not None:
            load = check_array("load", load, shape=(rows,), nonnegative=True)
        if measured is not None:
            measured = (check_real("measured seconds", measured[0], minimum=0.0),
                        check_int("measured count", measured[1], minimum=0))
        for what, ids in (("finished", finished), ("costs", cost_ids), ("lookahead", list(ahead))):
            for task_id in ids:
                home = self._ledger.worker_of(task_id) if task_id in self._ledger._location else None
                if home != worker:
                    where = "is not placed" if home is None else f"lives on worker {home}"
                    said = "finished on" if what == "finished" else f"in {what} reported by"
                    raise ValueError(f"task {task_id} {said} worker {worker} but {where}")
        if cost_ids:
            ids = [t for t in cost_ids if t not in self._modelled]
            if ids:
                self.predictor.observe(ids, [costs[t] for t in ids])
            self._measured[0] += float(seconds.sum())
            self._measured[1] += len(cost_ids)
        if measured is not None:
            self._measured[0] += measured[0]
            self._measured[1] += measured[1]
        for task_id, row in ahead.items():
            self._row[task_id] = row
            self._modelled.add(task_id)
        if load is not None:
            self._load[worker] = load
        self._finishing.update(dict.fromkeys(finished))

    def lose_worker(self, worker: int) -> list[int]:
        """A worker died: its tasks come back, to be placed first; returns their ids (to re-create)."""
        worker = self._ledger.check_worker(worker)
        lost = sorted(self.ledger.fail_worker(worker).tolist())
        self._load.pop(worker, None)
        if lost:
            rows = [self.lookahead(t) for t in lost]
            for task_id in lost:
                self._drop(task_id)
            self.submit_many(lost, rows)
            self._front = lost + self._front
        return lost

    def add_worker(self) -> int:
        """A new worker joined; returns its index."""
        self._rebuild(self.n_workers + 1, self._slots)
        return self.n_workers - 1

    def plan(self) -> Decision:
        """Place the waiting tasks: the policy's decision, already recorded in the ledger.

        Each call ends a superstep: every placed task has run one more (its age in
        the ledger, which plain ``bfio``'s online controller reads, as
        :meth:`DecodeRouter.route <barrierlb.router.DecodeRouter.route>` feeds it),
        so a backend calls it once a superstep, also when nothing waits. The
        policy's options hold as :meth:`Policy.decide` would apply them: plain
        ``bfio`` tunes itself on the ledger first (:meth:`BFIO.tune`) and its
        tuned horizon cuts the lookahead rows; a task passed over ``max_wait``
        decisions is forced; a bounded ``candidates`` list keeps the oldest tasks
        and every forced one.

        The returned decision's ``task_ids`` and ``workers`` are the placements to
        deliver (workers are ledger indices); tasks it leaves out stay waiting
        (no free slot). Resets this superstep's measurements and reported loads.
        """
        measured, self._measured = self._measured, [0.0, 0]
        loads, self._load = self._load, {}
        ledger = self.ledger
        ledger.advance()                             # one superstep run by every placed task
        n_waiting = ledger.n_waiting
        if n_waiting == 0:
            return _idle()
        alive = np.flatnonzero(ledger.alive)
        if self.capacity is None:
            needed = int(ledger.active_count.max()) + n_waiting
            if needed > self._slots:
                self._rebuild(self.n_workers, max(2 * self._slots, needed))
                ledger = self._ledger
            free = np.full(alive.size, n_waiting, dtype=np.int64)
        else:
            free = ledger.free_slots[alive]
        if not free.any():
            return _idle()
        policy = self.policy
        started = time.perf_counter()                # the decision's time: tuning, arrays, solver
        policy.tune(ledger)                          # plain bfio: its options for this decision
        ids, order = self._pool_order()
        rows = self.horizon + 1
        fallback = measured[0] / measured[1] if measured[1] else 1.0
        id_list = ids.tolist()
        work = np.full((ids.size, rows), fallback)
        given = [i for i, task_id in enumerate(id_list) if task_id in self._given]
        if given:
            work[given] = [self._row[id_list[i]] for i in given]
        projected = np.zeros((rows, alive.size))
        for column, g in enumerate(alive.tolist()):
            projected[:, column] = loads[g] if g in loads else self._worker_load(g)
        decision = self._decide(projected, work, free, ids, ledger.pool_wait[order], started)
        index = np.asarray(decision.pool_index, dtype=np.int64)
        workers = alive[np.asarray(decision.workers, dtype=np.int64)]
        task_ids = ids[index]
        ledger.place(Placement(task_ids, workers, order[index]))
        placed = task_ids.tolist()
        self._row.update(zip(placed, work[index]))      # a placed task's prediction until it is measured
        self._given.difference_update(placed)
        if self._front:
            placed_set = set(placed)
            self._front = [t for t in self._front if t not in placed_set]
        return Decision(task_ids, workers, index, branch=decision.branch, objective=decision.objective,
                        solve_time_s=decision.solve_time_s, info=decision.info)

    def _decide(self, projected, work, free, ids, wait, started) -> Decision:
        """The policy's decision on these arrays, its ``pool_index`` into ``ids``."""
        policy = self.policy
        rows = min(self.horizon, max(int(policy.horizon), 0)) + 1          # a tuned horizon may be shorter
        max_wait = policy.max_wait
        forced = wait >= max_wait if max_wait is not None else np.zeros(ids.size, dtype=bool)
        positions = candidate_positions(wait, int(free.sum()), getattr(policy, "candidates", None), max_wait)
        if positions is not None:
            work, ids, forced = work[positions], ids[positions], forced[positions]
        problem = StepProblem.from_arrays(projected[:rows], work[:, :rows], free, pool_ids=ids, forced=forced,
                                          weights=horizon_weights(rows - 1, gamma=policy.gamma))
        return in_pool(policy.decide_problem(problem, started=started), positions)

    # --------------------------------------------------------------- helpers
    def _pool_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Waiting ids as the policy sees them (re-created tasks first) and their ledger positions."""
        ids = self.ledger.pool_ids
        order = np.arange(ids.size, dtype=np.int64)
        if self._front:
            first = set(self._front)
            position = {t: i for i, t in enumerate(ids.tolist())}
            head = [position[t] for t in self._front if t in position]
            order = np.array(head + [i for i in range(ids.size) if ids[i] not in first], dtype=np.int64)
        return ids[order], order

    def _worker_load(self, worker: int) -> np.ndarray:
        """Predicted load of a worker from its tasks: cost model, else measurements, else the
        prediction it was placed with."""
        total = np.zeros(self.horizon + 1)
        measured = []
        for task_id in self.ledger.tasks_on(worker).tolist():
            if task_id not in self._modelled and self.predictor.known(task_id):
                measured.append(task_id)
            elif task_id in self._row:
                total += self._row[task_id]
        if measured:
            total += self.predictor.lookahead(measured, self.horizon).sum(axis=0)
        return total

    def _drop(self, task_id: int) -> None:
        self._row.pop(task_id, None)
        self._given.discard(task_id)
        self._modelled.discard(task_id)
        self.predictor.forget(task_id)

    def _rebuild(self, n_workers: int, slots: int) -> None:
        """A larger ledger with the same tasks where they are (ClusterState's size is fixed)."""
        old = self.ledger           # (reading it records the finished tasks first)
        alive = np.ones(n_workers, dtype=bool)
        alive[:old.n_workers] = old.alive
        new = ClusterState(n_workers, slots, alive=alive)
        ages, occupied = old.slot_age(), old.slot_ids() >= 0
        for g in range(old.n_workers):
            ids = old.tasks_on(g)
            if ids.size:
                new.submit_arrays(ids, 0.0)
                new.place(Placement(ids, np.full(ids.size, g, dtype=np.int64)))
                new.set_progress(ids, ages[g][occupied[g]])     # tasks_on is in slot order
        waiting = old.pool_ids
        if waiting.size:
            new.submit_arrays(waiting, 0.0)
            new._pool["wait"][:] = old.pool_wait           # how often each was passed over (max_wait)
        self._ledger, self._slots = new, slots


def _idle() -> Decision:
    empty = np.zeros(0, dtype=np.int64)
    return Decision(empty, empty, empty, branch="idle")
