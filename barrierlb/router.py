"""A data-parallel router for LLM serving engines.

Engines such as vLLM and SGLang accept an explicit ``data_parallel_rank`` per
request. :class:`DecodeRouter` chooses it: queue requests as they arrive, tell it
what happened, and ask for the placement of the queued requests whenever slots
are free. Requests never move once routed (their KV cache stays on the rank).

Two ways to tell it what happened:

- **per step** (a simulator or an engine loop that sees its lockstep steps):
  :meth:`~DecodeRouter.step_report` ages every running request by one token
  and removes the finished ones;
- **asynchronously** (a proxy that follows each request's stream, as
  ``barrierlb serve`` does): :meth:`~DecodeRouter.progress` sets one request's
  generated tokens, :meth:`~DecodeRouter.finish` and :meth:`~DecodeRouter.cancel`
  end it, :meth:`~DecodeRouter.rank_down` / :meth:`~DecodeRouter.rank_up` follow
  rank health.

Examples
--------
>>> router = DecodeRouter(n_ranks=2, slots=2, policy="bfio:horizon=0")
>>> router.add_request(7, prompt_tokens=900)
>>> router.add_request(8, prompt_tokens=100)
>>> ranks = router.route()                # {request_id: data_parallel_rank}
>>> sorted(ranks) == [7, 8] and ranks[7] != ranks[8]
True
>>> router.step_report(finished=[8])      # after one decode step, request 8 ended
>>> router.progress(7, 5)                 # or asynchronously: request 7 has 5 tokens
>>> float(router.load()[ranks[7]])
905.0
>>> router.finish(7, output_tokens=6)
"""

from __future__ import annotations

import functools
import itertools
import math
import time

import numpy as np

from barrierlb._numba import compiled
from barrierlb._validate import INT64_MAX, check_array, check_int, check_real
from barrierlb.policies import Decision, Policy, make_policy
from barrierlb.policies.base import in_pool
from barrierlb.policies.bfio import BFIO, LLM_DECODE
from barrierlb.predictors import SurvivalPredictor
from barrierlb.projection import _kept_rows, _kept_weights
from barrierlb.solvers import greedy_tie_break
from barrierlb.state import ClusterState


class _Bounded:
    """A predictor whose remaining lengths never pass each request's ``max_tokens``."""

    adaptive = True

    def __init__(self, inner):
        self.inner = inner
        self.draws = int(getattr(inner, "draws", 0) or 0)
        self.cap: dict[int, float] = {}

    @property
    def compiled(self) -> bool:
        """Whether the router's kernels compute these predictions themselves: no inner predictor, or
        exactly a :class:`~barrierlb.predictors.SurvivalPredictor` answering its quantile (no draws)."""
        return self.inner is None or (type(self.inner) is SurvivalPredictor and not self.draws)

    def survival_arrays(self) -> tuple:
        """The survival predictor's arrays for :func:`barrierlb._router_kernels.survival_remaining`:
        ``(sorted outputs, grouped outputs, group ends, prompt edges, group shift, quantile,
        min_samples)`` (no inner predictor: no outputs, so no end is predicted)."""
        inner = self.inner
        if inner is None:
            return _NO_SURVIVAL
        return (inner._sorted, inner._grouped, inner._group_end, inner._edges, float(inner._shift),
                float(inner.quantile), int(inner.min_samples))

    def _limit(self, task_ids, generated) -> np.ndarray:
        # dict.get mapped in C over the ids (a generator of lookups cost ~1 µs a running request)
        cap = np.fromiter(map(self.cap.get, np.asarray(task_ids).tolist(), itertools.repeat(math.inf)),
                          dtype=np.float64, count=np.size(task_ids))
        return np.maximum(cap - np.asarray(generated, dtype=np.float64), 1.0)

    def remaining(self, task_ids, prompt, generated) -> np.ndarray:
        predicted = (self.inner.remaining(task_ids, prompt, generated) if self.inner is not None
                     else np.full(np.shape(task_ids), math.inf))
        if not self.cap:                 # no request has a max_tokens: every limit is inf
            return np.asarray(predicted, dtype=np.float64)
        return np.minimum(predicted, self._limit(task_ids, generated))

    def sample(self, task_ids, prompt, generated) -> np.ndarray:
        return np.minimum(self.inner.sample(task_ids, prompt, generated), self._limit(task_ids, generated)[None])

    def observe(self, output_tokens, prompt_tokens=None) -> None:
        if self.inner is not None:
            self.inner.observe(output_tokens, prompt_tokens=prompt_tokens)


