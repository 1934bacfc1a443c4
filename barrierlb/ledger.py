"""The ledger of a barrier-synchronized cluster: workers, their sticky tasks and the waiting pool.

Stickiness lives here. A placed task's worker never changes: the ledger offers
no way to move one. Tasks leave a worker only by completing or by that worker
dying, which hands their ids back to the caller so that they can be re-created
from their specs and submitted again. Only live tasks (waiting or placed) hold
their ids, so memory is bounded by them and a finished task's id may be reused.
Every state-changing call checks its arguments before it changes anything.

State is kept as slot arrays of shape ``(G, S)`` (``S`` the largest capacity)
so that a step of a 32 x 72 cluster ages every task in a few vector operations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from barrierlb._validate import INT64_MAX, broadcast, check_array, check_bool, check_int, check_real
from barrierlb.tasks import Task

_POOL_FIELDS = ("ids", "work", "growth", "steps", "prompt", "wait")
_FEW = 16      # batches up to this size are checked against the pool by direct comparison


@dataclass(frozen=True)
class Placement:
    """Which waiting tasks a policy places where.

    Attributes
    ----------
    task_ids : ndarray of int64, shape (K,)
    workers : ndarray of int64, shape (K,)
    pool_index : ndarray of int64, shape (K,), optional
        Positions of the tasks in the pool the decision was made on; lets
        :meth:`ClusterState.place` skip the id lookup.
    """

    task_ids: np.ndarray
    workers: np.ndarray
    pool_index: np.ndarray | None = None


class Ledger:
    """Workers with slot capacities, their sticky tasks and the waiting pool: the generic ledger.

    Where every task lives, the free slots and which workers are alive, with no
    model of the future: :class:`barrierlb.state.ClusterState` adds the lookahead
    projection that policies decide on.

    Parameters
    ----------
    n_workers : int
        Number of workers ``G``.
    capacity : int or array-like of int, shape (G,)
        Slots per worker ``B``.
    alive : array-like of bool, shape (G,), optional
        Which workers are up. Default all.

    Examples
    --------
    >>> state = Ledger(2, 1)
    >>> state.submit([Task.constant(7, 3.0), Task.constant(8, 1.0)])
    >>> state.place(Placement(np.array([7, 8]), np.array([1, 0])))
    >>> state.worker_of(7)
    1
    """

    def __init__(self, n_workers: int, capacity, *, alive=None):
        n_workers = check_int("n_workers", n_workers, minimum=1)
        if np.ndim(capacity) == 0:
            capacity = np.full(n_workers, check_int("capacity", capacity, minimum=0), dtype=np.int64)
        capacity = check_array("capacity", capacity, shape=(n_workers,), nonnegative=True, dtype=np.int64)
        self.n_workers = n_workers
        self.capacity = capacity
        self.capacity.setflags(write=False)
        self.alive = (np.ones(n_workers, dtype=bool) if alive is None
                      else check_array("alive", alive, shape=(n_workers,), dtype=bool).copy())
        width = max(int(capacity.max()), 1)
        shape = (n_workers, width)
        self._slot_id = np.full(shape, -1, dtype=np.int64)
        self._slot_work = np.zeros(shape)
        self._slot_growth = np.zeros(shape)
        self._slot_remaining = np.zeros(shape)
        self._slot_prompt = np.zeros(shape)
        self._slot_age = np.zeros(shape, dtype=np.int64)
        self._active_count = np.zeros(n_workers, dtype=np.int64)
        self._location: dict[int, tuple[int, int]] = {}
        self._profiles: dict[int, np.ndarray] = {}
        self._pool = {name: np.zeros(0, dtype=np.int64 if name in ("ids", "wait") else np.float64)
                      for name in _POOL_FIELDS}
        self.version = 0
        # (version, slot draws (S, G, B), pool draws (S, N)) of a sampling predictor
        self._draws: tuple | None = None
        self._placed = np.zeros(3)     # tasks ever placed, their initial work and growth, summed

    # ------------------------------------------------------------------ views
    @property
    def n_active(self) -> int:
        return int(self._active_count.sum())

    @property
    def n_waiting(self) -> int:
        return int(self._pool["ids"].size)

    @property
    def active_count(self) -> np.ndarray:
        """Running tasks per worker, shape (G,)."""
        return self._active_count.copy()

    @property
    def free_slots(self) -> np.ndarray:
        """Free slots per worker (zero for dead workers), shape (G,)."""
        return np.where(self.alive, self.capacity - self._active_count, 0)

    @property
    def pool_ids(self) -> np.ndarray:
        """Ids of the waiting tasks in arrival order."""
        return self._pool["ids"].copy()

    @property
    def pool_wait(self) -> np.ndarray:
        """How many decisions each waiting task has been passed over."""
        return self._pool["wait"].copy()

    def slot_ids(self) -> np.ndarray:
        """Task id per slot, -1 where empty, shape (G, S)."""
        return self._slot_id.copy()

    def slot_age(self) -> np.ndarray:
        """Steps each slot's task has run, shape (G, S)."""
        return self._slot_age.copy()

    def current_load(self) -> np.ndarray:
        """Work of the running tasks in the current step, per worker, shape (G,)."""
        return np.where(self._slot_id >= 0, self._slot_work, 0.0).sum(axis=1)

    def worker_of(self, task_id: int) -> int:
        """Worker a placed task lives on; ``KeyError`` if it is not placed."""
        try:
            return self._location[int(task_id)][0]
        except KeyError:
            raise KeyError(f"task {task_id} is not placed on any worker") from None

    def tasks_on(self, worker: int) -> np.ndarray:
        """Ids of the tasks placed on ``worker``."""
        worker = self.check_worker(worker)
        ids = self._slot_id[worker]
        return ids[ids >= 0].copy()

    # ------------------------------------------------------------- mutation
    def submit(self, tasks: Task | Iterable[Task]) -> None:
        """Append tasks to the waiting pool, in order."""
        tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"tasks must be Task objects, got {type(task).__name__}")
        if not tasks:
            return
        self.submit_arrays(np.array([t.task_id for t in tasks], dtype=np.int64),
                           np.array([t.work for t in tasks]), growth=np.array([t.growth for t in tasks]),
                           steps=np.array([t.steps for t in tasks]), prompt=np.array([t.prompt for t in tasks]))
        for task in tasks:
            if task.profile is not None:
                self._profiles[task.task_id] = task.profile

    def submit_arrays(self, task_ids, work, *, growth=0.0, steps=math.inf, prompt=None) -> None:
        """Append many affine tasks at once (columnar form of :meth:`submit`).

        Parameters
        ----------
        task_ids : array-like of int, shape (n,)
        work, growth, steps, prompt : array-like of float, shape (n,) or scalar
            As in :class:`Task`; ``prompt`` defaults to ``work``.
        """
        task_ids = check_array("task_ids", task_ids, ndim=1, nonnegative=True, dtype=np.int64)
        n = task_ids.size
        work = _column("work", work, n, nonnegative=True)
        growth = _column("growth", growth, n)
        steps = _column("steps", steps, n, nonnegative=True, allow_inf=True)
        prompt = work if prompt is None else _column("prompt", prompt, n, nonnegative=True)
        fresh = task_ids.tolist()
        if len(set(fresh)) != n:
            raise ValueError(f"task_ids contains duplicates: {sorted(_duplicates(fresh))[:5]}")
        # Only live tasks (waiting or placed) hold their ids: a completed task's id may be
        # used again, and the state's memory is bounded by the live tasks.
        clash = [tid for tid in fresh if tid in self._location]
        pool_ids = self._pool["ids"]
        if pool_ids.size:
            # A few ids against the pool: one comparison table beats np.isin's sort.
            waiting = ((pool_ids[:, None] == task_ids).any(axis=0) if n <= _FEW
                       else np.isin(task_ids, pool_ids))
            clash += task_ids[waiting].tolist()
        if clash:
            raise ValueError("duplicate task ids, already submitted and still waiting or running: "
                             f"{sorted(set(clash))[:5]}")
        new = {"ids": task_ids, "work": work, "growth": growth, "steps": steps, "prompt": prompt,
               "wait": np.zeros(n, dtype=np.int64)}
        for name in _POOL_FIELDS:
            self._pool[name] = np.concatenate([self._pool[name], new[name]])
        self.version += 1

    def submit_one(self, task_id: int, work: float, *, growth: float = 0.0, steps: float = math.inf,
                   prompt: float | None = None) -> None:
        """:meth:`submit_arrays` of one affine task, with the same checks, in scalars."""
        values = {"work": work, "growth": growth, "steps": steps, "prompt": work if prompt is None else prompt}
        plain = type(task_id) is int and 0 <= task_id <= INT64_MAX
        if not (plain and type(work) is float and type(growth) is float and type(steps) is float
                and (prompt is None or type(prompt) is float) and 0.0 <= work < math.inf
                and -math.inf < growth < math.inf and 0.0 <= steps and 0.0 <= values["prompt"] < math.inf):
            # not plain floats in range (a router's own are): each value converted, or the problem named
            for name, value in values.items():
                number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
                if not plain or number != number or (number == math.inf and name != "steps") \
                        or number == -math.inf or (number < 0 and name != "growth"):
                    # anything else takes the general path, which converts it or names the problem
                    self.submit_arrays(np.atleast_1d(task_id), work, growth=growth, steps=steps, prompt=prompt)
                    return
                values[name] = number
        pool = self._pool
        if task_id in self._location or (pool["ids"].size and bool((pool["ids"] == task_id).any())):
            raise ValueError(f"duplicate task ids, already submitted and still waiting or running: [{task_id}]")
        if pool["ids"].size == 0:         # an empty pool (a proxy's usual one): new arrays, no concatenation
            pool["ids"] = np.array((task_id,), dtype=np.int64)
            for name in ("work", "growth", "steps", "prompt"):
                pool[name] = np.array((values[name],))
            pool["wait"] = np.zeros(1, dtype=np.int64)
        else:
            pool["ids"] = np.append(pool["ids"], task_id)
            for name in ("work", "growth", "steps", "prompt"):
                pool[name] = np.append(pool[name], values[name])
            pool["wait"] = np.append(pool["wait"], 0)
        self.version += 1

    def place(self, placement: Placement) -> None:
        """Move waiting tasks onto workers; they stay there until they complete.

        Raises ``ValueError`` for a task that is not waiting, a task placed
        twice, a dead or unknown worker, or a worker over its capacity; the state
        is unchanged when it raises.
        """
        task_ids, workers = placement.task_ids, placement.workers
        if not (type(task_ids) is np.ndarray and task_ids.dtype == np.int64 and task_ids.ndim == 1
                and type(workers) is np.ndarray and workers.dtype == np.int64 and workers.shape == task_ids.shape):
            # (a policy's own decision is already in this form: nothing to convert or check)
            task_ids = check_array("task_ids", task_ids, ndim=1, dtype=np.int64)
            workers = check_array("workers", workers, shape=(task_ids.size,), dtype=np.int64)
        if task_ids.size == 0:
            # A decision that places nothing while slots are free passes every waiting task
            # over, so that bounded waiting holds for policies that may leave slots empty.
            if self._pool["ids"].size and self.free_slots.any():
                self._pool["wait"] += 1
                self.version += 1
            return
        id_list = task_ids.tolist()
        if len(set(id_list)) != task_ids.size:
            raise ValueError(f"a task is placed twice: {sorted(_duplicates(id_list))[:5]}")
        pool_ids = self._pool["ids"]
        index = placement.pool_index
        if index is None or len(index) != task_ids.size or not _index_matches(pool_ids, index, id_list):
            position = {tid: i for i, tid in enumerate(pool_ids.tolist())}
            missing = [tid for tid in id_list if tid not in position]
            if missing:
                placed = [tid for tid in missing if tid in self._location]
                if placed:
                    raise ValueError(f"task {placed[0]} is already placed on worker "
                                     f"{self._location[placed[0]][0]}; placed tasks never move")
                raise ValueError(f"task {missing[0]} is not in the waiting pool")
            index = np.array([position[tid] for tid in id_list], dtype=np.int64)
        index = np.asarray(index, dtype=np.int64)
        if task_ids.size == 1:
            self._place_one(int(index[0]), int(workers[0]))
            return
        if workers.min() < 0 or workers.max() >= self.n_workers:
            bad = workers[(workers < 0) | (workers >= self.n_workers)][0]
            raise ValueError(f"worker {bad} does not exist (n_workers={self.n_workers})")
        if not self.alive[workers].all():
            raise ValueError(f"worker {workers[~self.alive[workers]][0]} is dead and cannot take tasks")
        demand = np.bincount(workers, minlength=self.n_workers)
        free = self.free_slots
        over = demand > free
        if over.any():
            g = int(np.flatnonzero(over)[0])
            raise ValueError(f"worker {g} has {int(free[g])} free slots, "
                             f"placement puts {int(demand[g])} tasks there")
        # Each task takes its worker's lowest empty slots, in the placement's order.
        order = np.argsort(workers, kind="stable")
        rows = workers[order]
        slots = np.concatenate([np.flatnonzero(self._slot_id[g] == -1)[: demand[g]]
                                for g in np.flatnonzero(demand).tolist()])
        pos = index[order]
        self._fill_slots(rows, slots, pos)
        self._location.update(zip(self._pool["ids"][pos].tolist(), zip(rows.tolist(), slots.tolist())))
        self._active_count += demand
        self._placed += (task_ids.size, float(self._pool["work"][index].sum()),
                         float(self._pool["growth"][index].sum()))
        keep = np.ones(pool_ids.size, dtype=bool)
        keep[index] = False
        self._leave_pool(keep)

    def _place_one(self, position: int, worker: int) -> None:
        """:meth:`place` of one task (pool position checked): the same checks and slot, in scalars."""
        if not 0 <= worker < self.n_workers:
            raise ValueError(f"worker {worker} does not exist (n_workers={self.n_workers})")
        if not self.alive[worker]:
            raise ValueError(f"worker {worker} is dead and cannot take tasks")
        free = int(self.capacity[worker] - self._active_count[worker])
        if free < 1:
            raise ValueError(f"worker {worker} has {free} free slots, placement puts 1 tasks there")
        slot = int((self._slot_id[worker] == -1).argmax())            # its lowest empty slot
        self._fill_slots(worker, slot, position)
        self._location[int(self._pool["ids"][position])] = (worker, slot)
        self._active_count[worker] += 1
        placed = self._placed
        placed[0] += 1
        placed[1] += self._pool["work"][position]
        placed[2] += self._pool["growth"][position]
        if self._pool["ids"].size == 1:    # the pool empties: slices, no mask
            for name in _POOL_FIELDS:
                self._pool[name] = self._pool[name][:0]
            self.version += 1
            return
        keep = np.ones(self._pool["ids"].size, dtype=bool)
        keep[position] = False
        self._leave_pool(keep)

    def _fill_slots(self, rows, slots, pos) -> None:
        """Copy the pool's entries ``pos`` into the slots ``(rows, slots)`` (arrays or scalars alike)."""
        pool = self._pool
        self._slot_id[rows, slots] = pool["ids"][pos]
        self._slot_work[rows, slots] = pool["work"][pos]
        self._slot_growth[rows, slots] = pool["growth"][pos]
        self._slot_remaining[rows, slots] = pool["steps"][pos]
        self._slot_prompt[rows, slots] = pool["prompt"][pos]
        self._slot_age[rows, slots] = 0

    def _leave_pool(self, keep: np.ndarray) -> None:
        """Keep only the pool entries where ``keep``; the rest were placed, the others passed over once."""
        for name in _POOL_FIELDS:
            self._pool[name] = self._pool[name][keep]
        self._pool["wait"] += 1
        self.version += 1

    def advance(self, steps: int = 1) -> None:
        """Age every running task by ``steps`` steps (work += growth each step)."""
        steps = check_int("steps", steps, minimum=0)
        occupied = self._slot_id >= 0
        # Masked ufuncs, not gathers and scatters: a third of the time per simulated step.
        np.add(self._slot_age, steps, out=self._slot_age, where=occupied)
        np.add(self._slot_work, steps * self._slot_growth, out=self._slot_work, where=occupied)
        np.maximum(self._slot_work, 0.0, out=self._slot_work)
        np.subtract(self._slot_remaining, steps, out=self._slot_remaining, where=occupied)
        for tid, profile in self._profiles.items():
            where = self._location.get(tid)
            if where is not None:
                age = self._slot_age[where]
                self._slot_work[where] = profile[age] if age < profile.size else 0.0
        self.version += 1

    def complete(self, task_ids) -> None:
        """Remove finished tasks from their workers; their ids may be submitted again.

        Raises ``ValueError`` (and changes nothing) when a task is not running or
        is named twice.
        """
        if type(task_ids) is list and len(task_ids) == 1 and type(task_ids[0]) is int:
            found = self._location.get(task_ids[0])       # one running task, as a router reports it: scalars
            if found is not None:
                self._remove(*found)
                return
        self._remove(*self._running_slots(task_ids))

    def _running_slots(self, task_ids) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, slots)`` of running tasks, each named once; ``ValueError`` otherwise."""
        if type(task_ids) is list and len(task_ids) == 1 and type(task_ids[0]) is int:
            found = self._location.get(task_ids[0])       # one running task, as a router reports it
            if found is not None:
                return np.array(found[:1], dtype=np.int64), np.array(found[1:], dtype=np.int64)
        id_list = check_array("task_ids", np.atleast_1d(task_ids), ndim=1, dtype=np.int64).tolist()
        missing = [tid for tid in id_list if tid not in self._location]
        if missing:
            raise ValueError(f"task {missing[0]} is not running on any worker")
        if len(set(id_list)) != len(id_list):
            raise ValueError(f"task_ids names a task twice: {sorted(_duplicates(id_list))[:5]}")
        # The location dict, not a scan of every slot: a batch of one costs a few microseconds.
        where = [self._location[tid] for tid in id_list]
        return (np.fromiter((g for g, _ in where), dtype=np.int64, count=len(where)),
                np.fromiter((s for _, s in where), dtype=np.int64, count=len(where)))

    def complete_slots(self, mask) -> np.ndarray:
        """Remove the tasks in the slots where ``mask`` (shape (G, S)) is true; returns their ids."""
        mask = check_array("mask", mask, shape=self._slot_id.shape, dtype=bool) & (self._slot_id >= 0)
        return self._remove(*np.nonzero(mask))

    def _remove(self, rows, slots) -> np.ndarray:
        """Empty the occupied slots ``(rows[k], slots[k])`` (arrays, or one slot as two ints);
        returns their task ids."""
        ids = self._slot_id[rows, slots]
        one = isinstance(rows, int)
        for tid in ((int(ids),) if one else ids.tolist()):
            del self._location[tid]
            if self._profiles:
                self._profiles.pop(tid, None)
        self._slot_id[rows, slots] = -1
        self._slot_work[rows, slots] = 0.0
        if one:
            self._active_count[rows] -= 1
        else:
            self._active_count -= np.bincount(rows, minlength=self.n_workers)
        self.version += 1
        return ids

    def fail_worker(self, worker: int) -> np.ndarray:
        """Mark ``worker`` dead and drop its tasks; returns their ids so they can be re-created."""
        worker = self.check_worker(worker)
        slots = np.flatnonzero(self._slot_id[worker] >= 0)
        ids = self._remove(np.full(slots.size, worker, dtype=np.int64), slots)
        self.alive[worker] = False
        self.version += 1
        return ids

    def set_alive(self, worker: int, alive: bool = True) -> None:
        """Bring a worker (back) up, or mark an empty worker down."""
        worker = self.check_worker(worker)
        alive = check_bool("alive", alive)
        if not alive and self._active_count[worker]:
            raise ValueError(f"worker {worker} still holds tasks; use fail_worker to drop them")
        self.alive[worker] = alive
        self.version += 1

    # ------------------------------------------- per-task reports (asynchronous engines)
    def set_progress(self, task_ids, steps) -> None:
        """Set running tasks' steps run so far, each on its own clock.

        :meth:`advance` ages every task together, as a lockstep simulation does; a
        serving proxy learns each request's generated tokens separately. A task's
        work becomes ``prompt + growth * steps`` and its predicted remaining steps
        shrink by the steps it gained. Raises ``ValueError`` (and changes nothing)
        for a task that is not running, one named twice or a negative count.
        """
        if self._set_progress_few(task_ids, steps):
            return
        rows, cols = self._running_slots(task_ids)
        steps = check_array("steps", np.atleast_1d(steps), shape=rows.shape, dtype=np.int64, nonnegative=True)
        self._slot_remaining[rows, cols] -= steps - self._slot_age[rows, cols]
        self._slot_age[rows, cols] = steps
        self._slot_work[rows, cols] = np.maximum(self._slot_prompt[rows, cols]
                                                 + self._slot_growth[rows, cols] * steps, 0.0)
        self.version += 1

    def _set_progress_few(self, task_ids, steps) -> bool:
        """:meth:`set_progress` of a few running tasks given as lists of plain ints, in scalars (a proxy
        reports a handful per decision); False, with nothing changed, for anything else."""
        if not (type(task_ids) is list and type(steps) is list and len(task_ids) == len(steps) <= 32):
            return False
        found = [self._location.get(t) if type(t) is int else None for t in task_ids]
        where = [slot for slot in found if slot is not None]
        if len(where) != len(found) or len(set(task_ids)) != len(task_ids) \
                or not all(type(n) is int and 0 <= n <= INT64_MAX for n in steps):
            return False                     # the general path names the problem
        remaining, age, work, prompt, growth = (self._slot_remaining, self._slot_age, self._slot_work,
                                                self._slot_prompt, self._slot_growth)
        for (g, s), n in zip(where, steps):
            remaining[g, s] -= n - age[g, s]
            age[g, s] = n
            value = prompt[g, s] + growth[g, s] * n
            work[g, s] = value if value > 0.0 else 0.0
        self.version += 1
        return True

    def set_prompt(self, task_id: int, prompt: float) -> None:
        """Correct a waiting or running task's prompt (its work moves with it), e.g. once tokenized."""
        task_id = check_int("task_id", task_id)
        prompt = check_real("prompt", prompt, minimum=0.0)
        where = self._location.get(task_id)
        if where is not None:
            self._slot_work[where] += prompt - self._slot_prompt[where]
            self._slot_prompt[where] = prompt
        else:
            index = np.flatnonzero(self._pool["ids"] == task_id)
            if not index.size:
                raise ValueError(f"task {task_id} is neither waiting nor running")
            self._pool["work"][index] = self._pool["work"][index] + (prompt - self._pool["prompt"][index])
            self._pool["prompt"][index] = prompt
        self.version += 1

    def withdraw(self, task_id: int) -> None:
        """Remove a waiting task from the pool (a cancelled request); its id may be submitted again."""
        task_id = check_int("task_id", task_id)
        keep = self._pool["ids"] != task_id
        if keep.all():
            raise ValueError(f"task {task_id} is not waiting")
        for name, values in self._pool.items():
            self._pool[name] = values[keep]
        self._profiles.pop(task_id, None)
        self.version += 1

    def mean_placed(self) -> tuple[float, float] | None:
        """Mean initial work and growth of the tasks placed so far (``None`` before any)."""
        count, work, growth = self._placed.tolist()
        return (work / count, growth / count) if count else None

    def apply_moves(self, plan) -> None:
        """Move placed tasks as a priced :class:`~barrierlb.migration.MovePlan` decided (the only way one moves).

        Each task keeps its work, age and predictions. Raises ``ValueError``,
        with the state unchanged, for a task not on the plan's source, or a
        destination that is dead or has no free slot when its move comes.
        """
        from barrierlb.migration import MovePlan

        if not isinstance(plan, MovePlan):
            raise TypeError(f"plan must be a MovePlan from barrierlb.migration.plan_moves, got {type(plan).__name__}")
        where, free = dict(self._location), self.free_slots
        for tid, source, destination in zip(plan.task_ids.tolist(), plan.source.tolist(), plan.destination.tolist()):
            if where.get(tid, (None,))[0] != source:
                raise ValueError(f"task {tid} is not placed on worker {source}, the plan's source")
            if not (0 <= destination < self.n_workers and self.alive[destination] and free[destination] > 0):
                raise ValueError(f"worker {destination} cannot take task {tid}: missing, dead or full")
            where[tid], free[source], free[destination] = (destination, -1), free[source] + 1, free[destination] - 1
        fields = (self._slot_id, self._slot_work, self._slot_growth, self._slot_remaining, self._slot_prompt,
                  self._slot_age)
        for tid, destination in zip(plan.task_ids.tolist(), plan.destination.tolist()):
            g, s = self._location[tid]
            slot = int(np.flatnonzero(self._slot_id[destination] == -1)[0])
            for array in fields:
                array[destination, slot] = array[g, s]
            self._slot_id[g, s], self._slot_work[g, s] = -1, 0.0
            self._location[tid] = (destination, slot)
            self._active_count[g] -= 1
            self._active_count[destination] += 1
        self.version += 1

    def check_worker(self, worker) -> int:
        """``worker`` as an int if it is one of this ledger's workers, else an error naming it."""
        worker = check_int("worker", worker, minimum=0)
        if worker >= self.n_workers:
            raise ValueError(f"worker {worker} does not exist (n_workers={self.n_workers})")
        return worker


def _column(name: str, value, n: int, **checks) -> np.ndarray:
    """``value`` (a scalar, or ``n`` of them) checked as :func:`check_array` does and as ``n`` floats;
    a scalar is checked once, not once per task."""
    if n and (isinstance(value, float) or (type(value) is int and abs(value) < 2 ** 1023)):
        number = float(value)
        if number == number and (checks.get("allow_inf") or abs(number) != math.inf) \
                and not (checks.get("nonnegative") and number < 0):
            return np.full(n, number)        # else the general path names the problem
    return check_array(name, broadcast(name, value, n), **checks)


def _duplicates(values: list) -> list:
    return [value for value, count in Counter(values).items() if count > 1]


def _index_matches(pool_ids: np.ndarray, index, id_list: list) -> bool:
    positions = np.asarray(index, dtype=np.int64).tolist()
    return all(0 <= p < pool_ids.size for p in positions) and pool_ids[positions].tolist() == id_list
