"""MPI backend: each rank is a worker whose sticky tasks live only in its memory.

Every superstep the ranks run their local tasks, meet at a barrier, and exchange
in one buffer ``Allgather`` their predicted loads, the ids of their tasks that
ended, and the ids, predicted costs and pickled specs of the tasks they created
(inline up to ``INLINE_BYTES`` per rank; a larger batch takes one
``Allgatherv`` more). Then the ranks that decide feed every rank's report to a
:class:`barrierlb.superstep.SuperstepPlanner` (the ledger of where every task
lives, and the policy), and each rank unpickles and builds only the tasks placed
on it. A task's state never moves; a new task's cost is evaluated once, on the
rank that created it, and sent as numbers.

The decision is *replicated* by default: every rank runs the same planner on the
same gathered arrays, so it needs bitwise-identical floating point on every rank
and a policy that does not decide against the clock (a ``deadline_ms`` or a
MILP's ``time_limit_s`` is refused there).
Before building anything the ranks compare checksums of their placements (one
small ``Allgather``); a rank that decided differently stops every rank there,
before any task is built twice or not at all. ``mode="root"`` lets rank 0 decide
and ``Bcast`` the placement instead (for nodes of mixed CPU types;
``benchmarks/mpi_overhead.py`` measures both). At construction every rank checks
that the others were configured alike: policy and options, capacity, mode,
window, timeout and which ``create`` and ``cost`` functions (by name and code).

No collective waits for ever: each one is non-blocking and polled against a
deadline (``timeout_s``). A rank that left the loop early, or is stuck in a step
or in another collective, makes the others write
``barrierlb: rank R waited ... s in ...`` to stderr and ``Abort`` the job.

With more ranks on a node than cores (a laptop, a CI machine) a rank spinning in
a collective holds the core that the rank it waits for needs. The balancer
detects this at start and then yields the core between polls
(``os.sched_yield``).

Launch with ``mpiexec -n N python -m mpi4py your_code.py``: an uncaught exception
on one rank (every user-code error names its rank and task) then aborts the whole
job at once instead of after ``timeout_s``. mpi4py is imported only when a
balancer is created. Specs are pickles: see docs/mpi.md for the trust model.

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

import hashlib
import os
import pickle
import sys
import time
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._validate import check_bool, check_callable, check_int, check_real
from barrierlb.policies import Policy
from barrierlb.predictors import PersistencePredictor, cost_lookahead
from barrierlb.superstep import SuperstepPlanner, as_policy

#: Bytes of ids, costs and pickled specs each rank can send inside the load exchange itself.
INLINE_BYTES = 2048
_HEADER = 6         # task count, new-task count, ended-task count, measured seconds, measured tasks, extra words
_INLINE_WORDS = (INLINE_BYTES + 7) // 8


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
        per-step work of a live task (``obj`` the task, on its rank) or of a new
        one (``obj`` its spec, on the rank that submits it). Without it, live
        tasks are predicted from their measured wall time
        (:class:`PersistencePredictor`) and new ones by the mean measured task
        time. Measured times differ from run to run, so only a cost model makes
        placements reproducible across runs; every rank always agrees.
    mode : str
        ``"replicated"`` (every rank decides) or ``"root"`` (rank 0 decides and
        broadcasts).
    window : int
        Measurements kept per task by the persistence predictor.
    yield_cpu : bool, optional
        Yield the core between polls of a collective; default: when this node
        runs more ranks than the process may use cores.
    timeout_s : float
        Longest wait in any collective before the job is aborted (default 600 s;
        make it longer than the slowest rank's longest step).
    """

    def __init__(self, create: Callable[[Any], Any], *, comm, policy: str | Policy = "bfio",
                 capacity: int | None = None, cost: Callable | None = None, mode: str = "replicated",
                 window: int = 4, yield_cpu: bool | None = None, timeout_s: float = 600.0):
        from mpi4py import MPI

        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
        check_callable("create", create, "create(spec) -> task")
        check_callable("cost", cost, "cost(task_or_spec, horizon) -> work", optional=True)
        if mode not in ("replicated", "root"):
            raise ValueError(f"mode must be 'replicated' or 'root', got {mode!r}")
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.policy = as_policy(policy)
        clocked = [f"{name}={getattr(self.policy, name)!r}" for name in ("deadline_ms", "time_limit_s")
                   if getattr(self.policy, name, None) is not None]
        if mode == "replicated" and clocked:
            raise ValueError(f"policy {self.policy.name!r} decides against the clock ({', '.join(clocked)}): "
                             f"replicated ranks would reach different placements whenever it cuts a decision "
                             f"short; use mode='root' (rank 0 decides) or a policy without a time limit")
        self.horizon = int(getattr(self.policy, "horizon", 0))
        self.capacity = None if capacity is None else check_int("capacity", capacity, minimum=1)
        self.timeout_s = check_real("timeout_s", timeout_s, minimum=0.0)
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.window = check_int("window", window, minimum=1)
        self.create = create
        self.cost = cost
        self.mode = mode
        self.predictor = PersistencePredictor(window)   # this rank's own tasks, from their measured times
        #: The ledger and decision (on every rank in replicated mode, on rank 0 in root mode).
        self.planner = (SuperstepPlanner(self.size, policy=self.policy, capacity=self.capacity, window=window)
                        if mode == "replicated" or self.rank == 0 else None)
        self.tasks: dict[int, Any] = {}
        self._pending: dict[int, tuple[bytes, np.ndarray | None]] = {}   # id -> (pickled spec, cost lookahead)
        self._ended: list[int] = []
        self._step_costs: dict[int, float] = {}
        self._ended_costs = [0.0, 0]   # this step's measured seconds and count of tasks removed since
        #: ``{task_id: rank}`` of the last exchange's placement (the same on every rank).
        self.last_placement: dict[int, int] = {}
        self.exchanges = 0
        self.yield_cpu = _oversubscribed(comm, MPI) if yield_cpu is None else check_bool("yield_cpu", yield_cpu)
        self._send = self._table = None
        self._check_same_config()

    # ------------------------------------------------------------ start-up
    def config(self) -> dict:
        """What must agree on every rank (compared at construction)."""
        return {"policy": type(self.policy).__qualname__, "options": repr(self.policy), "capacity": self.capacity,
                "mode": self.mode, "window": self.window, "timeout_s": self.timeout_s,
                "create": _identity(self.create), "cost": _identity(self.cost)}

    def _check_same_config(self) -> None:
        mine = self.config()
        digest = np.frombuffer(hashlib.sha256(repr(mine).encode()).digest(), dtype=np.uint8)
        everyone = np.empty((self.size, digest.size), dtype=np.uint8)
        self._wait(self.comm.Iallgather(digest, everyone), "the start-up check of the configuration")
        if (everyone == everyone[0]).all():
            return
        configs = self.comm.allgather(mine)      # every rank is here: it sent its digest
        bad = next(r for r, other in enumerate(configs) if other != configs[0])
        fields = [f"{name}: {configs[bad][name]!r} vs {configs[0][name]!r}" for name in configs[0]
                  if configs[bad][name] != configs[0][name]]
        raise ValueError(f"barrierlb: rank {bad} was configured differently from rank 0 ({'; '.join(fields)})")

    # ------------------------------------------------------------- waiting
    def _wait(self, request, what: str) -> None:
        """Complete a non-blocking collective, or abort the job after ``timeout_s``."""
        if request.Test():
            return
        deadline = time.monotonic() + self.timeout_s
        spin = self.yield_cpu
        while not request.Test():
            if spin:
                os.sched_yield()
            if time.monotonic() > deadline:
                self._abort(what)

    def _abort(self, what: str) -> None:
        sys.stderr.write(f"barrierlb: rank {self.rank} waited {self.timeout_s:g} s in {what} at exchange "
                         f"{self.exchanges} without hearing from every rank: a rank left the loop early, or is "
                         f"stuck in a step or in another collective; aborting the job (timeout_s sets the "
                         f"wait)\n")
        sys.stderr.flush()
        time.sleep(0.5)                 # let mpiexec forward the message before Abort tears the job down
        self.comm.Abort(3)

    def barrier(self) -> None:
        """``Barrier`` on the balancer's communicator, with the deadline of every collective."""
        self._wait(self.comm.Ibarrier(), "the barrier")

    # ---------------------------------------------------------------- tasks
    def submit(self, task_id: int, spec: Any) -> None:
        """Queue a new task created on this rank; it is placed at the next exchange.

        The spec is pickled here (``TypeError`` naming the task if it cannot
        be) and, with a cost model, its cost evaluated here.
        """
        task_id = check_int("task_id", task_id, minimum=0)
        if task_id in self._pending or task_id in self.tasks:
            raise ValueError(f"rank {self.rank}: duplicate task id {task_id}")
        try:
            blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise TypeError(f"barrierlb: rank {self.rank}: the spec of task {task_id} cannot be pickled: "
                            f"{type(error).__name__}: {error}") from error
        ahead = None if self.cost is None else self._cost_of(spec, f"the spec of new task {task_id}")
        self._pending[task_id] = (blob, ahead)

    def record(self, task_id: int, seconds: float) -> None:
        """Record a live task's measured cost for this step (a task on this rank); ``seconds`` must be a
        finite non-negative number (``ValueError`` otherwise)."""
        if task_id not in self.tasks:
            raise KeyError(f"rank {self.rank}: task {task_id!r} is not on this rank, so it has no cost to record")
        self._step_costs[task_id] = check_real("seconds", seconds, minimum=0.0)

    def remove(self, task_id: int) -> None:
        """Drop a finished task from this rank (the other ranks learn it at the next exchange)."""
        if task_id not in self.tasks:
            raise KeyError(f"rank {self.rank}: task {task_id!r} is not on this rank")
        del self.tasks[task_id]
        self._ended.append(task_id)
        self.predictor.forget(task_id)
        cost = self._step_costs.pop(task_id, None)
        if cost is not None:              # still counts toward the mean cost of a task this step
            self._ended_costs[0] += cost
            self._ended_costs[1] += 1

    def _cost_of(self, obj, what: str) -> np.ndarray:
        try:
            return cost_lookahead(self.cost, obj, self.horizon)
        except Exception as error:
            raise RuntimeError(f"barrierlb: rank {self.rank}: cost() failed on {what}: "
                               f"{type(error).__name__}: {error}") from error

    def _projected_load(self) -> np.ndarray:
        """Predicted per-step load of this rank's tasks, shape ``(horizon + 1,)``."""
        if not self.tasks:
            return np.zeros(self.horizon + 1)
        if self.cost is not None:
            return np.sum([self._cost_of(task, f"task {task_id}") for task_id, task in self.tasks.items()], axis=0)
        # record() takes only this rank's tasks and remove() forgets them, so the tasks the
        # predictor knows are exactly the tasks here with a measurement.
        return self.predictor.total_lookahead(self.horizon)

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
        extra = self._extra_words(rows)
        send, table = self._buffers(rows)
        send[:rows] = self._projected_load()
        send[rows:rows + _HEADER] = (len(self.tasks), len(self._pending), len(self._ended), measured, n_measured,
                                     extra.size)
        if extra.size <= _INLINE_WORDS:
            send[rows + _HEADER:rows + _HEADER + extra.size] = extra
        self._wait(self.comm.Iallgather(send, table), "the load exchange (Iallgather)")
        self.exchanges += 1
        self._ended = []
        header = table[:, rows:rows + _HEADER].astype(np.int64)
        counts, news, ended, sizes = header[:, 0], header[:, 1], header[:, 2], header[:, 5]
        if not news.any() and not ended.any():          # nothing to record, nothing to place
            self.last_placement = {}
            return 0, "idle"
        if sizes.max() <= _INLINE_WORDS:
            regions = [table[r, rows + _HEADER:rows + _HEADER + sizes[r]] for r in range(self.size)]
        else:
            flat = np.empty(int(sizes.sum()))
            self._wait(self.comm.Iallgatherv(extra, [flat, sizes]), "the spec exchange (Iallgatherv)")
            regions = np.split(flat, np.cumsum(sizes)[:-1])
        parts = [_unpack(region, int(ended[r]), int(news[r]), rows if self.cost is not None else 0)
                 for r, region in enumerate(regions)]
        ids = np.concatenate([part[1] for part in parts]) if news.any() else np.zeros(0, dtype=np.int64)
        self._pending = {}
        placement = np.full(ids.size, -1, dtype=np.int64)
        decide = self._decide_at_root if self.mode == "root" else self._decide
        branch = decide(table, rows, counts, parts, ids, placement)
        if self.mode == "replicated" and self.size > 1 and ids.size:
            self._check_agreement(ids, placement)
        if not ids.size:
            self.last_placement = {}
            return 0, "idle"
        if (placement < 0).any():
            raise RuntimeError(f"barrierlb: {int((placement < 0).sum())} new tasks found no rank with a free slot "
                               f"(capacity {self.capacity}); raise the capacity")
        self.last_placement = dict(zip(ids.tolist(), placement.tolist()))
        return self._build(parts, placement), branch

    def _extra_words(self, rows: int) -> np.ndarray:
        """This rank's variable part of the exchange, as float64 words: ended ids, new ids,
        their cost lookaheads (with a cost model), the specs' sizes and the specs' bytes."""
        if not self._pending and not self._ended:
            return np.zeros(0)
        new_ids = list(self._pending)
        blobs = [blob for blob, _ in self._pending.values()]
        ints = np.array(self._ended + new_ids + [len(blob) for blob in blobs], dtype=np.int64)
        ahead = (np.array([a for _, a in self._pending.values()]).reshape(-1)
                 if self.cost is not None and new_ids else np.zeros(0))
        data = b"".join(blobs)
        words = np.zeros(ints.size + ahead.size + (len(data) + 7) // 8)
        words[:ints.size] = ints.view(np.float64)
        words[ints.size:ints.size + ahead.size] = ahead
        words[ints.size + ahead.size:].view(np.uint8)[:len(data)] = np.frombuffer(data, dtype=np.uint8)
        return words

    def _decide(self, table, rows, counts, parts, ids, placement) -> str:
        """Feed every rank's report to the planner and place the new tasks (into ``placement``)."""
        planner = self.planner
        for r, (ended_ids, _, _, _, _) in enumerate(parts):
            planner.report(r, finished=ended_ids.tolist(), load=table[r, :rows].copy(),
                           measured=(float(table[r, rows + 3]), int(table[r, rows + 4])))
        if not np.array_equal(planner.active_count, counts):
            raise RuntimeError(f"barrierlb: rank {self.rank}'s ledger holds {planner.active_count.tolist()} tasks per "
                               f"rank but the ranks report {counts.tolist()}; were tasks added or removed outside "
                               f"submit()/remove()?")
        if not ids.size:
            return planner.plan().branch          # idle; ends this superstep's measurements
        ahead = np.concatenate([part[2] for part in parts]) if self.cost is not None else None
        try:
            planner.submit_many(ids, ahead)
        except ValueError as error:
            raise ValueError(f"barrierlb: duplicate task ids submitted ({error})") from None
        decision = planner.plan()
        position = {task_id: i for i, task_id in enumerate(ids.tolist())}
        placement[[position[t] for t in decision.task_ids.tolist()]] = decision.workers
        return decision.branch

    def _decide_at_root(self, table, rows, counts, parts, ids, placement) -> str:
        """Rank 0 decides and broadcasts; in an exchange that places tasks a failure there reaches
        every rank with the broadcast instead of a deadline. In one that only records ended tasks
        nothing is broadcast: the other ranks go on, and meet rank 0's failure at their next
        collective (at once under ``python -m mpi4py``, else after ``timeout_s``)."""
        branch = "root"
        failed = None
        if self.rank == 0:
            try:
                branch = self._decide(table, rows, counts, parts, ids, placement)
            except Exception as error:
                failed = error
                placement[:] = -2
        if ids.size:
            self._wait(self.comm.Ibcast(placement, root=0), "the placement broadcast (Ibcast)")
        if failed is not None:
            raise failed
        if ids.size and placement[0] == -2:
            raise RuntimeError(f"barrierlb: rank {self.rank}: rank 0 could not decide the placement (its own "
                               f"error says why)")
        return branch

    def _check_agreement(self, ids, placement) -> None:
        """Replicated decisions must agree before anything is built: compare checksums.

        Ranks decide alike only when their floating point is bitwise alike (the
        same CPU type and libraries everywhere); every rank sees the same
        checksums and raises the same error.
        """
        digest = np.array([float(zlib.crc32(placement.tobytes(), zlib.crc32(ids.tobytes())))])
        digests = np.empty(self.size)
        self._wait(self.comm.Iallgather(digest, digests), "the placement check (Iallgather)")
        if (digests != digests[0]).any():
            odd = np.flatnonzero(digests != digests[0]).tolist()
            raise RuntimeError(f"barrierlb: ranks {odd} reached a different placement from rank 0's, so no new "
                               f"task was built (replicated decisions need bitwise-identical floating point on "
                               f"every rank; on mixed nodes use mode='root')")

    def _build(self, parts, placement) -> int:
        """Unpickle and create the tasks placed on this rank (and only those)."""
        received = 0
        start = 0
        for source, (_, new_ids, _, sizes, data) in enumerate(parts):
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            for k, task_id in enumerate(new_ids.tolist()):
                if placement[start + k] != self.rank:
                    continue
                blob = data[offsets[k]:offsets[k + 1]].tobytes()
                try:
                    spec = pickle.loads(blob)
                except Exception as error:
                    raise RuntimeError(f"barrierlb: rank {self.rank} cannot unpickle the spec of task {task_id} "
                                       f"(from rank {source}): {type(error).__name__}: {error}") from error
                try:
                    self.tasks[task_id] = self.create(spec)
                except Exception as error:
                    raise RuntimeError(f"barrierlb: rank {self.rank} failed in create() on task {task_id}: "
                                       f"{type(error).__name__}: {error}") from error
                received += 1
            start += new_ids.size
        return received

    def _buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The exchange's send buffer (zeroed) and receive table, kept from one exchange to the next."""
        width = rows + _HEADER + _INLINE_WORDS
        if self._send is None or self._send.size != width:
            self._send = np.zeros(width)
            self._table = np.empty((self.size, width))
        else:
            self._send.fill(0.0)
        return self._send, self._table


def _unpack(region: np.ndarray, n_ended: int, n_new: int, rows: int) -> tuple:
    """One rank's variable part: (ended ids, new ids, new lookaheads (n_new * rows,), spec sizes, spec bytes)."""
    ints = region[:n_ended + 2 * n_new].view(np.int64)
    ahead = region[n_ended + 2 * n_new:n_ended + 2 * n_new + n_new * rows]
    data = region[n_ended + 2 * n_new + n_new * rows:].view(np.uint8)
    return ints[:n_ended], ints[n_ended:n_ended + n_new], ahead.reshape(n_new, rows), ints[n_ended + n_new:], data


def _identity(fn) -> str | None:
    """A callable's name and a hash of its code: equal on two ranks only for the same function."""
    if fn is None:
        return None
    target = getattr(fn, "__func__", fn)
    name = f"{getattr(target, '__module__', None) or type(target).__module__}." \
           f"{getattr(target, '__qualname__', None) or type(target).__qualname__}"
    code = getattr(target, "__code__", None)
    if code is None:
        return name
    consts = repr([c for c in code.co_consts if not isinstance(c, types.CodeType)])
    digest = hashlib.sha256(code.co_code + repr(code.co_names).encode() + consts.encode()).hexdigest()[:16]
    return f"{name} (code {digest})"
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
            if result is None:
                continue
            try:
                children = list(result)
            except TypeError:
                raise TypeError(f"barrierlb: rank {balancer.rank}, step {step}, task {task_id}: the step function "
                                f"must return None, DONE or an iterable of (task_id, spec) pairs, got "
                                f"{type(result).__name__}") from None
            for child in children:
                if not isinstance(child, tuple) or len(child) != 2:
                    raise TypeError(f"barrierlb: rank {balancer.rank}, step {step}, task {task_id}: each new "
                                    f"task must be a (task_id, spec) pair, got {child!r}")
                balancer.submit(*child)
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


for _name in ("policy", "capacity", "cost", "timeout_s"):     # the names DaskBalancer uses for the same things
    setattr(BalancedStep, _name, property(lambda self, name=_name: getattr(self.balancer, name),
                                          doc=f"The balancer's ``{_name}``."))
del _name

#: Returned by a step function to end its task (the task is dropped from its rank).
DONE = object()


def balance(create: Callable[[Any], Any], **options):
    """Decorator: balance an existing per-task step function across MPI ranks.

    The keyword ``options`` (``comm`` required) are :class:`MPIBalancer`'s and
    :class:`BalancedStep` says what calling the decorated function does.
    Collective: every rank must decorate with the same configuration (checked).
    """
    def wrap(fn: Callable) -> BalancedStep:
        return BalancedStep(fn, MPIBalancer(create, **options))
    return wrap


def _oversubscribed(comm, MPI) -> bool:
    """Whether this node runs more ranks of ``comm`` than this process may use cores."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.Get_size()
    finally:
        local.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ranks_here > cores
