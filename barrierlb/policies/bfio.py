"""BF-IO: balance the future with integer optimization (Chen et al., arXiv 2601.17855)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from barrierlb._validate import check_bool, check_int, check_real
from barrierlb.policies.base import Decision, Policy, register
from barrierlb.predictors import LifetimeObserver
from barrierlb.problem import peak_raise, predicted_imbalance, projected_peak
from barrierlb.projection import candidate_positions, step_problem
from barrierlb.solvers.exact import solve_exact_problem
from barrierlb.solvers.fast import FastResult, solve_problem

#: Default bound on how many decisions a waiting task may be passed over.
DEFAULT_MAX_WAIT = 256

#: Default bound on the waiting tasks one decision considers (``candidates``): the oldest
#: 512, or as many as there are free slots if more, plus every task at its waiting bound.
#: Twice the paper's visible queue (R = 128 to 256), so its runs are not cut.
DEFAULT_CANDIDATES = 512

#: BF-IO options measured best for overloaded data-parallel LLM decode: a 72-step
#: horizon discounted by 0.9 a step, and a peak weight so large that not raising the
#: predicted peak anywhere in the horizon comes first and placed work second (the
#: order in which the authors' reference policy selects), and a looser bound on waiting
#: (1024 decisions: in the overloaded regime queueing dominates time to first token
#: anyway). ``make_policy(LLM_DECODE)``; see docs/simulator.md for the sweeps (the
#: discount over four workload seeds: 0.86 idles 0.73% to 0.86%, 0.9 0.69% to 0.74%).
LLM_DECODE = "bfio:horizon=72,gamma=0.9,peak_weight=1000,max_wait=1024"

#: BF-IO options measured best for chat-like traffic whose outputs are tens of tokens
#: (the BurstGPT sample: mean 58, median 7): a request's whole life fits in the horizon,
#: so a steeper discount (0.7) keeps the nearest steps in charge, and evaluating every
#: 8th step (``stride=8``) cuts the decision time about fivefold at no measured loss.
LLM_DECODE_SHORT = "bfio:horizon=72,gamma=0.7,peak_weight=1000,max_wait=1024,stride=8"

#: BF-IO options measured best without an oracle, with sampled futures
#: (``--predictor scenarios:16``) on long outputs: the draws blur each request's end, so
#: a longer horizon (144 steps, discounted by 0.93) evaluated every 16th step, and
#: ``refill``: a slot freed inside the horizon is projected as refilled at once with a
#: task of the average placed size, as it is in an overloaded cluster. 1.91% idle on the
#: synthetic workload (docs/simulator.md).
LLM_DECODE_NO_ORACLE = "bfio:horizon=144,gamma=0.93,peak_weight=1000,max_wait=1024,stride=16,refill=true"

#: Re-solves of one decision with ``hold`` before the placements still over it are dropped.
HOLD_ROUNDS = 3

#: Mean output length (tokens) below which :func:`decode_preset` picks ``LLM_DECODE_SHORT``.
SHORT_OUTPUT_TOKENS = 256


def decode_preset(mean_output_tokens: float, *, scenarios: bool = False) -> str:
    """The BF-IO preset for decode traffic with this mean output length.

    ``scenarios=True`` (a predictor that samples futures, ``scenarios:K``)
    picks ``LLM_DECODE_NO_ORACLE`` for long outputs. Short outputs keep
    ``LLM_DECODE_SHORT``: sampled futures do not help there (measured).

    Examples
    --------
    >>> decode_preset(1200) == LLM_DECODE, decode_preset(58) == LLM_DECODE_SHORT
    (True, True)
    >>> decode_preset(1200, scenarios=True) == LLM_DECODE_NO_ORACLE
    True
    """
    mean_output_tokens = check_real("mean_output_tokens", mean_output_tokens, minimum=0.0)
    if mean_output_tokens < SHORT_OUTPUT_TOKENS:
        return LLM_DECODE_SHORT
    return LLM_DECODE_NO_ORACLE if scenarios else LLM_DECODE


#: The options plain ``bfio`` tunes online (:class:`OnlineTuning`) when none of them is given.
TUNED_OPTIONS = ("horizon", "gamma", "stride", "peak_weight", "max_wait")

#: The value of each of :data:`TUNED_OPTIONS` when another of them is given and it is not
#: (``bfio:horizon=16`` means horizon 16 with these; a horizon of 0 takes :data:`H0_DEFAULTS`).
FIXED_DEFAULTS = {"horizon": 32, "gamma": 1.0, "stride": 1, "peak_weight": 1.0, "max_wait": DEFAULT_MAX_WAIT}

#: Defaults of ``bfio:horizon=0`` (a given horizon of 0) that differ from :data:`FIXED_DEFAULTS`:
#: not raising the peak comes first (the authors' H = 0 policy is near lexicographic: any
#: fill under the margin beats an overflow), and waiting is bounded only against starvation
#: (the reference has no bound; 256 decisions bound tight where few slots free per decision).
#: With these and ``share`` on it is at or below the reference's H = 0 imbalance on the
#: long-context recipe (docs/solvers.md, "Against the authors' reference policy at H = 0").
H0_DEFAULTS = {"peak_weight": 1000.0, "max_wait": 16384}

#: An option's value that asks the controller to tune it (``bfio:horizon=0,max_wait=auto``).
AUTO = "auto"


#: :class:`OnlineTuning`'s discount: interpolated in ``log2 T`` (``T`` the median lifetime in
#: steps) through these knots: the short preset's 0.7 up to ``T = 2**8.75`` (about 430
#: steps), the long preset's 0.9 from ``2**9.5`` (about 724), in steps of 0.05.
GAMMA_KNOTS = ([8.75, 9.5], [0.7, 0.9])

#: The median lifetime (steps) :class:`OnlineTuning` assumes while its estimate is only a
#: lower bound (fewer than half of the cohort has ended): the long preset's regime.
LONG_LIFETIME = 1024.0

#: :class:`OnlineTuning`'s horizon in median lifetimes, below 72 steps: the projection does
#: not refill freed slots, so a few lifetimes on it shows the running tasks gone and weighs
#: only their tail (BurstGPT sample, ``T`` = 7: 4 lifetimes against 16 kept the throughput,
#: 1.0074x against 1.0059x the reference's, and took the decision p50 from 1.49 to 1.08 ms,
#: at 49,767 against 45,196 imbalance, the reference 57,747).
HORIZON_LIFETIMES = 4

#: :class:`OnlineTuning`'s stride before the work budget: ``2**e``, ``e`` interpolated in
#: ``log2 T`` through these knots (8 up to ``T = 32`` steps, 4 from 128 to 430, 1 from 724).
STRIDE_KNOTS = ([5.0, 7.0, 8.75, 9.5], [3.0, 2.0, 2.0, 0.0])


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class OnlineTuning:
    """The online controller of plain ``bfio``: its tuned options from what it has observed.

    Each decision it is shown the cluster state; it learns the tasks' lifetimes
    from the slots (:class:`~barrierlb.predictors.LifetimeObserver`: tasks that
    left and, censored, the ages of those running; never the trace's statistics
    nor a prediction) and how many tasks a decision places, and sets:

    - ``lifetime``: the Kaplan-Meier median lifetime ``T`` in steps of the tasks that
      started in the last ``span`` steps (of the last ``window`` that left, and those
      running), re-estimated every ``refresh`` decisions; while fewer than half of
      them have ended (the estimate only a lower bound), ``T`` is taken as at least
      :data:`LONG_LIFETIME` (measured: on the synthetic workload, starting in the
      long regime gave 78,095 against 83,711 for twice the lower bound);
    - ``horizon``: 72 steps (both presets' horizon; measured best from output means of
      58 to 1,250 tokens), shortened to ``4 T`` when lifetimes are shorter than that
      (:data:`HORIZON_LIFETIMES`);
    - ``gamma`` and ``stride``: the short preset's 0.7 and 8 for ``T <= 32`` steps; 0.7
      and 4 from 128 to about 430 steps; the long preset's 0.9 and 1 from about 724
      (:data:`GAMMA_KNOTS`, :data:`STRIDE_KNOTS`; interpolated in ``log T`` between,
      gamma in steps of 0.05, the stride in powers of two). Fixed points measured on
      20,000 requests: the BurstGPT sample (``T`` = 7), the long-context shape (``T``
      about 380, where 0.7 and 4 beat the long preset's 0.9 and 1 by far:
      docs/simulator.md) and the synthetic workload (``T`` about 1,220). Then the
      stride is doubled while the decision's work, the tasks it places times the
      horizon points it evaluates, exceeds ``budget``: a burst that fills many
      slots at once is evaluated more coarsely, so that a decision's time stays
      bounded;
    - ``peak_weight``: 1000 (every preset's: not raising the predicted peak comes first);
    - ``max_wait``: ``8 T`` decisions in powers of two, from 4,096 to 16,384: a waiting
      task may be passed over for a few lifetimes of the running ones. (The presets'
      1,024 binds on the long-context shape: with gamma 0.7 and stride 8 it gave
      326,732 and 25,609 tok/s, no bound 307,583 and 26,104 tok/s; it never binds
      on the BurstGPT sample.)

    ``fixed`` maps options that the user gave to their values: those are never tuned.
    """

    def __init__(self, fixed: dict | None = None, *, window: int = 16384, span: int = 2048, refresh: int = 32,
                 budget: int = 512):
        self.fixed = dict(fixed or {})
        unknown = set(self.fixed) - set(TUNED_OPTIONS)
        if unknown:
            raise ValueError(f"not tuned options: {sorted(unknown)}")
        self.observer = LifetimeObserver(window=window, span=span)
        self.refresh = check_int("refresh", refresh, minimum=1)
        self.budget = check_int("budget", budget, minimum=1)
        self.lifetime = LONG_LIFETIME
        self.decisions = 0
        self._derived: dict[int, dict] = {}          # placing -> options, for the current lifetime
        self.current = self._tune(0)

    def update(self, state, n_free=None) -> dict:
        """Observe ``state`` and return the options for its decision (also kept as ``current``);
        ``n_free``: the state's free slots in all, if the caller has counted them.

        The options depend only on the lifetime estimate and on how many tasks the
        decision places, so they are derived once per (estimate, count) and reused
        until the estimate changes (every ``refresh`` decisions at most).
        """
        self.observer.observe(state._slot_id, state._slot_age)      # read only; observe keeps copies
        if self.decisions % self.refresh == 0:
            median = self.observer.quantile(0.5)
            # Fewer than half of the cohort has ended: lifetimes are long until shown otherwise.
            lifetime = max(median, LONG_LIFETIME) if self.observer.censored else median
            if lifetime != self.lifetime:
                self.lifetime = lifetime
                self._derived.clear()
        self.decisions += 1
        placing = min(int(state.free_slots.sum()) if n_free is None else n_free, state.n_waiting)
        current = self._derived.get(placing)
        if current is None:
            current = self._derived[placing] = self._tune(placing)
        self.current = current
        return current

    def _tune(self, placing: int) -> dict:
        t = self.lifetime
        fixed = self.fixed
        horizon = fixed.get("horizon", int(min(72, max(1, HORIZON_LIFETIMES * t))))
        level = math.log2(max(t, 1.0))
        gamma = fixed.get("gamma", round(round(float(np.interp(level, *GAMMA_KNOTS)) / 0.05) * 0.05, 2))
        stride = fixed.get("stride")
        if stride is None:
            stride = 1 << round(float(np.interp(level, *STRIDE_KNOTS)))
            while stride < 64 and placing * (horizon // stride + 1) > self.budget:
                stride *= 2
        peak_weight = fixed.get("peak_weight", 1000.0)
        if "max_wait" in fixed:
            max_wait = fixed["max_wait"]
        else:
            max_wait = min(max(1 << math.ceil(math.log2(max(8.0 * t, 1.0))), 4096), 16384)
        return {"horizon": horizon, "gamma": gamma, "stride": stride, "peak_weight": peak_weight,
                "max_wait": max_wait, "lifetime": t}


@register("bfio")
class BFIO(Policy):
    """BF-IO with the fast solver (greedy on the exact marginal score + local search).

    With none of ``horizon``, ``gamma``, ``stride``, ``peak_weight`` and
    ``max_wait`` given (plain ``bfio``), an online controller
    (:class:`OnlineTuning`, attribute ``tuning``) sets all five before each
    decision from the lifetimes it has observed, and each decision's
    ``info["tuning"]`` records what it chose. Given options are used exactly; once
    one is given the others not given take :data:`FIXED_DEFAULTS` (so
    ``bfio:horizon=0`` means horizon 0 with these), unless given as ``auto``;
    a given ``horizon=0`` takes :data:`H0_DEFAULTS` instead for the peak weight
    and the waiting bound, and ``share`` on.

    Parameters
    ----------
    horizon : int or "auto"
        Lookahead ``H`` in steps (0 to about 100; 0 needs no prediction).
    gamma : float or "auto"
        Horizon weights ``gamma**h`` (1: uniform, as in the paper).
    max_wait : int, None or "auto"
        Bounded waiting: a task passed over this many decisions must be placed
        next (256, :data:`DEFAULT_MAX_WAIT`, when fixed); ``None`` turns the bound off.
        A decision that places nothing while slots are free passes every waiting
        task over too, so the bound holds with ``work_conserving=False``.
    work_conserving : bool
        Fill every free slot the pool can fill (default on).
    local_search : bool
        Improve the greedy placement by local search (default on).
    peak_weight : float or "auto"
        Weight of the peak term: the solvers minimize
        ``sum_h d_h (peak_weight * G * max - sum)``. 1 is the paper's predicted
        imbalance. A raised peak persists beyond the horizon (the task that
        raised it keeps its load until it ends), which the horizon cannot see;
        a weight above 1 charges for that. 1 when fixed; overloaded LLM decode
        does best with 1000 (``LLM_DECODE``, measured in docs/simulator.md).
    max_moves : int, optional
        Cap on local-search moves per decision (default 16).
    stride : int or "auto"
        Evaluate the horizon every ``stride`` steps, each sampled step weighted
        for the steps it stands for (:meth:`StepProblem.sampled`); the solver's
        work shrinks by about ``stride``. 1 (every step) when fixed.
    refill : bool
        Project every slot freed inside the horizon as refilled at once with a
        task of the average placed size (:meth:`ClusterState.step_problem`),
        as in an overloaded cluster. Default off; on in ``LLM_DECODE_NO_ORACLE``
        (with the exact oracle it measured worse: 2.16% against 0.78% idle).
    spread : bool
        Break exact ties of the objective toward even loads (default on;
        :func:`~barrierlb.solvers.fast.solve_problem`). Lexicographic: never
        chosen over a lower objective.
    strict_ties : bool
        With ``spread``, the greedy scores the exact marginal objective alone,
        without its room term scaled by ``1e-6 / sum(d)`` (default off:
        measured worse on the BurstGPT sample, docs/solvers.md).
    candidates : int or None
        Bound on the waiting tasks a decision considers: the oldest
        ``max(candidates, free slots)`` plus every task at its waiting bound
        (:func:`barrierlb.projection.candidate_positions`), so a decision's cost
        does not grow with the pool. Default 512 (:data:`DEFAULT_CANDIDATES`);
        ``None``: the whole pool.
    deadline_ms : float or None
        Wall-time budget of a decision, from the start of :meth:`decide`: the
        local search stops at it and the best placement so far is returned,
        with ``info["deadline_cut"]`` true. Default ``None`` (no deadline).
    share : bool or None
        When a decision places fewer tasks than slots are free, a worker takes
        at most its share of them by free slots
        (:func:`~barrierlb.solvers.fast.solve_problem`). Default ``None``: on
        when ``horizon=0`` is given (with :data:`H0_DEFAULTS`), else off.
    hold : float or None
        Hold a waiting task rather than place it on a worker where it alone would
        raise the predicted peak term by more than ``hold`` times the horizon's
        weighted peak (``sum_h d_h max_g L``) above the least it would raise it on
        any alive worker, one without a free slot included
        (:func:`~barrierlb.problem.peak_raise`, from the decision's starting
        loads): when the workers it fits are full, it waits for one of their
        slots (those of short requests free within steps) instead of stacking
        on a worker already at the peak. The decision is solved again without the
        held tasks (at most :data:`HOLD_ROUNDS` times; placements still over
        the bound then stay unplaced), so their slots go to others. Tasks at their
        waiting bound are never held, so ``max_wait`` still bounds the wait.
        Default ``None`` (off; ``barrierlb serve`` uses 0.05). With 0.05, ``bfio``'s
        idle over ``vllm``'s in the BurstGPT replay to 32 emulated ranks x 4 slots was
        0.35 to 0.49 (seven runs) against 0.47 to 0.69 without (three), and in that setting
        simulated (``benchmarks/serve_simulated.py``, 12 request samples) its median
        0.538 against 0.611; on the simulator's 72-slot workloads the idle moved by at
        most 0.26 points (docs/serving.md, 3 December 2026).

    A decision's ``branch`` is ``"exact"`` when the solver's enumeration proved
    the placement optimal, else ``"heuristic"``; ``info["path"]`` names the
    solver path (:data:`barrierlb.solvers.fast.PATHS`).
    Decisions report ``objective`` as the paper's predicted imbalance
    (``peak_weight = 1``) of the chosen placement, whatever ``peak_weight``,
    over the steps the problem holds (with a ``stride``, the sampled ones).
    """

    def __init__(self, *, horizon: int | str | _Unset = _UNSET, gamma: float | str | _Unset = _UNSET,
                 max_wait: int | str | None | _Unset = _UNSET, work_conserving: bool = True,
                 local_search: bool = True, peak_weight: float | str | _Unset = _UNSET,
                 max_moves: int | None = None, stride: int | str | _Unset = _UNSET, refill: bool = False,
                 spread: bool = True, candidates: int | None = DEFAULT_CANDIDATES, deadline_ms: float | None = None,
                 strict_ties: bool = False, share: bool | None = None, hold: float | None = None):
        self.spread = check_bool("spread", spread)
        self.hold = None if hold is None else check_real("hold", hold, minimum=0.0)
        self.strict_ties = check_bool("strict_ties", strict_ties)
        self.candidates = None if candidates is None else check_int("candidates", candidates, minimum=1)
        self.deadline_ms = None if deadline_ms is None else check_real("deadline_ms", deadline_ms, minimum=0.0)
        self.refill = check_bool("refill", refill)
        self.max_moves = None if max_moves is None else check_int("max_moves", max_moves, minimum=0)
        self.work_conserving = check_bool("work_conserving", work_conserving)
        self.local_search = check_bool("local_search", local_search)
        given = {"horizon": horizon, "gamma": gamma, "stride": stride, "peak_weight": peak_weight,
                 "max_wait": max_wait}
        given = {key: value for key, value in given.items() if value is not _UNSET}
        defaults = FIXED_DEFAULTS | (H0_DEFAULTS if given.get("horizon") == 0 else {})
        fixed = {} if not given else {key: _check_tuned(key, given.get(key, defaults[key]))
                                      for key in TUNED_OPTIONS if given.get(key, None) != AUTO}
        self.share = (fixed.get("horizon") == 0) if share is None else check_bool("share", share)
        #: The online controller (:class:`OnlineTuning`), ``None`` when every tuned option is fixed.
        self.tuning = OnlineTuning(fixed) if len(fixed) < len(TUNED_OPTIONS) else None
        self._set_tuned(fixed if self.tuning is None else self.tuning.current)
        self._options = {key: fixed.get(key, AUTO) for key in TUNED_OPTIONS}
        self._options.update({"work_conserving": self.work_conserving, "local_search": self.local_search,
                              "max_moves": self.max_moves,
                              "refill": self.refill, "spread": self.spread, "strict_ties": self.strict_ties,
                              "candidates": self.candidates, "deadline_ms": self.deadline_ms, "share": self.share,
                              "hold": self.hold})

    def _set_tuned(self, values: dict) -> None:
        self.horizon, self.gamma, self.stride = values["horizon"], values["gamma"], values["stride"]
        self.peak_weight, self.max_wait = values["peak_weight"], values["max_wait"]

    def tune(self, state, n_free=None) -> None:
        """Let the online controller observe ``state`` and set the tuned options for its decision.

        :meth:`decide` does this itself; a driver that builds its own step problem
        (:class:`~barrierlb.router.DecodeRouter`, the superstep planner) calls it
        first (``n_free``: the state's free slots in all, if it has counted them).
        Does nothing when every tuned option is fixed.
        """
        if self.tuning is not None:
            self._set_tuned(self.tuning.update(state, n_free))

    def step_problem(self, state):
        positions = candidate_positions(state.pool_wait, int(state.free_slots.sum()), self.candidates,
                                        self.max_wait)
        return step_problem(state, self.horizon, gamma=self.gamma, max_wait=self.max_wait, refill=self.refill,
                            stride=self.stride, positions=positions), positions

    def _fast(self, problem, started=None) -> FastResult:
        return solve_problem(problem.sampled(self.stride), work_conserving=self.work_conserving,
                             local_search=self.local_search, peak_weight=self.peak_weight, max_moves=self.max_moves,
                             spread=self.spread, strict_ties=self.strict_ties, deadline_ms=self.deadline_ms,
                             started=started, share=self.share)

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        result = self._fast(problem, started)
        rows, held, complete = None, 0, True          # rows: the pool rows of a re-solve (None: all)
        if self.hold is not None and result.task_index.size:
            rows, result, held, complete = self._holding(problem, result, started)
        # The solver's objective is the reported one when nothing was sampled or reweighted.
        known = result.objective if self.stride == 1 and self.peak_weight == 1.0 and complete else None
        task_index = result.task_index if rows is None else rows[result.task_index]
        return _to_decision(problem, task_index, result.worker,
                            "exact" if result.path == "exact" and rows is None else "heuristic", started,
                            {"path": result.path, "construction": result.construction,
                             "solver_objective": result.objective if complete else None,
                             "greedy_objective": result.greedy_objective, "moves": result.moves,
                             "deadline_cut": result.deadline_cut, "pool_considered": problem.pool_ids.size,
                             **({"held": held} if self.hold is not None else {}),
                             **({} if self.tuning is None else {"tuning": dict(self.tuning.current)})},
                            objective=known)

    def _holding(self, problem, result: FastResult, started: float):
        """``hold``: re-solve without the tasks placed over the bound, at most :data:`HOLD_ROUNDS`
        times, then drop the placements still over it. Returns the pool rows the result indexes,
        the result, how many tasks were held, and whether the result is a whole solve (its
        objective the solver's)."""
        assert self.hold is not None
        sampled = problem.sampled(self.stride)
        bound = 0.0
        if sampled.alive.any():
            bound = self.hold * float(sampled.weights @ np.maximum(projected_peak(sampled), 0.0))
        rows = np.arange(problem.n_pool)
        held = 0
        for attempt in range(HOLD_ROUNDS + 1):
            placed = rows[result.task_index]
            raised = peak_raise(sampled, placed)
            excess = raised[np.arange(placed.size), result.worker] - raised.min(axis=1)
            over = (excess > bound * (1 + 1e-12) + 1e-9) & ~problem.forced[placed]
            if not over.any():
                return (None if not held else rows), result, held, True
            held += int(over.sum())
            if attempt == HOLD_ROUNDS:
                keep = ~over
                return rows, dataclasses.replace(result, task_index=result.task_index[keep],
                                                 worker=result.worker[keep]), held, False
            rows = np.setdiff1d(rows, placed[over])
            result = self._fast(problem.keeping(rows), started)
            if not result.task_index.size:
                return rows, result, held, True
        raise AssertionError("unreachable")


@register("bfio-exact")
class BFIOExact(BFIO):
    """BF-IO solved exactly as a MILP (HiGHS), falling back to the fast solver on timeout.

    Parameters are those of :class:`BFIO` plus ``time_limit_s`` (default 1 s),
    which bounds the whole decision: the MILP gets what is left of it after its
    model is built, and the fast solver's fallback runs after it.
    The decision's branch is ``"exact"`` when optimality was proven (by HiGHS
    or by the fast solver's enumeration), else ``"fallback"``: the better of
    the MILP's incumbent and the fast solver.
    """

    def __init__(self, *, horizon: int = 32, gamma: float = 1.0, max_wait: int | None = DEFAULT_MAX_WAIT,
                 work_conserving: bool = True, local_search: bool = True, peak_weight: float = 1.0,
                 max_moves: int | None = None, stride: int = 1, refill: bool = False, time_limit_s: float = 1.0,
                 spread: bool = True, candidates: int | None = DEFAULT_CANDIDATES):
        super().__init__(horizon=horizon, gamma=gamma, max_wait=max_wait, work_conserving=work_conserving,
                         local_search=local_search, peak_weight=peak_weight, max_moves=max_moves, stride=stride,
                         refill=refill, spread=spread, candidates=candidates, share=False)
        self.time_limit_s = check_real("time_limit_s", time_limit_s, minimum=0.0)
        self._options["time_limit_s"] = self.time_limit_s

    def decide_problem(self, problem, *, started=None) -> Decision:
        started = time.perf_counter() if started is None else started
        sampled = problem.sampled(self.stride)
        fast = None
        if self.work_conserving:
            # Small problems: the fast solver's enumeration proves the optimum in well under a
            # millisecond, before any model is built.
            fast = self._fast(problem, started)
            if fast.path == "exact":
                return _to_decision(problem, fast.task_index, fast.worker, "exact", started,
                                    {"path": "exact", "solver_objective": fast.objective})
        # The fallback's fast solver runs after the MILP: leave it a share of the limit.
        exact = solve_exact_problem(sampled, work_conserving=self.work_conserving,
                                    time_limit_s=self.time_limit_s * 0.9, peak_weight=self.peak_weight,
                                    started=started)
        info = {"milp_status": exact.status, "milp_time_s": exact.solve_time_s}
        if exact.optimal:
            info["solver_objective"] = predicted_imbalance(sampled, exact.task_index, exact.worker,
                                                           peak_weight=self.peak_weight)
            return _to_decision(problem, exact.task_index, exact.worker, "exact", started, info)
        fast = self._fast(problem) if fast is None else fast
        best = (fast.objective, fast.task_index, fast.worker, "fast")
        if exact.found:
            value = predicted_imbalance(sampled, exact.task_index, exact.worker, peak_weight=self.peak_weight)
            if value < best[0]:
                best = (value, exact.task_index, exact.worker, "milp_incumbent")
        info["fallback_source"] = best[3]
        info["solver_objective"] = best[0]
        return _to_decision(problem, best[1], best[2], "fallback", started, info)


def _check_tuned(key: str, value):
    """A tuned option's value as given, checked."""
    if key == "horizon":
        horizon = check_int("horizon", value, minimum=0)
        if horizon > 1024:
            raise ValueError(f"horizon must be <= 1024 steps, got {horizon}")
        return horizon
    if key == "gamma":
        return check_real("gamma", value, minimum=0.0, maximum=1.0)
    if key == "stride":
        return check_int("stride", value, minimum=1)
    if key == "peak_weight":
        return check_real("peak_weight", value, minimum=0.0)
    return None if value is None else check_int("max_wait", value, minimum=0)


def _to_decision(problem, task_index, worker, branch, started, info, objective=None) -> Decision:
    task_index = np.asarray(task_index, dtype=np.int64)
    worker = np.asarray(worker, dtype=np.int64)
    if objective is None:
        objective = predicted_imbalance(problem, task_index, worker)
    return Decision(task_ids=problem.pool_ids[task_index], workers=worker, pool_index=task_index, branch=branch,
                    objective=float(objective), solve_time_s=time.perf_counter() - started, info=info)