class DecodeRouter:
    """Route decode requests to data-parallel ranks with a barrierlb policy.

    Parameters
    ----------
    n_ranks : int
        Data-parallel ranks.
    slots : int
        Concurrent requests per rank (the engine's max batch).
    policy : str or Policy
        Default: :data:`barrierlb.policies.bfio.LLM_DECODE`. May be replaced
        between decisions (``router.policy = ...``).
    predictor : object, optional
        Refreshes predicted remaining lengths before each decision
        (``remaining(task_ids, prompt, generated)``), e.g.
        :class:`barrierlb.predictors.SurvivalPredictor` fed with
        :meth:`observe_output` (or :meth:`finish`). Without an oracle on long
        outputs, ``SurvivalPredictor(draws=16)`` with the policy
        :data:`barrierlb.policies.bfio.LLM_DECODE_NO_ORACLE` measured best
        (docs/simulator.md). A request's ``max_output_tokens`` bounds its
        prediction whatever the predictor says.
    max_wait_s : float, optional
        Bounded waiting in time: a request queued this long is placed at the
        next decision before any other (on top of the policy's own bound in
        decisions, ``max_wait``). Needs ``clock``.
    clock : callable
        Seconds, for ``max_wait_s`` (default :func:`time.monotonic`).
    """

    def __init__(self, n_ranks: int, slots: int, *, policy: str | Policy = LLM_DECODE, predictor=None,
                 max_wait_s: float | None = None, clock=time.monotonic):
        self.state = ClusterState(check_int("n_ranks", n_ranks, minimum=1), check_int("slots", slots, minimum=1))
        self.policy = policy
        self.predictor = predictor
        self._bounded = _Bounded(predictor)
        self.max_wait_s = None if max_wait_s is None else check_real("max_wait_s", max_wait_s, minimum=0.0)
        self._clock = clock
        self._queued_at: dict[int, float] = {}
        # max_tokens of the request in each slot (inf: none), set as the router places it: what the
        # one-request kernel bounds the running requests' predictions by
        self._slot_cap = np.full(self.state._slot_id.shape, math.inf)
        self._outputs: list[int] = []          # finished lengths not yet given to the predictor
        self._output_prompts: list[float] = []  # and their prompt lengths
        self._last_decision: Decision | None = None
        self._last_admitted: tuple | None = None   # (id, rank, objective, seconds) of admit's own last decision
        self._one_request = True              # the shortcut for one waiting request (off: always the full decision)

    @property
    def last_decision(self) -> Decision | None:
        """The last decision that placed requests (:meth:`route`'s or :meth:`admit`'s)."""
        if self._last_admitted is not None:      # admit's, made a Decision only when asked for
            request_id, rank, objective, seconds = self._last_admitted
            self._last_admitted = None
            self._last_decision = Decision(
                task_ids=np.array((request_id,), dtype=np.int64), workers=np.array((rank,), dtype=np.int64),
                pool_index=np.zeros(1, dtype=np.int64), branch="heuristic", objective=objective, solve_time_s=seconds,
                info={"path": "heuristic", "construction": "pairs", "one_request": True, "pool_considered": 1,
                      "admitted": True})
        return self._last_decision

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: str | Policy) -> None:
        built = make_policy(policy) if isinstance(policy, str) else policy
        if not isinstance(built, Policy):
            raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
        self._policy = built

    def add_request(self, request_id: int, prompt_tokens: float, *,
                    predicted_output_tokens: float = math.inf, max_output_tokens: float = math.inf,
                    queued_at: float | None = None) -> None:
        """Queue a request (prompt length known; output length if a predictor knows it).

        ``max_output_tokens`` (the request's ``max_tokens``) bounds every
        prediction of its length. ``queued_at`` (seconds of ``clock``; default
        now) is when it started waiting, for ``max_wait_s``: a request queued
        again after its rank failed keeps its first arrival.
        """
        prompt = check_real("prompt_tokens", prompt_tokens, minimum=0.0)
        steps = check_real("predicted_output_tokens", predicted_output_tokens, minimum=0.0, allow_inf=True)
        cap = check_real("max_output_tokens", max_output_tokens, minimum=0.0, allow_inf=True)
        steps = min(steps, cap)
        request_id = check_int("request_id", request_id, minimum=0)
        queued = self._clock() if queued_at is None else check_real("queued_at", queued_at)
        self.state.submit_one(request_id, prompt, growth=1.0, steps=steps, prompt=prompt)
        if math.isfinite(cap):
            self._bounded.cap[request_id] = cap
        self._queued_at[request_id] = queued

    def admit(self, request_id: int, prompt_tokens: float, *, max_output_tokens: float = math.inf,
              queued_at: float | None = None) -> int:
        """Queue a request and, when no other waits, decide it at once: its rank, or -1 while it waits.

        The same as :meth:`add_request` followed, when the pool held nothing
        else, by :meth:`route` (which then can place only this request); with
        requests already waiting it only queues (-1), and a later :meth:`route`
        decides it with them. The state afterwards is the same either way.

        A serving proxy's usual decision: at a few hundred requests a second a
        request rarely arrives while another waits. For plain ``bfio`` (and any
        ``bfio`` that :meth:`route` decides one request for without building the
        step problem, with the router's own predictions or the survival
        predictor's) the request is then not entered in the pool at all: one
        compiled call gives the online controller's pass over the slots, the
        decision and the slot written
        (:func:`barrierlb._router_kernels.admit_one`). Every other case, and one
        decision in ``refresh`` of the online controller (when it re-estimates),
        takes the general path.
        """
        state, policy, bounded = self.state, self._policy, self._bounded
        if not (type(request_id) is int and 0 <= request_id <= INT64_MAX and type(prompt_tokens) in _PLAIN
                and 0 <= prompt_tokens < math.inf and type(max_output_tokens) in _PLAIN and max_output_tokens >= 0
                and (queued_at is None or type(queued_at) in _PLAIN and math.isfinite(queued_at))
                and state._pool["ids"].size == 0 and request_id not in state._location and self._one_request
                and _one_request_policy(policy, state, bounded)):
            return self._admit_in_general(request_id, prompt_tokens, max_output_tokens, queued_at)
        if self._outputs:
            self._flush_outputs(all_of_them=False)
        prompt_tokens, cap = float(prompt_tokens), float(max_output_tokens)
        refresh = self.predictor is not None and getattr(self.predictor, "adaptive", False) or bool(bounded.cap) \
            or cap < math.inf                  # add_request would have entered its max_tokens by now
        if refresh and not bounded.compiled:
            return self._admit_in_general(request_id, prompt_tokens, max_output_tokens, queued_at)
        tuning = getattr(policy, "tuning", None)
        if tuning is None:
            options = None
            horizon, gamma, stride, peak_weight = policy.horizon, policy.gamma, policy.stride, policy.peak_weight
            observer, ring = None, _NO_OBSERVER
        else:
            # The options update() would set: those for placing one task, unless it re-estimates now.
            options = tuning._derived.get(1)
            observer = tuning.observer
            previous, before = observer._ids, observer._age
            if (options is None or tuning.decisions % tuning.refresh == 0 or previous is None or before is None
                    or previous.shape != state._slot_id.shape):
                return self._admit_in_general(request_id, prompt_tokens, max_output_tokens, queued_at)
            horizon, gamma, stride = options["horizon"], options["gamma"], options["stride"]
            peak_weight = options["peak_weight"]
            ring = (previous, before, observer._life, observer._end, observer._head, observer.clock)
        started = time.perf_counter()
        rows, stride, d, tie_break, kept = _one_request_constants(horizon, gamma, stride, policy.spread,
                                                                  policy.strict_ties)
        kernels = _KERNELS or _router_kernels()
        model = bounded.survival_arrays() if refresh else _NO_SURVIVAL
        # the request as add_request enters it: work and prompt its prompt, growth 1, steps min(none, max_tokens)
        outcome, rank, slot, objective, elapsed, n_left = kernels.admit_one(
            state._slot_id, state._slot_work, state._slot_growth, state._slot_age, state._slot_prompt,
            state._slot_remaining, self._slot_cap, state._active_count, state.capacity, state.alive, state._placed,
            policy.hold is not None, observer is not None, *ring, 2 if refresh else 0, model, rows, stride, kept, d,
            float(peak_weight), tie_break, policy.spread, request_id, prompt_tokens, 1.0, cap, prompt_tokens, cap)
        if outcome == _NO_FREE_SLOT:             # route() would have returned before tuning
            return self._admit_in_general(request_id, prompt_tokens, max_output_tokens, queued_at, decide=False)
        if observer is not None:                 # the rest of the controller's update() for this decision
            observer._advanced(elapsed, n_left)
            tuning.decisions += 1
            if tuning.current is not options:
                tuning.current = options
                policy._set_tuned(options)
        if outcome != _PLACED:                   # the full decision judges the hold
            self.add_request(request_id, prompt_tokens, max_output_tokens=cap, queued_at=queued_at)
            return self._decide(state.free_slots.tolist()).get(request_id, -1)
        state._location[request_id] = (rank, slot)
        state.version += 2                       # entered and left the pool, as add_request and route count it
        if cap < math.inf:
            bounded.cap[request_id] = cap
        self._last_admitted = (request_id, rank, objective, time.perf_counter() - started)
        return rank

    def _admit_in_general(self, request_id, prompt_tokens, max_output_tokens, queued_at, *, decide=True) -> int:
        waiting = self.state.n_waiting
        self.add_request(request_id, prompt_tokens, max_output_tokens=max_output_tokens, queued_at=queued_at)
        if waiting or not decide:
            return -1
        return self.route().get(int(request_id), -1)

    def route(self) -> dict[int, int]:
        """Place queued requests in free slots; returns ``{request_id: data_parallel_rank}``.

        All queued requests are placed together in one decision of the policy
        (the BF-IO step problem), never more than a rank's free slots.
        """
        state, policy = self.state, self._policy
        self._flush_outputs(all_of_them=False)
        if state.n_waiting == 0:
            return {}
        # Free slots and liveness per rank as lists: for the few ranks of data parallelism, Python's
        # any/sum/all on them cost less than numpy's reductions, once per request at a proxy.
        free = state.free_slots.tolist()
        if not any(free):
            return {}
        policy.tune(state, sum(free))    # plain bfio's online controller sees every decision's state
        return self._decide(free)

    def _decide(self, free: list) -> dict[int, int]:
        """:meth:`route`'s decision once the policy is tuned (``free``: the free slots per rank, a list)."""
        state, policy = self.state, self._policy
        refresh = self.predictor is not None and getattr(self.predictor, "adaptive", False) or bool(self._bounded.cap)
        if state.n_waiting == 1 and self._one_request and _one_request_path(policy, state, self._bounded, free):
            decision = _place_one(state, policy, self._bounded if refresh else None, self._slot_cap)
            # The pool's one task (position 0) onto its rank: what place() does once it has matched the
            # decision's ids to the pool, with the same checks of the rank.
            state._place_one(0, int(decision.workers[0]))
            return self._record_placed(decision)
        if refresh:
            state.refresh_predictions(self._bounded)
        started = time.perf_counter()
        # The policy's own step problem, as its decide() builds it: with its bounded candidate set,
        # so a burst of queued requests costs one bounded decision, not one over the whole queue.
        problem, positions = policy.step_problem(state)
        if self.max_wait_s is not None:
            deadline = self._clock() - self.max_wait_s
            late = np.fromiter((self._queued_at[t] <= deadline for t in problem.pool_ids.tolist()), dtype=bool,
                               count=problem.pool_ids.size)
            if late.any():
                from dataclasses import replace

                problem = replace(problem, forced=problem.forced | late)
        return self._placed(in_pool(policy.decide_problem(problem, started=started), positions))

    def _placed(self, decision: Decision) -> dict[int, int]:
        self.state.place(decision)
        return self._record_placed(decision)

    def _record_placed(self, decision: Decision) -> dict[int, int]:
        """The router's own bookkeeping of a decision the ledger has placed: ``{request_id: rank}``."""
        self._last_decision, self._last_admitted = decision, None
        placed = decision.task_ids.tolist()
        location, cap = self.state._location, self._bounded.cap
        for request_id in placed:
            self._queued_at.pop(request_id, None)
            self._slot_cap[location[request_id]] = cap.get(request_id, math.inf)
        return dict(zip(placed, decision.workers.tolist()))

    def step_report(self, finished=()) -> None:
        """Report one engine step: every running request generated a token; ``finished`` ended.

        Every id in ``finished`` is checked to be running before anything
        changes, so a rejected report can be retried without aging twice.
        """
        finished = check_array("finished", list(finished), ndim=1, dtype=np.int64)
        for request_id in finished.tolist():
            self._running(request_id)
        if np.unique(finished).size != finished.size:
            raise ValueError(f"finished lists a request twice: {finished.tolist()}")
        self.state.advance()
        if finished.size:
            self.state.complete(finished)
            for request_id in finished.tolist():
                self._bounded.cap.pop(request_id, None)

    # ------------------------------------------------------- asynchronous reports
    def progress(self, request_id: int, tokens: int) -> None:
        """A running request has generated ``tokens`` tokens so far (a total, not an increment)."""
        self.progress_many([request_id], [tokens])

    def progress_many(self, request_ids, tokens) -> None:
        """:meth:`progress` for many requests at once (all checked before any changes)."""
        request_ids = [self._running(r) for r in request_ids]
        if len(set(request_ids)) != len(request_ids):
            raise ValueError("progress_many lists a request twice")
        counts = [t if type(t) is int and 0 <= t <= INT64_MAX else check_int("tokens", t, minimum=0)
                  for t in tokens]
        if len(counts) != len(request_ids):
            raise ValueError(f"tokens has {len(counts)} entries for {len(request_ids)} requests")
        if request_ids:
            self.state.set_progress(request_ids, counts)

    def finish(self, request_id: int, output_tokens: int | None = None) -> None:
        """A running request ended after ``output_tokens`` tokens; frees its slot.

        The length is fed to the predictor (``None``: length unknown, nothing learned).
        """
        request_id = self._running(request_id)
        if output_tokens is not None:
            output_tokens = check_int("output_tokens", output_tokens, minimum=0)
        prompt = float(self.state._slot_prompt[self.state._location[request_id]])
        self.state.complete([request_id])
        self._bounded.cap.pop(request_id, None)
        if output_tokens is not None:
            self._outputs.append(output_tokens)       # learned in batches (_flush_outputs), here once one is due:
            self._output_prompts.append(prompt)       # a proxy finishes a request after answering it, off its path
            self._flush_outputs(all_of_them=False)

    def set_prompt_tokens(self, request_id: int, prompt_tokens: float) -> None:
        """Correct a queued or running request's prompt length (an exact count that came after an estimate)."""
        request_id = check_int("request_id", request_id, minimum=0)
        prompt = check_real("prompt_tokens", prompt_tokens, minimum=0.0)
        if request_id not in self._queued_at:
            self._running(request_id)
        self.state.set_prompt(request_id, prompt)

    def cancel(self, request_id: int) -> None:
        """Drop a queued or running request (client gone); a running one frees its slot.

        Its length is not learned: a cancelled output is cut short, not finished.
        """
        request_id = check_int("request_id", request_id, minimum=0)
        if request_id in self._queued_at:
            self.state.withdraw(request_id)
            del self._queued_at[request_id]
        else:
            self.state.complete([self._running(request_id)])
        self._bounded.cap.pop(request_id, None)

    def rank_down(self, rank: int) -> list[int]:
        """Mark a rank down; returns the ids of the requests that were running there (now dropped).

        Queued requests are unaffected: they go to the ranks still up.
        """
        ids = self.state.fail_worker(self._rank(rank)).tolist()
        for request_id in ids:
            self._bounded.cap.pop(request_id, None)
        return ids

    def rank_up(self, rank: int) -> None:
        """Bring a rank (back) into the placement."""
        self.state.set_alive(self._rank(rank), True)

    # ------------------------------------------------------------------- views
    def observe_output(self, output_tokens, prompt_tokens=None) -> None:
        """Feed finished requests' output lengths (with their prompt lengths, where known) to a
        learning predictor."""
        self._flush_outputs()
        self._bounded.observe(output_tokens, prompt_tokens=prompt_tokens)

    def _flush_outputs(self, *, all_of_them: bool = True) -> None:
        """Give the finished lengths to the predictor. At a decision or a finish only once they
        are a 64th of what it has learned: a learning predictor sorts its whole window per batch
        (4,096 lengths for the survival predictor), and a decision per request would pay that
        for every request. A decision thus sees what it would have seen had every batch waited
        for it."""
        learned = getattr(self.predictor, "n_observed", 0) or 0
        if self._outputs and (all_of_them or 64 * len(self._outputs) >= learned):
            outputs, prompts, self._outputs, self._output_prompts = self._outputs, self._output_prompts, [], []
            self._bounded.observe(outputs, prompt_tokens=prompts)

    def rank_of(self, request_id: int) -> int:
        return self.state.worker_of(request_id)

    def is_queued(self, request_id: int) -> bool:
        return int(request_id) in self._queued_at

    def is_placed(self, request_id: int) -> bool:
        """Whether the request runs on a rank (placed, not yet finished, cancelled or lost)."""
        return int(request_id) in self.state._location

    @property
    def queued(self) -> int:
        return self.state.n_waiting

    def load(self) -> np.ndarray:
        """Resident tokens per rank."""
        return self.state.current_load()

    def _running(self, request_id) -> int:
        if type(request_id) is not int or not 0 <= request_id <= INT64_MAX:     # a plain int: no general check
            request_id = check_int("request_id", request_id, minimum=0)
        if request_id not in self.state._location:
            raise ValueError(f"request {request_id} is not running on any rank")
        return request_id

    def _rank(self, rank) -> int:
        rank = check_int("rank", rank, minimum=0)
        if rank >= self.state.n_workers:
            raise ValueError(f"rank {rank} does not exist (n_ranks={self.state.n_workers})")
        return rank


