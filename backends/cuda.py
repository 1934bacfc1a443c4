"""CUDA backend: CUDA devices or streams as the workers of a barrier-synchronized loop.

A worker is a ``cupy.cuda.Device`` (the true BSP case: one GPU per worker) or a
``cupy.cuda.Stream`` (several workers sharing one GPU's SMs, so that a stream's
time measures contention as well as its own load). A task's sticky state is the
device arrays it allocated on its worker (``create(spec, xp)`` runs with that
worker's device and stream current), and it never moves.

A superstep (:meth:`CudaBalancer.step`):

1. the policy places waiting tasks through the shared superstep core
   (:class:`barrierlb.superstep.SuperstepPlanner`, as the MPI and Dask
   backends do: it keeps the ledger of where tasks live and asks the policy);
   each placed task is created on its worker;
2. for every worker, a CUDA event is recorded on its stream, its tasks'
   ``step(task, xp)`` calls are enqueued (in task-id order), and a second event
   is recorded: the host only launches, the workers run concurrently;
3. the barrier waits for every worker's second event; each worker's time is
   the elapsed time between its two events (the host launches the workers one
   after another, so where kernels are shorter than their launches a worker's
   time is mostly the time to launch its tasks);
4. the measured times feed the step-time model (:class:`StepTimeModel`: each
   worker's time is ``overhead_s`` per task plus ``unit_s`` per unit of the
   cost model), finished tasks leave the ledger and the others age a step: the
   backend reports each one's cost-model lookahead a step older to the planner.

This module keeps only the device work (creating tasks on their worker,
launches, events, the barrier) and each task's cost model; the planner does
the bookkeeping. Work is in the units of the ``cost`` model (for a decode task, the
rows of its key matrix: its work now, one more row per step, its steps left).
A new task enters the ledger with its cost plus the per-task launch overhead
the time model has measured, ``overhead_s / unit_s`` units: where kernels are
small and launch-bound, that makes tasks nearly alike and the policy balances
counts; where they are large, it balances rows.

``device="cpu"`` runs the same superstep code on a host executor
(:class:`HostExecutor`): the workers are host lanes run one after another,
tasks get numpy arrays and each worker is timed with ``time.perf_counter`` (or,
with ``host_clock="thread"``, the thread's CPU time, which a shared machine's
scheduling does not inflate).
It is what the tests run without a GPU; its times are a CPU's, not a GPU's.

CuPy is imported when a CUDA executor is created (``pip install
"barrierlb[gpu]"``), never by ``import barrierlb``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb import ClusterState
from barrierlb._validate import check_callable, check_int
from barrierlb.policies import Policy
from barrierlb.superstep import SuperstepPlanner, run_until_idle

DEVICES = ("cuda", "cpu")


def _cupy():
    try:
        import cupy
    except ImportError:
        raise ImportError('the CUDA backend needs CuPy: pip install "barrierlb[gpu]" '
                          '(or device="cpu" for the host executor)') from None
    return cupy


@dataclass(frozen=True)
class SuperstepReport:
    """One superstep (seconds).

    Attributes
    ----------
    worker_s : ndarray, shape (G,)
        Each worker's measured time for its tasks (CUDA events, or
        ``perf_counter`` on the host executor).
    barrier_wait_s : float
        ``sum_g (max(worker_s) - worker_s[g])``: time workers spent waiting.
    idle_fraction : float
        ``barrier_wait_s / (G * max(worker_s))`` (0 when nothing ran).
    balance_s : float
        The decision plus creating the placed tasks.
    """

    step: int
    worker_s: np.ndarray
    barrier_wait_s: float
    idle_fraction: float
    balance_s: float
    placed: int
    finished: int
    tasks: int
    branch: str


class StepTimeModel:
    """Each worker's step time as ``overhead_s * tasks + unit_s * units``, fitted online.

    A non-negative least-squares fit over the samples of the last ``window``
    supersteps (one sample per worker that ran tasks).

    Examples
    --------
    >>> model = StepTimeModel()
    >>> model.observe([2, 4], [10.0, 10.0], [0.0022, 0.0024])
    >>> round(model.overhead_s, 6), round(model.unit_s, 6)
    (0.0001, 0.0002)
    """

    def __init__(self, window: int = 16):
        self.window = check_int("window", window, minimum=1)
        self._samples: deque = deque(maxlen=self.window)
        self._fit = None

    def observe(self, tasks, units, seconds) -> None:
        """Add one superstep: per worker its task count, cost units and measured seconds."""
        tasks, units, seconds = (np.asarray(a, dtype=np.float64) for a in (tasks, units, seconds))
        ran = tasks > 0
        if ran.any():
            self._samples.append(np.stack([tasks[ran], units[ran], seconds[ran]], axis=1))
            self._fit = None

    def _coefficients(self) -> tuple[float, float]:
        if self._fit is None:
            if not self._samples:
                self._fit = (0.0, 0.0)
            else:
                from scipy.optimize import nnls

                samples = np.concatenate(list(self._samples))
                scale = np.maximum(np.abs(samples[:, :2]).max(axis=0), 1e-300)     # conditioning only
                solution, _ = nnls(samples[:, :2] / scale, samples[:, 2])
                self._fit = tuple(float(v) for v in solution / scale)
        return self._fit

    @property
    def overhead_s(self) -> float:
        """Fitted seconds per task per step (launch overhead)."""
        return self._coefficients()[0]

    @property
    def unit_s(self) -> float:
        """Fitted seconds per cost unit per step."""
        return self._coefficients()[1]

    def overhead_units(self) -> float:
        """The per-task overhead in cost units (0 until a positive ``unit_s`` is fitted)."""
        overhead, unit = self._coefficients()
        return overhead / unit if unit > 0 else 0.0

    def predict(self, tasks, units) -> np.ndarray:
        """Predicted seconds per worker."""
        overhead, unit = self._coefficients()
        return overhead * np.asarray(tasks, dtype=np.float64) + unit * np.asarray(units, dtype=np.float64)


#: Clocks of the host executor: wall time, or the CPU time of the calling thread (which
#: leaves out time the process spent descheduled on a shared machine, but also any work
#: of other threads, such as a multithreaded BLAS: run with one BLAS thread then).
HOST_CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


class HostExecutor:
    """``device="cpu"``: ``n_workers`` host lanes, run one after another, each timed with ``clock``.

    Tasks get numpy (``xp``) and run synchronously, so a lane's time is its
    tasks' host time; there is no concurrency between lanes. ``clock`` is
    ``"wall"`` (``time.perf_counter``, default) or ``"thread"``
    (``time.thread_time``, see :data:`HOST_CLOCKS`).
    """

    kind = "cpu"
    xp = np

    def __init__(self, n_workers: int, *, clock: str = "wall"):
        self.n_workers = check_int("workers", n_workers, minimum=1)
        if clock not in HOST_CLOCKS:
            raise ValueError(f"clock must be one of {tuple(HOST_CLOCKS)}, got {clock!r}")
        self.clock = clock
        self._now = HOST_CLOCKS[clock]
        self._begin = np.zeros(self.n_workers)
        self._end = np.zeros(self.n_workers)

    def context(self, worker: int):
        return contextlib.nullcontext()

    def begin(self, worker: int) -> None:
        self._begin[worker] = self._now()

    def end(self, worker: int) -> None:
        self._end[worker] = self._now()

    def wait(self) -> np.ndarray:
        """The barrier: every lane has already finished; returns each lane's seconds."""
        return self._end - self._begin

    def describe(self, worker: int) -> str:
        return f"host lane {worker}"


