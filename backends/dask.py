"""Dask backend: sticky stateful tasks on Dask workers, run in lockstep supersteps.

Each Dask worker hosts one actor (:class:`TaskHost`) that keeps the state of the
tasks placed on it. A superstep calls every host at once (``run_step``), and
ends when all have answered: that is the barrier. The ledger (where tasks live,
free slots, live workers, the predicted cost of every task) and the decision
are :class:`barrierlb.superstep.SuperstepPlanner`'s; this module only moves
specs, reports and results between the client and the hosts. Actors were
chosen over pinned futures for latency: an actor call costs about 3 ms here,
a task round trip about 14 ms (see docs/dask.md).

Dask's actors get no load balancing and never migrate; this backend supplies
the placement and keeps the stickiness.

Failures are of two kinds, kept apart:

- **A task's error** (its ``create``, ``step``, ``checkpoint`` or ``cost``
  raised, or its result or checkpoint cannot be serialized) is caught on the
  worker and reported with its traceback. By default :meth:`DaskBalancer.step`
  (and so :meth:`~DaskBalancer.run`) raises :class:`TaskError` naming the task,
  the worker and the phase, after recording everything else that superstep
  reported; with ``on_error="report"`` the task is marked failed
  (:attr:`DaskBalancer.failed`) and the others carry on. A spec that cannot be
  serialized is refused by :meth:`~DaskBalancer.submit` itself.
- **A worker's loss** (its process died, it left the cluster, or it did not
  answer in ``timeout_s``): the tasks it held are rebuilt from their specs (or
  from the last checkpoint, if a ``checkpoint`` hook is given) and placed on
  the survivors through the policy. Results are recorded once per task id, so
  every submitted task appears exactly once in the output.

``distributed`` is imported when a balancer is created.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from barrierlb._validate import check_callable, check_int, check_real
from barrierlb.policies import Policy
from barrierlb.predictors import cost_lookahead
from barrierlb.superstep import SuperstepPlanner, run_until_idle

log = logging.getLogger("barrierlb.dask")

#: What ``on_error`` accepts.
ON_ERROR = ("raise", "report")


class Done:
    """Returned by a step function to end its task with ``result``."""

    __slots__ = ("result",)

    def __init__(self, result: Any = None):
        self.result = result


class TaskError(RuntimeError):
    """A task's own code failed (not a worker loss).

    Attributes
    ----------
    task_id : int
    worker : str
        Address of the worker it ran on.
    phase : str
        ``"create"``, ``"step"``, ``"checkpoint"``, ``"cost"`` or ``"result"``
        (its result could not be serialized).
    remote_traceback : str
        The traceback as formatted on the worker.
    """

    def __init__(self, task_id: int, worker: str, phase: str, error: str, remote_traceback: str):
        super().__init__(f"task {task_id} failed in {phase}() on worker {worker}: {error}\n"
                         f"traceback on the worker:\n{remote_traceback}")
        self.task_id, self.worker, self.phase, self.error = task_id, worker, phase, error
        self.remote_traceback = remote_traceback


def _worker_addresses(dask_scheduler=None) -> list:
    """Addresses of the workers the scheduler knows (run on the scheduler)."""
    return list(dask_scheduler.workers)


def _failure(phase: str, error: BaseException) -> tuple:
    return phase, f"{type(error).__name__}: {error}", traceback.format_exc()


class TaskHost:
    """Actor holding the tasks placed on one Dask worker.

    Runs the user's code and catches its errors per task: they come back in
    the reports as ``(phase, error, traceback)``, the task dropped from the host.
    """

    def __init__(self, create: Callable, step: Callable, checkpoint: Callable | None = None,
                 cost: Callable | None = None, horizon: int = 0):
        from distributed.protocol.pickle import dumps

        self._dumps = dumps
        self._create = create
        self._step = step
        self._checkpoint = checkpoint
        self._cost = cost
        self._horizon = horizon
        self._tasks: dict[int, Any] = {}

    def add(self, items: list) -> dict:
        """Build tasks from ``[(task_id, spec), ...]``; returns ``{"errors": {task_id: failure}}``."""
        errors = {}
        for task_id, spec in items:
            try:
                self._tasks[task_id] = self._create(spec)
            except Exception as error:
                errors[task_id] = _failure("create", error)
        return {"errors": errors}

    def run_step(self, step: int, want_checkpoints: bool) -> dict:
        """Run every task once (in id order); report costs, results, checkpoints, lookaheads and errors."""
        costs, finished, checkpoints, errors = {}, {}, {}, {}
        started = time.perf_counter()
        for task_id in sorted(self._tasks):
            begun = time.perf_counter()
            phase = "step"
            try:
                outcome = self._step(self._tasks[task_id], step)
                if isinstance(outcome, Done):
                    phase = "result"
                    self._dumps(outcome.result)       # an unserializable result is this task's error
                    finished[task_id] = outcome.result
            except Exception as error:
                errors[task_id] = _failure(phase, error)
            costs[task_id] = time.perf_counter() - begun
        for task_id in (*finished, *errors):
            del self._tasks[task_id]
        busy = time.perf_counter() - started
        ahead = {} if self._cost is not None else None
        for task_id in sorted(self._tasks):
            phase = "checkpoint"
            try:
                if want_checkpoints and self._checkpoint is not None:
                    spec = self._checkpoint(self._tasks[task_id])
                    self._dumps(spec)
                    checkpoints[task_id] = spec
                if ahead is not None:
                    phase = "cost"
                    ahead[task_id] = cost_lookahead(self._cost, self._tasks[task_id], self._horizon)
            except Exception as error:
                errors[task_id] = _failure(phase, error)
                checkpoints.pop(task_id, None)
                del self._tasks[task_id]
        return {"costs": costs, "finished": finished, "checkpoints": checkpoints, "busy_s": busy, "ahead": ahead,
                "errors": errors}


@dataclass(frozen=True)
class SuperstepStats:
    """One superstep as the client saw it (seconds)."""

    step: int
    wall_s: float                 # whole superstep, client side
    busy_s: dict                  # worker address -> time its host spent running tasks
    barrier_wait_s: float         # sum over workers of (slowest busy - own busy)
    balance_s: float              # decision and task hand-out
    placed: int
    finished: int
    workers_lost: int
    failed: int = 0               # tasks whose own code failed this superstep


class DaskBalancer:
    """Places sticky tasks on the workers of a ``distributed.Client`` and runs supersteps.

    Parameters
    ----------
    client : distributed.Client
    create : callable
        ``create(spec) -> task``, run on the worker the task is placed on.
    step : callable
        ``step(task, step_index)``: advances a task one superstep; returns
        :class:`Done` to end it with a result.
    policy : str or Policy
        Placement policy (default ``"bfio:horizon=8"``).
    capacity : int, optional
        Most tasks per worker (default unlimited).
    checkpoint : callable, optional
        ``checkpoint(task) -> spec`` to rebuild a task from after a worker loss
        (taken every ``checkpoint_every`` supersteps); without it, tasks restart
        from their original spec.
    cost : callable, optional
        ``cost(obj, horizon) -> number or array of horizon + 1``: predicted work
        of a new task (``obj`` its spec, evaluated once by :meth:`submit`) and
        of a running one (``obj`` the task, evaluated on its worker after each
        superstep). Without it, running tasks are predicted from their measured
        time and new ones by the mean measured cost of a task.
    timeout_s : float
        How long a call may wait for a host before its worker is treated as lost.
    on_error : str
        ``"raise"`` (default): a task's error ends :meth:`step` with a
        :class:`TaskError`; ``"report"``: the task is recorded in :attr:`failed`
        and the run goes on.

    Attributes
    ----------
    results : dict
        ``{task_id: result}`` of the tasks that finished.
    failed : dict
        ``{task_id: TaskError}`` of the tasks whose own code failed.
    stats : list of SuperstepStats
        One entry per superstep.
    """

    def __init__(self, client, create: Callable, step: Callable, *, policy: str | Policy = "bfio:horizon=8",
                 capacity: int | None = None, checkpoint: Callable | None = None, checkpoint_every: int = 1,
                 cost: Callable | None = None, timeout_s: float = 60.0, on_error: str = "raise"):
        import distributed
        from distributed.protocol.pickle import dumps

        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        check_callable("create", create, "create(spec) -> task")
        check_callable("step", step, "step(task, step_index)")
        check_callable("cost", cost, "cost(spec_or_task, horizon) -> work", optional=True)
        check_callable("checkpoint", checkpoint, "checkpoint(task) -> spec", optional=True)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.client = client
        #: The ledger and decision; its worker 0 is the first host started, later ones join it.
        self.planner = SuperstepPlanner(1, policy=policy, capacity=capacity)
        self.policy, self.capacity, self.horizon = self.planner.policy, self.planner.capacity, self.planner.horizon
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
        self.timeout_s = check_real("timeout_s", timeout_s, minimum=0.0)
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.on_error = on_error
        self.cost = cost
        self._dumps = dumps
        self._factory = (create, step, checkpoint, cost, self.horizon)
        self._checkpoint = checkpoint
        self._hosts: dict[str, Any] = {}            # worker address -> actor proxy
        self._index: dict[str, int] = {}            # worker address -> planner worker index
        self._addresses: list[str] = []             # planner worker index -> address
        self._retired: set[str] = set()             # workers given up on (never hosted again)
        self._specs: dict[int, Any] = {}            # task id -> spec or last checkpoint
        self.results: dict[int, Any] = {}
        self.failed: dict[int, TaskError] = {}
        self.stats: list[SuperstepStats] = []
        self.workers_lost = 0
        self.tasks_recreated = 0
        self.duplicates = 0
        self.submitted = 0
        self._step = 0

    # ---------------------------------------------------------------- input
    def submit(self, task_id: int, spec: Any) -> None:
        """Queue a task; it is placed at the next superstep.

        Raises ``ValueError`` for a duplicate id and ``TypeError`` for a spec
        that cannot be serialized (it could never reach a worker).
        """
        task_id = check_int("task_id", task_id, minimum=0)
        if task_id in self._specs or task_id in self.results or task_id in self.failed:
            raise ValueError(f"duplicate task id {task_id}")
        try:
            self._dumps(spec)
        except Exception as error:
            raise TypeError(f"task {task_id}: its spec cannot be serialized for a worker: "
                            f"{type(error).__name__}: {error}") from error
        ahead = None
        if self.cost is not None:
            try:
                ahead = cost_lookahead(self.cost, spec, self.horizon)
            except Exception as error:
                raise type(error)(f"task {task_id}: cost(spec) failed: {error}") from error
        self.planner.submit(task_id, ahead)
        self._specs[task_id] = spec
        self.submitted += 1

    def submit_many(self, items: Iterable) -> None:
        """Queue ``(task_id, spec)`` pairs, e.g. ``bag.compute()`` or a dataframe's rows."""
        for task_id, spec in items:
            self.submit(task_id, spec)

    active = property(lambda self: self.planner.n_active, doc="Tasks placed on workers.")
    waiting = property(lambda self: self.planner.n_waiting, doc="Tasks not placed yet.")

    def placement(self) -> dict[int, str]:
        """``{task_id: worker address}`` of the running tasks."""
        return {task_id: address for g, address in enumerate(self._addresses)
                for task_id in self.planner.tasks_on(g).tolist()}

    # ------------------------------------------------------------- workers
    def _sync_workers(self) -> None:
        """Start a host on every worker that has none (all at once; a worker that leaves
        meanwhile is skipped, not waited for)."""
        live = set(self.client.scheduler_info(n_workers=-1)["workers"])
        new = sorted(live - set(self._hosts) - self._retired)
        futures = {address: self.client.submit(TaskHost, *self._factory, actor=True, workers=[address],
                                                allow_other_workers=False, pure=False) for address in new}
        hosts, failures = self._gather(futures)
        for address, error in failures.items():
            log.warning("could not start a host on %s: %s", address, error)
            self.client.cancel(futures[address])
        for address in sorted(hosts):
            self._hosts[address] = hosts[address]
            self._index[address] = self.planner.add_worker() if self._addresses else 0
            self._addresses.append(address)

    def _gather(self, calls: dict) -> tuple[dict, dict]:
        """Wait for futures by worker address: ``(results, failures)``.

        A worker that leaves the cluster (checked every 0.25 s while calls are
        outstanding) or runs past ``timeout_s`` fails here at once, instead of
        after a connect timeout.
        """
        results, failures, pending = {}, {}, dict(calls)
        started = checked = time.monotonic()
        while pending:
            for address in [a for a, call in pending.items() if call.done()]:
                try:
                    results[address] = pending.pop(address).result()
                except Exception as error:
                    failures[address] = error
            if not pending:
                break
            now = time.monotonic()
            if now - checked > 0.25:
                checked = now
                live = set(self.client.run_on_scheduler(_worker_addresses))
                for address in [a for a in pending if a not in live]:
                    pending.pop(address)
                    failures[address] = ConnectionError("worker left the cluster")
            if now - started > self.timeout_s:
                for address in list(pending):
                    pending.pop(address)
                    failures[address] = TimeoutError(f"no answer in {self.timeout_s} s")
            time.sleep(0.0002)
        return results, failures

    def _call(self, method: str, args_by_address: dict) -> dict:
        """Run ``method(*args)`` on each worker's host; returns the answers by address.
        A worker whose call fails, or that leaves, or that does not answer, is lost."""
        calls = {}
        for address, args in args_by_address.items():
            try:
                calls[address] = getattr(self._hosts[address], method)(*args)
            except Exception as error:            # the proxy refuses: the worker is known gone
                self._lose(address, error)
        results, failures = self._gather(calls)
        for address, error in failures.items():
            self._lose(address, error)
        return results

    def _lose(self, address: str, error: BaseException) -> None:
        self._hosts.pop(address, None)
        self._retired.add(address)              # a worker that timed out may still be running its old host
        lost = self.planner.lose_worker(self._index[address])
        self.workers_lost += 1
        self.tasks_recreated += len(lost)
        log.warning("worker %s lost (%s: %s): re-creating %d tasks on the survivors", address,
                    type(error).__name__, error, len(lost))

    def _failed(self, task_id: int, address: str, failure: tuple, new_failures: list) -> None:
        phase, error, remote = failure
        task_error = TaskError(task_id, address, phase, error, remote)
        self.failed[task_id] = task_error
        self._specs.pop(task_id, None)
        new_failures.append(task_error)
        log.warning("task %d failed in %s() on %s: %s", task_id, phase, address, error)

    # ---------------------------------------------------------- supersteps
    def step(self) -> SuperstepStats:
        """Place waiting tasks, run one superstep on every worker, collect results.

        Raises :class:`TaskError` (after recording the rest of the superstep)
        when a task's code failed and ``on_error="raise"``.
        """
        started = time.perf_counter()
        self._sync_workers()
        if not self._hosts:
            raise RuntimeError("no Dask workers are available")
        lost_before = self.workers_lost
        new_failures: list[TaskError] = []
        balance_s, placed = self._place(new_failures)
        want = self._checkpoint is not None and self._step % self.checkpoint_every == 0
        calls = self._call("run_step", {address: (self._step, want) for address in self._hosts})
        busy, finished = {}, 0
        for address, report in sorted(calls.items()):
            busy[address] = report["busy_s"]
            for task_id, result in report["finished"].items():
                if task_id in self.results:
                    self.duplicates += 1
                    continue
                self.results[task_id] = result
                self._specs.pop(task_id, None)          # finished: never rebuilt again
                finished += 1
            for task_id, failure in sorted(report["errors"].items()):
                self._failed(task_id, address, failure, new_failures)
            self._specs.update(report["checkpoints"])
            self.planner.report(self._index[address], finished=[*report["finished"], *sorted(report["errors"])],
                                costs=report["costs"], lookahead=report["ahead"])
        slowest = max(busy.values(), default=0.0)
        stats = SuperstepStats(step=self._step, wall_s=time.perf_counter() - started, busy_s=busy,
                               barrier_wait_s=sum(slowest - b for b in busy.values()), balance_s=balance_s,
                               placed=placed, finished=finished, workers_lost=self.workers_lost - lost_before,
                               failed=len(new_failures))
        self.stats.append(stats)
        self._step += 1
        if new_failures and self.on_error == "raise":
            raise min(new_failures, key=lambda failure: failure.task_id)
        return stats

    def _place(self, new_failures: list) -> tuple[float, int]:
        started = time.perf_counter()
        decision = self.planner.plan()          # every superstep, also with nothing waiting: it ages the tasks
        if not decision.task_ids.size:
            return time.perf_counter() - started, 0
        batches: dict[str, list] = {}
        for task_id, g in zip(decision.task_ids.tolist(), decision.workers.tolist()):
            batches.setdefault(self._addresses[g], []).append((task_id, self._specs[task_id]))
        answers = self._call("add", {address: (items,) for address, items in batches.items()})
        placed = 0
        for address, answer in sorted(answers.items()):
            errors = answer["errors"]
            placed += len(batches[address]) - len(errors)
            for task_id, failure in sorted(errors.items()):
                self._failed(task_id, address, failure, new_failures)
            if errors:
                self.planner.report(self._index[address], finished=sorted(errors))
        return time.perf_counter() - started, placed

    def run(self, max_steps: int = 10_000) -> dict[int, Any]:
        """Superstep until every submitted task has finished (or failed); returns ``{task_id: result}``."""
        run_until_idle(self, max_steps)
        return dict(self.results)

    def results_bag(self, npartitions: int | None = None):
        """The results as a ``dask.bag`` of ``(task_id, result)``, in task-id order."""
        import dask.bag

        items = sorted(self.results.items())
        return dask.bag.from_sequence(items, npartitions=npartitions or max(1, min(len(items), 8)))