# ----------------------------------------------------------- one waiting request
def _one_request_policy(policy: Policy, state: ClusterState, bounded: _Bounded) -> bool:
    """Whether the one-request kernels decide as the policy would, ``hold`` aside: plain ``bfio``,
    work-conserving, one point prediction per request (no sampled futures, no refill), affine
    requests only (the router's own)."""
    return (type(policy) is BFIO and policy.work_conserving and not policy.refill and not bounded.draws
            and not state._profiles)


def _one_request_path(policy: Policy, state: ClusterState, bounded: _Bounded, free: list) -> bool:
    """Whether :func:`_place_one` gives this decision: :func:`_one_request_policy`, and without
    ``hold`` unless every alive rank has a free slot (``free``: the state's free slots, a list; zero
    on a dead rank)."""
    # With ``hold``, the greedy's rank is the one where the request raises the peak least
    # only when every alive rank has a free slot; else the full decision judges the hold.
    return (_one_request_policy(policy, state, bounded)
            and (policy.hold is None or all(f > 0 for f, up in zip(free, state.alive.tolist()) if up)))


def _place_one(state: ClusterState, policy: BFIO, bounded: _Bounded | None, slot_cap: np.ndarray) -> Decision:
    """The ``bfio`` decision for a state whose pool holds one request, without building the step problem.

    At 200 requests a second a proxy's requests rarely share a decision, and
    the full decision (predictions written to the ledger, the
    :class:`~barrierlb.problem.StepProblem`, the solver's setup, the objective
    recomputed) cost more than the rest of the serving path. For one waiting
    task the fast solver runs one construction, the ``pairs`` greedy, whose
    first pair is final (no local search for one placement): the alive rank
    with a free slot of the lowest exact score, ties to the most room. Here
    that same compiled greedy runs on the arrays the solver would get: the
    running requests projected over the kept steps by
    :func:`barrierlb.projection.running_projection`, the function
    :func:`~barrierlb.projection.step_problem` calls (the same slots in the
    same order, so the same sums), and the waiting request's
    lookahead. The tests compare the placement with the full decision's on
    random states.

    ``bounded`` is the router's bounded predictor when the full decision would
    refresh predictions (asked here for the running requests and the waiting
    one; the ledger's stored predictions are left as they are, since every
    decision that uses them refreshes them first), ``None`` to use the stored ones.
    A survival predictor (or none) under the ``max_tokens`` bound is computed in
    the kernel itself (:func:`barrierlb._router_kernels.survival_remaining`, with
    ``slot_cap``, each slot's ``max_tokens``); any other predictor is asked.
    """
    started = time.perf_counter()
    horizon = policy.horizon
    rows, stride, d, tie_break, kept = _one_request_constants(horizon, policy.gamma, policy.stride, policy.spread,
                                                        policy.strict_ties)
    pool = state._pool
    slot_id = state._slot_id
    alive = state.alive
    every_rank = bool(alive.all())
    kernels = _KERNELS or _router_kernels()
    survival = bounded is not None and bounded.compiled
    model = bounded.survival_arrays() if survival else _NO_SURVIVAL
    remaining = _NO_REMAINING
    if survival:
        # The bounded survival prediction of every running request and of the waiting one, in the kernels.
        mode, steps, cap = 2, math.inf, bounded.cap.get(int(pool["ids"][0]), math.inf)
    elif bounded is not None:
        # One question for the running requests (row-major, as the full decision's mask) and the waiting
        # one (predictors answer per request).
        predicted = bounded.remaining(*kernels.running_and_waiting(slot_id, state._slot_prompt, state._slot_age,
                                                                   pool["ids"], pool["prompt"]))
        remaining, steps, cap, mode = np.asarray(predicted[:-1], dtype=np.float64), float(predicted[-1]), 0.0, 1
    else:
        remaining, steps, cap, mode = state._slot_remaining.ravel(), float(pool["steps"][0]), 0.0, 0
    work = kernels.waiting_lookahead(kept, float(pool["work"][0]), float(pool["growth"][0]), steps, survival,
                                     model, float(pool["prompt"][0]), cap)
    # The running requests' projection (running_projection's arithmetic, in its order), its peaks, the
    # solver's own compiled greedy on them and the objective as imbalance_of_loads gives it, in one call;
    # the lookahead's weighted sum as the solver computes it, so that the scores are its own.
    worker, objective = kernels.place_one(
        slot_id, state._slot_work, state._slot_growth, state._slot_age, state._slot_prompt, slot_cap, remaining, mode,
        model, rows, stride, kept, d, alive, every_rank, work, state.capacity,
        state._active_count, float(policy.peak_weight), tie_break, policy.spread)
    return Decision(task_ids=pool["ids"].copy(), workers=np.array((worker,), dtype=np.int64),
                    pool_index=np.zeros(1, dtype=np.int64), branch="heuristic", objective=objective,
                    solve_time_s=time.perf_counter() - started,
                    info={"path": "heuristic", "construction": "pairs", "one_request": True, "pool_considered": 1})