class CudaExecutor:
    """Workers on CUDA devices or streams, timed with CUDA events.

    Parameters
    ----------
    workers : sequence of ``cupy.cuda.Device`` or ``cupy.cuda.Stream``
        A device worker gets its own ``Stream(non_blocking=True)`` on that
        device; a stream worker runs on the device the stream belongs to.
    """

    kind = "cuda"

    def __init__(self, workers):
        self.xp = cupy = _cupy()
        self._devices, self._streams, self._events = [], [], []
        for g, worker in enumerate(workers):
            if isinstance(worker, cupy.cuda.Stream):
                device = cupy.cuda.Device(worker.device_id)
                stream = worker
            elif isinstance(worker, cupy.cuda.Device):
                device = worker
                with device:
                    stream = cupy.cuda.Stream(non_blocking=True)
            else:
                raise TypeError(f"workers[{g}] must be a cupy.cuda.Device or cupy.cuda.Stream, "
                                f"got {type(worker).__name__}")
            with device:
                self._events.append((cupy.cuda.Event(), cupy.cuda.Event()))
            self._devices.append(device)
            self._streams.append(stream)
        self.n_workers = len(self._streams)
        if not self.n_workers:
            raise ValueError("workers must name at least one CUDA device or stream")

    def context(self, worker: int):
        stack = contextlib.ExitStack()
        stack.enter_context(self._devices[worker])
        stack.enter_context(self._streams[worker])
        return stack

    def begin(self, worker: int) -> None:
        self._events[worker][0].record(self._streams[worker])

    def end(self, worker: int) -> None:
        self._events[worker][1].record(self._streams[worker])

    def wait(self) -> np.ndarray:
        """The barrier: wait for every worker's end event; returns the event-measured seconds."""
        seconds = np.zeros(self.n_workers)
        for g, (start, stop) in enumerate(self._events):
            stop.synchronize()
            seconds[g] = self.xp.cuda.get_elapsed_time(start, stop) / 1e3
        return seconds

    def describe(self, worker: int) -> str:
        return f"device {self._devices[worker].id} stream {self._streams[worker].ptr:#x}"


