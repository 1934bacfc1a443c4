"""Baseline placement policies: FCFS, round-robin, random, power of two, JSQ, vLLM, TensorRT-LLM, greedy.

Every baseline takes the waiting tasks in arrival order (FCFS admission) and
places the first ``min(N, free slots)`` of them; they differ only in the worker
each task goes to. Ties break by the lowest worker index, so every MPI rank
computes the same decision.
"""

from __future__ import annotations

import time

import numpy as np

from barrierlb._validate import check_int, check_real
from barrierlb.policies.base import Decision, Policy, register


def _decision(problem, workers: list[int], started: float) -> Decision:
    index = np.arange(len(workers), dtype=np.int64)
    return Decision(task_ids=problem.pool_ids[index], workers=np.asarray(workers, dtype=np.int64),
                    pool_index=index, branch="rule",
                    solve_time_s=time.perf_counter() - started)


def assign_by_score(score: np.ndarray, increments: np.ndarray, free_slots: np.ndarray) -> list[int]:
    """Give task ``k`` the open worker of least ``score``, then add ``increments[k]`` to it.

    Parameters
    ----------
    score : ndarray, shape (G,)
        Initial score per worker (lower is preferred).
    increments : ndarray, shape (K,)
        Score added to the chosen worker by each task, in order.
    free_slots : ndarray of int, shape (G,)

    Returns
    -------
    list of int
        Worker per task (length ``min(K, sum(free_slots))``).
    """
    score = np.array(score, dtype=np.float64)
    free = np.array(free_slots, dtype=np.int64)
    score[free <= 0] = np.inf
    chosen = []
    for increment in increments[: int(free.sum())].tolist():
        g = int(np.argmin(score))
        chosen.append(g)
        free[g] -= 1
        score[g] = np.inf if free[g] == 0 else score[g] + increment
    return chosen


class _ScoreBaseline(Policy):
    """Baselines that send each task to the open worker of least score."""

    def __init__(self):
        self._options = {}

    def scores(self, problem) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        score, increments = self.scores(problem)
        return _decision(problem, assign_by_score(score, increments[: problem.n_to_place], problem.free_slots),
                         started)


@register("fcfs")
class FCFS(_ScoreBaseline):
    """First come, first served: fill workers in index order."""

    def scores(self, problem):
        return np.zeros(problem.n_workers), np.zeros(problem.n_pool)


@register("jsq")
class JoinShortestQueue(_ScoreBaseline):
    """Join the shortest queue by running-request count."""

    def scores(self, problem):
        return problem.active_count.astype(np.float64), np.ones(problem.n_pool)


@register("jsq-tokens")
class JoinShortestQueueTokens(_ScoreBaseline):
    """Join the shortest queue by current work (resident tokens)."""

    def scores(self, problem):
        return problem.active_load.copy(), problem.pool_work[:, 0].copy()


@register("vllm")
class VLLMScore(_ScoreBaseline):
    """vLLM's data-parallel rank score ``4 * waiting + running``.

    ``running`` is the rank's active requests; ``waiting`` counts the requests
    routed to it in this decision, which queue until its next step.
    """

    def scores(self, problem):
        return problem.active_count.astype(np.float64), np.full(problem.n_pool, 4.0)


@register("trtllm")
class TensorRTLLMHeap(_ScoreBaseline):
    """TensorRT-LLM's min-heap on the active prompt tokens of each rank."""

    def scores(self, problem):
        return problem.active_prompt.copy(), problem.pool_prompt.copy()


@register("greedy")
class GreedyPredicted(_ScoreBaseline):
    """Least predicted load: the open worker whose load summed over the horizon is least."""

    def __init__(self, *, horizon: int = 16, gamma: float = 1.0):
        self.horizon = check_int("horizon", horizon, minimum=0)
        self.gamma = check_real("gamma", gamma, minimum=0.0, maximum=1.0)
        self._options = {"horizon": self.horizon, "gamma": self.gamma}

    def scores(self, problem):
        return problem.weights @ problem.projected_load, problem.pool_work @ problem.weights


@register("round-robin")
class RoundRobin(Policy):
    """Cycle over workers, skipping those without a free slot."""

    def __init__(self):
        self._cursor = 0
        self._options = {}

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        free = problem.free_slots.tolist()
        n = len(free)
        chosen = []
        g = self._cursor % n
        for _ in range(problem.n_to_place):      # a worker with a free slot exists: n_to_place <= sum(free)
            while free[g] <= 0:
                g = (g + 1) % n
            chosen.append(g)
            free[g] -= 1
            g = (g + 1) % n
        self._cursor = g
        return _decision(problem, chosen, started)


class _Seeded(Policy):
    def __init__(self, *, seed: int = 0):
        self.seed = check_int("seed", seed, minimum=0)
        self._rng = np.random.default_rng(self.seed)
        self._options = {"seed": self.seed}


@register("random")
class RandomPlacement(_Seeded):
    """A uniformly random worker among those with a free slot (seeded)."""

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        free = problem.free_slots.copy()
        chosen = []
        for _ in range(problem.n_to_place):
            g = int(self._rng.choice(np.flatnonzero(free > 0)))
            chosen.append(g)
            free[g] -= 1
        return _decision(problem, chosen, started)


@register("p2c")
class PowerOfTwoChoices(_Seeded):
    """Power of two choices: two random open workers, the one with less current work wins."""

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        free = problem.free_slots.copy()
        load = problem.active_load.copy()
        chosen = []
        for k in range(problem.n_to_place):
            open_workers = np.flatnonzero(free > 0)
            if open_workers.size == 1:
                g = int(open_workers[0])
            else:
                a, b = sorted(self._rng.choice(open_workers, size=2, replace=False).tolist())
                g = a if load[a] <= load[b] else b
            chosen.append(g)
            free[g] -= 1
            load[g] += problem.pool_work[k, 0]
        return _decision(problem, chosen, started)
