"""MPI backend: each rank is a worker whose sticky tasks live only in its memory.

Every superstep the ranks run their local tasks, meet at a barrier, and exchange
in one buffer ``Allgather`` their predicted loads together with the pickled specs
of the tasks they created (inline up to ``INLINE_BYTES`` per rank; a larger batch
takes one ``Allgatherv`` more). Then they decide where the new tasks go, and each
rank builds the tasks it received from their specs. A task's state never moves.

The decision is *replicated* by default: every rank runs the same deterministic
policy on the same gathered arrays, so no second message is needed. That needs
bitwise-identical floating point on every rank, so each rank also sends a
checksum of its last placement in the next exchange's gather, and a rank that
decided differently stops every rank there. ``mode="root"`` lets rank 0 decide
and ``Bcast`` the placement instead (one more collective; for nodes of mixed CPU
types; ``benchmarks/mpi_overhead.py`` measures both).

With more ranks on a node than cores (a laptop, a CI machine) a rank spinning in
a blocking collective holds the core that the rank it waits for needs. The
balancer detects this at start and then waits on non-blocking collectives while
yielding the core (``os.sched_yield``); on a machine with a core per rank it
blocks as usual.

Launch with ``mpiexec -n N python -m mpi4py your_code.py``: an uncaught exception
on one rank then aborts the whole job instead of leaving the others blocked in
the next collective. mpi4py is imported only when a balancer is created.

Example
-------
An existing step loop keeps its per-task function and gains balancing by
decorating it::

    @balance(create=Block, comm=MPI.COMM_WORLD, policy="bfio")
    def advance(block, step):
        return block.advance()          # [(new_id, spec), ...] for blocks it spawns

    advance.submit(0, spec)             # initial tasks, from any rank
    for step in range(steps):
        advance(step)                   # run local tasks, barrier, place new tasks
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._validate import check_int
from barrierlb.policies import Policy, make_policy
from barrierlb.predictors import PersistencePredictor, cost_lookahead

#: Bytes of pickled specs each rank can send inside the load exchange itself.
INLINE_BYTES = 2048
_HEADER = 6         # task count, new-task count, measured seconds, measured tasks, payload bytes, last digest


@dataclass(frozen=True)
class SuperstepStats:
    """What one superstep cost on this rank (seconds)."""

    step: int
    compute_s: float        # running the local tasks
    wait_s: float           # blocked at the barrier after computing
    balance_s: float        # exchange, decision and building received tasks
    tasks: int              # tasks on this rank after the step
    created: int            # tasks created on this rank this step
    received: int           # tasks placed on this rank this step
    branch: str             # how the decision was reached ("idle" when nothing was placed)


class MPIBalancer:
    """Places newly created tasks on MPI ranks; see the module docstring.

    Parameters
    ----------
    create : callable
        ``create(spec) -> task``: builds a task's state on the rank it is placed on.
    comm : mpi4py.MPI.Comm
        Communicator whose ranks are the workers (explicit; no default).
    policy : str or Policy
        Placement policy (default ``"bfio"``); a string is built with
        :func:`barrierlb.make_policy`. Its horizon sets the lookahead length.
    capacity : int, optional
        Most tasks a rank may hold (default unlimited).
    cost : callable, optional
        ``cost(obj, horizon) -> float or array of horizon + 1`` predicting the
        per-step work of a live task (``obj`` the task) or of a new one (``obj``
        its spec; evaluated on the ranks that decide). Without it, live tasks are
        predicted from their measured wall time (:class:`PersistencePredictor`)
        and new ones by the mean measured task time.
    mode : str
        ``"replicated"`` (every rank decides) or ``"root"`` (rank 0 decides and
        broadcasts).
    window : int
        Measurements kept per task by the persistence predictor.
    yield_cpu : bool, optional
        Wait for collectives by polling and yielding the core; default: when
        this node runs more ranks than the process may use cores.
    """

    def __init__(self, create: Callable[[Any], Any], *, comm, policy: str | Policy = "bfio",
                 capacity: int | None = None, cost: Callable | None = None, mode: str = "replicated",
                 window: int = 4, yield_cpu: bool | None = None):
        from mpi4py import MPI

        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
        if not callable(create):
            raise TypeError("create must be callable: create(spec) -> task")
        if cost is not None and not callable(cost):
            raise TypeError("cost must be callable: cost(task_or_spec, horizon) -> work")
        if mode not in ("replicated", "root"):
            raise ValueError(f"mode must be 'replicated' or 'root', got {mode!r}")
        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
        self.horizon = int(getattr(self.policy, "horizon", 0))
        self.capacity = None if capacity is None else check_int("capacity", capacity, minimum=1)
        self.create = create
        self.cost = cost
        self.mode = mode
        self.predictor = PersistencePredictor(window)
        self.tasks: dict[int, Any] = {}
        self._pending: list[tuple[int, Any]] = []
        self._known: set[int] = set()
        self._step_costs: dict[int, float] = {}
        self._ended_costs = [0.0, 0]   # this step's measured seconds and count of tasks removed since
        #: ``{task_id: rank}`` of the last exchange's placement (the same on every rank).
        self.last_placement: dict[int, int] = {}
        self.yield_cpu = _oversubscribed(comm, MPI) if yield_cpu is None else bool(yield_cpu)
        self._send = self._table = None
        self._last_digest = 0.0        # checksum of this rank's last replicated placement
        self._check_same_config()

    def _check_same_config(self) -> None:
        mine = (type(self.policy).__name__, repr(self.policy), self.capacity, self.mode, self.cost is None)
        everyone = self.comm.allgather(mine)
        if any(other != everyone[0] for other in everyone):
            bad = next(r for r, other in enumerate(everyone) if other != everyone[0])
            raise ValueError(f"barrierlb: rank {bad} was configured differently from rank 0: "
                             f"{everyone[bad]!r} vs {everyone[0]!r}")

    def _wait(self, request) -> None:
        if self.yield_cpu:
            while not request.Test():
                os.sched_yield()
        else:
            request.Wait()

    def barrier(self) -> None:
        """``Barrier`` on the balancer's communicator (yielding the core when oversubscribed)."""
        if self.yield_cpu:
            self._wait(self.comm.Ibarrier())
        else:
            self.comm.Barrier()

    # ---------------------------------------------------------------- tasks
    def submit(self, task_id: int, spec: Any) -> None:
        """Queue a new task created on this rank; it is placed at the next exchange."""
        task_id = check_int("task_id", task_id, minimum=0)
        if task_id in self._known or any(task_id == t for t, _ in self._pending):
            raise ValueError(f"rank {self.rank}: duplicate task id {task_id}")
        self._pending.append((task_id, spec))

    def record(self, task_id: int, seconds: float) -> None:
        """Record a live task's measured cost for this step (a task on this rank)."""
        if task_id not in self.tasks:
            raise KeyError(f"rank {self.rank}: task {task_id!r} is not on this rank, so it has no cost to record")
        self._step_costs[task_id] = float(seconds)

    def _projected_load(self) -> np.ndarray:
        """Predicted per-step load of this rank's tasks, shape ``(horizon + 1,)``."""
        rows = self.horizon + 1
        if not self.tasks:
            return np.zeros(rows)
        if self.cost is not None:
            return np.sum([cost_lookahead(self.cost, task, self.horizon) for task in self.tasks.values()], axis=0)
        # record() takes only this rank's tasks and remove() forgets them, so the tasks the
        # predictor knows are exactly the tasks here with a measurement.
        return self.predictor.total_lookahead(self.horizon)

    def remove(self, task_id: int) -> None:
        """Drop a finished task from this rank."""
        self.tasks.pop(task_id)
        self.predictor.forget(task_id)
        cost = self._step_costs.pop(task_id, None)
        if cost is not None:              # still counts toward the mean cost of a task this step
            self._ended_costs[0] += cost
            self._ended_costs[1] += 1

    # ------------------------------------------------------------- exchange
    def exchange(self) -> tuple[int, str]:
        """Meet the other ranks, place every pending task; returns (received here, branch).

        Collective: every rank of the communicator must call it.
        """
        rows = self.horizon + 1
        costs = self._step_costs
        if costs:
            self.predictor.observe(list(costs), list(costs.values()))
        measured = sum(costs.values()) + self._ended_costs[0]
        n_measured = len(costs) + self._ended_costs[1]
        self._step_costs = {}
        self._ended_costs = [0.0, 0]
        # One buffer allgather: projected load per step ahead, task count, new-task count,
        # measured time and measured task count (for the mean new-task cost), and the
        # pickled (id, spec) pairs of the new tasks when they fit inline.
        payload = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL) if self._pending else b""
        send, table = self._buffers(rows)
        send[:rows] = self._projected_load()
        send[rows:rows + _HEADER] = (len(self.tasks), len(self._pending), measured, n_measured, len(payload),
                                     self._last_digest)
        inline = len(payload) <= INLINE_BYTES
        if inline and payload:
            send[rows + _HEADER:].view(np.uint8)[:len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        self._wait(self.comm.Iallgather(send, table))
        # The header as Python numbers: one conversion instead of a numpy call per field.
        counts, news, seconds, measured_tasks, sizes, digests = zip(*table[:, rows:rows + _HEADER].tolist())
        if any(digest != digests[0] for digest in digests):
            self._disputed(digests)
        if not any(news):
            self.last_placement = {}
            return 0, "idle"
        sizes = [int(size) for size in sizes]
        if max(sizes) <= INLINE_BYTES:
            blobs = [table[r, rows + _HEADER:].view(np.uint8)[:sizes[r]] for r in range(self.size) if sizes[r]]
        else:
            flat = np.empty(sum(sizes), dtype=np.uint8)
            self._wait(self.comm.Iallgatherv(np.frombuffer(payload, dtype=np.uint8), [flat, sizes]))
            blobs = [blob for blob in np.split(flat, np.cumsum(sizes)[:-1]) if blob.size]
        self._pending = []
        pairs = [pair for blob in blobs for pair in pickle.loads(blob.tobytes())]
        fallback = sum(seconds) / sum(measured_tasks) if sum(measured_tasks) else 1.0
        ids = [task_id for task_id, _ in pairs]
        if len(set(ids)) != len(ids) or not self._known.isdisjoint(ids):
            clash = sorted(set(ids) & self._known) or sorted(t for t, n in Counter(ids).items() if n > 1)
            raise ValueError(f"barrierlb: duplicate task ids submitted: {clash[:5]}")
        self._known.update(ids)
        free = (np.full(self.size, len(pairs)) if self.capacity is None
                else np.maximum(self.capacity - np.array(counts, dtype=np.int64), 0))
        if self.mode == "replicated" or self.rank == 0:
            # Every deciding rank evaluates the cost model itself (configured alike: checked).
            work = (np.array([cost_lookahead(self.cost, spec, self.horizon) for _, spec in pairs])
                    if self.cost is not None else np.full((len(pairs), rows), fallback))
            decision = self.policy.decide_arrays(np.ascontiguousarray(table[:, :rows].T), work, free,
                                                 np.array(ids, dtype=np.int64))
            placement = np.full(len(pairs), -1, dtype=np.int64)
            placement[decision.pool_index] = decision.workers
            branch = decision.branch
        else:
            placement = np.empty(len(pairs), dtype=np.int64)
            branch = "root"
        if self.mode == "root":
            self._wait(self.comm.Ibcast(placement, root=0))
        else:
            self._last_digest = float(zlib.crc32(placement.tobytes(), zlib.crc32(np.array(ids, dtype=np.int64))))
        if (placement < 0).any():
            raise RuntimeError(f"barrierlb: {int((placement < 0).sum())} new tasks found no rank with a free slot "
                               f"(capacity {self.capacity}); raise the capacity")
        ranks = placement.tolist()
        self.last_placement = dict(zip(ids, ranks))
        received = 0
        for (task_id, spec), rank in zip(pairs, ranks):
            if rank == self.rank:
                self.tasks[task_id] = self.create(spec)
                received += 1
        return received, branch

    def _buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The exchange's send buffer (zeroed) and receive table, kept from one exchange to the next."""
        width = rows + _HEADER + (INLINE_BYTES + 7) // 8
        if self._send is None or self._send.size != width:
            self._send = np.zeros(width)
            self._table = np.empty((self.size, width))
        else:
            self._send.fill(0.0)
        return self._send, self._table

    def _disputed(self, digests) -> None:
        """Replicated decisions differed between ranks at the last exchange: stop every rank.

        Ranks decide alike only when their floating point is bitwise alike (the same
        CPU type and libraries everywhere). Each rank sends a checksum of its last
        placement inside the next exchange's gather, so the check costs no message of
        its own; every rank sees the same table and raises the same error.
        """
        odd = [r for r, digest in enumerate(digests) if digest != digests[0]]
        raise RuntimeError(f"barrierlb: ranks {odd} reached a different placement from rank 0's at the last "
                           f"exchange, so its new tasks may have been built twice or not at all (replicated "
                           f"decisions need bitwise-identical floating point on every rank; on mixed nodes use "
                           f"mode='root')")


class BalancedStep:
    """A per-task step function, balanced across MPI ranks (made by :func:`balance`).

    Calling it runs one superstep: ``fn(task, step)`` for every local task in
    task-id order (timed per task), an explicit barrier (timed: the wait), then
    the exchange that places the tasks created this step. ``fn`` returns
    ``None`` or an iterable of ``(task_id, spec)`` for tasks it created; it
    returns :data:`DONE` to end its task.
    """

    def __init__(self, fn: Callable, balancer: MPIBalancer):
        self.fn = fn
        self.balancer = balancer
        self.stats: list[SuperstepStats] = []

    @property
    def tasks(self) -> dict:
        """Tasks on this rank: ``{task_id: task}``."""
        return self.balancer.tasks

    def submit(self, task_id: int, spec: Any) -> None:
        """Create a task from this rank (placed at the next superstep)."""
        self.balancer.submit(task_id, spec)

    def __call__(self, step: int) -> SuperstepStats:
        balancer = self.balancer
        compute = 0.0
        created = 0
        finished = []
        for task_id in sorted(balancer.tasks):
            started = time.perf_counter()
            try:
                result = self.fn(balancer.tasks[task_id], step)
            except Exception as error:
                raise RuntimeError(f"barrierlb: rank {balancer.rank} failed in step {step} on task {task_id}: "
                                   f"{type(error).__name__}: {error}") from error
            elapsed = time.perf_counter() - started
            compute += elapsed
            balancer.record(task_id, elapsed)
            if result is DONE:
                finished.append(task_id)
                continue
            for new_id, spec in result or ():
                balancer.submit(new_id, spec)
                created += 1
        for task_id in finished:
            balancer.remove(task_id)
        started = time.perf_counter()
        balancer.barrier()
        wait = time.perf_counter() - started
        started = time.perf_counter()
        received, branch = balancer.exchange()
        stats = SuperstepStats(step=step, compute_s=compute, wait_s=wait, balance_s=time.perf_counter() - started,
                               tasks=len(balancer.tasks), created=created, received=received, branch=branch)
        self.stats.append(stats)
        return stats


#: Returned by a step function to end its task (the task is dropped from its rank).
DONE = object()


def balance(create: Callable[[Any], Any], *, comm, policy: str | Policy = "bfio", capacity: int | None = None,
            cost: Callable | None = None, mode: str = "replicated", window: int = 4,
            yield_cpu: bool | None = None):
    """Decorator: balance an existing per-task step function across MPI ranks.

    See :class:`MPIBalancer` for the parameters and :class:`BalancedStep` for
    what calling the decorated function does. Collective: every rank must
    decorate with the same configuration (checked).
    """
    def wrap(fn: Callable) -> BalancedStep:
        return BalancedStep(fn, MPIBalancer(create, comm=comm, policy=policy, capacity=capacity, cost=cost,
                                            mode=mode, window=window, yield_cpu=yield_cpu))
    return wrap


def _oversubscribed(comm, MPI) -> bool:
    """Whether this node runs more ranks of ``comm`` than this process may use cores."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.Get_size()
    finally:
        local.Free()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux
        cores = os.cpu_count() or 1
    return ranks_here > cores