_NO_SURVIVAL = (np.zeros(0), np.zeros(0), np.zeros(1, dtype=np.int64), np.zeros(0), 0.0, 0.5, 1)
_NO_REMAINING = np.zeros(0)
# admit_one's observer arguments (slots, ring buffers, head, clock) when no online controller observes
_NO_OBSERVER = (np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0), dtype=np.int64), _NO_REMAINING, _NO_REMAINING, 0, 0)
_PLAIN = (float, int)                       # admit's arguments taken as they are (bool is not one)
_PLACED, _NO_FREE_SLOT = 0, 1              # barrierlb._router_kernels.admit_one's outcomes (and 2: the full decision)


@functools.lru_cache(maxsize=16)
def _one_request_constants(horizon: int, gamma: float, stride: int, spread: bool, strict_ties: bool):
    """What :func:`_place_one` needs of a policy's options: rows, stride, kept weights, tie break, kept steps."""
    stride = stride if horizon else 1
    d = _kept_weights(horizon, gamma, stride)
    return horizon + 1, stride, d, greedy_tie_break(d, strict_ties=spread and strict_ties), _kept_rows(horizon + 1,
                                                                                                       stride)


_KERNELS = None       # barrierlb._router_kernels once imported (a module attribute: no import machinery per decision)


def _router_kernels():
    """:mod:`barrierlb._router_kernels`, imported on the first one-request decision (numba loads
    then, not at import; :func:`barrierlb._numba.compiled`)."""
    global _KERNELS
    _KERNELS = compiled("_router_kernels")
    return _KERNELS