def streams(n_streams: int, *, device: int | None = None) -> list:
    """``n_streams`` ``cupy.cuda.Stream(non_blocking=True)`` on one device (default: the current one)."""
    cupy = _cupy()
    n_streams = check_int("n_streams", n_streams, minimum=1)
    with cupy.cuda.Device(device) if device is not None else contextlib.nullcontext():
        return [cupy.cuda.Stream(non_blocking=True) for _ in range(n_streams)]


def devices() -> list:
    """Every visible CUDA device, one worker each."""
    cupy = _cupy()
    return [cupy.cuda.Device(i) for i in range(cupy.cuda.runtime.getDeviceCount())]


class CudaBalancer:
    """Places sticky tasks on CUDA workers and runs event-timed supersteps (module docstring).

    Parameters
    ----------
    workers : sequence of Device/Stream, or int
        With ``device="cuda"``: the workers (:func:`devices`, :func:`streams`).
        With ``device="cpu"``: how many host lanes.
    create : callable
        ``create(spec, xp) -> task``, run with the task's worker current; the
        arrays it allocates are the task's sticky state.
    step : callable
        ``step(task, xp) -> bool``: enqueue one step of the task on the current
        stream; return ``True`` when the task has finished with this step.
    cost : callable, optional
        ``cost(spec) -> (work, growth, steps)`` in the ledger's units: work in
        the task's first step, change per step, predicted steps (``math.inf``
        when unknown); a bare number is ``(work, 0, inf)``. Default: every task
        costs 1 unit and runs on.
    policy : str or Policy
        Placement policy (default ``"bfio:horizon=8"``).
    capacity : int
        Most tasks per worker.
    device : str
        ``"cuda"`` (default) or ``"cpu"`` (the host executor).
    window : int
        Supersteps the step-time model is fitted on.
    host_clock : str
        The host executor's clock, ``"wall"`` (default) or ``"thread"`` (:class:`HostExecutor`).
    """

    def __init__(self, workers, *, create: Callable, step: Callable, cost: Callable | None = None,
                 policy: str | Policy = "bfio:horizon=8", capacity: int = 64, device: str = "cuda",
                 window: int = 16, host_clock: str = "wall"):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        check_callable("create", create, "create(spec, xp) -> task")
        check_callable("step", step, "step(task, xp) -> bool")
        check_callable("cost", cost, "cost(spec) -> (work, growth, steps)", optional=True)
        if device == "cpu":
            if isinstance(workers, bool) or not isinstance(workers, int):
                raise TypeError(f'with device="cpu", workers must be the number of host lanes, got {workers!r}')
            self.executor = HostExecutor(workers, clock=host_clock)
        else:
            if isinstance(workers, int):
                raise TypeError("with device=\"cuda\", workers must be CUDA devices or streams "
                                "(barrierlb.backends.cuda.devices() or streams(n)), not a count")
            self.executor = CudaExecutor(list(workers))
        self.device = device
        self.xp = self.executor.xp
        self.n_workers = self.executor.n_workers
        self.create, self.run_step, self.cost = create, step, cost
        capacity = check_int("capacity", capacity, minimum=1)        # required here: None is not unlimited
        self.planner = SuperstepPlanner(self.n_workers, policy=policy, capacity=capacity)
        self.policy, self.capacity, self.horizon = self.planner.policy, self.planner.capacity, self.planner.horizon
        self.time_model = StepTimeModel(window)
        self._specs: dict[int, Any] = {}
        self._tasks: dict[int, Any] = {}
        # task id -> [work now, growth, steps left, overhead units]: its cost model, aged each superstep
        self._cost: dict[int, list[float]] = {}
        self.reports: list[SuperstepReport] = []
        self._step = 0

    @property
    def ledger(self) -> ClusterState:
        """Where every task lives (the planner's :class:`~barrierlb.ClusterState`; read it, do not change it)."""
        return self.planner.ledger

    # ------------------------------------------------------------------ tasks
    def submit(self, task_id: int, spec: Any) -> None:
        """Queue a task; it is placed at a coming superstep."""
        task_id = check_int("task_id", task_id, minimum=0)
        work, growth, steps = self._cost_of(task_id, spec)
        cost = [work, growth, steps, self.time_model.overhead_units()]
        self.planner.submit(task_id, _lookahead(cost, self.horizon, running=False))   # refuses a live id
        self._specs[task_id] = spec
        self._cost[task_id] = cost

    def _cost_of(self, task_id: int, spec) -> tuple[float, float, float]:
        if self.cost is None:
            return 1.0, 0.0, float("inf")
        value = self.cost(spec)
        parts = (value, 0.0, float("inf")) if np.ndim(value) == 0 else tuple(value)
        if len(parts) != 3:
            raise ValueError(f"cost(spec) of task {task_id} must be a number or (work, growth, steps), got {value!r}")
        if any(isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float, np.number)) for v in parts):
            raise ValueError(f"cost(spec) of task {task_id} must be a number or (work, growth, steps) of numbers, "
                             f"got {value!r}")
        work, growth, steps = (float(v) for v in parts)
        if not (np.isfinite(work) and work >= 0 and np.isfinite(growth) and steps >= 0):
            raise ValueError(f"cost(spec) of task {task_id} gave work={work}, growth={growth}, steps={steps}: "
                             "work must be finite and >= 0, growth finite, steps >= 0")
        return work, growth, steps

    def task(self, task_id: int):
        """The task object (holding its device arrays) of a placed task."""
        try:
            return self._tasks[task_id]
        except KeyError:
            raise KeyError(f"task {task_id} is not placed on any worker") from None

    def worker_of(self, task_id: int) -> int:
        return self.planner.worker_of(task_id)

    active = property(lambda self: len(self._tasks), doc="Tasks placed on workers.")
    waiting = property(lambda self: self.planner.n_waiting, doc="Tasks not placed yet.")

    # ------------------------------------------------------------- supersteps
    def _place(self) -> tuple[int, str]:
        """Create the tasks the planner places. When ``create`` fails, that task is dropped (the
        error names it) and the tasks of the same decision not created yet wait again."""
        decision = self.planner.plan()
        for task_id, g in zip(decision.task_ids.tolist(), decision.workers.tolist()):
            try:
                with self.executor.context(g):
                    self._tasks[task_id] = self.create(self._specs[task_id], self.xp)
                del self._specs[task_id]
            except Exception as error:
                for t, home in zip(decision.task_ids.tolist(), decision.workers.tolist()):
                    if t not in self._tasks:
                        self.planner.report(home, finished=[t])
                        if t == task_id:
                            del self._specs[t], self._cost[t]
                        else:                  # never built: back to the pool, with its spec and cost
                            self.planner.submit(t, _lookahead(self._cost[t], self.horizon, running=False))
                raise RuntimeError(f"create() failed for task {task_id} on {self.executor.describe(g)}: "
                                   f"{type(error).__name__}: {error}") from error
        return int(decision.task_ids.size), decision.branch

    def step(self) -> SuperstepReport:
        """Place waiting tasks, run one superstep on every worker, wait at the barrier."""
        started = time.perf_counter()
        placed, branch = self._place()
        balance_s = time.perf_counter() - started
        finished: list[list[int]] = []
        counts = np.zeros(self.n_workers)
        units = np.zeros(self.n_workers)
        for g in range(self.n_workers):
            ids = np.sort(self.planner.tasks_on(g)).tolist()
            counts[g] = len(ids)
            units[g] = sum(self._cost[t][0] for t in ids)
            done = []
            with self.executor.context(g):
                self.executor.begin(g)
                for task_id in ids:
                    try:
                        ended = self.run_step(self._tasks[task_id], self.xp)
                    except Exception as error:
                        raise RuntimeError(f"step() failed for task {task_id} on {self.executor.describe(g)} at "
                                           f"superstep {self._step}: {type(error).__name__}: {error}") from error
                    if ended:
                        done.append(task_id)
                self.executor.end(g)
            finished.append(done)
        seconds = self.executor.wait()                                   # the barrier
        self.time_model.observe(counts, units, seconds)
        for g, done in enumerate(finished):
            for task_id in done:
                del self._tasks[task_id], self._cost[task_id]
            ahead = {}
            for task_id in self.planner.tasks_on(g).tolist():
                if task_id not in done:                                  # a step older: the cost model's next rows
                    cost = self._cost[task_id]
                    cost[0], cost[2] = max(cost[0] + cost[1], 0.0), cost[2] - 1
                    ahead[task_id] = _lookahead(cost, self.horizon, running=True)
            self.planner.report(g, finished=done, lookahead=ahead)
        n_finished = sum(len(done) for done in finished)
        slowest = float(seconds.max()) if seconds.size else 0.0
        wait = float((slowest - seconds).sum())
        report = SuperstepReport(step=self._step, worker_s=seconds, barrier_wait_s=wait,
                                 idle_fraction=wait / (self.n_workers * slowest) if slowest > 0 else 0.0,
                                 balance_s=balance_s, placed=placed, finished=n_finished, tasks=len(self._tasks),
                                 branch=branch)
        self.reports.append(report)
        self._step += 1
        return report

    def run(self, max_steps: int = 100_000) -> list[SuperstepReport]:
        """Superstep until no task is waiting or running; returns this run's reports."""
        first = len(self.reports)
        run_until_idle(self, max_steps)
        return self.reports[first:]


def _lookahead(cost: list[float], horizon: int, *, running: bool) -> np.ndarray:
    """A task's predicted work over steps ``0..horizon``: ``work + overhead + growth * h`` while it runs.

    A waiting task runs its ``steps`` (none when 0); a running one runs at least
    the current step, even past its predicted end, as :mod:`barrierlb.projection`
    projects placed tasks.
    """
    work, growth, steps, overhead = cost
    h = np.arange(horizon + 1, dtype=np.float64)
    ends = max(math.ceil(steps), 1) if running and steps < horizon + 1 else steps
    return np.where(h < ends, np.maximum(work + overhead + growth * h, 0.0), 0.0)
