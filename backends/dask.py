"""Dask backend: sticky stateful tasks on Dask workers, run in lockstep supersteps.

Each Dask worker hosts one actor (:class:`TaskHost`) that keeps the state of the
tasks placed on it. A superstep calls every host at once (``run_step``), and
ends when all have answered: that is the barrier. The hosts report each task's
measured cost, the balancer predicts every worker's load from those costs
(:class:`~barrierlb.predictors.PersistencePredictor`) and the policy places the
waiting tasks, which the chosen hosts then build from their specs. Actors were
chosen over pinned futures for latency: an actor call costs about 3 ms here,
a task round trip about 14 ms (see docs/dask.md).

Dask's actors get no load balancing and never migrate; this backend supplies
the placement and keeps the stickiness. When a worker dies, the tasks it held
are rebuilt from their specs (or from the last checkpoint, if a ``checkpoint``
hook is given) and placed on the survivors through the policy; results are
recorded once per task id, so every submitted task appears exactly once in the
output. ``distributed`` is imported when a balancer is created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from barrierlb._validate import check_int
from barrierlb.policies import Policy, make_policy
from barrierlb.predictors import PersistencePredictor, cost_lookahead

log = logging.getLogger("barrierlb.dask")


class Done:
    """Returned by a step function to end its task with ``result``."""

    __slots__ = ("result",)

    def __init__(self, result: Any = None):
        self.result = result


def _worker_addresses(dask_scheduler=None) -> list:
    """Addresses of the workers the scheduler knows (run on the scheduler)."""
    return list(dask_scheduler.workers)


class TaskHost:
    """Actor holding the tasks placed on one Dask worker."""

    def __init__(self, create: Callable, step: Callable, checkpoint: Callable | None = None,
                 cost: Callable | None = None, horizon: int = 0):
        self._create = create
        self._step = step
        self._checkpoint = checkpoint
        self._cost = cost
        self._horizon = horizon
        self._tasks: dict[int, Any] = {}

    def add(self, items: list) -> int:
        """Build tasks from ``[(task_id, spec), ...]``; returns how many the host holds."""
        for task_id, spec in items:
            self._tasks[task_id] = self._create(spec)
        return len(self._tasks)

    def run_step(self, step: int, want_checkpoints: bool) -> dict:
        """Run every task once (in id order); report costs, finished results and checkpoints."""
        costs, finished, checkpoints = {}, {}, {}
        started = time.perf_counter()
        for task_id in sorted(self._tasks):
            begun = time.perf_counter()
            outcome = self._step(self._tasks[task_id], step)
            costs[task_id] = time.perf_counter() - begun
            if isinstance(outcome, Done):
                finished[task_id] = outcome.result
        for task_id in finished:
            del self._tasks[task_id]
        busy = time.perf_counter() - started
        if want_checkpoints and self._checkpoint is not None:
            checkpoints = {task_id: self._checkpoint(task) for task_id, task in self._tasks.items()}
        ahead = None
        if self._cost is not None:
            ahead = {task_id: cost_lookahead(self._cost, task, self._horizon) for task_id, task in self._tasks.items()}
        return {"costs": costs, "finished": finished, "checkpoints": checkpoints, "busy_s": busy, "ahead": ahead}


@dataclass(frozen=True)
class StepReport:
    """One superstep as the client saw it (seconds)."""

    step: int
    wall_s: float                 # whole superstep, client side
    busy_s: dict                  # worker address -> time its host spent running tasks
    barrier_wait_s: float         # sum over workers of (slowest busy - own busy)
    balance_s: float              # decision and task hand-out
    placed: int
    finished: int
    workers_lost: int


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
        of a waiting task (``obj`` its spec, on the client) and of a running one
        (``obj`` the task, evaluated on its worker after each superstep).
        Without it, running tasks are predicted from their measured time and
        waiting ones by the mean.
    timeout_s : float
        How long a superstep may wait for a host before treating its worker as lost.
    """

    def __init__(self, client, create: Callable, step: Callable, *, policy: str | Policy = "bfio:horizon=8",
                 capacity: int | None = None, checkpoint: Callable | None = None, checkpoint_every: int = 1,
                 cost: Callable | None = None, timeout_s: float = 60.0):
        import distributed

        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        if not callable(create) or not callable(step):
            raise TypeError("create and step must be callable")
        if cost is not None and not callable(cost):
            raise TypeError("cost must be callable: cost(spec_or_task, horizon) -> work")
        self.client = client
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
        self.horizon = int(getattr(self.policy, "horizon", 0))
        self.capacity = None if capacity is None else check_int("capacity", capacity, minimum=1)
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
        self.timeout_s = float(timeout_s)
        self._factory = (create, step, checkpoint, cost, self.horizon)
        self._checkpoint = checkpoint
        self.cost = cost
        self._ahead: dict[int, np.ndarray] = {}     # task id -> cost-model lookahead from its host
        self._hosts: dict[str, Any] = {}            # worker address -> actor proxy
        self._where: dict[int, str] = {}            # task id -> worker address
        self._specs: dict[int, Any] = {}            # task id -> spec or last checkpoint
        self._pending: list[int] = []               # waiting task ids, in arrival order
        self.results: dict[int, Any] = {}
        self.predictor = PersistencePredictor()
        self.reports: list[StepReport] = []
        self.workers_lost = 0
        self.tasks_recreated = 0
        self.duplicates = 0
        self.submitted = 0
        self._step = 0

    # ---------------------------------------------------------------- input
    def submit(self, task_id: int, spec: Any) -> None:
        """Queue a task; it is placed at the next superstep."""
        task_id = check_int("task_id", task_id, minimum=0)
        if task_id in self._specs or task_id in self.results:
            raise ValueError(f"duplicate task id {task_id}")
        self._specs[task_id] = spec
        self._pending.append(task_id)
        self.submitted += 1

    def submit_many(self, items: Iterable) -> None:
        """Queue ``(task_id, spec)`` pairs, e.g. ``bag.compute()`` or a dataframe's rows."""
        for task_id, spec in items:
            self.submit(task_id, spec)

    @property
    def active(self) -> int:
        return len(self._where)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def placement(self) -> dict[int, str]:
        """``{task_id: worker address}`` of the running tasks."""
        return dict(self._where)

    # ------------------------------------------------------------- workers
    def _sync_workers(self) -> None:
        live = set(self.client.scheduler_info(n_workers=-1)["workers"])
        for address in sorted(live - set(self._hosts)):
            future = self.client.submit(TaskHost, *self._factory, actor=True, workers=[address],
                                        allow_other_workers=False, pure=False)
            try:
                self._hosts[address] = future.result(timeout=self.timeout_s)
            except Exception as error:            # the worker vanished while we set it up
                log.warning("could not start a host on %s: %s", address, error)

    def _call(self, method: str, args_by_address: dict) -> dict:
        """Start ``method(*args)`` on each worker's host; a host whose worker is already
        known lost (the proxy refuses the call) is lost here, before any waiting."""
        calls = {}
        for address, args in args_by_address.items():
            host = self._hosts.get(address)
            if host is None:
                continue
            try:
                calls[address] = getattr(host, method)(*args)
            except Exception as error:
                self._lose(address, error)
        return calls

    def _collect(self, calls: dict) -> dict:
        """Results of actor calls by worker address; a worker that fails, leaves the
        cluster or runs past ``timeout_s`` is lost (its tasks are queued again).

        A killed worker is noticed when the scheduler drops it (checked every
        0.25 s while calls are outstanding) rather than after a connect timeout.
        """
        results, pending = {}, dict(calls)
        started = time.monotonic()
        checked = started
        while pending:
            for address in [a for a, call in pending.items() if call.done()]:
                call = pending.pop(address)
                try:
                    results[address] = call.result()
                except Exception as error:
                    self._lose(address, error)
            if not pending:
                break
            now = time.monotonic()
            if now - checked > 0.25:
                checked = now
                live = set(self.client.run_on_scheduler(_worker_addresses))
                for address in [a for a in pending if a not in live]:
                    pending.pop(address)
                    self._lose(address, ConnectionError("worker left the cluster"))
            if now - started > self.timeout_s:
                for address in list(pending):
                    pending.pop(address)
                    self._lose(address, TimeoutError(f"no answer in {self.timeout_s} s"))
            time.sleep(0.0002)
        return results

    def _lose(self, address: str, error: BaseException) -> None:
        self._hosts.pop(address, None)
        lost = sorted(t for t, w in self._where.items() if w == address)
        for task_id in lost:
            del self._where[task_id]
            self._ahead.pop(task_id, None)
            self.predictor.forget(task_id)
        self._pending = lost + self._pending
        self.workers_lost += 1
        self.tasks_recreated += len(lost)
        log.warning("worker %s lost (%s): re-creating %d tasks on the survivors", address,
                    type(error).__name__, len(lost))

    # ---------------------------------------------------------- supersteps
    def step(self) -> StepReport:
        """Place waiting tasks, run one superstep on every worker, collect results."""
        started = time.perf_counter()
        self._sync_workers()
        if not self._hosts:
            raise RuntimeError("no Dask workers are available")
        lost_before = self.workers_lost
        balance_s, placed = self._place()
        want = self._checkpoint is not None and self._step % self.checkpoint_every == 0
        calls = self._call("run_step", {address: (self._step, want) for address in self._hosts})
        busy, finished = {}, 0
        for address, report in self._collect(calls).items():
            busy[address] = report["busy_s"]
            if report["costs"]:
                self.predictor.observe(list(report["costs"]), list(report["costs"].values()))
            for task_id, result in report["finished"].items():
                if task_id in self.results:
                    self.duplicates += 1
                    continue
                self.results[task_id] = result
                self._where.pop(task_id, None)
                self._specs.pop(task_id, None)          # finished: never rebuilt again
                self._ahead.pop(task_id, None)
                self.predictor.forget(task_id)
                finished += 1
            for task_id, spec in report["checkpoints"].items():
                if task_id in self._where:
                    self._specs[task_id] = spec
            if report["ahead"] is not None:
                self._ahead.update(report["ahead"])
        slowest = max(busy.values(), default=0.0)
        report = StepReport(step=self._step, wall_s=time.perf_counter() - started, busy_s=busy,
                            barrier_wait_s=sum(slowest - b for b in busy.values()), balance_s=balance_s,
                            placed=placed, finished=finished, workers_lost=self.workers_lost - lost_before)
        self.reports.append(report)
        self._step += 1
        return report

    def _place(self) -> tuple[float, int]:
        if not self._pending:
            return 0.0, 0
        started = time.perf_counter()
        addresses = sorted(self._hosts)
        rows = self.horizon + 1
        index = {a: g for g, a in enumerate(addresses)}
        loads = np.zeros((rows, len(addresses)))
        counts = np.zeros(len(addresses), dtype=np.int64)
        if self.cost is not None:
            known = [t for t, w in self._where.items() if w in index and t in self._ahead]
            ahead = np.array([self._ahead[t] for t in known]).reshape(-1, rows)
        else:
            known = [t for t, w in self._where.items() if w in index and self.predictor.known(t)]
            ahead = self.predictor.lookahead(known, self.horizon) if known else np.zeros((0, rows))
        if known:
            np.add.at(loads.T, [index[self._where[t]] for t in known], ahead)
        mean_cost = float(ahead[:, 0].mean()) if known else 1.0
        for address in self._where.values():
            if address in index:
                counts[index[address]] += 1
        free = (np.full(len(addresses), len(self._pending)) if self.capacity is None
                else np.maximum(self.capacity - counts, 0))
        if self.cost is not None:
            pool = np.array([cost_lookahead(self.cost, self._specs[t], self.horizon) for t in self._pending])
        else:
            pool = np.full((len(self._pending), rows), mean_cost)
        decision = self.policy.decide_arrays(loads, pool, free, np.array(self._pending, dtype=np.int64))
        batches: dict[str, list] = {}
        for task_id, g in zip(decision.task_ids.tolist(), decision.workers.tolist()):
            batches.setdefault(addresses[g], []).append((task_id, self._specs[task_id]))
        calls = self._call("add", {address: (items,) for address, items in batches.items()})
        placed = set()
        for address in self._collect(calls):
            for task_id, _ in batches[address]:
                self._where[task_id] = address
                placed.add(task_id)
        self._pending = [t for t in self._pending if t not in placed]
        return time.perf_counter() - started, len(placed)

    def run(self, max_steps: int = 10_000) -> dict[int, Any]:
        """Superstep until every submitted task has finished; returns ``{task_id: result}``."""
        for _ in range(max_steps):
            if not self._pending and not self._where:
                return dict(self.results)
            self.step()
        raise RuntimeError(f"tasks still running after {max_steps} supersteps")

    def results_bag(self, npartitions: int | None = None):
        """The results as a ``dask.bag`` of ``(task_id, result)``, in task-id order."""
        import dask.bag

        items = sorted(self.results.items())
        return dask.bag.from_sequence(items, npartitions=npartitions or max(1, min(len(items), 8)))
